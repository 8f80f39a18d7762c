"""Shared pieces of tests/test_reliability_*.py: the tiny runs, subprocess helpers, checks.

Each reliability case runs on two kinds of run (`KINDS`) through the one engine:
- "pretrain": tiny BERT (experiments/bert.py:tiny, 1 layer, width 16) on the synthetic corpus;
- "finetune": experiments/finetune.py:sst2 on a synthetic SST-2-format task (`finetune_task_dir`:
  48 train / 16 dev / 8 test rows of a few dozen words, its own WordPiece vocab.txt), a randomly
  initialised 1-layer BERT encoder of width 16, max_len 16.
"""
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


KINDS = ("pretrain", "finetune")
FT_CONFIG = "experiments/finetune.py:sst2"
FT_TASK = os.path.join(tempfile.gettempdir(), "plmjax-tests-ft-task-v1")
POSITIVE, NEGATIVE = ("good", "great", "fine", "lovely", "superb"), ("bad", "awful", "poor", "dull", "weak")
FILLER = ("the", "a", "movie", "film", "plot", "was", "very", "quite", "and", "story", "acting", "it")


def finetune_task_dir() -> str:
  """A synthetic SST-2-format task (train.tsv, dev.tsv, test.tsv) with a WordPiece vocab.txt, made
  once per machine under the temp folder (label 1 iff a positive word appears); -> its folder."""
  if os.path.isfile(os.path.join(FT_TASK, "vocab.txt")):
    return FT_TASK
  rng = np.random.default_rng(0)

  def sentence():
    label = int(rng.integers(2))
    words = list(rng.choice(FILLER, size=int(rng.integers(3, 8))))
    words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(POSITIVE if label else NEGATIVE)))
    return " ".join(words), label
  tmp = tempfile.mkdtemp(dir=os.path.dirname(FT_TASK))
  for name, n in (("train", 48), ("dev", 16)):
    with open(os.path.join(tmp, f"{name}.tsv"), "w") as f:
      f.write("sentence\tlabel\n" + "".join("%s\t%d\n" % sentence() for _ in range(n)))
  with open(os.path.join(tmp, "test.tsv"), "w") as f:
    f.write("index\tsentence\n" + "".join(f"{i}\t{sentence()[0]}\n" for i in range(8)))
  with open(os.path.join(tmp, "vocab.txt"), "w") as f:
    f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER]) + "\n")
  try:
    os.rename(tmp, FT_TASK)
  except OSError:                   # another test process made it first
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
  return FT_TASK


def ft_tiny() -> list:
  d = finetune_task_dir()
  arch = "{'hidden_size': 16, 'num_layers': 1, 'num_heads': 2, 'mlp_dim': 32, 'max_len': 16}"
  return [f"--config.data.dir={d}", f"--config.data.tokenizer={d}", f"--config.model.arch={arch}",
          "--config.data.max_len=16", "--config.data.buckets=(16,)", "--config.train.batch_size=8",
          "--config.train.eval_batch_size=16", "--config.train.log_every=1"]


def tiny_config(*overrides, kind="pretrain"):
  if kind == "finetune":
    from plmjax.finetune.main import load
    return load(FT_CONFIG, [*ft_tiny(), *overrides])
  from plmjax.train.config import get_config
  return get_config(CONFIG, [*TINY, *overrides])


def train_cmd(workdir, *overrides, kind="pretrain"):
  """`plmjax train` (pretrain) or `plmjax finetune` (finetune) of the tiny run on WORKDIR."""
  if kind == "finetune":
    return [sys.executable, "-m", "plmjax.cli", "finetune", "--config", FT_CONFIG, "--workdir",
            str(workdir), *ft_tiny(), *overrides]
  return [sys.executable, "-m", "plmjax.cli", "train", "--config", CONFIG, "--workdir", str(workdir),
          *TINY, *overrides]


def command_of(kind: str) -> str:
  """The CLI command a kind runs (its error lines start "plmjax <command>: ")."""
  return "finetune" if kind == "finetune" else "train"


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
  proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  while not checkpoint_steps(workdir) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
