"""Transfer modes as optax transformations, keyed on parameter-tree paths and layer indices, so that
any model family (Transformers here, the RNN family's ELMo / ULMFiT / SiATL) can use them.

    tx, schedule = build_optimizer(opt_cfg, transfer_cfg, params, num_layers, total_steps,
                                   steps_per_epoch, rules=DEFAULT_LAYER_RULES)

Layers. `layer_ids(params, num_layers, rules)` gives every leaf a layer index: 0 for embeddings,
1..L for the L layers, L+1 ("top") for heads and whatever sits above the stack. `rules` is an
ordered list of (regex on the "/"-joined path, spec); the first match wins; spec is

    int        that index                      e.g. (r"embed", 0)
    "match"    1 + the regex's group `layer`   e.g. (r"(^|/)lstm_(?P<layer>\\d+)(/|$)", "match")
    "stacked"  the leaf is a scanned stack [L, ...]: index 1..L along axis 0
    "top"      L + 1

`DEFAULT_LAYER_RULES` covers plmjax Transformers (scanned `layers` or unrolled `layers_i`).

Modes (each a switch of the `transfer` config section):

    mode="full"            every parameter trains
    mode="features"        parameters matching `frozen` (default: the task model's encoder) get
                           optax.set_to_zero through optax.multi_transform: frozen weights stay
                           bit-identical and carry no optimizer state (ELMo-style feature
                           extraction; pair it with the task model's scalar mix)
    layer_decay=d < 1      discriminative learning rates (ULMFiT: d = 1/2.6; layer-wise LR decay):
                           lr(layer l) = lr * d ** (L + 1 - l)
    gradual_unfreezing     ULMFiT: at first only layer L+1 trains; every `unfreeze_every` steps
                           (0: one epoch) the next layer down joins. Gradients of frozen layers are
                           zeroed before the optimizer (no moment build-up) and their updates after
                           it (no weight decay), so they stay bit-identical until unfrozen.

Schedules (`optimizer.schedule`): "linear" (warmup then linear decay, from plmjax.train.optim),
"stlr" (ULMFiT's slanted triangular LR: cut_frac, ratio), "constant".

`layer_learning_rates(...)` reports the effective per-layer rate at a step (for logs and tests).
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from plmjax.train.optim import decay_mask, make_schedule

DEFAULT_LAYER_RULES = (
    (r"(^|/)layers_(?P<layer>\d+)(/|$)", "match"),
    (r"(^|/)layers(/|$)", "stacked"),
    (r"embed", 0),
    (r".*", "top"),
)


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


def stlr(peak: float, total_steps: int, cut_frac: float = 0.1, ratio: float = 32.0) -> optax.Schedule:
  """ULMFiT's slanted triangular learning rate (Howard & Ruder 2018, eq. 3)."""
  cut = max(int(math.floor(total_steps * cut_frac)), 1)

  def schedule(t):
    t = jnp.asarray(t, jnp.float32)
    p = jnp.where(t < cut, t / cut, 1 - (t - cut) / max(cut * (1 / cut_frac - 1), 1))
    return peak * (1 + jnp.maximum(p, 0) * (ratio - 1)) / ratio
  return schedule


def make_lr_schedule(opt_cfg, total_steps: int) -> optax.Schedule:
  name, peak = opt_cfg.schedule, float(opt_cfg.learning_rate)
  if name == "stlr":
    return stlr(peak, total_steps, float(opt_cfg.stlr_cut_frac), float(opt_cfg.stlr_ratio))
  if name in ("linear", "constant"):
    # ceil, as transformers' warmup_ratio: 10% of 125 steps is 13 warmup steps
    warmup = int(opt_cfg.warmup_steps) if opt_cfg.warmup_steps >= 0 else \
        int(math.ceil(float(opt_cfg.warmup_frac) * total_steps))
    return make_schedule(ml_collections.ConfigDict(dict(
        learning_rate=peak, warmup_steps=warmup, decay=name, end_lr=float(opt_cfg.end_lr))), total_steps)
  raise ValueError(f"optimizer.schedule={name!r}: expected linear, stlr or constant")


def layer_factors(num_layers: int, layer_decay: float) -> np.ndarray:
  """[L + 2] learning-rate multipliers, 1 at the top."""
  top = num_layers + 1
  return np.array([layer_decay ** (top - l) for l in range(top + 1)], np.float32)


def frozen_labels(params, patterns: Sequence[str]):
  compiled = [re.compile(p) for p in patterns]
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "frozen" if any(p.search(path_str(path)) for p in compiled) else "train", params)


def build_optimizer(opt_cfg, transfer_cfg, params, num_layers: int, total_steps: int,
                    steps_per_epoch: int, rules: Sequence = DEFAULT_LAYER_RULES):
  """-> (tx, schedule). See the module docstring for the config keys."""
  schedule = make_lr_schedule(opt_cfg, total_steps)
  name = opt_cfg.name
  if name == "adamw":
    opt = optax.adamw(schedule, b1=float(opt_cfg.b1), b2=float(opt_cfg.b2), eps=float(opt_cfg.eps),
                      weight_decay=float(opt_cfg.weight_decay), mask=decay_mask)
  elif name == "sgd":
    opt = optax.sgd(schedule)
  else:
    raise ValueError(f"optimizer.name={name!r}: expected adamw or sgd")
  ids = layer_ids(params, num_layers, rules)
  parts = []
  if float(opt_cfg.clip_norm) > 0:
    parts.append(optax.clip_by_global_norm(float(opt_cfg.clip_norm)))
  unfreeze = bool(transfer_cfg.gradual_unfreezing)
  every = int(transfer_cfg.unfreeze_every) or steps_per_epoch
  if unfreeze:
    parts.append(gate_by_layer(ids, num_layers + 1, every))
  parts.append(opt)
  if float(transfer_cfg.layer_decay) != 1.0:
    parts.append(scale_by_layer(ids, layer_factors(num_layers, float(transfer_cfg.layer_decay))))
  if unfreeze:
    parts.append(gate_by_layer(ids, num_layers + 1, every))
  tx = optax.chain(*parts)
  mode = transfer_cfg.mode
  if mode == "features":
    labels = frozen_labels(params, tuple(transfer_cfg.frozen))
    if not any(v == "frozen" for v in jax.tree.leaves(labels)):
      raise ValueError(f"transfer.frozen={tuple(transfer_cfg.frozen)} matches no parameter")
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  elif mode != "full":
    raise ValueError(f"transfer.mode={mode!r}: expected 'full' or 'features'")
  return tx, schedule


def layer_learning_rates(schedule, num_layers: int, layer_decay: float, step: int,
                         gradual_unfreezing: bool = False, every: int = 1) -> np.ndarray:
  """Effective learning rate of layers 0..L+1 at `step` (0 where still frozen)."""
  lr = float(schedule(step)) * layer_factors(num_layers, layer_decay)
  if gradual_unfreezing:
    lr = np.where(np.arange(num_layers + 2) >= int(unfrozen_from(step, num_layers + 1, every)), lr, 0.0)
  return lr
