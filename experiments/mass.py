"""MASS (Song et al., 2019): masked sequence-to-sequence pre-training of an encoder-decoder.

The encoder reads a sentence with one contiguous fragment of k = 50 % of its tokens masked; the
decoder, fed the fragment shifted right (a [MASK] first) at the fragment's own positions, predicts
it (plmjax/objectives/mass.py; model plmjax/models/seq2seq.py). The fragment starts at the
sentence start 20 % of the time, ends at its end 20 %, and is placed uniformly otherwise, as in the
MASS code. `objective.span_tokens=1` gives BERT's masked LM (one token), `objective.mask_ratio=1.0`
a causal LM (k = m): the two ends the paper discusses.

Run (tiny: CPU, about a minute):

    plmjax train --config experiments/mass.py:tiny --workdir /tmp/mass_tiny
    plmjax train --config experiments/mass.py:tiny --workdir /tmp/mass_wt2 \\
        --config.data.path=../shared/data/wikitext-2

`base`: the paper's English model (6 + 6 layers, H=1024, 16 heads, as XLM), monolingual streams of
up to 256 tokens, Adam (lr 1e-4, b2 0.98, inverse-sqrt decay after 4k warmup), dropout 0.1; the
paper trains on WMT News Crawl with a 60k BPE vocabulary shared by the two languages.
"""
from ml_collections import ConfigDict

from plmjax.data import default_data_config
from plmjax.objectives import default_objective_config
from plmjax.train.config import mesh_section, model_section, optimizer_section, train_section

SIZES = ("tiny", "base")


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"mass config: size {arg!r} not in {SIZES}")
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "packed"
  c.data.special_tokens = "none"             # plain token streams; the decoder starts from [MASK]
  c.objective = default_objective_config("mass")
  # CPU-sized; no dropout, 1-step warmup and batch 64 so that 80 steps show learning
  # (tests/test_masking_configs_learn.py)
  if arg == "tiny":
    c.model = model_section("mass", hidden_size=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                            dropout_rate=0.0, attention_dropout_rate=0.0,
                            mlp_dim=128, max_len=32)
    c.data.seq_len = 32
    c.optimizer = optimizer_section(name="adamw", learning_rate=3e-3, warmup_steps=1)
    c.train = train_section(steps=100, batch_size=64, log_every=10, checkpoint_every=50,
                            eval_every=50, eval_steps=4)
    return c
  c.model = model_section("mass")
  c.data.seq_len = 256
  c.data.vocab_size = 60000
  c.data.tokenizer_type = "bpe"
  c.optimizer = optimizer_section(name="adamw", learning_rate=1e-4, warmup_steps=4000,
                                  decay="inverse_sqrt", b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.0)
  c.train = train_section(steps=500_000, batch_size=256, log_every=100, checkpoint_every=10_000,
                          eval_every=10_000, eval_steps=50, clip_norm=0.0)
  return c
