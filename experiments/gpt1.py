"""GPT-1 (Radford et al., 2018): a 12-layer post-LN Transformer decoder trained as a causal LM.

Run (tiny: CPU, about a minute):

    plmjax train --config experiments/gpt1.py:tiny --workdir /tmp/gpt1_tiny

`base` is the paper's setting: L=12, H=768, A=12, FFN 3072, GELU, contiguous sequences of 512
tokens, batch 64, 100 epochs of BooksCorpus (~ 100k steps here), Adam lr 2.5e-4 with a 2000-step
linear warmup and cosine annealing to 0, weight decay 0.01 on non-bias / non-gain weights,
dropout 0.1, BPE of 40k merges.
"""
from ml_collections import ConfigDict

from plmjax.data import default_data_config
from plmjax.objectives import default_objective_config
from plmjax.train.config import mesh_section, model_section, optimizer_section, train_section

SIZES = ("tiny", "base")


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"gpt1 config: size {arg!r} not in {SIZES}")
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "packed"
  c.data.special_tokens = "bos_eos"
  c.objective = default_objective_config("clm")
  if arg == "tiny":
    c.model = model_section("gpt1", hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_len=32)
    c.data.seq_len = 32
    c.optimizer = optimizer_section(name="adamw", learning_rate=2e-3, warmup_steps=10, decay="cosine")
    c.train = train_section(steps=100, batch_size=16, log_every=10, checkpoint_every=50,
                            eval_every=50, eval_steps=4)
    return c
  c.model = model_section("gpt1")
  c.data.seq_len = 512
  c.data.vocab_size = 40478
  c.data.tokenizer_type = "bpe"
  c.optimizer = optimizer_section(name="adamw", learning_rate=2.5e-4, warmup_steps=2000,
                                  decay="cosine", b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)
  c.train = train_section(steps=100_000, batch_size=64, log_every=100, checkpoint_every=5000,
                          eval_every=5000, eval_steps=50, clip_norm=1.0)
  return c
