"""Shared pieces of tests/test_reliability_*.py: the tiny BERT run, subprocess helpers, checks."""
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "experiments/bert.py:tiny"
TINY = ["--config.model.hidden_size=16", "--config.model.mlp_dim=32", "--config.model.num_layers=1",
        "--config.train.batch_size=8", "--config.train.eval_steps=0", "--config.train.log_every=1"]


def tiny_config(*overrides):
  from plmjax.train.config import get_config
  return get_config(CONFIG, [*TINY, *overrides])


def train_cmd(workdir, *overrides):
  return [sys.executable, "-m", "plmjax.cli", "train", "--config", CONFIG, "--workdir", str(workdir),
          *TINY, *overrides]


def run(cmd, timeout=300, **kw):
  """-> CompletedProcess (text); a run past `timeout` fails the test (subprocess.TimeoutExpired)."""
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def last_line(text: str) -> str:
  lines = [l for l in text.strip().splitlines() if l.strip()]
  return lines[-1] if lines else ""


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(l).items() if k != "tokens_per_sec"} for l in f]


def steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def restored_state(workdir, step):
  """The saved TrainState tree of WORKDIR/checkpoints/<step> (host arrays), via orbax directly."""
  import orbax.checkpoint as ocp
  return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))


def all_finite(tree) -> bool:
  import jax
  return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(x).dtype, np.inexact))
