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


def prepare_inputs(objective: Objective, batch: dict, key: Array, step: Array | None = None) -> dict:
  """objective.prepare(batch, key), passing the train step to objectives that schedule on it
  (`uses_step = True`, e.g. ERNIE's staged masking, staged.py)."""
  if getattr(objective, "uses_step", False):
    return objective.prepare(batch, key, step=step)
  return objective.prepare(batch, key)
