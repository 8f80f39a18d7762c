"""Multi-stage knowledge masking (ERNIE 1.0, Sun et al., 2019a).

ERNIE 1.0 is BERT's encoder and masked LM with a curriculum over the masking unit: it first learns
with basic-level (subword / character) masking, then with phrase-level masking (all tokens of a
chunk, e.g. CoNLL-2003's chunk column), then with entity-level masking (all tokens of a named
entity, e.g. the NER column), so that knowledge of phrases and entities is learnt from context.

    stage(step) = #{b in stage_steps : step >= b}       (stage_steps ascending, one per switch)
    prepare(batch, key, step) = stages[stage(step)].prepare(batch, key)    via lax.switch

Every stage is an `MaskedLM` (mlm.py) differing only in `unit`, so all produce the same arrays and
the switch happens on device, inside the one jitted step: no recompilation and no host loop at a
stage boundary, and a resumed run continues in the right stage because the step is part of the
train state. The step reaches `prepare` through `objectives.base.prepare_inputs`; without a step
(evaluation) the last stage is used.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from plmjax.objectives.mlm import MaskedLM

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class StagedMaskedLM:
  """Objective "staged_mlm": one MaskedLM per stage, switched by step boundaries."""
  stages: tuple[MaskedLM, ...]
  stage_steps: tuple[int, ...]
  uses_step = True

  def __post_init__(self):
    if len(self.stage_steps) != len(self.stages) - 1:
      raise ValueError(f"objective.stage_steps={self.stage_steps}: expected {len(self.stages) - 1} "
                       f"boundaries for {len(self.stages)} stages (objective.stage_units)")
    if list(self.stage_steps) != sorted(self.stage_steps) or min(self.stage_steps, default=1) < 0:
      raise ValueError(f"objective.stage_steps={self.stage_steps}: expected ascending steps >= 0")

  def stage(self, step: Array | int | None) -> Array:
    """The stage index (int32 scalar) at `step`; the last stage when step is None."""
    if step is None or not self.stage_steps:
      return jnp.asarray(len(self.stages) - 1, jnp.int32)
    return (jnp.asarray(step) >= jnp.asarray(self.stage_steps, jnp.int32)).sum().astype(jnp.int32)

  def prepare(self, batch: dict, key: Array, step: Array | int | None = None) -> dict:
    stage = self.stage(step)
    branches = [lambda b, k, o=o: o.prepare(b, k) for o in self.stages]
    prepared = jax.lax.switch(stage, branches, batch, key)
    prepared["targets"]["stage"] = stage
    return prepared

  def loss(self, outputs: dict, prepared: dict) -> tuple[Array, dict]:
    loss, metrics = self.stages[0].loss(outputs, prepared)
    return loss, {**metrics, "stage": prepared["targets"]["stage"].astype(jnp.float32)}
