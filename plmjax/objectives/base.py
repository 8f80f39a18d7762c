"""The objective contract.

An objective turns a raw data batch into model inputs and targets *on device, inside the jitted
train step*, from a `jax.random` key, and scores the model's outputs:

    prepared = objective.prepare(batch, key)      # {"inputs": model batch, "targets": {...}}
    outputs  = model.apply(variables, prepared["inputs"], train=True, rngs=...)
    loss, metrics = objective.loss(outputs, prepared)   # scalar, {name: scalar}

`prepare` must be a pure jnp function of (batch, key) (no host Python loops over examples), so that
dynamic masking, span sampling and permutations are redrawn every step at no host cost.
"""
from __future__ import annotations

from typing import Protocol

import jax

Array = jax.Array


class Objective(Protocol):
  def prepare(self, batch: dict, key: Array) -> dict: ...

  def loss(self, outputs: dict, prepared: dict) -> tuple[Array, dict]: ...


def prepare_inputs(objective: Objective, batch: dict, key: Array, step: Array | None = None,
                   task: str | None = None) -> dict:
  """objective.prepare(batch, key), passing the train step to objectives that schedule on it
  (`uses_step = True`, e.g. ERNIE's staged masking, staged.py) and the static task name to
  multi-task objectives (`uses_task = True`, fine-tuning's TaskObjective). `prepared` may hold
  `apply_kwargs`: static keyword arguments of the model call (the task model's head)."""
  kw = {}
  if getattr(objective, "uses_step", False):
    kw["step"] = step
  if getattr(objective, "uses_task", False):
    kw["task"] = task
  elif task is not None:
    raise ValueError(f"objective {type(objective).__name__} is not multi-task (got task={task!r})")
  return objective.prepare(batch, key, **kw)
