"""Issue 12, cases 4, 5 and 6 (eval): damaged checkpoints, reruns of finished runs and evaluation
of the wrong workdir (in-process, fp32 CPU), on a pretraining and a fine-tuning run (the tiny runs
of tests/reliability_common.py).

A reference run saves checkpoints 4 and 8 (the fine-tuning one also evaluates on dev at 4 and 8).
Each copy gets its checkpoint 8 damaged one way (an empty folder, an empty state/_METADATA, a
truncated array file, 400 flipped bytes in it), and the same config run on it again must say which
checkpoint it skipped and why, move it to damaged_checkpoints/, resume from 4, and log exactly the
reference curve. Flipped bytes load silently in orbax; the per-checkpoint sha256 digest
(plmjax/train/integrity.py) catches them. Rerunning the finished reference changes no line of
metrics.jsonl; a fine-tuning run's own outputs (params.safetensors, predictions/) that cannot be
written end it with one WriteError naming the file.

Digest cost, measured on this 2-core machine (shared) with `python -m tests.test_reliability_checkpoints`:
see the README ("What happens when..."); sha256 runs at ~1.5 GB/s per core.
"""
import os
import re
import shutil

import pytest

from plmjax.train.checkpoint import CheckpointError
from plmjax.train.guard import WriteError
from plmjax.train.loop import evaluate, train_and_evaluate
from tests.reliability_common import KINDS, compile_cache, read_metrics, steps, tiny_config


@pytest.fixture(autouse=True, scope="module")
def _cache():
  with compile_cache():
    yield

ARGS = {"pretrain": ["--config.train.steps=8", "--config.train.checkpoint_every=4"],
        "finetune": ["--config.train.steps=8", "--config.train.checkpoint_every=4",
                     "--config.train.eval_every=4", "--config.train.keep_checkpoints=2"]}


def config(kind, *overrides):
  return tiny_config(*ARGS[kind], *overrides, kind=kind)


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


@pytest.fixture(scope="module", params=KINDS)
def reference(request, tmp_path_factory):
  """(kind, workdir of the finished reference run)."""
  ref = str(tmp_path_factory.mktemp(f"ref_{request.param}"))
  train_and_evaluate(config(request.param), ref)
  assert steps(ref) == [4, 8]
  return request.param, ref


def copy_of(reference, tmp_path):
  work = str(tmp_path / "w")
  shutil.copytree(reference[1], work)
  return work


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_checkpoint_falls_back_and_continues_the_curve(reference, tmp_path, capsys, damage):
  kind, ref = reference
  work = copy_of(reference, tmp_path)
  hurt, reason = DAMAGE[damage]
  hurt(os.path.join(work, "checkpoints", "8"))
  capsys.readouterr()
  train_and_evaluate(config(kind), work)
  out = capsys.readouterr().out
  assert "checkpoint 8 in " in out and "skipped" in out and reason in out, out
  assert "resumed at step 4" in out
  assert len(os.listdir(os.path.join(work, "damaged_checkpoints"))) == 1
  assert steps(work) == [4, 8]
  assert read_metrics(work) == read_metrics(ref)
  if kind == "finetune":         # the dev line of step 4, the resume step, is kept; 8 written again
    assert [r["step"] for r in read_metrics(work) if "split" in r] == [4, 8]


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(reference, tmp_path):
  kind, ref = reference
  work = copy_of(reference, tmp_path)
  flip_bytes(os.path.join(work, "checkpoints", "8"))
  empty_metadata(os.path.join(work, "checkpoints", "4"))
  with pytest.raises(CheckpointError, match=r"no checkpoint in .* can be resumed: 8 \(.*sha256.*; 4 \("):
    train_and_evaluate(config(kind), work)
  assert read_metrics(work) == read_metrics(ref)     # the log is untouched


def test_rerunning_a_finished_run_changes_no_line(reference, tmp_path, capsys):
  kind, ref = reference
  work = copy_of(reference, tmp_path)
  capsys.readouterr()
  train_and_evaluate(config(kind), work)
  assert "resumed at step 8" in capsys.readouterr().out
  assert read_metrics(work) == read_metrics(ref) and steps(work) == [4, 8]
  assert not os.path.exists(os.path.join(work, "damaged_checkpoints"))
  if kind == "finetune":                   # the same outputs, written again
    for name in ("eval.json", "params.safetensors"):
      with open(os.path.join(ref, name), "rb") as a, open(os.path.join(work, name), "rb") as b:
        assert a.read() == b.read(), name


@pytest.mark.parametrize("reference", ["finetune"], indirect=True)
def test_finetune_outputs_that_cannot_be_written_are_one_write_error(reference, tmp_path):
  """params.safetensors (written at the end of training) and predictions/SST-2.tsv (`plmjax eval`)
  replaced by folders: each write fails with one WriteError naming the file (exit status 74 in the
  CLI) and the last complete checkpoint; nothing else changes."""
  _, ref = reference
  work = copy_of(reference, tmp_path)
  params = os.path.join(work, "params.safetensors")
  os.remove(params)
  os.mkdir(params)
  with pytest.raises(WriteError, match=re.escape(f"writing {params} failed: Is a directory; the last "
                                                 f"complete checkpoint is step 8 ({work}/checkpoints/8)")):
    train_and_evaluate(config("finetune"), work)
  assert read_metrics(work) == read_metrics(ref) and steps(work) == [4, 8]
  table = os.path.join(work, "predictions", "SST-2.tsv")
  os.makedirs(table)
  with pytest.raises(WriteError, match=re.escape(f"writing {table} failed: Is a directory; the last "
                                                 "complete checkpoint is step 8")):
    evaluate(config("finetune"), work)
  assert os.listdir(os.path.join(work, "predictions")) == ["SST-2.tsv"]     # no partial file left


def test_eval_of_a_missing_or_empty_workdir_is_an_error_that_creates_nothing(tmp_path):
  for work in (tmp_path / "typo", tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*checkpoints"):
      evaluate(tiny_config(), str(work))
  assert not (tmp_path / "typo").exists() and not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("reference", ["pretrain"], indirect=True)
def test_eval_with_another_models_config_names_the_mismatch(reference):
  from plmjax.train.config import get_config
  _, ref = reference
  gpt = get_config("experiments/gpt2.py:tiny", ["--config.train.eval_steps=1"])
  with pytest.raises(CheckpointError, match=r"does not fit this config \(it was saved by "
                     r"model.name='bert'.*param mismatches, e.g. missing"):
    evaluate(gpt, ref)
  m = evaluate(tiny_config("--config.train.eval_steps=1"), ref)
  assert m["step"] == 8
