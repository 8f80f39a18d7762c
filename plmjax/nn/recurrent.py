"""Recurrent layers: the LSTM of ELMo, AWD-LSTM (ULMFiT) and SiATL, as `jax.lax.scan` over time.

One LSTM layer, one direction (Hochreiter & Schmidhuber, 1997), with ELMo's optional projection
(Peters et al., 2018) and clipping:

    z_t = x_t W_i + b + h_{t-1} W_h                      [B, 4H]   (x_t W_i + b for all t at once)
    i, f, g, o = split(z_t)
    c_t = sigmoid(f + forget_bias) c_{t-1} + sigmoid(i) tanh(g),   clipped to +-cell_clip
    h_t = sigmoid(o) tanh(c_t)                           [B, H]
    h_t = clip(h_t W_p, +-proj_clip)                     [B, P]    (only with a projection)

The input projection of every time step is one matmul before the scan; the scan carries (h, c) and
does only the [B, P] x [P, 4H] recurrent matmul per step. `reverse=True` runs right to left (outputs
stay aligned with their positions). With a [B, T] `mask` the carry passes through padded steps
unchanged, so right padding neither changes a forward final state nor reaches a backward one.

State is explicit, like Transformer-XL's memory: a layer takes an initial (h, c) and returns the
final one; an LM over a stream passes the state of batch n into batch n + 1 (stop-gradient: truncated
back-propagation through time). `LSTMStack.initial_state` makes the zero state.

AWD-LSTM's regularisers (Merity et al., 2018):
  - weight drop (DropConnect on W_h): one Bernoulli mask on the recurrent matrix per call, so the
    same dropped connections hold at every time step of every sequence in the batch;
  - locked (variational) dropout: one mask per sequence and feature, shared over time
    (`locked_dropout`, an `nn.Dropout` broadcast over the length axis);
  - embedding dropout: whole rows of the embedding table (words) dropped (`embedding_dropout`);
  - AR, alpha * mean(dropped top output^2), and TAR, beta * mean((h_t - h_{t-1})^2) on the
    undropped top output (`activation_regularisers`).

Logical axes: W_i [I, 4H] ('embed', 'mlp'), W_h [P, 4H] ('embed', 'mlp'), bias [4H] ('mlp',),
W_p [H, P] ('mlp', 'embed').
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
State = Any        # per layer {"h": [B, P], "c": [B, H]}; a tuple of those for a stack


def uniform_init(scale: float):
  """U(-scale, scale), PyTorch's LSTM initialisation with scale = 1 / sqrt(H)."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


def lstm_recurrence(xw: Array, wh: Array, wp: Optional[Array], h0: Array, c0: Array,
                    mask: Optional[Array], *, forget_bias: float = 0.0, cell_clip: float = 0.0,
                    proj_clip: float = 0.0, reverse: bool = False):
  """The scan. xw [B, T, 4H] (input part of the gates), wh [P, 4H], wp [H, P] or None,
  h0 [B, P], c0 [B, H], mask [B, T] or None -> (outputs [B, T, P], h_T [B, P], c_T [B, H])."""
  hidden = c0.shape[-1]
  if xw.shape[-1] != 4 * hidden:
    raise ValueError(f"lstm: gate inputs have {xw.shape[-1]} features, expected 4 * {hidden}")
  xs = xw.swapaxes(0, 1)                                                         # [T, B, 4H]
  ms = (jnp.ones(xw.shape[:2], bool) if mask is None else mask.astype(bool)).swapaxes(0, 1)

  def step(carry, inputs):
    h, c = carry                                                                 # [B, P], [B, H]
    x_t, m_t = inputs                                                            # [B, 4H], [B]
    z = (x_t + (h.astype(wh.dtype) @ wh)).astype(jnp.float32)                    # [B, 4H]
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c_new = jax.nn.sigmoid(f + forget_bias) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    if cell_clip > 0:
      c_new = jnp.clip(c_new, -cell_clip, cell_clip)
    h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)                                  # [B, H]
    if wp is not None:
      h_new = (h_new.astype(wp.dtype) @ wp).astype(jnp.float32)                  # [B, P]
      if proj_clip > 0:
        h_new = jnp.clip(h_new, -proj_clip, proj_clip)
    keep = m_t[:, None]
    h_new, c_new = jnp.where(keep, h_new, h), jnp.where(keep, c_new, c)
    return (h_new, c_new), h_new

  (h_t, c_t), ys = jax.lax.scan(step, (h0.astype(jnp.float32), c0.astype(jnp.float32)),
                                (xs, ms), reverse=reverse)
  return ys.swapaxes(0, 1), h_t, c_t                                             # [B, T, P]


class LSTM(nn.Module):
  """One LSTM layer, one direction: x [B, T, I], state {"h", "c"} or None, mask [B, T] or None
  -> (outputs [B, T, P], final state). P = proj_size or hidden_size."""
  hidden_size: int
  proj_size: int = 0
  forget_bias: float = 0.0
  cell_clip: float = 0.0
  proj_clip: float = 0.0
  weight_drop: float = 0.0
  reverse: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @property
  def out_size(self) -> int:
    return self.proj_size or self.hidden_size

  @nn.compact
  def __call__(self, x: Array, state: Optional[dict] = None, mask: Optional[Array] = None, *,
               train: bool = False):
    h4, p = 4 * self.hidden_size, self.out_size
    init = uniform_init(self.hidden_size ** -0.5)
    part = nn.with_logical_partitioning
    wi = self.param("wi", part(init, ("embed", "mlp")), (x.shape[-1], h4), self.param_dtype)
    wh = self.param("wh", part(init, ("embed", "mlp")), (p, h4), self.param_dtype)
    b = self.param("bias", part(init, ("mlp",)), (h4,), self.param_dtype)
    wp = None
    if self.proj_size:
      wp = self.param("wp", part(init, ("mlp", "embed")), (self.hidden_size, p), self.param_dtype)
    if train and self.weight_drop > 0:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.weight_drop, wh.shape)
      self.sow("intermediates", "weight_drop_mask", keep)
      wh = jnp.where(keep, wh / (1.0 - self.weight_drop), 0.0)                   # one mask per call
    if state is None:
      state = zero_state(x.shape[0], self.hidden_size, p)
    xw = x.astype(self.dtype) @ wi.astype(self.dtype) + b.astype(self.dtype)     # [B, T, 4H]
    ys, h, c = lstm_recurrence(
        xw, wh.astype(self.dtype), None if wp is None else wp.astype(self.dtype),
        state["h"], state["c"], mask, forget_bias=self.forget_bias, cell_clip=self.cell_clip,
        proj_clip=self.proj_clip, reverse=self.reverse)
    return nn.with_logical_constraint(ys, ("batch", "length", "embed")), {"h": h, "c": c}


def zero_state(batch_size: int, hidden_size: int, out_size: int) -> dict:
  return {"h": jnp.zeros((batch_size, out_size), jnp.float32),
          "c": jnp.zeros((batch_size, hidden_size), jnp.float32)}


@dataclasses.dataclass(frozen=True)
class LSTMStackConfig:
  """A stack of LSTM layers. `hidden_sizes` has one entry per layer (AWD-LSTM: 1150, 1150, 400)."""
  hidden_sizes: tuple = (512, 512)
  proj_size: int = 0              # every layer projected to this width (ELMo: 4096 -> 512)
  forget_bias: float = 0.0
  cell_clip: float = 0.0
  proj_clip: float = 0.0
  weight_drop: float = 0.0        # DropConnect on W_h (AWD-LSTM: 0.5)
  hidden_dropout: float = 0.0     # locked dropout on the output of every layer but the last
  residual: bool = False          # x_{l+1} = LSTM(x_l) + x_l between equal widths (ELMo)
  bidirectional: bool = False     # a forward and a backward stack
  mix_directions: bool = False    # layer l+1 of both directions reads [fwd_l; bwd_l] (a "deep
                                  # BiLSTM"); False keeps the directions apart (ELMo's biLM)
  dtype: str = "float32"

  def __post_init__(self):
    if not self.hidden_sizes:
      raise ValueError("LSTMStackConfig.hidden_sizes is empty: a stack needs at least one layer")
    if self.mix_directions and not self.bidirectional:
      raise ValueError("LSTMStackConfig.mix_directions=True needs bidirectional=True")
    for name in ("weight_drop", "hidden_dropout"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"LSTMStackConfig.{name}={getattr(self, name)} is not in [0, 1)")

  @property
  def out_sizes(self) -> tuple:
    return tuple(self.proj_size or h for h in self.hidden_sizes)

  @property
  def directions(self) -> tuple:
    return ("fwd", "bwd") if self.bidirectional else ("fwd",)


class LSTMStack(nn.Module):
  """x [B, T, I], state (from `initial_state`, or None for zeros), mask [B, T]
  -> (layer outputs: list of L arrays [B, T, D_l], final state).

  With `bidirectional`, each layer output is [fwd; bwd] concatenated (D_l = 2 P_l) and the state is
  {"fwd": per-layer states, "bwd": per-layer states}; otherwise the state is a tuple of per-layer
  states. Locked dropout is applied between layers (not after the last: the model owns that)."""
  cfg: LSTMStackConfig

  def initial_state(self, batch_size: int):
    return initial_state(self.cfg, batch_size)

  @nn.compact
  def __call__(self, x: Array, state=None, mask: Optional[Array] = None, *, train: bool = False):
    cfg = self.cfg
    if state is None:
      state = initial_state(cfg, x.shape[0])
    states = state if cfg.bidirectional else {"fwd": state}
    inputs = {d: x for d in cfg.directions}                                      # [B, T, I]
    outputs, finals = [], {d: [] for d in cfg.directions}
    for l, hidden in enumerate(cfg.hidden_sizes):
      ys, final = StackLayer(cfg, hidden, name=f"layers_{l}")(
          inputs, {d: states[d][l] for d in cfg.directions}, mask, train=train)
      for d in cfg.directions:
        if cfg.residual and l > 0 and ys[d].shape[-1] == inputs[d].shape[-1]:
          ys[d] = ys[d] + inputs[d]
        finals[d].append(final[d])
      out = jnp.concatenate([ys[d] for d in cfg.directions], axis=-1)            # [B, T, D_l]
      outputs.append(out)
      if l + 1 < len(cfg.hidden_sizes):
        drop = locked_dropout(cfg.hidden_dropout, train)
        if cfg.mix_directions:
          inputs = {d: drop(out) for d in cfg.directions}                       # both see both
        else:
          inputs = {d: drop(ys[d]) for d in cfg.directions}                     # kept apart
    finals = {d: tuple(v) for d, v in finals.items()}
    return outputs, (finals if cfg.bidirectional else finals["fwd"])


class StackLayer(nn.Module):
  """Layer l of a stack: one LSTM per direction (params `layers_l/fwd`, `layers_l/bwd`), so that
  layer-indexed transfer rules (discriminative learning rates, unfreezing) find it by name."""
  cfg: LSTMStackConfig
  hidden_size: int

  @nn.compact
  def __call__(self, inputs: dict, states: dict, mask: Optional[Array], *, train: bool):
    cfg, ys, finals = self.cfg, {}, {}
    for d in cfg.directions:
      lstm = LSTM(self.hidden_size, cfg.proj_size, cfg.forget_bias, cfg.cell_clip, cfg.proj_clip,
                  cfg.weight_drop, reverse=(d == "bwd"), dtype=jnp.dtype(cfg.dtype), name=d)
      ys[d], finals[d] = lstm(inputs[d], states[d], mask, train=train)           # [B, T, P]
    return ys, finals


def initial_state(cfg: LSTMStackConfig, batch_size: int):
  """Zero state of a stack: a tuple of per-layer {"h", "c"} (per direction when bidirectional)."""
  one = tuple(zero_state(batch_size, h, p) for h, p in zip(cfg.hidden_sizes, cfg.out_sizes))
  return {d: one for d in cfg.directions} if cfg.bidirectional else one


def locked_dropout(rate: float, train: bool) -> nn.Dropout:
  """Variational dropout on [B, T, D]: one mask per sequence and feature, the same at every step."""
  return nn.Dropout(rate, broadcast_dims=(1,), deterministic=not train or rate == 0.0)


def embedding_dropout(table: Array, rate: float, key: Optional[Array]) -> Array:
  """Drops whole rows (words) of an embedding table [V, E], scaling the kept ones by 1 / (1 - rate):
  every occurrence of a dropped word in the batch is zero. `key=None` (eval) returns the table."""
  if key is None or rate == 0.0:
    return table
  keep = jax.random.bernoulli(key, 1.0 - rate, (table.shape[0], 1))                # [V, 1]
  return jnp.where(keep, table / (1.0 - rate), 0.0)


def activation_regularisers(dropped_top: Array, top: Array, mask: Optional[Array], alpha: float,
                            beta: float) -> tuple[Array, Array]:
  """AWD-LSTM's AR and TAR over real tokens. dropped_top, top [B, T, D], mask [B, T] -> (ar, tar)."""
  m = jnp.ones(top.shape[:2], jnp.float32) if mask is None else mask.astype(jnp.float32)
  ar = alpha * ((dropped_top.astype(jnp.float32) ** 2).mean(-1) * m).sum() / jnp.maximum(m.sum(), 1)
  diff = (top[:, 1:] - top[:, :-1]).astype(jnp.float32)                           # [B, T-1, D]
  m2 = m[:, 1:] * m[:, :-1]
  tar = beta * ((diff ** 2).mean(-1) * m2).sum() / jnp.maximum(m2.sum(), 1)
  return ar, tar


def detach_state(state):
  """Truncated BPTT: the carried state enters the next batch as a constant."""
  return jax.tree.map(jax.lax.stop_gradient, state)
