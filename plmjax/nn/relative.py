"""Relative multi-head attention (Dai et al., 2019, Transformer-XL; Yang et al., 2019, XLNet).

Transformer-XL replaces absolute positions by the *distance* between query and key. With queries
q_i (query i at absolute position m + i of a segment that follows m memory slots), keys k_j, and
R_d the sinusoidal encoding of distance d projected by W_r, the attention logit is

    A_ij = (q_i + u)·k_j            (a) content  + (c) global content bias u = r_w_bias
         + (q_i + v)·W_r R_{m+i-j}  (b) position + (d) global position bias v = r_r_bias
         + (q_i + s)·S_{seg(i)≠seg(j)}   (XLNet only) relative segment encoding, s = r_s_bias

The position term is computed for all R = S + T distances S, S-1, ..., -T+1 at once ([B,N,T,R])
and re-indexed to [B,N,T,S] by `rel_shift` (a reshape, no gather). The position and segment terms
go to `jax.nn.dot_product_attention` as its additive `bias`; the content term is its ordinary
q·k with q + u as query. With attention dropout active, the explicit einsum path runs instead.

XLNet's query stream attends with queries at arbitrary target positions (`q_positions`); its
position term is then gathered per target instead of shifted. A query that may attend to no key
at all (XLNet's first target of an order, without memory) gets a zero attention output, not the
uniform average over hidden keys that the reference implementations fall back to.

Shapes: B batch, T query length, S key length (memory + segment), R = S + T distances,
N heads, D head dim, E model width.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.nn.attention import HeadsDense, dense_init, dot_product_attention
from plmjax.nn.embeddings import sinusoidal_positions

Array = jax.Array


# --------------------------------------------------------------------------------------------------
# Relative position encodings


def relative_distances(q_len: int, k_len: int, clamp_len: int = -1) -> Array:
  """[R = k_len + q_len] distances k_len, k_len - 1, ..., -q_len + 1, clamped to ±clamp_len if > 0.

  Query i of a segment that follows m = k_len - q_len memory slots sits at absolute position
  m + i; its distance to key j is m + i - j, found at index q_len - i + j (see `rel_shift`)."""
  d = jnp.arange(k_len, -q_len, -1, dtype=jnp.float32)
  return jnp.clip(d, -clamp_len, clamp_len) if clamp_len > 0 else d


def relative_encoding(q_len: int, k_len: int, dim: int, clamp_len: int = -1,
                      bi_data: bool = False, batch_size: Optional[int] = None) -> Array:
  """Sinusoidal encodings of the distances: [R, dim]; with `bi_data` (XLNet), [B, R, dim] whose
  first half of the batch reads the sequence forward and second half backward (distances negated)."""
  d = relative_distances(q_len, k_len, clamp_len)
  fwd = sinusoidal_positions(d, dim)                                   # [R, dim]
  if not bi_data:
    return fwd
  if batch_size is None or batch_size % 2:
    raise ValueError(f"bi_data=True needs an even batch size, got {batch_size}")
  bwd = sinusoidal_positions(-d, dim)
  half = batch_size // 2
  return jnp.concatenate([jnp.broadcast_to(fwd, (half,) + fwd.shape),
                          jnp.broadcast_to(bwd, (half,) + bwd.shape)], axis=0)   # [B, R, dim]


def rel_shift(x: Array, k_len: int) -> Array:
  """[B, N, T, R = k_len + T] scores over distances -> [B, N, T, k_len] scores over keys:
  out[..., i, j] = x[..., i, T - i + j]. One reshape: view as [R, T], drop the first row, view
  as [T, R - 1], keep the first k_len columns."""
  b, n, t, r = x.shape
  if r != k_len + t:
    raise ValueError(f"rel_shift: {r} distances for {t} queries and {k_len} keys (need {k_len + t})")
  x = x.reshape(b, n, r, t)[:, :, 1:]
  return x.reshape(b, n, t, r - 1)[..., :k_len]


def rel_gather(x: Array, q_positions: Array, q_len: int, k_len: int) -> Array:
  """`rel_shift` for queries at arbitrary positions: x [B, N, P, R = k_len + q_len] scores of P
  queries, q_positions [B, P] their positions in the segment -> [B, N, P, k_len]."""
  idx = (q_len - q_positions)[:, None, :, None] + jnp.arange(k_len)          # [B, 1, P, S]
  return jnp.take_along_axis(x, jnp.broadcast_to(idx, x.shape[:3] + (k_len,)), axis=-1)


# --------------------------------------------------------------------------------------------------
# The attention module


class RelativeAttention(nn.Module):
  """Relative-position multi-head attention (no residual, no LayerNorm: the block adds them).

  Params (logical axes): query/key/value/pos kernels [E, N, D] ('embed', 'heads', 'kv'), out
  kernel [N, D, E]; biases r_w_bias / r_r_bias [N, D] ('heads', 'kv') unless `shared_biases`
  (then given to `attend`); with `segments`, r_s_bias [N, D] and seg_embed [2, N, D].

  Use: `k, v, kr = attn.keys(context, pos_emb)` once per layer, then `attn.attend(x, k, v, kr,
  ...)` for each query stream (XLNet's content and query streams share all weights).
  """
  num_heads: int
  head_dim: int
  embed_dim: int                 # E, the width the output projects back to
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  dropout_rate: float = 0.0
  init_std: float = 0.02
  shared_biases: bool = False
  segments: bool = False
  implementation: Optional[str] = None

  def setup(self):
    nd = (self.num_heads, self.head_dim)

    def proj(name):
      return HeadsDense((self.embed_dim,) + nd, ("embed", "heads", "kv"), use_bias=False,
                        init_std=self.init_std, dtype=self.dtype, param_dtype=self.param_dtype,
                        name=name)
    self.query = proj("query")
    self.key = proj("key")
    self.value = proj("value")
    self.pos = proj("pos")

    def bias(name, shape=nd, axes=("heads", "kv")):
      return self.param(name, nn.with_logical_partitioning(dense_init(self.init_std), axes),
                        shape, self.param_dtype)
    if not self.shared_biases:
      self.r_w_bias = bias("r_w_bias")
      self.r_r_bias = bias("r_r_bias")
    if self.segments:
      self.r_s_bias = bias("r_s_bias")
      self.seg_embed = bias("seg_embed", (2,) + nd, ("table", "heads", "kv"))
    self.out_kernel = self.param(
        "out", nn.with_logical_partitioning(dense_init(self.init_std), ("heads", "kv", "embed")),
        nd + (self.embed_dim,), self.param_dtype)

  def keys(self, context: Array, pos_emb: Array):
    """context [B, S, E] (memory ++ segment), pos_emb [R, E] or [B, R, E] ->
    k, v [B, S, N, D], kr [B|1, R, N, D]."""
    kr = self.pos(pos_emb.astype(self.dtype))
    return self.key(context), self.value(context), (kr if kr.ndim == 4 else kr[None])

  def attend(self, x: Array, k: Array, v: Array, kr: Array, mask: Optional[Array], *,
             train: bool, seg_diff: Optional[Array] = None, q_positions: Optional[Array] = None,
             biases: Optional[tuple[Array, Array]] = None) -> Array:
    """x [B, T|P, E] query-stream input -> [B, T|P, E].

    mask: bool [B|1, 1, T|P, S], True = may attend. seg_diff: bool [B, T|P, S], True where query
    and key lie in different segments (XLNet; None: no segment term). q_positions: [B, P]
    segment positions of the queries when they are not 0..T-1 (XLNet's query stream).
    biases: the shared (r_w, r_r) when `shared_biases`."""
    r_w, r_r = biases if self.shared_biases else (self.r_w_bias, self.r_r_bias)
    q = self.query(x)                                                       # [B, T, N, D]
    s = k.shape[1]
    scale = self.head_dim ** -0.5
    bd = jnp.einsum("btnd,brnd->bntr", q + r_r.astype(q.dtype), kr)       # [B, N, T, R]
    if q_positions is None:
      bd = rel_shift(bd, s)                                                 # [B, N, T, S]
    else:
      bd = rel_gather(bd, q_positions, kr.shape[1] - s, s)                  # [B, N, P, S]
    bias = bd.astype(jnp.float32)
    if self.segments and seg_diff is not None:
      ef = jnp.einsum("btnd,cnd->bntc", q + self.r_s_bias.astype(q.dtype),
                      self.seg_embed.astype(q.dtype)).astype(jnp.float32)   # [B, N, T, 2]
      bias = bias + jnp.where(seg_diff[:, None], ef[..., 1:], ef[..., :1])  # [B, N, T, S]
    rate = self.dropout_rate if train else 0.0
    rng = self.make_rng("dropout") if rate > 0.0 else None
    out = dot_product_attention(q + r_w.astype(q.dtype), k, v, mask, bias * scale, scale=scale,
                                dropout_rate=rate, dropout_rng=rng,
                                implementation=self.implementation)         # [B, T, N, D]
    if mask is not None:   # a query that may see no key gets nothing (not a uniform average)
      sees = jnp.any(mask, axis=-1)                                         # [B|1, 1|N, T]
      out = out * jnp.moveaxis(sees, 1, -1)[..., None].astype(out.dtype)   # [B|1, T, 1|N, 1]
    return jnp.einsum("btnd,nde->bte", out, self.out_kernel.astype(out.dtype))
