"""SpanBERT (Joshi et al., 2020): mask contiguous spans, predict them also from their boundaries.

    masking    spans of whole words, length ~ Geometric(0.2) clipped at 10 words (mean 3.8), 15 %
               of the tokens, 80/10/10 per span (plmjax/objectives/masking.py, unit "span")
    loss       MLM + span boundary objective: each span token predicted again from the encoder
               outputs at the span's two boundary tokens and its offset (plmjax/objectives/sbo.py)
    data       single full-length segments, packed across documents, no NSP (the paper finds
               single-sequence training better than BERT's pairs + NSP)
    model      BERT + the SBO head (`model.sbo_head`; `model.sbo_max_offset` must equal
               `objective.sbo_max_offset`, the rows of the offset table)

Run (tiny: CPU, about a minute):

    plmjax train --config experiments/spanbert.py:tiny --workdir /tmp/spanbert_tiny
    plmjax train --config experiments/spanbert.py:tiny --workdir /tmp/spanbert_wt2 \\
        --config.data.path=../shared/data/wikitext-2

`base` / `large`: the paper's setting: sequences of 512 tokens, batch 256, 2.4M steps, AdamW (lr 1e-4,
eps 1e-8, weight decay 0.01, warmup 10k, linear decay), dropout 0.1, cased WordPiece vocabulary of
BERT; 88 target slots per row (0.15 * 512 = 77 plus headroom for the span crossing the budget).
"""
from ml_collections import ConfigDict

from plmjax.data import default_data_config
from plmjax.objectives import default_objective_config
from plmjax.train.config import mesh_section, model_section, optimizer_section, train_section

SIZES = ("tiny", "base", "large")


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"spanbert config: size {arg!r} not in {SIZES}")
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "packed"
  c.data.special_tokens = "cls_sep"
  c.objective = default_objective_config("span_mlm_sbo")
  # CPU-sized; no dropout, 1-step warmup, width 128 and batch 256 so that 80 steps show learning
  # (tests/test_masking_configs_learn.py; at width 64 / batch 64 the loss fell 8-14 %, not 20 %)
  if arg == "tiny":
    c.model = model_section("spanbert", hidden_size=128, num_layers=2, num_heads=4, mlp_dim=256,
                            dropout_rate=0.0, attention_dropout_rate=0.0, max_len=32,
                            sbo_max_offset=10)
    c.data.seq_len = 32
    c.objective.max_predictions = 14         # 0.15 * 32 = 5 plus headroom for a 10-word span
    c.objective.sbo_max_offset = 10
    c.optimizer = optimizer_section(name="adamw", learning_rate=3e-3, warmup_steps=1)
    c.train = train_section(steps=100, batch_size=256, log_every=10, checkpoint_every=50,
                            eval_every=50, eval_steps=4)
    return c
  big = arg == "large"
  c.model = model_section("spanbert", **(dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096)
                                         if big else {}), sbo_max_offset=20)
  c.data.seq_len = 512
  c.data.vocab_size = 28996
  c.objective.max_predictions = 88
  c.objective.sbo_max_offset = 20
  c.optimizer = optimizer_section(name="adamw", learning_rate=1e-4, warmup_steps=10_000, decay="linear",
                                  b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)
  c.train = train_section(steps=2_400_000, batch_size=256, log_every=100, checkpoint_every=10_000,
                          eval_every=10_000, eval_steps=50, clip_norm=1.0)
  return c
