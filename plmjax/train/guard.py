"""Keeping a training run stoppable: exit statuses, signals, deadlines on blocking writes.

    EXIT_OK         0   the run finished (train.steps done)
    EXIT_ERROR      1   an error (bad config, non-finite loss, damaged checkpoints, ...): fix and rerun
    EXIT_IO        74   a write failed (disk full, read-only, permission) or did not finish within
                        train.io_timeout_s; the last complete checkpoint is intact
    EXIT_PREEMPTED 75   stopped by SIGTERM / SIGINT after saving a checkpoint: rerun the same command
                        to resume (schedulers: "retry")
    EXIT_STOPPED   76   stopped by SIGTERM / SIGINT without a new checkpoint: the save did not finish
                        within train.stop_timeout_s (or a second signal came); rerun resumes from the
                        last complete checkpoint

`RunGuard` (a context manager around the loop):

- SIGTERM and SIGINT set `requested`; the loop reads it after every step, saves and raises
  `Preempted`. The signal is also written to a wakeup pipe read by a watchdog thread, which runs
  even while the main thread is blocked in a write: if the run has not ended `stop_timeout_s` after
  the signal, the watchdog prints one line (what the run was doing, the last complete checkpoint)
  and ends the process with EXIT_STOPPED. A second signal ends it at once.
- `deadline(seconds, what)` bounds a blocking operation (a checkpoint save or wait, a metrics
  write): past it, the watchdog prints "WHAT did not finish within N s" and exits with EXIT_IO.
  `bounded_write(what, guard, ...)` is that deadline plus OSError -> one WriteError, for every file
  a run writes besides its checkpoints (metrics.jsonl, TensorBoard, params.safetensors, eval.json,
  predictions/). `RunGuard(..., signals=())` (`plmjax eval`) keeps the deadlines only.

The watchdog exits with os._exit: a blocked thread cannot be unblocked from Python, and a normal
exit would wait for it forever. It writes with os.write(2, ...) so that it never waits on a lock
the blocked thread holds.
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from typing import Callable, Optional

EXIT_OK, EXIT_ERROR, EXIT_IO, EXIT_PREEMPTED, EXIT_STOPPED = 0, 1, 74, 75, 76


class WriteError(OSError):
  """A write of the run failed; the message names the path and the last complete checkpoint."""


class Preempted(Exception):
  """Raised by the loop after a signal-triggered save (`plmjax train` exits with EXIT_PREEMPTED)."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


def _say(text: str) -> None:
  try:
    os.write(2, (text.rstrip("\n") + "\n").encode())
  except OSError:
    pass


class RunGuard:
  """Signal handling + watchdog for one run; `describe()` -> e.g. "the last complete checkpoint is
  step 6 (DIR/checkpoints/6)", called by the watchdog when it gives up (must not block)."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self, stop_timeout_s: float, describe: Callable[[], str] = lambda: "",
               signals: tuple = SIGNALS):
    self.stop_timeout_s, self.describe, self.signals = float(stop_timeout_s), describe, tuple(signals)
    self.requested: Optional[str] = None          # "SIGTERM" / "SIGINT" once a signal came
    self.doing = "starting"                        # what the main thread is doing, for messages
    self._deadlines: dict[int, tuple[float, str, int]] = {}
    self._lock = threading.Lock()
    self._next_id = 0
    self._closed = False
    self._old_handlers: dict = {}
    self._old_wakeup = None
    self._rfd = self._wfd = None
    self._thread: Optional[threading.Thread] = None

  # ---- setup -----------------------------------------------------------------------------------------
  def __enter__(self) -> "RunGuard":
    self._rfd, self._wfd = os.pipe()
    os.set_blocking(self._wfd, False)
    if self.signals and threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._old_handlers[s] = signal.signal(s, self._handle)
      self._old_wakeup = signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
    self._thread = threading.Thread(target=self._watch, name="plmjax-watchdog", daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._closed = True
    if self._old_handlers:
      signal.set_wakeup_fd(self._old_wakeup if self._old_wakeup is not None else -1)
      for s, h in self._old_handlers.items():
        signal.signal(s, h)
    os.write(self._wfd, b"\0")          # wakes the watchdog, which then ends
    self._thread.join(timeout=5)
    for fd in (self._rfd, self._wfd):
      os.close(fd)

  def _handle(self, signum, frame) -> None:
    del frame
    self.requested = self.requested or signal.Signals(signum).name

  # ---- deadlines ---------------------------------------------------------------------------------------
  @contextlib.contextmanager
  def deadline(self, seconds: float, what: str, code: int = EXIT_IO):
    """Bounds the block: if it has not finished after `seconds`, the process ends with `code`."""
    with self._lock:
      key, self._next_id = self._next_id, self._next_id + 1
      self._deadlines[key] = (time.monotonic() + float(seconds), f"{what} did not finish within "
                              f"{seconds:g} s (train.io_timeout_s)", code)
    previous, self.doing = self.doing, what
    try:
      yield
    finally:
      self.doing = previous
      with self._lock:
        self._deadlines.pop(key, None)

  def cut_short(self, seconds: float, reason: str) -> None:
    """A background write failed (`reason`) while the main thread may be blocked waiting for it:
    the write operations in progress get at most `seconds` more to report it themselves."""
    end = time.monotonic() + float(seconds)
    with self._lock:
      for key, (t, what, code) in list(self._deadlines.items()):
        if code == EXIT_IO and t > end:
          op = what.split(" did not finish")[0]
          self._deadlines[key] = (end, f"{op}: {reason}; still blocked {seconds:g} s later", code)

  # ---- the watchdog ------------------------------------------------------------------------------------
  def _watch(self) -> None:
    while not self._closed:
      with self._lock:
        ends = [d[0] for d in self._deadlines.values()]
      wait = max(0.0, min(ends) - time.monotonic()) if ends else 1.0
      ready, _, _ = select.select([self._rfd], [], [], min(wait, 1.0))
      if self._closed:
        return
      if ready:
        for byte in os.read(self._rfd, 64):
          if byte in {int(s) for s in self.signals}:
            self._on_signal(signal.Signals(byte).name)
      now = time.monotonic()
      with self._lock:
        expired = [d for d in self._deadlines.values() if d[0] <= now]
      if expired:
        self._give_up(expired[0][1], expired[0][2])

  def _on_signal(self, name: str) -> None:
    with self._lock:
      seen = any(d[2] == EXIT_STOPPED for d in self._deadlines.values())
      if not seen:
        key, self._next_id = self._next_id, self._next_id + 1
        self._deadlines[key] = (time.monotonic() + self.stop_timeout_s,
                                f"{name}: the run did not stop within {self.stop_timeout_s:g} s "
                                f"(train.stop_timeout_s) while {self.doing}", EXIT_STOPPED)
    if seen:
      self._give_up(f"a second {name}: stopping now, while {self.doing}", EXIT_STOPPED)

  def _give_up(self, reason: str, code: int) -> None:
    try:
      where = self.describe()
    except Exception:  # noqa: BLE001  (the watchdog must exit whatever happens)
      where = ""
    _say(f"plmjax: {reason}; exiting with status {code}" + (f"; {where}" if where else ""))
    os._exit(code)


@contextlib.contextmanager
def bounded_write(what: str, guard: Optional[RunGuard] = None, timeout_s: float = 600.0,
                  describe: Callable[[], str] = lambda: ""):
  """Writing a file of the run: an OSError inside -> WriteError("WHAT failed: CAUSE; <describe()>",
  e.g. the last complete checkpoint); with a `guard`, the block also runs under its deadline
  (past `timeout_s` the process ends with EXIT_IO)."""
  with guard.deadline(timeout_s, what) if guard is not None else contextlib.nullcontext():
    try:
      yield
    except WriteError:
      raise
    except OSError as e:
      where = describe()
      raise WriteError(f"{what} failed: {e.strerror or e}" + (f"; {where}" if where else "")) from e


# ---- non-finite steps --------------------------------------------------------------------------------
class NonFiniteError(FloatingPointError):
  """A step produced a non-finite loss, gradient or param (train.nonfinite="stop")."""


class FiniteCheck:
  """Reads each train step's on-device `finite` flag (see plmjax/train/step.py) one step late, so
  the host never waits for the step it has just dispatched; `flush()` reads the pending one (before
  every save and log write). "stop": a non-finite step raises NonFiniteError naming it; "skip":
  counts it (`skipped`, logged as "skipped_steps" and saved with the checkpoints)."""

  def __init__(self, mode: str, describe: Callable[[], str] = lambda: "", skipped: int = 0):
    self.mode, self.describe, self.skipped = mode, describe, int(skipped)
    self._pending = None

  def push(self, step: int, metrics: dict) -> dict:
    """Takes step `step`'s metrics (with "finite"), checks the previous step's, returns the rest."""
    metrics = dict(metrics)
    flag = metrics.pop("finite")
    self.flush()
    self._pending = (step, flag, metrics)
    return metrics

  def flush(self) -> None:
    if self._pending is None:
      return
    step, flag, metrics = self._pending
    self._pending = None
    if bool(flag):
      return
    if self.mode == "skip":
      self.skipped += 1
      return
    def value(k):
      return float(metrics[k]) if k in metrics else float("nan")
    where = self.describe()
    raise NonFiniteError(
        f"non-finite training step {step} (loss {value('loss')}, grad_norm {value('grad_norm')}): "
        f"stopping before saving it" + (f"; {where}" if where else "")
        + "; try a lower optimizer.learning_rate or train.clip_norm, or train.nonfinite=skip")

  def log_fields(self) -> dict:
    return {"skipped_steps": self.skipped} if self.mode == "skip" else {}
