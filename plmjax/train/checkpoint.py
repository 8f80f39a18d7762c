"""Checkpoints: one orbax CheckpointManager per run, under WORKDIR/checkpoints/<step>/ with items

    state    the TrainState (params, optimizer state, step, rng, model_state), sharded arrays
    data     the grain iterator position (grain's own orbax handler: one JSON file per process)
    config   the run's config, as JSON (for reading; resuming uses the command-line config)

Saves are asynchronous (the arrays are copied off the devices, then written in the background
while training continues), keep the newest `keep` checkpoints (and, with `best_metric`, also the
one with the best value of that eval metric: orbax's BestN preservation policy), and are atomic: orbax writes into
a temporary folder and renames it when complete, so a run killed mid-save leaves the previous
checkpoint as the latest. Restoring takes an abstract target (shapes, dtypes, shardings), so each
device reads only its own shards.

Reliability (see plmjax/train/integrity.py and guard.py):

- every save, wait and close runs under a deadline (`io_timeout_s`; past it the run ends with
  guard.EXIT_IO) and turns any failure into one `WriteError` naming the folder, the cause and the
  last complete checkpoint; before each save a small probe file is written into the folder, so a
  read-only / immutable / full folder fails at once rather than deep in orbax's threads;
- a background thread writes each checkpoint's digest once orbax has renamed it into place;
- `restore_valid` walks the checkpoints newest first and resumes from the newest one whose files
  match their digest, that restores, and whose params and optimizer state are finite; each skipped
  one is reported with its reason (and, for training, moved to WORKDIR/damaged_checkpoints/ so
  that the step can be saved again). A checkpoint whose param tree does not fit the config is a
  config error, not damage: it stops the run at once.
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import queue
import re
import shutil
import sys
import threading
import time
from typing import Optional

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from plmjax.train import integrity
from plmjax.train.guard import WriteError, bounded_write
from plmjax.train.state import TrainState


class CheckpointError(RuntimeError):
  """No checkpoint can be resumed (all damaged), or one does not fit the config."""


class Checkpointer:

  def __init__(self, directory: str, keep: int, async_save: bool = True, io_timeout_s: float = 600,
               guard=None, create: bool = True, best_metric: str = "", best_mode: str = "max"):
    self.directory = os.path.abspath(directory)
    self.best_metric, self.best_mode = best_metric, best_mode
    policy = ocp.checkpoint_managers.LatestN(keep)
    if best_metric:
      policy = ocp.checkpoint_managers.AnyPreservationPolicy([policy, ocp.checkpoint_managers.BestN(
          get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1,
          keep_checkpoints_without_metrics=False)])
    best = dict(best_fn=lambda m: m[best_metric], best_mode=best_mode) if best_metric else {}
    self.io_timeout_s, self.guard = float(io_timeout_s), guard
    self.extra: dict = {}                     # counters saved with each checkpoint's digest
    options = ocp.CheckpointManagerOptions(
        create=create, enable_async_checkpointing=async_save, preservation_policy=policy,
        async_options=ocp.AsyncOptions(timeout_secs=max(1, int(io_timeout_s))), **best)
    with self._bounded(f"opening {self.directory}"):
      self.manager = ocp.CheckpointManager(self.directory, options=options,
                                           item_names=("state", "data", "config"))
    self.background_error: Optional[str] = None     # an OS error seen in orbax's save threads
    self._log_watch = _OrbaxErrors(self)
    logging.getLogger("absl").addHandler(self._log_watch)
    self._digests: queue.Queue = queue.Queue()
    self._digest_error: Optional[BaseException] = None
    self._digester = threading.Thread(target=self._digest_loop, name="plmjax-digest", daemon=True)
    self._digester.start()

  # ---- bounded, checked operations ---------------------------------------------------------------------
  @contextlib.contextmanager
  def _bounded(self, what: str):
    """Deadline (when a guard is set) + any failure -> one WriteError naming `what`."""
    ctx = self.guard.deadline(self.io_timeout_s, what) if self.guard else contextlib.nullcontext()
    with ctx:
      try:
        yield
      except WriteError:
        raise
      except Exception as e:  # noqa: BLE001  (orbax raises OSError, ValueError, RuntimeError...)
        raise WriteError(f"{what} failed: {integrity.summarize(e)}; {self.describe_last()}") from e

  def write_guard(self, what: str):
    """A write of another file of the run (guard.bounded_write): under this run's guard and
    io_timeout_s, an OSError -> one WriteError naming `what` and the last complete checkpoint."""
    return bounded_write(what, self.guard, self.io_timeout_s, self.describe_last)

  def describe_last(self, wait: bool = False) -> str:
    """"the last complete checkpoint is step S (PATH)" from a directory listing; `wait`: after
    the save in flight ends (errors ignored); without, it never blocks (the watchdog calls it)."""
    if wait:
      try:
        with self._bounded("finishing the checkpoint save in flight"):
          self.manager.wait_until_finished()
      except Exception:  # noqa: BLE001  (a failed save is reported by wait / close)
        pass
    try:
      steps = sorted(int(d) for d in os.listdir(self.directory) if d.isdigit())
    except OSError:
      steps = []
    if not steps:
      return f"no complete checkpoint in {self.directory}"
    return f"the last complete checkpoint is step {steps[-1]} ({self.directory}/{steps[-1]})"

  def _probe(self) -> None:
    """Writes and removes a small file: a full, read-only or immutable folder fails here."""
    path = os.path.join(self.directory, f".plmjax_write_probe.{os.getpid()}")
    try:
      with open(path, "wb") as f:
        f.write(b"\0" * 4096)
        f.flush()
      os.remove(path)
    except OSError as e:
      raise WriteError(f"cannot write checkpoints to {self.directory}: {e.strerror} ({path}); "
                       f"{self.describe_last()}") from None

  def raise_if_failed(self) -> None:
    """After each step: a save that failed in orbax's background threads ends the run now."""
    if self.background_error:
      raise WriteError(f"saving a checkpoint in {self.directory} failed in the background: "
                       f"{self.background_error}; {self.describe_last()}")

  def _on_background_error(self, text: str) -> None:
    if not self.background_error:
      self.background_error = text
      if self.guard is not None:        # the main thread may be blocked waiting on that save
        self.guard.cut_short(15, f"a background write failed: {text}")

  def _raise_pending(self) -> None:
    self.raise_if_failed()          # orbax may only report it once its save threads time out
    self.manager.check_for_errors()
    if self._digest_error is not None:
      e, self._digest_error = self._digest_error, None
      raise e

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def best_step(self) -> Optional[int]:
    """The step of the best checkpoint by `best_metric` (None without one)."""
    return self.manager.best_step() if self.best_metric else None

  def save(self, step: int, state: TrainState, data_iter, config, force: bool = False,
           metrics: Optional[dict] = None) -> bool:
    """Starts saving; returns once the state is off the devices and the iterator position taken.
    `metrics` (the eval metrics of this step, if any) rank it for the best-checkpoint policy."""
    with self._bounded(f"saving checkpoint {step} to {self.directory}"):
      self._raise_pending()
      if jax.process_index() == 0:
        self._probe()
      args = ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=grain.checkpoint.CheckpointSave(data_iter),
          config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())))
      metrics = {k: float(v) for k, v in metrics.items()} if metrics else None
      saved = self.manager.save(step, args=args, force=force, metrics=metrics)
    if saved and jax.process_index() == 0:
      self._digests.put((step, dict(self.extra)))
    return saved

  def wait(self) -> None:
    """Waits for the save in flight and its digest; raises WriteError if either failed."""
    with self._bounded(f"finishing the checkpoint save in {self.directory}"):
      self.manager.wait_until_finished()
      self._raise_pending()
      self._digests.join()
      self._raise_pending()

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self._digests.put(None)
      logging.getLogger("absl").removeHandler(self._log_watch)
      with self._bounded(f"closing {self.directory}"):
        self.manager.close()

  # ---- digests -----------------------------------------------------------------------------------------
  def _digest_loop(self) -> None:
    while True:
      job = self._digests.get()
      try:
        if job is None:
          return
        step, extra = job
        step_dir = os.path.join(self.directory, str(step))
        deadline = time.monotonic() + self.io_timeout_s
        while not os.path.isdir(step_dir) and time.monotonic() < deadline:
          if any(d.startswith(f"{step}.") for d in os.listdir(self.directory)):
            time.sleep(0.05)          # orbax's tmp folder: still writing
          elif self.manager.is_saving_in_progress():
            time.sleep(0.05)
          else:
            break                     # the save failed; manager.check_for_errors reports it
        if os.path.isdir(step_dir):
          try:
            integrity.write_digest(step_dir, step, extra)
          except FileNotFoundError:
            pass                      # rotated out (keep_checkpoints) while hashing
      except Exception as e:  # noqa: BLE001
        self._digest_error = WriteError(f"writing the digest of checkpoint {job[0]} in "
                                        f"{self.directory} failed: {integrity.summarize(e)}")
      finally:
        self._digests.task_done()

  # ---- restoring ---------------------------------------------------------------------------------------
  def restore(self, step: int, target: TrainState, data_iter) -> TrainState:
    """Restores the state into `target`'s shapes / shardings and moves `data_iter` in place."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        data=grain.checkpoint.CheckpointRestore(data_iter)))
    return restored.state

  def restore_valid(self, target: TrainState, data_iter, *, quarantine: bool,
                    say=print) -> tuple[Optional[int], Optional[TrainState]]:
    """-> (step, state) of the newest checkpoint that passes every check, or (None, None) when the
    folder holds none at all. Skipped checkpoints are reported through `say`; with `quarantine`
    they are moved to WORKDIR/damaged_checkpoints/ (process 0). Every checkpoint damaged ->
    CheckpointError listing them (never a silent fresh start)."""
    steps = self._step_folders()
    skipped = []
    for step in steps:
      step_dir = os.path.join(self.directory, str(step))
      problem, verified = integrity.check_files(step_dir)
      state = None
      if problem is None:
        self._check_fits(step, step_dir, target)
        try:
          with _quiet_orbax():
            state = self.restore(step, target, data_iter)
        except Exception as e:  # noqa: BLE001  (tensorstore / orbax / json errors)
          problem = f"restoring it failed: {integrity.summarize(e)}"
      if problem is None:
        bad = integrity.nonfinite_leaves({"params": state.params, "opt_state": state.opt_state})
        if bad:
          problem = f"non-finite values in {', '.join(bad)}"
      if problem is None:
        if not verified:
          say(f"checkpoint {step}: no {integrity.DIGEST_FILE} (saved before digests, or killed "
              "right after the save): resumed unverified")
        self.extra = integrity.read_extra(step_dir)
        return step, state
      skipped.append(f"{step} ({problem})")
      say(f"checkpoint {step} in {self.directory}: skipped: {problem}")
      if quarantine:
        self._quarantine(step)
    if skipped:
      raise CheckpointError(f"no checkpoint in {self.directory} can be resumed: "
                            + "; ".join(skipped) + ". Move them away to start over.")
    return None, None

  def _step_folders(self) -> list[int]:
    """Numeric folders, newest first (orbax's own list plus any folder it does not recognise)."""
    try:
      names = os.listdir(self.directory)
    except FileNotFoundError:
      return []
    return sorted({int(d) for d in names if d.isdigit()} | set(self.manager.all_steps()),
                  reverse=True)

  def _check_fits(self, step: int, step_dir: str, target: TrainState) -> None:
    """The checkpoint's param tree (orbax metadata) against the config's: a different model is a
    config error. Unreadable metadata is left to the restore (reported as damage)."""
    try:
      with _quiet_orbax():
        meta = ocp.StandardCheckpointer().metadata(os.path.join(step_dir, "state"))
      tree = getattr(meta, "item_metadata", meta)
      params = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), tree["params"])
    except Exception:  # noqa: BLE001
      return
    missing, unexpected, shapes = tree_mismatches(target.params, params)
    if missing or unexpected or shapes:
      saved = os.path.join(step_dir, "config", "metadata")
      name = ""
      try:
        with open(saved) as f:
          name = json.load(f)["model"]["name"]
      except (OSError, ValueError, KeyError, TypeError):
        pass
      problems = ([f"missing {k}" for k in missing] + [f"unexpected {k}" for k in unexpected]
                  + [f"{k} (checkpoint vs config)" for k in shapes])
      raise CheckpointError(
          f"checkpoint {step_dir} does not fit this config"
          + (f" (it was saved by model.name={name!r}, see {saved})" if name else "")
          + f": {len(problems)} param mismatches, e.g. " + "; ".join(problems[:3])
          + ". Use the config the run was trained with, or another --workdir.")

  def _quarantine(self, step: int) -> None:
    if jax.process_index() == 0:
      dest_root = os.path.join(os.path.dirname(self.directory), "damaged_checkpoints")
      os.makedirs(dest_root, exist_ok=True)
      dest = os.path.join(dest_root, f"{step}.{int(time.time())}")
      shutil.move(os.path.join(self.directory, str(step)), dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"plmjax_quarantine_{step}")
    self.manager.reload()


class _OrbaxErrors(logging.Handler):
  """Orbax reports a failed background write (disk full, permission) only in its log, and its save
  threads may then wait on each other until AsyncOptions.timeout_secs; this handler passes the
  first ERROR record with an OS-level cause to the Checkpointer at once."""

  def __init__(self, checkpointer: "Checkpointer"):
    super().__init__(level=logging.ERROR)
    self.checkpointer = checkpointer

  def emit(self, record: logging.LogRecord) -> None:
    try:
      text = record.getMessage()
      if record.exc_info and record.exc_info[1] is not None:
        text += " " + str(record.exc_info[1])
      cause = next((c for c in integrity.OS_CAUSES if c in text), None)
      if cause:
        path = re.search(r'"(/[^"]+)"', text) or re.search(r"'(/[^']+)'", text)
        self.checkpointer._on_background_error(cause + (f" ({path.group(1)})" if path else ""))
    except Exception:  # noqa: BLE001  (a log handler must never raise)
      pass


@contextlib.contextmanager
def _quiet_orbax():
  """Orbax logs each failed read at ERROR with full tracebacks (hundreds of lines); the caller
  reports the failure in one line instead."""
  loggers = [logging.getLogger(n) for n in ("absl", "asyncio")]
  levels = [lg.level for lg in loggers]
  hook, sys.unraisablehook = sys.unraisablehook, lambda _: None   # orbax's abandoned coroutines
  for lg in loggers:
    lg.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    gc.collect()
    sys.unraisablehook = hook
    for lg, lv in zip(loggers, levels):
      lg.setLevel(lv)


def run_checkpoint(path: str, key: str) -> tuple[str, str]:
  """-> (workdir, checkpoint step directory) of a plmjax workdir (its latest checkpoint) or of one
  of its checkpoints (`WORKDIR/checkpoints/<step>`); `key` names the config key in errors."""
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(os.path.join(path, "checkpoints")):
    steps = sorted(int(d) for d in os.listdir(os.path.join(path, "checkpoints")) if d.isdigit())
    if not steps:
      raise FileNotFoundError(f"{key}={path!r}: no checkpoints under {path}/checkpoints")
    return path, os.path.join(path, "checkpoints", str(steps[-1]))
  parent = os.path.dirname(os.path.dirname(path))
  if os.path.basename(path).isdigit() and os.path.isfile(os.path.join(parent, "config.json")):
    return parent, path
  raise FileNotFoundError(f"{key}={path!r}: neither a plmjax workdir (checkpoints/) nor a plmjax "
                          "checkpoint (checkpoints/<step>)")


def restore_params(path: str, key: str):
  """The `params` of a plmjax checkpoint (host arrays, as saved), from run_checkpoint(path, key)."""
  _, step_dir = run_checkpoint(path, key)
  restored = ocp.StandardCheckpointer().restore(os.path.join(step_dir, "state"))
  return restored["params"] if isinstance(restored, dict) else restored.params


def tree_mismatches(expected, got) -> tuple[list, list, list]:
  """Two param trees -> (missing, unexpected, shape mismatches): sorted leaf names ("['a']['b']"),
  the last as "name: (got shape) vs (expected shape)". Empty lists: `got` fits `expected`."""
  a = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(expected)}
  b = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(got)}
  bad = [f"{k}: {tuple(np.shape(b[k]))} vs {tuple(np.shape(a[k]))}"
         for k in sorted(set(a) & set(b)) if np.shape(a[k]) != np.shape(b[k])]
  return sorted(set(a) - set(b)), sorted(set(b) - set(a)), bad
