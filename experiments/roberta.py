"""RoBERTa (Liu et al., 2019): BERT's network, masked LM only (no NSP), dynamic masking, full-length
packed sequences, large batches, Adam with b2 = 0.98.

Dynamic masking needs no extra machinery: the objective draws the mask on device from each step's
key, so every visit of a sequence sees a new mask.

Run (tiny: CPU, about a minute):

    plmjax train --config experiments/roberta.py:tiny --workdir /tmp/roberta_tiny

`base` is the paper's RoBERTa-base setting: sequences of 512 tokens (FULL-SENTENCES packing),
batch 8k, 500k steps, AdamW (lr 6e-4, b2 0.98, eps 1e-6, weight decay 0.01, warmup 24k, linear
decay), byte-level BPE of 50k pieces.
"""
from ml_collections import ConfigDict

from plmjax.data import default_data_config
from plmjax.objectives import default_objective_config
from plmjax.train.config import mesh_section, model_section, optimizer_section, train_section

SIZES = ("tiny", "base", "large")


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"roberta config: size {arg!r} not in {SIZES}")
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "packed"
  c.data.special_tokens = "cls_sep"
  c.objective = default_objective_config("mlm")
  if arg == "tiny":
    # max_len leaves room for RoBERTa's position offset (positions start at pad_id + 1)
    c.model = model_section("roberta", hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_len=40)
    c.data.seq_len = 32
    c.objective.max_predictions = 5
    c.optimizer = optimizer_section(name="adamw", learning_rate=2e-3, warmup_steps=10, b2=0.98)
    c.train = train_section(steps=100, batch_size=32, log_every=10, checkpoint_every=50,
                            eval_every=50, eval_steps=4)
    return c
  big = arg == "large"
  c.model = model_section("roberta", **(dict(hidden_size=1024, num_layers=24, num_heads=16,
                                             mlp_dim=4096) if big else {}))
  c.data.seq_len = 512
  c.data.vocab_size = 50265
  c.data.tokenizer_type = "bpe"
  c.objective.max_predictions = 80
  c.optimizer = optimizer_section(name="adamw", learning_rate=4e-4 if big else 6e-4,
                                  warmup_steps=30_000 if big else 24_000, decay="linear",
                                  b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01)
  c.train = train_section(steps=500_000, batch_size=8192, log_every=100, checkpoint_every=10_000,
                          eval_every=10_000, eval_steps=50, clip_norm=0.0)
  return c
