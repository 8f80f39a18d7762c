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
"""
from __future__ import annotations

import json
import os
from typing import Optional

import grain
import orbax.checkpoint as ocp

from plmjax.train.state import TrainState


class Checkpointer:

  def __init__(self, directory: str, keep: int, async_save: bool = True, best_metric: str = "",
               best_mode: str = "max"):
    self.directory = os.path.abspath(directory)
    self.best_metric, self.best_mode = best_metric, best_mode
    policy = ocp.checkpoint_managers.LatestN(keep)
    if best_metric:
      policy = ocp.checkpoint_managers.AnyPreservationPolicy([policy, ocp.checkpoint_managers.BestN(
          get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1,
          keep_checkpoints_without_metrics=False)])
    best = dict(best_fn=lambda m: m[best_metric], best_mode=best_mode) if best_metric else {}
    options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=async_save,
                                           preservation_policy=policy, **best)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data", "config"))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def best_step(self) -> Optional[int]:
    """The step of the best checkpoint by `best_metric` (None without one)."""
    return self.manager.best_step() if self.best_metric else None

  def save(self, step: int, state: TrainState, data_iter, config, force: bool = False,
           metrics: Optional[dict] = None) -> bool:
    """Starts saving; returns once the state is off the devices and the iterator position taken.
    `metrics` (the eval metrics of this step, if any) rank it for the best-checkpoint policy."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iter),
        config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())))
    metrics = {k: float(v) for k, v in metrics.items()} if metrics else None
    return self.manager.save(step, args=args, force=force, metrics=metrics)

  def restore(self, step: int, target: TrainState, data_iter) -> TrainState:
    """Restores the state into `target`'s shapes / shardings and moves `data_iter` in place."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        data=grain.checkpoint.CheckpointRestore(data_iter)))
    return restored.state

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


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
