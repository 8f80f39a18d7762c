"""Multi-head scaled dot-product attention.

Every attention in plmjax goes through `dot_product_attention` below, which calls
`jax.nn.dot_product_attention` unless attention dropout is active, in which case it takes the
explicit einsum path (`jax.nn.dot_product_attention` has no dropout). The einsum path is also the
reference the tests compare the fused path against.

`implementation=None` ("auto") resolves per call, at trace time (`resolve_implementation`): the
fused cuDNN flash-attention kernel on GPU when the call fits it (bfloat16/float16, head dim a
multiple of 8 and at most 128, no additive bias; with a boolean mask, even T and S), else XLA. JAX's own
`implementation=None` always picks XLA, so without this step the cuDNN kernel would never run.
tests/test_gpu.py checks cuDNN against XLA (values and gradients) for every mask the models use.

Shapes: B batch, T query length, S key length, N heads, D head dim, E embed.
Masks are boolean, True = may attend, broadcastable to [B, N, T, S].
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

# --------------------------------------------------------------------------------------------------
# Mask builders (True = visible)


def padding_mask(attention_mask: Array) -> Array:
  """[B, S] 1/0 key mask -> [B, 1, 1, S] boolean."""
  return attention_mask.astype(bool)[:, None, None, :]


def causal_mask(q_len: int, k_len: Optional[int] = None, offset: Array | int = 0) -> Array:
  """[1, 1, T, S]: query i (at absolute position offset + i) sees keys j <= offset + i."""
  k_len = q_len if k_len is None else k_len
  q_pos = jnp.arange(q_len)[:, None] + offset
  k_pos = jnp.arange(k_len)[None, :]
  return (k_pos <= q_pos)[None, None]


def combine_masks(*masks: Optional[Array]) -> Optional[Array]:
  """Logical AND of the masks that are not None (broadcasting); None if all are None."""
  masks = [m for m in masks if m is not None]
  if not masks:
    return None
  out = masks[0]
  for m in masks[1:]:
    out = jnp.logical_and(out, m)
  return out


# --------------------------------------------------------------------------------------------------
# The attention function


def einsum_attention(q: Array, k: Array, v: Array, mask: Optional[Array] = None,
                     bias: Optional[Array] = None, *, scale: Optional[float] = None,
                     dropout_rate: float = 0.0, dropout_rng: Optional[Array] = None,
                     return_weights: bool = False):
  """Reference attention. q [B,T,N,D], k/v [B,S,N,D] -> [B,T,N,D] (and weights [B,N,T,S])."""
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  logits = jnp.einsum("btnd,bsnd->bnts", q, k).astype(jnp.float32) * scale
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1)
  if dropout_rate > 0.0 and dropout_rng is not None:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  out = jnp.einsum("bnts,bsnd->btnd", weights.astype(v.dtype), v)
  return (out, weights) if return_weights else out


CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def resolve_implementation(q: Array, k: Array, mask: Optional[Array] = None,
                           bias: Optional[Array] = None) -> str:
  """"auto" -> "cudnn" when the fused GPU kernel supports this call, else "xla" (module docstring).
  Additive biases (Transformer-XL / XLNet relative terms) stay on XLA: they need their gradient.
  cuDNN turns a boolean mask into a bias, and trains with a bias only at even T and S."""
  d, t, s = q.shape[-1], q.shape[1], k.shape[1]
  fits = jax.default_backend() == "gpu" and q.dtype in CUDNN_DTYPES and d % 8 == 0 and d <= 128
  if fits and bias is None and (mask is None or (t % 2 == 0 and s % 2 == 0)):
    return "cudnn"
  return "xla"


def dot_product_attention(q: Array, k: Array, v: Array, mask: Optional[Array] = None,
                          bias: Optional[Array] = None, *, scale: Optional[float] = None,
                          dropout_rate: float = 0.0, dropout_rng: Optional[Array] = None,
                          implementation: Optional[str] = None) -> Array:
  """Dispatch: einsum when dropout is active or `implementation == "einsum"`, else the fused
  `jax.nn.dot_product_attention` with `implementation` in {None (auto), "xla", "cudnn"}."""
  if implementation == "einsum" or (dropout_rate > 0.0 and dropout_rng is not None):
    return einsum_attention(q, k, v, mask, bias, scale=scale, dropout_rate=dropout_rate,
                            dropout_rng=dropout_rng)
  if implementation is None:
    implementation = resolve_implementation(q, k, mask, bias)
  if mask is not None:
    mask = jnp.broadcast_to(mask, (q.shape[0], q.shape[2], q.shape[1], k.shape[1]))
  if bias is not None:
    bias = bias.astype(q.dtype)
  return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale,
                                      implementation=implementation)


# --------------------------------------------------------------------------------------------------
# The module


def dense_init(std: float) -> Callable:
  return nn.initializers.normal(stddev=std)


class HeadsDense(nn.Module):
  """A projection into or out of heads, with its kernel created in its true shape so the logical
  axis names apply to it directly (flax's DenseGeneral initialises a flat 2-D kernel, which breaks
  3-D logical constraints under an active mesh).

  into heads:  x [..., E] -> [..., N, D], kernel [E, N, D] ('embed', 'heads', 'kv'), bias [N, D]
  out of heads: x [..., N, D] -> [..., E], kernel [N, D, E] ('heads', 'kv', 'embed'), bias [E]
  """
  shape: tuple[int, int, int]
  axes: tuple[str, str, str]
  into_heads: bool = True
  use_bias: bool = True
  init_std: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", nn.with_logical_partitioning(dense_init(self.init_std), self.axes),
                        self.shape, self.param_dtype)
    eq = "...e,end->...nd" if self.into_heads else "...nd,nde->...e"
    y = jnp.einsum(eq, x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      b_shape, b_axes = (self.shape[1:], self.axes[1:]) if self.into_heads else (self.shape[2:], self.axes[2:])
      y = y + self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, b_axes),
                         b_shape, self.param_dtype).astype(self.dtype)
    return y


class MultiHeadAttention(nn.Module):
  """Self- or cross-attention with separate q/k/v projections and an optional KV cache.

  Params (logical axes): query/key/value kernel [E, N, D] ('embed', 'heads', 'kv'),
  out kernel [N, D, E] ('heads', 'kv', 'embed').

  With `decode=True` the module keeps `cached_key`/`cached_value` [B, S_max, N, D] and
  `cache_index` in the 'cache' collection; each call appends its keys at `cache_index` and its
  queries see every cached key at or before their own position (causal over the cache). The first
  `cache_prefix` slots are visible to every query: a prefix-LM (UNILM's seq2seq mask) prefills its
  source with full visibility, then decodes the target causally. The cache is created by `init` (or
  by a first `apply(..., mutable=['cache'])`) on an input of shape [B, S_max] with `decode=True`.
  """
  num_heads: int
  head_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0
  init_std: float = 0.02
  use_bias: bool = True
  implementation: Optional[str] = None

  @nn.compact
  def __call__(self, x: Array, context: Optional[Array] = None, mask: Optional[Array] = None,
               bias: Optional[Array] = None, *, train: bool = False, decode: bool = False,
               cache_prefix: int = 0) -> Array:
    context = x if context is None else context
    e, n, d = x.shape[-1], self.num_heads, self.head_dim
    kw = dict(use_bias=self.use_bias, init_std=self.init_std, dtype=self.dtype,
              param_dtype=self.param_dtype)

    def proj(name):
      return HeadsDense((e, n, d), ("embed", "heads", "kv"), name=name, **kw)

    q = proj("query")(x)          # [B, T, N, D]
    k = proj("key")(context)      # [B, S, N, D]
    v = proj("value")(context)    # [B, S, N, D]

    if decode:
      k, v, cache_mask = self._update_cache(k, v, cache_prefix)
      mask = combine_masks(mask, cache_mask)

    rate = self.dropout_rate if train else 0.0
    rng = self.make_rng("dropout") if rate > 0.0 else None
    out = dot_product_attention(q, k, v, mask, bias, dropout_rate=rate, dropout_rng=rng,
                                implementation=self.implementation)   # [B, T, N, D]
    return HeadsDense((n, d, e), ("heads", "kv", "embed"), into_heads=False, name="out", **kw)(out)  # [B, T, E]

  def _update_cache(self, k: Array, v: Array, prefix: int = 0):
    """Writes k/v [B, L, N, D] at cache_index; returns the full cache and its mask: causal over the
    cache slots, except that slots < `prefix` (static) are visible to every query."""
    is_init = not self.has_variable("cache", "cached_key")
    ck = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
    cv = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
    idx = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if is_init:   # init call: shapes only; the cache length is the init input's length
      return k, v, None
    length = k.shape[1]
    ck.value = jax.lax.dynamic_update_slice(ck.value, k.astype(ck.value.dtype), (0, idx.value, 0, 0))
    cv.value = jax.lax.dynamic_update_slice(cv.value, v.astype(cv.value.dtype), (0, idx.value, 0, 0))
    mask = causal_mask(length, ck.value.shape[1], offset=idx.value)   # [1, 1, L, S_max]
    if prefix:
      mask = mask | (jnp.arange(ck.value.shape[1]) < prefix)[None, None, None, :]
    idx.value = idx.value + length
    return ck.value, cv.value, mask
