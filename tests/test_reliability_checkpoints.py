"""Issue 12, cases 4 and 6 (eval): damaged checkpoints and evaluation of the wrong workdir
(tiny BERT, in-process, fp32 CPU).

A reference run saves checkpoints 4 and 8. Each copy gets its checkpoint 8 damaged one way (an
empty folder, an empty state/_METADATA, a truncated array file, 400 flipped bytes in it), and the
same config run on it again must say which checkpoint it skipped and why, move it to
damaged_checkpoints/, resume from 4, and log exactly the reference curve. Flipped bytes load
silently in orbax; the per-checkpoint sha256 digest (plmjax/train/integrity.py) catches them.

Digest cost, measured on this 2-core machine (shared) with `python -m tests.test_reliability_checkpoints`:
see the README ("What happens when..."); sha256 runs at ~1.5 GB/s per core.
"""
import os
import shutil

import pytest

from plmjax.train.checkpoint import CheckpointError
from plmjax.train.loop import evaluate, train_and_evaluate
from tests.reliability_common import compile_cache, read_metrics, steps, tiny_config


@pytest.fixture(autouse=True, scope="module")
def _cache():
  with compile_cache():
    yield

ARGS = ["--config.train.steps=8", "--config.train.checkpoint_every=4"]


def largest_state_file(step_dir):
  files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs]
  return max(files, key=os.path.getsize)


def empty_folder(step_dir):
  shutil.rmtree(step_dir)
  os.mkdir(step_dir)


def empty_metadata(step_dir):
  open(os.path.join(step_dir, "state", "_METADATA"), "w").close()


def truncate(step_dir):
  path = largest_state_file(step_dir)
  os.truncate(path, os.path.getsize(path) // 2)


def flip_bytes(step_dir):
  path = largest_state_file(step_dir)
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    mid = len(data) // 2 - 200
    assert len(data) > 1000
    for i in range(mid, mid + 400):
      data[i] ^= 0xFF
    f.seek(0)
    f.write(data)


DAMAGE = {"empty folder": (empty_folder, "no state/ folder"),
          "empty _METADATA": (empty_metadata, "_METADATA has 0 bytes"),
          "truncated array file": (truncate, "bytes, "),
          "400 flipped bytes": (flip_bytes, "does not match its sha256 digest")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  ref = str(tmp_path_factory.mktemp("ref"))
  train_and_evaluate(tiny_config(*ARGS), ref)
  assert steps(ref) == [4, 8]
  return ref


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_checkpoint_falls_back_and_continues_the_curve(reference, tmp_path, capsys, damage):
  work = str(tmp_path / "w")
  shutil.copytree(reference, work)
  hurt, reason = DAMAGE[damage]
  hurt(os.path.join(work, "checkpoints", "8"))
  capsys.readouterr()
  train_and_evaluate(tiny_config(*ARGS), work)
  out = capsys.readouterr().out
  assert "checkpoint 8 in " in out and "skipped" in out and reason in out, out
  assert "resumed at step 4" in out
  assert len(os.listdir(os.path.join(work, "damaged_checkpoints"))) == 1
  assert steps(work) == [4, 8]
  assert read_metrics(work) == read_metrics(reference)


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(reference, tmp_path):
  work = str(tmp_path / "w")
  shutil.copytree(reference, work)
  flip_bytes(os.path.join(work, "checkpoints", "8"))
  empty_metadata(os.path.join(work, "checkpoints", "4"))
  with pytest.raises(CheckpointError, match=r"no checkpoint in .* can be resumed: 8 \(.*sha256.*; 4 \("):
    train_and_evaluate(tiny_config(*ARGS), work)
  assert len(read_metrics(work)) == len(read_metrics(reference))     # the log is untouched


def test_eval_of_a_missing_or_empty_workdir_is_an_error_that_creates_nothing(tmp_path):
  for work in (tmp_path / "typo", tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*checkpoints"):
      evaluate(tiny_config(), str(work))
  assert not (tmp_path / "typo").exists() and not (tmp_path / "checkpoints").exists()


def test_eval_with_another_models_config_names_the_mismatch(reference):
  from plmjax.train.config import get_config
  gpt = get_config("experiments/gpt2.py:tiny", ["--config.train.eval_steps=1"])
  with pytest.raises(CheckpointError, match=r"does not fit this config \(it was saved by "
                     r"model.name='bert'.*param mismatches, e.g. missing"):
    evaluate(gpt, reference)
  m = evaluate(tiny_config("--config.train.eval_steps=1"), reference)
  assert m["step"] == 8
