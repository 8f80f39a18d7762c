"""The jitted train and eval steps, one pair for every model and objective.

    train_step(state, batch) -> (state, metrics)

inside one `jax.jit` over the mesh:

    key       = fold_in(state.rng, state.step)                   same keys on any mesh, any restart
    prepared  = objective.prepare(batch, key_prepare[, step])    masking etc. on device
    outputs   = model.apply(params, prepared["inputs"], train=True, rngs={"dropout": key_dropout})
    loss, m   = objective.loss(outputs, prepared)
    grads     -> tx.update -> new params                         state donated (updated in place)

Gradient accumulation (`grad_accum = A > 1`) scans over A microbatches inside the step: the global
batch [B, ...] is viewed as [B/A, A, ...] and microbatch j is rows j, A + j, 2A + j, ... so that
every device keeps its own rows (no reshuffle across the batch shards). Gradients, loss and metrics
are averaged over the microbatches, so the logged loss is per global batch.

Multi-task runs (MT-DNN fine-tuning) pass the batch's task as a static argument,
`train_step(state, batch, task="sst2")`: the objective's `prepare` receives it and returns
`apply_kwargs` for the model call (the task model's head), so each (task, batch shape) pair compiles
once. Single-task and pretraining runs pass nothing.

Model state (`state.model_state`, e.g. Transformer-XL's {"mems": [L, B, M, E]}) is threaded
through: its entries join the model inputs, and the same keys of the model's outputs, with the
gradient stopped, become the next step's model state.

Non-finite guard: the step returns metrics["finite"] (bool, on device): loss, gradient norm and the
updated params are all finite. `nonfinite="stop"` (default) applies the update regardless (the
loop stops at that step and never saves the state); `nonfinite="skip"` keeps params, optimizer
state and model state of a non-finite step unchanged (the step counter still advances, so the
next step sees the next batch and keys), as large-scale trainers do.

The compute dtype lives in the model config (`dtype`); params stay fp32 and objectives compute
their losses in fp32.
"""
from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from plmjax.objectives.base import prepare_inputs
from plmjax.train.mesh import BATCH_AXES, activate, batch_sharding
from plmjax.train.state import TrainState


def _on_mesh(fn: Callable, mesh: Mesh) -> Callable:
  """Calls (and therefore traces) `fn` with the mesh and logical rules active."""
  def call(*args, task=None):
    with activate(mesh):
      return fn(*args) if task is None else fn(*args, task)     # task: static, positional
  call.jitted = fn
  return call


def split_microbatches(batch: dict, num: int, mesh: Mesh) -> dict:
  """[B, ...] -> [num, B/num, ...]; microbatch j holds rows j, num + j, 2 num + j, ..."""
  def split(x):
    if x.shape[0] % num:
      raise ValueError(f"global batch {x.shape[0]} is not divisible by grad_accum={num}")
    x = x.reshape((x.shape[0] // num, num) + x.shape[1:]).swapaxes(0, 1)
    spec = P(None, BATCH_AXES, *([None] * (x.ndim - 2)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
  return jax.tree.map(split, batch)


NONFINITE_MODES = ("stop", "skip")


def all_finite(tree) -> jax.Array:
  """bool []: every element of every (floating) leaf is finite."""
  flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
           if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.logical_and.reduce(jnp.stack(flags)) if flags else jnp.array(True)


def batch_shardings(mesh: Mesh, batch_shapes: dict) -> dict:
  return {k: batch_sharding(mesh, len(v.shape)) for k, v in batch_shapes.items()}


def make_train_step(model: nn.Module, objective, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, mesh: Mesh, state_shardings: TrainState,
                    batch_shapes: dict, *, grad_accum: int = 1, nonfinite: str = "stop") -> Callable:
  """-> train_step(state, batch) -> (state, metrics), jitted with the state donated.
  `batch_shapes`: {name: array or ShapeDtypeStruct} of the global data batch."""
  if nonfinite not in NONFINITE_MODES:
    raise ValueError(f"train.nonfinite={nonfinite!r}: expected one of {NONFINITE_MODES}")

  def loss_fn(params, batch, key, step, model_state, task=None):
    prep_key, drop_key = jax.random.split(key)
    prepared = prepare_inputs(objective, batch, prep_key, step, task=task)
    inputs = {**prepared["inputs"], **model_state}                     # e.g. TXL "mems"
    outputs = model.apply({"params": params}, inputs, train=True, rngs={"dropout": drop_key},
                          **prepared.get("apply_kwargs", {}))
    loss, metrics = objective.loss(outputs, prepared)
    new_model_state = {k: jax.lax.stop_gradient(outputs[k]) for k in model_state}
    return loss, (metrics, new_model_state)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def accumulate(params, batch, key, step, task):
    micro = split_microbatches(batch, grad_accum, mesh)                      # [A, B/A, ...]
    first = jax.tree.map(lambda x: x[0], micro)
    (l_shape, (m_shape, _)), g_shape = jax.eval_shape(
        lambda *a: grad_fn(*a, task=task), params, first, key, step, {})
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (g_shape, l_shape, m_shape))

    def body(carry, xs):
      j, mb = xs
      (loss, (metrics, _)), grads = grad_fn(params, mb, jax.random.fold_in(key, j), step, {},
                                            task=task)
      return jax.tree.map(jnp.add, carry, (grads, loss, metrics)), None

    (grads, loss, metrics), _ = jax.lax.scan(body, zeros, (jnp.arange(grad_accum), micro))
    grads, loss, metrics = jax.tree.map(lambda x: x / grad_accum, (grads, loss, metrics))
    return (loss, (metrics, {})), grads

  def step(state: TrainState, batch: dict, task=None):
    key = jax.random.fold_in(state.rng, state.step)
    if grad_accum > 1:
      (loss, (metrics, model_state)), grads = accumulate(state.params, batch, key, state.step, task)
    else:
      (loss, (metrics, model_state)), grads = grad_fn(state.params, batch, key, state.step,
                                                      state.model_state, task=task)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(params)
    metrics = {**metrics, "loss": loss, "grad_norm": grad_norm,
               "learning_rate": schedule(state.step), "finite": finite}
    if nonfinite == "skip":       # a non-finite step changes nothing but the step counter
      keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
      params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
      model_state = keep(model_state, state.model_state)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              model_state=model_state)
    return new_state, metrics

  if grad_accum > 1 and jax.tree.leaves(state_shardings.model_state):
    raise ValueError("train.grad_accum > 1 cannot carry model state (e.g. Transformer-XL mems) "
                     "across steps: the microbatches would need their own memories")

  replicated = NamedSharding(mesh, P())
  jitted = jax.jit(step, in_shardings=(state_shardings, batch_shardings(mesh, batch_shapes)),
                   out_shardings=(state_shardings, replicated), donate_argnums=0,
                   static_argnums=(2,))
  return _on_mesh(jitted, mesh)


def make_eval_step(model: nn.Module, objective, mesh: Mesh, state_shardings: TrainState,
                   batch_shapes: dict, predictions: bool = False,
                   carry_shardings: Optional[dict] = None) -> Callable:
  """-> eval_step(params, batch, key[, task=...]) -> metrics (dropout off; `key` drives the
  objective's masking, fixed per eval batch so that evaluations are comparable across steps).
  `predictions=True`: returns `objective.predictions(outputs, prepared)` instead (per-row arrays
  for the host to score: label ids, tag ids, span logits; fine-tuning's dev and test sets).
  `carry_shardings` ({key: sharding} of model state, e.g. Transformer-XL {"mems": ...}): the step
  is eval_step(params, batch, key, carry) -> (metrics, carry'), the model's memory threaded from
  one evaluation batch to the next (evaluation over a stream, as Transformer-XL's paper)."""

  def step(params, batch, key, carry=None, task=None):
    prepared = prepare_inputs(objective, batch, key, task=task)   # staged objectives: last stage
    outputs = model.apply({"params": params}, {**prepared["inputs"], **(carry or {})}, train=False,
                          **prepared.get("apply_kwargs", {}))
    if predictions:
      return objective.predictions(outputs, prepared)
    loss, metrics = objective.loss(outputs, prepared)
    if carry is None:
      return {**metrics, "loss": loss}
    return {**metrics, "loss": loss}, {k: outputs[k] for k in carry}

  replicated = NamedSharding(mesh, P())
  inputs = (state_shardings.params, batch_shardings(mesh, batch_shapes), replicated)
  if carry_shardings is None:
    jitted = jax.jit(lambda p, b, k, task=None: step(p, b, k, None, task), in_shardings=inputs,
                     out_shardings=replicated, static_argnums=(3,))
  else:
    jitted = jax.jit(step, in_shardings=inputs + (carry_shardings,),
                     out_shardings=(replicated, carry_shardings), static_argnums=(4,))
  return _on_mesh(jitted, mesh)


def model_inputs_shapes(objective, batch_shapes: dict) -> dict:
  """The model batch that `objective.prepare` makes from a data batch, as ShapeDtypeStructs
  (what the state's init needs)."""
  return jax.eval_shape(lambda b: prepare_inputs(objective, b, jax.random.PRNGKey(0))["inputs"],
                        batch_shapes)
