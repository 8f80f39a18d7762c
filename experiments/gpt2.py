"""GPT-2 (Radford et al., 2019): a pre-LN Transformer decoder (final LayerNorm, scaled init not
modelled) trained as a causal LM on documents separated by <|endoftext|>.

Run (tiny: CPU, about a minute; real text with --config.data.path):

    plmjax train --config experiments/gpt2.py:tiny --workdir /tmp/gpt2_tiny
    plmjax train --config experiments/gpt2.py:tiny --workdir /tmp/gpt2_wt2 \
        --config.data.path=../shared/data/wikitext-2

`base` is GPT-2 small (124M: L=12, H=768, A=12), context 1024, batch 512, byte-level BPE of
50257 pieces. The paper gives no optimizer details beyond a tuned learning rate; the setting here
is the common reproduction: AdamW lr 6e-4, b2 0.95, weight decay 0.1, 2000 warmup steps, cosine
decay to 6e-5, clipping at 1.0.
"""
from ml_collections import ConfigDict

from plmjax.data import default_data_config
from plmjax.objectives import default_objective_config
from plmjax.train.config import mesh_section, model_section, optimizer_section, train_section

SIZES = ("tiny", "base", "medium", "large", "xl")
_SHAPES = dict(base=(768, 12, 12), medium=(1024, 24, 16), large=(1280, 36, 20), xl=(1600, 48, 25))


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"gpt2 config: size {arg!r} not in {SIZES}")
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "packed"
  c.data.special_tokens = "eos"
  c.objective = default_objective_config("clm")
  if arg == "tiny":
    c.model = model_section("gpt2", hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_len=32)
    c.data.seq_len = 32
    c.optimizer = optimizer_section(name="adamw", learning_rate=2e-3, warmup_steps=10, decay="cosine")
    c.train = train_section(steps=100, batch_size=16, log_every=10, checkpoint_every=50,
                            eval_every=50, eval_steps=4)
    return c
  hidden, layers, heads = _SHAPES[arg]
  c.model = model_section("gpt2", hidden_size=hidden, num_layers=layers, num_heads=heads,
                          mlp_dim=4 * hidden)
  c.data.seq_len = 1024
  c.data.vocab_size = 50257
  c.data.tokenizer_type = "bpe"
  c.optimizer = optimizer_section(name="adamw", learning_rate=6e-4, warmup_steps=2000, decay="cosine",
                                  end_lr=6e-5, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1)
  c.train = train_section(steps=600_000, batch_size=512, log_every=100, checkpoint_every=5000,
                          eval_every=5000, eval_steps=50, clip_norm=1.0)
  return c
