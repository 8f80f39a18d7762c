"""Issue 12, cases 1, 3 and 6 (exit status): runs that must end, and end clearly
(`plmjax train` and `plmjax finetune` subprocesses on the tiny runs of tests/reliability_common.py,
each with a timeout).

- disk full: the workdir is a 1 MB tmpfs (a private mount namespace: `unshare -rm`, no privileges
  needed where user namespaces are allowed; where they are not, RLIMIT_FSIZE stands in for it:
  writes past 64 KB per file fail with EFBIG). The run ends within the timeout, exit status 74,
  with one last line naming the failed path and the last complete checkpoint, which restores.
- read-only: `chattr +i` on checkpoints/ mid-run (a real immutable folder, which stops root too;
  where chattr is unavailable the test is skipped and says so). Exit 74, naming the folder.
- two runs on one workdir: the second is refused (exit 1, naming the holder's pid); the first then
  gets SIGINT (pretraining) or SIGTERM (fine-tuning), saves and exits with 75 (EXIT_PREEMPTED), and
  the same command resumes from that save (and stops the same way at a later step).
- the watchdog: a main thread blocked after SIGTERM (or after a second one: at once), or in a
  metrics write past its deadline, still ends the process in bounded time (76 / 74) with one line
  saying what it was doing.
"""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from plmjax.train import guard
from plmjax.train import integrity
from tests.reliability_common import (KINDS, all_finite, command_of, last_line, popen, restored_state,
                                      run, steps, train_cmd)

LONG = ["--config.train.steps=100000", "--config.train.checkpoint_every=3",
        "--config.train.keep_checkpoints=3",   # (fine-tuning keeps 1): a 1 MB disk fills in a few saves
        "--config.train.io_timeout_s=30", "--config.train.stop_timeout_s=30"]


def _can_unshare() -> bool:
  try:
    return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                          capture_output=True, timeout=30).returncode == 0
  except (OSError, subprocess.TimeoutExpired):
    return False


FULL_DISK = """
set -u
mkdir -p "$MNT" && mount -t tmpfs -o size=1m tmpfs "$MNT" || exit 99
"$@"
rc=$?
cp -r "$MNT/w" "$OUT"
exit $rc
"""


@pytest.mark.parametrize("kind", KINDS)
def test_disk_full_ends_the_run_with_one_clear_error_and_an_intact_checkpoint(tmp_path, kind):
  out_dir, mnt = tmp_path / "copy", tmp_path / "mnt"
  cmd = train_cmd(mnt / "w", *LONG, kind=kind)
  t0 = time.time()
  if _can_unshare():
    proc = run(["unshare", "-rm", "bash", "-c", FULL_DISK, "bash", *cmd], timeout=400,
               env={"MNT": str(mnt), "OUT": str(out_dir)})
    work, reason = out_dir, "No space left on device"
  else:                                        # no mount namespace: a per-file size limit instead
    import resource

    def limit():
      signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
      resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
    proc = run(cmd, timeout=400, preexec_fn=limit)
    work, reason = mnt / "w", "File too large"
  elapsed = time.time() - t0
  assert proc.returncode == guard.EXIT_IO, proc.stderr[-3000:]
  line = last_line(proc.stderr)
  assert line.startswith(f"plmjax {command_of(kind)}: ") and reason in line and str(mnt / "w") in line, line
  assert "the last complete checkpoint is step" in line, line
  last = int(line.split("the last complete checkpoint is step ")[1].split()[0])
  assert last >= 3 and last in steps(work), (last, steps(work))
  problem, _ = integrity.check_files(str(work / "checkpoints" / str(last)))
  assert problem is None, problem
  assert all_finite(restored_state(work, last))
  assert elapsed < 400


def _chattr_works(path) -> bool:
  probe = os.path.join(path, "probe")
  os.makedirs(probe)
  try:
    if subprocess.run(["chattr", "+i", probe], capture_output=True).returncode:
      return False
    try:
      open(os.path.join(probe, "x"), "w").close()
      return False                                 # immutable does not stop us
    except OSError:
      return True
  except OSError:
    return False
  finally:
    subprocess.run(["chattr", "-i", probe], capture_output=True)
    shutil.rmtree(probe, ignore_errors=True)


@pytest.mark.parametrize("kind", KINDS)
def test_read_only_checkpoint_folder_ends_the_run_naming_it(tmp_path, kind):
  if not _chattr_works(str(tmp_path)):
    pytest.skip("chattr +i does not make a folder immutable here (not root, or no ext4/xfs)")
  work = tmp_path / "w"
  proc = popen(train_cmd(work, *LONG, kind=kind), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  ckpts = work / "checkpoints"
  try:
    deadline = time.time() + 300
    while not steps(work) and proc.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    assert steps(work), "no checkpoint before the deadline"
    subprocess.run(["chattr", "+i", str(ckpts)], check=True)
    _, err = proc.communicate(timeout=120)
  finally:
    subprocess.run(["chattr", "-i", str(ckpts)])
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == guard.EXIT_IO, err[-3000:]
  line = last_line(err)
  assert str(ckpts) in line and "Operation not permitted" in line, line
  assert "the last complete checkpoint is step" in line


def _logged(workdir, step) -> bool:
  """WORKDIR/metrics.jsonl has the train line of `step` (the loop runs, under its signal guard)."""
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      return any(ln.startswith(f'{{"step": {step}, ') and '"split"' not in ln for ln in f)
  except FileNotFoundError:
    return False


def _signalled(cmd, sig, ready, while_running=lambda proc: None):
  """Starts `cmd`, waits until `ready()`, calls `while_running(proc)`, sends `sig`; -> (proc, out, err)."""
  proc = popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    deadline = time.time() + 300
    while not ready() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    while_running(proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == guard.EXIT_PREEMPTED, err[-3000:]
  return proc, out, err


@pytest.mark.parametrize("kind,sig", [pytest.param("pretrain", signal.SIGINT, id="pretrain-SIGINT"),
                                      pytest.param("finetune", signal.SIGTERM, id="finetune-SIGTERM")])
def test_second_run_is_refused_and_a_signal_saves_with_the_preempted_status(tmp_path, kind, sig):
  cmd = train_cmd(tmp_path, *LONG, kind=kind)

  def refused(first):
    second = run(cmd, timeout=300)
    assert second.returncode == guard.EXIT_ERROR
    assert f"is in use by pid {first.pid} on host" in last_line(second.stderr), second.stderr[-2000:]
  _, _, err = _signalled(cmd, sig, lambda: steps(tmp_path), refused)
  line = last_line(err)
  assert line.startswith(f"plmjax {command_of(kind)}: {sig.name}: stopped at step"), line
  assert "the same command resumes" in line
  saved = steps(tmp_path)[-1]
  assert line.endswith(f"{tmp_path}/checkpoints/{saved}; the same command resumes"), line
  # the same command resumes from that save (and a signal stops it again)
  _, out, err = _signalled(cmd, sig, lambda: _logged(tmp_path, saved))
  assert f"resumed at step {saved}" in out
  assert int(last_line(err).split("stopped at step ")[1].split()[0]) > saved


WATCHDOG = textwrap.dedent("""
    import os, signal, sys, time
    from plmjax.train.guard import RunGuard, bounded_write
    with RunGuard(stop_timeout_s=1.0, describe=lambda: "the last complete checkpoint is step 7") as g:
      if sys.argv[1] in ("signal", "two signals"):
        with g.deadline(1000, "saving checkpoint 9"):
          os.kill(os.getpid(), signal.SIGTERM)
          if sys.argv[1] == "two signals":
            os.kill(os.getpid(), signal.SIGTERM)
          while True:
            time.sleep(0.01)          # blocked: never reads g.requested
      else:                           # a metrics write that hangs: metrics.jsonl is a FIFO, no reader
        from plmjax.train.loop import MetricsLog
        log = MetricsLog(sys.argv[2], writes=lambda what: bounded_write(what, g, 1.0, g.describe))
        os.mkfifo(log.path)
        log.write(0, {"loss": 1.0})
""")


@pytest.mark.parametrize("case,code,text", [
    ("signal", guard.EXIT_STOPPED, "SIGTERM: the run did not stop within 1 s (train.stop_timeout_s) "
     "while saving checkpoint 9; exiting with status 76; the last complete checkpoint is step 7"),
    ("two signals", guard.EXIT_STOPPED, "a second SIGTERM: stopping now, while saving checkpoint 9; "
     "exiting with status 76; the last complete checkpoint is step 7"),
    ("metrics write", guard.EXIT_IO, "writing WORKDIR/metrics.jsonl did not finish within 1 s "
     "(train.io_timeout_s); exiting with status 74; the last complete checkpoint is step 7")])
def test_watchdog_ends_a_blocked_process(case, code, text, tmp_path):
  t0 = time.time()
  proc = run([sys.executable, "-c", WATCHDOG, case, str(tmp_path)], timeout=60)
  assert proc.returncode == code, proc.stderr
  assert last_line(proc.stderr) == "plmjax: " + text.replace("WORKDIR", str(tmp_path))
  assert time.time() - t0 < 30
