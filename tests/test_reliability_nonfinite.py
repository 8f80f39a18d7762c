"""Issue 12, case 2: non-finite steps (in-process, fp32 CPU), on a pretraining and a fine-tuning
run (the tiny runs of tests/reliability_common.py).

learning_rate=1e4 with 10 warmup steps blows the loss up within a few steps (step 5 here). The train
step's on-device finite flag stops the run at that step ("stop", the default) before its state
can be saved; the checkpoints that exist are all finite, and running the same config again resumes
the last good one and stops at the same step; checkpoints that do hold NaN (saved with the checks
switched off) are skipped on resume. With train.nonfinite="skip" the run finishes, its
params stay finite and the metrics count the skipped steps; before the first bad step both modes
log the same curve (the flag changes no finite update).
"""
import re

import numpy as np
import pytest

from plmjax.train.guard import NonFiniteError
from plmjax.train.loop import train_and_evaluate
from tests.reliability_common import (KINDS, compile_cache, all_finite, read_metrics, restored_state,
                                      steps, tiny_config)


@pytest.fixture(autouse=True, scope="module")
def _cache():
  with compile_cache():
    yield

BLOWUP = ["--config.optimizer.learning_rate=1e4", "--config.optimizer.warmup_steps=10",
          "--config.train.steps=12", "--config.train.log_every=20", "--config.train.checkpoint_every=1"]


@pytest.mark.parametrize("kind", KINDS)
def test_nonfinite_step_stops_the_run_unsaved_and_a_rerun_stops_at_the_same_step(tmp_path, capsys, kind):
  cfg = tiny_config(*BLOWUP, kind=kind)
  with pytest.raises(NonFiniteError,
                     match=r"non-finite training step \d+ \(loss \S+, grad_norm (nan|inf)\)") as first:
    train_and_evaluate(cfg, str(tmp_path))
  bad = int(re.search(r"step (\d+)", str(first.value)).group(1))
  assert f"the last complete checkpoint is step {bad} " in str(first.value)
  saved = steps(tmp_path)
  assert 1 < bad < 12 and saved and max(saved) == bad, (bad, saved)   # checkpoint_every=1
  for s in saved:
    assert all_finite(restored_state(tmp_path, s)), s
  with pytest.raises(NonFiniteError) as again:
    train_and_evaluate(cfg, str(tmp_path))
  assert str(again.value) == str(first.value)
  assert f"resumed at step {bad}" in capsys.readouterr().out
  assert steps(tmp_path) == saved


@pytest.mark.parametrize("kind", ["finetune"])     # Checkpointer.restore_valid: the same for both
def test_a_saved_nonfinite_state_is_never_resumed(tmp_path, capsys, monkeypatch, kind):
  """Checkpoints holding NaN (saved here with the finite checks switched off, as an older version
  would have) are skipped on resume, each named, and moved away; the run resumes the newest finite
  one and stops at the step that blew up."""
  from plmjax.train import guard, loop
  cfg = tiny_config(*BLOWUP, "--config.train.checkpoint_every=4", "--config.train.keep_checkpoints=3",
                    kind=kind)
  with monkeypatch.context() as m:
    m.setattr(guard.FiniteCheck, "flush", lambda self: setattr(self, "_pending", None))
    m.setattr(loop, "_check_finite", lambda *a: None)
    train_and_evaluate(cfg, str(tmp_path))
  assert steps(tmp_path) == [4, 8, 12]
  finite = [s for s in steps(tmp_path) if all_finite(restored_state(tmp_path, s))]
  assert finite == [4], finite                # the loss blows up at step 5 or so
  capsys.readouterr()
  with pytest.raises(NonFiniteError, match="the last complete checkpoint is step 4 "):
    train_and_evaluate(cfg, str(tmp_path))
  out = capsys.readouterr().out
  assert "resumed at step 4" in out
  for s in (12, 8):
    assert f"checkpoint {s} in {tmp_path}/checkpoints: skipped: non-finite values in" in out, out
  assert steps(tmp_path) == [4]


@pytest.mark.parametrize("kind", KINDS)
def test_skip_mode_leaves_bad_updates_out_and_counts_them(tmp_path, kind):
  cfg = tiny_config(*BLOWUP, "--config.train.nonfinite=skip", "--config.train.log_every=1", kind=kind)
  train_and_evaluate(cfg, str(tmp_path))
  recs = [r for r in read_metrics(tmp_path) if "split" not in r]     # train lines
  skipped = [r["skipped_steps"] for r in recs]
  assert skipped == sorted(skipped) and skipped[-1] >= 1, skipped
  bad = [r["step"] for r in recs if not np.isfinite(r["loss"]) or not np.isfinite(r["grad_norm"])]
  assert bad and 1 < bad[0] < 12, bad
  assert all_finite(restored_state(tmp_path, 12))
  assert all_finite(restored_state(tmp_path, 12)["params"])
  # the flag is only read: up to the first bad step, "stop" logs the same curve, bit for bit
  with pytest.raises(NonFiniteError):
    train_and_evaluate(tiny_config(*BLOWUP, "--config.train.log_every=1", kind=kind), str(tmp_path / "stop"))
  first = min(r["step"] for r in recs if r["skipped_steps"])
  curve = lambda rs: [(r["step"], r["loss"], r["grad_norm"]) for r in rs if r["step"] < first]  # noqa: E731
  assert len(curve(recs)) == first and curve(read_metrics(tmp_path / "stop")) == curve(recs)

