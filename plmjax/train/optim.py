"""The one optimizer builder, for pretraining and fine-tuning alike: optax chains, schedules and the
transfer links (freezing, discriminative learning rates, gradual unfreezing).

    tx, schedule = make_optimizer(opt_cfg, total_steps, clip_norm, params=abstract_params,
                                  transfer=transfer_cfg, num_layers=L, steps_per_epoch=S)

      = clip_by_global_norm(clip_norm)                 (train.clip_norm > 0)
        -> gate_by_layer                               (transfer.gradual_unfreezing: grads)
        -> the optimizer                               adamw | bert_adam | lamb | sgd, decoupled
                                                       weight decay skips LayerNorm params / biases
        -> scale_by_layer                              (transfer.layer_decay < 1)
        -> gate_by_layer                               (transfer.gradual_unfreezing: updates)
      inside optax.multi_transform(train | frozen)     (transfer.mode = "features")

`optimizer` section:

    name          "adamw" | "bert_adam" | "lamb" | "sgd"
    learning_rate peak learning rate
    warmup_steps  linear warmup from 0 to the peak (< 0: ceil(warmup_frac * total_steps))
    warmup_frac   warmup as a fraction of the run (used when warmup_steps < 0)
    decay         "linear" (to end_lr at total_steps) | "cosine" | "inverse_sqrt" | "constant" |
                  "stlr" (ULMFiT's slanted triangular LR, eq. 3: stlr_cut_frac, stlr_ratio)
    end_lr        final learning rate of linear / cosine decay
    b1, b2, eps   Adam moments
    weight_decay  decoupled weight decay (0 disables)

`transfer` section (optional; absent = every parameter trains at one rate):

    mode="full"            every parameter trains
    mode="features"        parameters matching `frozen` (regexes on "/"-joined paths; default: the
                           task model's encoder) get optax.set_to_zero through multi_transform:
                           they stay bit-identical and carry no optimizer state (ELMo-style
                           feature extraction, with the task model's scalar mix)
    layer_decay=d < 1      discriminative learning rates (ULMFiT: d = 1/2.6; layer-wise LR decay):
                           lr(layer l) = lr * d ** (L + 1 - l)
    gradual_unfreezing     ULMFiT: at first only layer L+1 trains; every `unfreeze_every` steps
                           (0: one epoch) the next layer down joins. Gradients of frozen layers are
                           zeroed before the optimizer (no moment build-up) and their updates after
                           it (no weight decay), so they stay bit-identical until unfrozen.

Layers. `layer_ids(params, num_layers, rules)` gives every leaf a layer index: 0 for embeddings,
1..L for the L layers, L+1 ("top") for heads and whatever sits above the stack. `rules` is an
ordered list of (regex on the "/"-joined path, spec); the first match wins; spec is

    int        that index                      e.g. (r"embed", 0)
    "match"    1 + the regex's group `layer`   e.g. (r"(^|/)lstm_(?P<layer>\\d+)(/|$)", "match")
    "stacked"  the leaf is a scanned stack [L, ...]: index 1..L along axis 0
    "top"      L + 1

`DEFAULT_LAYER_RULES` covers plmjax Transformers (scanned `layers` or unrolled `layers_i`); the RNN
families pass their own. `bert_adam` is the optimizer of the original BERT code
(AdamWeightDecayOptimizer): Adam *without* bias correction, weight decay added to the update before
the learning rate, eps outside the sqrt, assembled from optax's moment primitives.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

NO_DECAY_NAMES = ("bias", "scale")   # flax names of biases and LayerNorm gain/offset
OPTIMIZERS = ("adamw", "bert_adam", "lamb", "sgd")
DECAYS = ("linear", "cosine", "inverse_sqrt", "constant", "stlr")
DEFAULT_LAYER_RULES = (
    (r"(^|/)layers_(?P<layer>\d+)(/|$)", "match"),
    (r"(^|/)layers(/|$)", "stacked"),
    (r"embed", 0),
    (r".*", "top"),
)


# ---- schedules ---------------------------------------------------------------------------------------
def stlr(peak: float, total_steps: int, cut_frac: float = 0.1, ratio: float = 32.0) -> optax.Schedule:
  """ULMFiT's slanted triangular learning rate (Howard & Ruder 2018, eq. 3)."""
  cut = max(int(math.floor(total_steps * cut_frac)), 1)

  def schedule(t):
    t = jnp.asarray(t, jnp.float32)
    p = jnp.where(t < cut, t / cut, 1 - (t - cut) / max(cut * (1 / cut_frac - 1), 1))
    return peak * (1 + jnp.maximum(p, 0) * (ratio - 1)) / ratio
  return schedule


def warmup_steps(opt_cfg, total_steps: int) -> int:
  """optimizer.warmup_steps, or ceil(warmup_frac * total) when it is < 0 (as transformers'
  warmup_ratio: 10 % of 125 steps is 13 warmup steps)."""
  w = int(opt_cfg.warmup_steps)
  return w if w >= 0 else int(math.ceil(float(opt_cfg.get("warmup_frac", 0.0)) * total_steps))


def make_schedule(opt_cfg, total_steps: int) -> optax.Schedule:
  """Warmup (linear from 0) then the configured decay; "stlr" has its own warmup (cut_frac)."""
  peak, name = float(opt_cfg.learning_rate), opt_cfg.decay
  if name == "stlr":
    return stlr(peak, total_steps, float(opt_cfg.get("stlr_cut_frac", 0.1)),
                float(opt_cfg.get("stlr_ratio", 32.0)))
  warmup = warmup_steps(opt_cfg, total_steps)
  decay_steps = max(total_steps - warmup, 1)
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
    raise ValueError(f"optimizer.decay={name!r}: expected one of {DECAYS}")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


# ---- optimizers --------------------------------------------------------------------------------------
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


def base_optimizer(opt_cfg, schedule) -> optax.GradientTransformation:
  b1, b2, eps, wd = float(opt_cfg.b1), float(opt_cfg.b2), float(opt_cfg.eps), float(opt_cfg.weight_decay)
  name = opt_cfg.name
  if name == "adamw":
    return optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=decay_mask)
  if name == "lamb":
    return optax.lamb(schedule, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=decay_mask)
  if name == "bert_adam":
    return optax.chain(scale_by_adam_no_bias_correction(b1, b2, eps),
                       optax.add_decayed_weights(wd, mask=decay_mask),
                       optax.scale_by_learning_rate(schedule))
  if name == "sgd":
    return optax.sgd(schedule)
  raise ValueError(f"optimizer.name={name!r}: expected one of {OPTIMIZERS}")


# ---- transfer links: layers, discriminative LR, gradual unfreezing, freezing -------------------------
def path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def layer_ids(params, num_layers: int, rules: Sequence = DEFAULT_LAYER_RULES):
  """Tree of layer indices: an int per leaf, or an int array [L] for a scanned stack."""
  compiled = [(re.compile(p), spec) for p, spec in rules]

  def one(path, leaf):
    name = path_str(path)
    for pat, spec in compiled:
      m = pat.search(name)
      if not m:
        continue
      if spec == "top":
        return num_layers + 1
      if spec == "stacked":
        if leaf.shape[:1] != (num_layers,):
          raise ValueError(f"layer rules: {name} is marked 'stacked' but its shape {leaf.shape} "
                           f"does not start with num_layers={num_layers}")
        return np.arange(1, num_layers + 1)
      if spec == "match":
        return int(m.group("layer")) + 1
      return int(spec)
    raise ValueError(f"layer rules: no rule matches parameter {name}")
  return jax.tree_util.tree_map_with_path(one, params)


def _per_leaf(ids, leaf, values: np.ndarray):
  """values indexed by layer id -> a scalar, or [L, 1, ...] broadcastable onto a stacked leaf."""
  v = values[np.asarray(ids)]
  return jnp.asarray(v.reshape(v.shape + (1,) * (leaf.ndim - v.ndim)), leaf.dtype)


def _map(fn, updates, ids_tree):
  """fn(update, layer ids) over the leaves; leaves masked out by optax.multi_transform pass through."""
  masked = lambda x: isinstance(x, optax.MaskedNode)   # noqa: E731
  return jax.tree.map(lambda u, i: u if masked(u) else fn(u, i), updates, ids_tree, is_leaf=masked)


def scale_by_layer(ids_tree, factors: np.ndarray) -> optax.GradientTransformation:
  """Multiplies each update by factors[layer] (discriminative learning rates). Stateless."""
  def update(updates, state, params=None):
    del params
    return _map(lambda u, i: u * _per_leaf(i, u, factors), updates, ids_tree), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def unfrozen_from(step, top: int, every: int):
  """Lowest trainable layer at `step` under gradual unfreezing (top, top-1, ... every `every`)."""
  return jnp.maximum(top - step // every, 0)


def gate_by_layer(ids_tree, top: int, every: int) -> optax.GradientTransformation:
  """Zeroes the updates of layers below `unfrozen_from(count)`; counts its own calls."""
  def init(_):
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    del params
    lowest = unfrozen_from(state.count, top, every)
    gated = _map(lambda u, i: u * (jnp.asarray(np.asarray(i)).reshape(
        np.shape(i) + (1,) * (u.ndim - np.ndim(i))) >= lowest).astype(u.dtype), updates, ids_tree)
    return gated, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))
  return optax.GradientTransformation(init, update)


def layer_factors(num_layers: int, layer_decay: float) -> np.ndarray:
  """[L + 2] learning-rate multipliers, 1 at the top."""
  top = num_layers + 1
  return np.array([layer_decay ** (top - l) for l in range(top + 1)], np.float32)


def frozen_labels(params, patterns: Sequence[str]):
  compiled = [re.compile(p) for p in patterns]
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "frozen" if any(p.search(path_str(path)) for p in compiled) else "train", params)


def layer_learning_rates(schedule, num_layers: int, layer_decay: float, step: int,
                         gradual_unfreezing: bool = False, every: int = 1) -> np.ndarray:
  """Effective learning rate of layers 0..L+1 at `step` (0 where still frozen)."""
  lr = float(schedule(step)) * layer_factors(num_layers, layer_decay)
  if gradual_unfreezing:
    lr = np.where(np.arange(num_layers + 2) >= int(unfrozen_from(step, num_layers + 1, every)), lr, 0.0)
  return lr


# ---- the builder -------------------------------------------------------------------------------------
def make_optimizer(opt_cfg, total_steps: int, clip_norm: float = 0.0, *, params=None, transfer=None,
                   num_layers: int = 0, steps_per_epoch: int = 0,
                   layer_rules: Sequence = DEFAULT_LAYER_RULES):
  """-> (tx, schedule). The schedule is returned too so that the step can log the learning rate.
  `params` (arrays or ShapeDtypeStructs: only paths and shapes are read) and `num_layers` are
  needed by the transfer links; `steps_per_epoch` is gradual unfreezing's default period."""
  schedule = make_schedule(opt_cfg, total_steps)
  opt = base_optimizer(opt_cfg, schedule)
  parts = [optax.clip_by_global_norm(float(clip_norm))] if clip_norm > 0 else []
  t = transfer
  layered = t is not None and (float(t.layer_decay) != 1.0 or bool(t.gradual_unfreezing))
  if layered and params is None:
    raise ValueError("transfer.layer_decay / gradual_unfreezing need the parameter tree")
  ids = layer_ids(params, num_layers, layer_rules) if layered else None
  unfreeze = t is not None and bool(t.gradual_unfreezing)
  every = (int(t.unfreeze_every) or steps_per_epoch or 1) if unfreeze else 1
  if unfreeze:
    parts.append(gate_by_layer(ids, num_layers + 1, every))
  parts.append(opt)
  if t is not None and float(t.layer_decay) != 1.0:
    parts.append(scale_by_layer(ids, layer_factors(num_layers, float(t.layer_decay))))
  if unfreeze:
    parts.append(gate_by_layer(ids, num_layers + 1, every))
  tx = optax.chain(*parts) if len(parts) > 1 else parts[0]
  mode = "full" if t is None else t.mode
  if mode == "features":
    labels = frozen_labels(params, tuple(t.frozen))
    if not any(v == "frozen" for v in jax.tree.leaves(labels)):
      raise ValueError(f"transfer.frozen={tuple(t.frozen)} matches no parameter")
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  elif mode != "full":
    raise ValueError(f"transfer.mode={mode!r}: expected 'full' or 'features'")
  return tx, schedule
