"""Optimizers and learning-rate schedules, all from optax.

    make_optimizer(opt_cfg, total_steps) -> optax.GradientTransformation
      = clip_by_global_norm(clip_norm)          (when clip_norm > 0)
        -> the optimizer                        adamw | bert_adam | lamb
           with decoupled weight decay that skips LayerNorm params and biases
        -> learning rate from make_schedule

Optimizer section of a config (`optimizer.*`):

    name          "adamw" | "bert_adam" | "lamb"
    learning_rate peak learning rate
    warmup_steps  linear warmup from 0 to the peak
    decay         "linear" (to end_lr at total_steps) | "cosine" | "inverse_sqrt" | "constant"
    end_lr        final learning rate of linear / cosine decay
    b1, b2, eps   Adam moments
    weight_decay  decoupled weight decay (0 disables)

Global-norm clipping (`train.clip_norm`, 0 disables) is the first link of the chain.

`bert_adam` is the optimizer of the original BERT code (AdamWeightDecayOptimizer): Adam *without*
bias correction, weight decay added to the update before the learning rate, eps outside the sqrt.
optax has no switch for the missing bias correction, so it is assembled here from optax's moment
primitives.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

NO_DECAY_NAMES = ("bias", "scale")   # flax names of biases and LayerNorm gain/offset


def make_schedule(opt_cfg, total_steps: int) -> optax.Schedule:
  """Warmup (linear from 0) then the configured decay."""
  peak, warmup = float(opt_cfg.learning_rate), int(opt_cfg.warmup_steps)
  decay_steps = max(total_steps - warmup, 1)
  name = opt_cfg.decay
  if name == "linear":
    after = optax.linear_schedule(peak, float(opt_cfg.end_lr), decay_steps)
  elif name == "cosine":
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=float(opt_cfg.end_lr) / peak if peak else 0.0)
  elif name == "inverse_sqrt":
    w = max(warmup, 1)
    after = lambda s: peak * jnp.sqrt(w / jnp.maximum(s + w, w))   # noqa: E731 - peak after warmup
  elif name == "constant":
    after = optax.constant_schedule(peak)
  else:
    raise ValueError(f"optimizer.decay={name!r}: expected linear, cosine, inverse_sqrt or constant")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def decay_mask(params) -> dict:
  """True where weight decay applies: everything except biases and LayerNorm scale / bias."""
  def keep(path, _):
    last = path[-1]
    return getattr(last, "key", getattr(last, "name", None)) not in NO_DECAY_NAMES
  return jax.tree_util.tree_map_with_path(keep, params)


def scale_by_adam_no_bias_correction(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; update = m / (sqrt(v) + eps). No 1/(1-b^t)."""
  def init(params):
    zeros = lambda p: jnp.zeros_like(p)   # noqa: E731
    return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32),
                                  mu=jax.tree.map(zeros, params), nu=jax.tree.map(zeros, params))

  def update(updates, state, params=None):
    del params
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    out = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    return out, optax.ScaleByAdamState(count=optax.safe_increment(state.count), mu=mu, nu=nu)

  return optax.GradientTransformation(init, update)


def make_optimizer(opt_cfg, total_steps: int, clip_norm: float = 0.0):
  """-> (tx, schedule). The schedule is returned too so that the step can log the learning rate."""
  schedule = make_schedule(opt_cfg, total_steps)
  b1, b2, eps, wd = float(opt_cfg.b1), float(opt_cfg.b2), float(opt_cfg.eps), float(opt_cfg.weight_decay)
  name = opt_cfg.name
  if name == "adamw":
    opt = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=decay_mask)
  elif name == "lamb":
    opt = optax.lamb(schedule, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=decay_mask)
  elif name == "bert_adam":
    opt = optax.chain(scale_by_adam_no_bias_correction(b1, b2, eps),
                      optax.add_decayed_weights(wd, mask=decay_mask),
                      optax.scale_by_learning_rate(schedule))
  else:
    raise ValueError(f"optimizer.name={name!r}: expected adamw, bert_adam or lamb")
  if clip_norm > 0:
    opt = optax.chain(optax.clip_by_global_norm(float(clip_norm)), opt)
  return opt, schedule
