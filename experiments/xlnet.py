"""XLNet (Yang et al., 2019): permutation language modelling with two-stream attention over a
Transformer-XL backbone (relative positions and segments, memory).

Run (tiny: CPU, a minute or two; real text with --config.data.path):

    plmjax train --config experiments/xlnet.py:tiny --workdir /tmp/xlnet_tiny
    plmjax train --config experiments/xlnet.py:tiny --workdir /tmp/xlnet_wt2 \
        --config.data.path=../shared/data/wikitext-2

The objective ("plm", plmjax/objectives/plm.py) samples on device, every step: n-gram span
targets (1..5 tokens, P(n) ∝ 1/n, `mask_alpha` = K context tokens per span token), exactly
`num_predict` targets per row, a factorisation order permuted within blocks of `perm_size`, and
the perm_mask / target_mapping the model consumes.

`large` is the paper's XLNet-Large pretraining (§3.1, appendix A): 24 layers, d 1024, 16 heads,
d_inner 4096, sequence 512, memory 384, reuse 256, K = 6
(num_predict 85 of 512), perm_size 256 (the code's default for local permutations), batch 8192,
500k steps, Adam lr 4e-4 with 40k warmup and linear decay, dropout 0.1, weight decay 0.01.
`base` is the same recipe at BERT-base size. Differences from the paper's pipeline: spans count
tokens, not words; sentence-pair inputs with [SEP]/[CLS] and segment ids are not built here (the
packed rows have one segment); the paper's bidirectional data (half of each batch reversed, read
with negated distances) is off: the model supports `bi_data`, the pipeline does not reverse rows.
Memory across optimizer steps: with `--config.data.mode=stream --config.model.mem_len=M` (row i
continues row i of the previous batch) the engine carries the memory in the train state, as for
Transformer-XL; the reference instead overlaps rows by `reuse_len` and caches those positions
(not built). `model.attn_type="uni"` adds causal content visibility (transformers' option).
"""
from ml_collections import ConfigDict

from plmjax.data import default_data_config
from plmjax.objectives import default_objective_config
from plmjax.train.config import mesh_section, model_section, optimizer_section, train_section

SIZES = ("tiny", "base", "large")


def objective_section(**overrides) -> ConfigDict:
  """The "plm" objective's keys (plmjax.objectives.plm.PermutationLM) with `overrides`."""
  c = default_objective_config("plm")
  for k, v in overrides.items():
    if k not in c:
      raise ValueError(f"objective (plm) has no key {k!r}; keys: {sorted(c.keys())}")
    c[k] = v
  return c


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"xlnet config: size {arg!r} not in {SIZES}")
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "packed"
  c.data.special_tokens = "none"
  if arg == "tiny":
    # 8 of 32 tokens predicted (1/K with K = 4): a tiny model needs the targets to learn quickly.
    c.model = model_section("xlnet", hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64,
                            dropout_rate=0.0, attention_dropout_rate=0.0)
    c.data.seq_len = 32
    c.objective = objective_section(num_predict=8, perm_size=16)
    c.optimizer = optimizer_section(name="adamw", learning_rate=5e-3, warmup_steps=10,
                                    decay="linear", weight_decay=0.01)
    c.train = train_section(steps=300, batch_size=16, log_every=10, checkpoint_every=100,
                            eval_every=100, eval_steps=4)
    return c
  big = arg == "large"
  shape = dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096) if big else \
      dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072)
  c.model = model_section("xlnet", **shape, mem_len=384, reuse_len=256, bi_data=False,
                          dropout_rate=0.1, attention_dropout_rate=0.1)
  c.data.seq_len = 512
  c.data.vocab_size = 32000
  c.objective = objective_section(num_predict=85, perm_size=256)
  c.optimizer = optimizer_section(name="adamw", learning_rate=4e-4, warmup_steps=40_000,
                                  decay="linear", weight_decay=0.01, eps=1e-6)
  c.train = train_section(steps=500_000, batch_size=8192 if big else 256, log_every=100,
                          checkpoint_every=10_000, eval_every=10_000, eval_steps=50, clip_norm=1.0)
  return c
