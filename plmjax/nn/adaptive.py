"""Adaptive input embeddings (Baevski & Auli, 2019) and the adaptive softmax (Grave et al., 2017),
in Transformer-XL's projected form.

The vocabulary, sorted by frequency, is cut into clusters [0, c_1), [c_1, c_2), ..., [c_k, V).
Cluster i has its own table of width d_i = d_embed / div_val^i (rare words get narrow vectors) and
a projection P_i [d_i, d_model] to the model width:

    embed(w) = sqrt(d_model) · table_i[w - c_i] P_i           for w in cluster i

The adaptive softmax reuses the same tables (tied) and, per cluster, either the same projections
(`tie_projs[i]`) or its own. Its head predicts the shortlist [0, c_1) plus one logit per tail
cluster; a word of tail cluster i has log-probability

    log p(w) = log p_head(cluster i) + log p_i(w),   p_i = softmax over cluster i's words

computed from h P_i^T (width d_i), so the [d_model, V] matmul shrinks for the rare clusters.

With div_val == 1 there is one table [V, d_embed] and one projection (none if d_embed == d_model);
clusters then slice that table. JAX needs static shapes, so every cluster is computed for every
position and selected with `where` (the saving is in width, not in rows).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def cluster_bounds(vocab_size: int, cutoffs: Sequence[int]) -> list[tuple[int, int]]:
  """[(lo, hi)] per cluster; cutoffs must increase strictly inside (0, vocab_size)."""
  edges = [0] + list(cutoffs) + [vocab_size]
  if any(b <= a for a, b in zip(edges, edges[1:])):
    raise ValueError(f"adaptive cutoffs {list(cutoffs)} must increase strictly within (0, {vocab_size})")
  return list(zip(edges[:-1], edges[1:]))


def _init(std: float, axes):
  return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


class AdaptiveEmbedding(nn.Module):
  """ids [...] -> [..., d_model]. Params: table_i [n_i, d_i] ('vocab', 'table'),
  proj_i [d_i, d_model] ('table', 'embed') (absent when div_val == 1 and d_embed == d_model)."""
  vocab_size: int
  embed_size: int        # d_embed
  model_size: int        # d_model
  cutoffs: tuple = ()
  div_val: int = 1
  init_std: float = 0.02
  proj_init_std: float = 0.01
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    bounds = cluster_bounds(self.vocab_size, self.cutoffs)
    if self.div_val == 1:
      bounds = [(0, self.vocab_size)]
    self.bounds = bounds
    tables, projs = [], []
    for i, (lo, hi) in enumerate(bounds):
      d = self.embed_size // (self.div_val ** i)
      tables.append(self.param(f"table_{i}", _init(self.init_std, ("vocab", "table")), (hi - lo, d),
                               self.param_dtype))
      if self.div_val > 1 or self.embed_size != self.model_size:
        projs.append(self.param(f"proj_{i}", _init(self.proj_init_std, ("table", "embed")),
                                (d, self.model_size), self.param_dtype))
      else:
        projs.append(None)
    self.tables, self.projs = tables, projs

  def weights(self) -> tuple[list[Array], list[Optional[Array]]]:
    """(tables, projections), for the tied adaptive softmax."""
    return list(self.tables), list(self.projs)

  def __call__(self, ids: Array) -> Array:
    out = jnp.zeros(ids.shape + (self.model_size,), self.dtype)
    for (lo, hi), table, proj in zip(self.bounds, self.tables, self.projs):
      inside = (ids >= lo) & (ids < hi)
      e = jnp.take(table, jnp.clip(ids - lo, 0, hi - lo - 1), axis=0).astype(self.dtype)   # [..., d_i]
      if proj is not None:
        e = e @ proj.astype(self.dtype)                                                      # [..., E]
      out = jnp.where(inside[..., None], e, out) if len(self.bounds) > 1 else e
    return out * jnp.asarray(self.model_size ** 0.5, self.dtype)


class AdaptiveSoftmax(nn.Module):
  """Projected adaptive log-softmax, tied to an AdaptiveEmbedding's tables.

  Params: bias_i [n_i] ('vocab'); with tail clusters, cluster_weight [C, d_0] ('classes', 'table')
  and cluster_bias [C]; out_proj_i [d_i, d_model] for clusters whose projection is not tied.
  `__call__(h, tables, projs)` -> log-probabilities [..., V] (float32);
  `target_log_prob(h, targets, tables, projs)` -> [...] without materialising [..., V]."""
  vocab_size: int
  embed_size: int
  model_size: int
  cutoffs: tuple = ()
  div_val: int = 1
  tie_projs: tuple = ()      # per cluster; default: all but the first tied
  init_std: float = 0.02
  proj_init_std: float = 0.01
  param_dtype: Any = jnp.float32

  def setup(self):
    self.bounds = cluster_bounds(self.vocab_size, self.cutoffs)
    n = len(self.bounds)
    tie = tuple(self.tie_projs) or (False,) + (True,) * (n - 1)
    if len(tie) != n:
      raise ValueError(f"tie_projs has {len(tie)} entries for {n} clusters")
    self.tie = tie
    self.biases = [self.param(f"bias_{i}", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                              (hi - lo,), self.param_dtype) for i, (lo, hi) in enumerate(self.bounds)]
    if n > 1:
      self.cluster_weight = self.param("cluster_weight", _init(self.init_std, ("classes", "table")),
                                       (n - 1, self.embed_size), self.param_dtype)
      self.cluster_bias = self.param("cluster_bias", nn.with_logical_partitioning(
          nn.initializers.zeros, ("classes",)), (n - 1,), self.param_dtype)
    own = {}
    for i in range(n):
      d = self.embed_size // (self.div_val ** i)
      needs_proj = self.div_val > 1 or self.embed_size != self.model_size
      if needs_proj and not tie[i]:
        own[i] = self.param(f"out_proj_{i}", _init(self.proj_init_std, ("table", "embed")),
                            (d, self.model_size), self.param_dtype)
    self.own_projs = own

  def _cluster_params(self, tables, projs):
    """Per cluster (weight [n_i, d_i], bias [n_i], projection [d_i, E] or None)."""
    out = []
    for i, (lo, hi) in enumerate(self.bounds):
      if self.div_val == 1:
        w, p = tables[0][lo:hi], projs[0]
      else:
        w, p = tables[i], projs[i]
      if i in self.own_projs:
        p = self.own_projs[i]
      out.append((w, self.biases[i], p))
    return out

  @staticmethod
  def _logits(h, w, b, p):
    if p is not None:
      h = h @ p.T.astype(h.dtype)                                     # [..., d_i]
    return (h @ w.T.astype(h.dtype)).astype(jnp.float32) + b          # [..., n_i]

  def _head(self, h, params):
    w, b, p = params[0]
    if len(self.bounds) > 1:
      w = jnp.concatenate([w, self.cluster_weight], axis=0)
      b = jnp.concatenate([b, self.cluster_bias], axis=0)
    return jax.nn.log_softmax(self._logits(h, w, b, p), axis=-1)     # [..., n_0 + C]

  def __call__(self, h: Array, tables: list[Array], projs: list[Optional[Array]]) -> Array:
    params = self._cluster_params(tables, projs)
    head = self._head(h, params)
    n0 = self.bounds[0][1]
    parts = [head[..., :n0]]
    for i in range(1, len(self.bounds)):
      tail = jax.nn.log_softmax(self._logits(h, *params[i]), axis=-1)
      parts.append(head[..., n0 + i - 1, None] + tail)
    return jnp.concatenate(parts, axis=-1)                            # [..., V]

  def target_log_prob(self, h: Array, targets: Array, tables: list[Array],
                      projs: list[Optional[Array]]) -> Array:
    params = self._cluster_params(tables, projs)
    head = self._head(h, params)
    n0 = self.bounds[0][1]

    def pick(lp, idx):
      return jnp.take_along_axis(lp, jnp.clip(idx, 0, lp.shape[-1] - 1)[..., None], axis=-1)[..., 0]

    out = pick(head, targets)
    for i in range(1, len(self.bounds)):
      lo, hi = self.bounds[i]
      tail = jax.nn.log_softmax(self._logits(h, *params[i]), axis=-1)
      lp = head[..., n0 + i - 1] + pick(tail, targets - lo)
      out = jnp.where((targets >= lo) & (targets < hi), lp, out)
    return out
