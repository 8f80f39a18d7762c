"""ERNIE 1.0 (Sun et al., 2019a): BERT with knowledge masking in three stages.

ERNIE 1.0 is a configuration of BERT: the same encoder, masked LM and next-sentence prediction,
with a curriculum over the masking unit (plmjax/objectives/staged.py):

    stage 1  basic-level masking    subword tokens, as BERT                 steps [0, s1)
    stage 2  phrase-level masking   all tokens of a phrase (chunk)          steps [s1, s2)
    stage 3  entity-level masking   all tokens of a named entity            steps [s2, ...)

Tokens outside any phrase / entity are masked as whole words. The stage is chosen on device from
the train step (lax.switch inside the jitted step), so one run goes through all three.

Phrases and entities come with the data as `phrase_ids` / `entity_ids`: the built-in synthetic
corpus is annotated (the `tiny` setting), and CoNLL-2003's chunk and NER columns give them for
real text (`conll`: data.path="conll:../shared/data/conll2003", plmjax/data/conll.py). The paper
uses a Chinese lexicon / NER over Wikipedia, Baike, news and Tieba; it does not publish its stage
lengths, so the stages here split training into thirds.

Run (tiny: CPU, about a minute):

    plmjax train --config experiments/ernie1.py:tiny --workdir /tmp/ernie1_tiny
    plmjax train --config experiments/ernie1.py:conll --workdir /tmp/ernie1_conll

`base`: BERT-base (L=12, H=768, A=12, vocabulary 18k Chinese characters), length 512, batch 256,
lr 1e-4 with 10k warmup and linear decay; stages at 1/3 and 2/3 of 1M steps.
"""
from ml_collections import ConfigDict

from plmjax.data import default_data_config
from plmjax.objectives import default_objective_config
from plmjax.train.config import mesh_section, model_section, optimizer_section, train_section

SIZES = ("tiny", "conll", "base")
CONLL = "conll:../shared/data/conll2003"


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"ernie1 config: size {arg!r} not in {SIZES}")
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "pairs"
  c.data.special_tokens = "cls_sep"
  c.objective = default_objective_config("staged_mlm")
  c.objective.nsp_weight = 1.0
  # CPU-sized; no dropout, 1-step warmup, width 128 and batch 256 (tiny) so that 80 steps show learning
  # (tests/test_masking_configs_learn.py; at width 64 / batch 64 the loss fell 8-14 %, not 20 %)
  if arg in ("tiny", "conll"):
    steps = 100 if arg == "tiny" else 600
    width = 128 if arg == "tiny" else 64
    c.model = model_section("ernie1", hidden_size=width, num_layers=2, num_heads=4, mlp_dim=2 * width,
                            dropout_rate=0.0, attention_dropout_rate=0.0,
                            max_len=32 if arg == "tiny" else 64)
    c.data.seq_len = 32 if arg == "tiny" else 64
    c.objective.max_predictions = 8 if arg == "tiny" else 14
    c.objective.stage_steps = (steps // 3, 2 * steps // 3)
    if arg == "conll":
      c.data.path = CONLL
      c.data.vocab_size = 4000
    c.optimizer = optimizer_section(name="adamw", learning_rate=3e-3, warmup_steps=1)
    c.train = train_section(steps=steps, batch_size=256 if arg == "tiny" else 64, log_every=10, checkpoint_every=50,
                            eval_every=50, eval_steps=4)
    return c
  c.model = model_section("ernie1")
  c.data.seq_len = 512
  c.data.vocab_size = 18000
  c.objective.max_predictions = 88
  c.objective.stage_steps = (333_333, 666_667)
  c.optimizer = optimizer_section(name="adamw", learning_rate=1e-4, warmup_steps=10_000, decay="linear",
                                  weight_decay=0.01)
  c.train = train_section(steps=1_000_000, batch_size=256, log_every=100, checkpoint_every=10_000,
                          eval_every=10_000, eval_steps=50, clip_norm=1.0)
  return c
