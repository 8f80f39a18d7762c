"""Shared pieces of tests/test_reliability_*.py: the tiny BERT run, subprocess helpers, checks."""
import contextlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "experiments/bert.py:tiny"
TINY = ["--config.model.hidden_size=16", "--config.model.mlp_dim=32", "--config.model.num_layers=1",
        "--config.train.batch_size=8", "--config.train.eval_steps=0", "--config.train.log_every=1"]


# XLA's persistent compilation cache: every run here compiles the same tiny step, which takes
# 20-40 s on 2 busy cores and ~1 s from the cache. Subprocesses get it through the environment,
# in-process tests through `compile_cache()` (a module fixture; it restores the settings after).
XLA_CACHE = os.path.join(tempfile.gettempdir(), "plmjax-tests-xla-cache")
ENV = {**os.environ, "JAX_COMPILATION_CACHE_DIR": XLA_CACHE,
       "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


@contextlib.contextmanager
def compile_cache():
  import jax
  old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update("jax_compilation_cache_dir", XLA_CACHE)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  try:
    yield
  finally:
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])


def tiny_config(*overrides):
  from plmjax.train.config import get_config
  return get_config(CONFIG, [*TINY, *overrides])


def train_cmd(workdir, *overrides):
  return [sys.executable, "-m", "plmjax.cli", "train", "--config", CONFIG, "--workdir", str(workdir),
          *TINY, *overrides]


def run(cmd, timeout=300, env=None, **kw):
  """-> CompletedProcess (text); a run past `timeout` fails the test (subprocess.TimeoutExpired)."""
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                        env={**ENV, **(env or {})}, **kw)


def popen(cmd, **kw):
  return subprocess.Popen(cmd, cwd=ROOT, env=ENV, text=True, **kw)


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


def checkpoint_steps(workdir) -> list:
  """The finalized checkpoint steps in WORKDIR/checkpoints (orbax renames a save in when done)."""
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def kill_after_first_checkpoint(cmd, workdir, timeout=300) -> None:
  """Starts `cmd`, SIGKILLs it as soon as its first checkpoint is on disk (asserting it was still
  running then)."""
  import signal
  import time
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  while not checkpoint_steps(workdir) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
