"""BERT (Devlin et al., 2019): post-LN encoder, masked LM (15 %, 80/10/10) + next-sentence prediction.

Run (demo / tiny: CPU, about a minute; the built-in synthetic corpus when data.path is ""):

    plmjax train --config experiments/bert.py:demo --workdir runs/bert_demo
    plmjax predict runs/bert_demo fill-mask "..."        # the command the run prints at its end
    plmjax train --config experiments/bert.py:tiny --workdir /tmp/bert_tiny
    plmjax train --config experiments/bert.py:tiny --workdir /tmp/bert_wt2 \
        --config.data.path=../shared/data/wikitext-2

`demo` (README's first command) is sized to show context being learned in about a minute on a
laptop CPU: width 128 (2 layers, 4 heads), batch 128, no dropout, AdamW at 3e-3 with a 1-step
warmup (the issue-5 width-128 settings), 150 steps; its masked-LM loss ends clearly below the
built-in corpus' unigram entropy (4.63 nats/token). `tiny` (width 32) is the tests' size: in 100
steps it learns the word frequencies only.

`base` is the paper's phase-1 setting: BERT-base (L=12, H=768, A=12), sequence length 128,
batch 256, 1M steps, Adam without bias correction (lr 1e-4, warmup 10k, linear decay, weight
decay 0.01), max 20 predictions per sequence, NSP pairs. (The paper trains the last 10 % of
steps at length 512 with 80 predictions: `--config.data.seq_len=512
--config.objective.max_predictions=80`.)
"""
from ml_collections import ConfigDict

from plmjax.data import default_data_config
from plmjax.objectives import default_objective_config
from plmjax.train.config import mesh_section, model_section, optimizer_section, train_section

SIZES = ("tiny", "demo", "base", "large")


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"bert config: size {arg!r} not in {SIZES}")
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "pairs"
  c.data.special_tokens = "cls_sep"
  c.objective = default_objective_config("mlm_nsp")
  if arg == "tiny":
    c.model = model_section("bert", hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_len=32)
    c.data.seq_len = 32
    c.objective.max_predictions = 5
    c.optimizer = optimizer_section(name="bert_adam", learning_rate=3e-3, warmup_steps=10)
    c.train = train_section(steps=100, batch_size=32, log_every=10, checkpoint_every=50,
                            eval_every=50, eval_steps=4)
    return c
  if arg == "demo":
    c.model = model_section("bert", hidden_size=128, num_layers=2, num_heads=4, mlp_dim=256,
                            dropout_rate=0.0, attention_dropout_rate=0.0, max_len=32)
    c.data.seq_len = 32
    c.objective.max_predictions = 5
    c.optimizer = optimizer_section(name="adamw", learning_rate=3e-3, warmup_steps=1)
    c.train = train_section(steps=150, batch_size=128, log_every=10, checkpoint_every=75,
                            eval_every=75, eval_steps=4)
    return c
  big = arg == "large"
  c.model = model_section("bert", **(dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096)
                                     if big else {}))
  c.data.seq_len = 128
  c.data.vocab_size = 30522
  c.objective.max_predictions = 20
  c.optimizer = optimizer_section(name="bert_adam", learning_rate=1e-4, warmup_steps=10_000,
                                  decay="linear", weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6)
  c.train = train_section(steps=1_000_000, batch_size=256, log_every=100, checkpoint_every=10_000,
                          eval_every=10_000, eval_steps=50, clip_norm=1.0)
  return c
