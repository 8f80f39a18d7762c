"""Permutation language modelling (XLNet, Yang et al., 2019), sampled on device.

XLNet maximises E_z [ sum_{t > c} log p(x_{z_t} | x_{z_<t}) ] over factorisation orders z, and,
for efficiency, predicts only the last tokens of each order (partial prediction: about 1/K of the
tokens, K = 6 in the paper). The pretraining code chooses *which* tokens are predicted first and
derives the order from that choice; `prepare` does the same, per row, inside the jitted step:

1. Targets: n-gram spans. The row is walked in groups; each group draws a span length
   n in 1..max_span with P(n) ∝ 1/n, takes a context of n·K tokens around the span (a uniform
   left share l in 0..n·K, the rest on the right), so a group covers n(K + 1) tokens of which the
   n-gram is predicted. Spans are kept while their running total stays below `num_predict`; then
   single random tokens top the count up to exactly `num_predict` (XLNet's `_sample_mask` with
   mask_alpha = K, mask_beta = 1; spans here are in tokens, not words).
2. Order: a random permutation within consecutive blocks of `perm_size` tokens (blocks keep
   their order). Non-targets are moved to the front of the order (rank -1): they are context that
   every position sees, and that sees no target.
3. Masks (transformers' conventions): perm_mask[i, j] = 1 when i may not attend to j, i.e. j is a
   target at or after i in the order (the model's content stream still sees its own token);
   target_mapping [B, P, T] one-hot rows for the targets in position order (zero rows pad).

`permutation_masks(rank, is_target)` is exposed: with rank = 0..T-1 and every token a target it
gives exactly the causal masks (content j <= i, query j < i).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from plmjax.objectives.clm import model_inputs, token_cross_entropy

Array = jax.Array


def span_length_probs(max_span: int) -> np.ndarray:
  """P(n) ∝ 1/n for n = 1..max_span."""
  p = 1.0 / np.arange(1, max_span + 1)
  return p / p.sum()


def sample_spans(key: Array, t: int, max_span: int = 5, mask_alpha: int = 6):
  """Span proposals for a row of t tokens: (beg, end, n) [G] each, G = t // (K + 1) + 1 groups.
  Group g draws n_g with P(n) ∝ 1/n, covers n_g (K + 1) tokens, and puts its span at a uniform
  left offset in 0..n_g K; spans past the row have beg >= t, spans at its end are cut (end <= t)."""
  groups = t // (mask_alpha + 1) + 1                    # every group spans >= K + 1 tokens
  k_len, k_ctx = jax.random.split(key)
  n = jax.random.categorical(k_len, jnp.log(jnp.asarray(span_length_probs(max_span))),
                             shape=(groups,)) + 1                         # [G] span lengths
  ctx = n * mask_alpha
  left = jnp.floor(jax.random.uniform(k_ctx, (groups,)) * (ctx + 1)).astype(jnp.int32)
  size = n * (mask_alpha + 1)
  beg = jnp.cumsum(size) - size + left                                    # [G]
  return beg, jnp.minimum(beg + n, t), n


def sample_targets(key: Array, eligible: Array, num_predict: int, max_span: int = 5,
                   mask_alpha: int = 6) -> Array:
  """One row: eligible [T] bool -> is_target [T] bool with exactly min(num_predict, #eligible)
  targets, n-gram spans first (module docstring, step 1)."""
  t = eligible.shape[0]
  k_span, k_fill = jax.random.split(key)
  beg, end, _ = sample_spans(k_span, t, max_span, mask_alpha)
  length = jnp.maximum(end - beg, 0)
  kept = (beg < t) & (jnp.cumsum(length) < num_predict)                  # stop before the goal
  pos = jnp.arange(t)[:, None]
  is_target = jnp.any((pos >= beg) & (pos < end) & kept, axis=1) & eligible   # [T]
  # Top up with single random eligible tokens to exactly num_predict.
  deficit = num_predict - is_target.sum()
  free = eligible & ~is_target
  scores = jnp.where(free, jax.random.uniform(k_fill, (t,)), 2.0)
  rank = jnp.argsort(jnp.argsort(scores))
  return is_target | (free & (rank < deficit))


def sample_order(key: Array, t: int, perm_size: int) -> Array:
  """rank [T]: position p is the rank[p]-th in the factorisation order; a random permutation within
  each block of perm_size positions, blocks in order."""
  if t % perm_size:
    raise ValueError(f"perm_size={perm_size} must divide the sequence length {t}")
  u = jax.random.uniform(key, (t // perm_size, perm_size))
  within = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1)
  return (jnp.arange(t // perm_size)[:, None] * perm_size + within).reshape(t)


def permutation_masks(rank: Array, is_target: Array) -> Array:
  """rank, is_target [..., T] -> perm_mask [..., T, T] bool, True = i may not attend to j:
  j is a target whose rank is >= i's (non-targets rank first, so they see no target)."""
  r = jnp.where(is_target, rank, -1)
  self_r = jnp.where(is_target, r, r + 1)
  return (self_r[..., :, None] <= r[..., None, :]) & is_target[..., None, :]


def target_mapping(is_target: Array, num_predict: int) -> tuple[Array, Array]:
  """is_target [B, T] -> (positions [B, P] in position order, weights [B, P]; 0 = padding row)."""
  order = jnp.argsort(~is_target, axis=-1, stable=True)[:, :num_predict]
  weights = jnp.take_along_axis(is_target, order, axis=-1)
  return order.astype(jnp.int32), weights.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class PermutationLM:
  """Objective "plm" for XLNet. `prepare(batch, key)` -> inputs (input_ids, perm_mask [B,T,T],
  target_mapping [B,P,T], and token_type_ids / attention_mask / mems when given) and targets
  (labels [B,P], weights [B,P]); `loss` is the mean cross-entropy of the query stream's logits."""
  num_predict: int
  max_span: int = 5
  mask_alpha: int = 6          # K: about one token in K + 1 is in a span (then topped up)
  perm_size: int = 0           # 0: the whole sequence is one block
  special_ids: tuple = ()      # never targets (CLS, SEP, padding ...)

  def prepare(self, batch: dict, key: Array) -> dict:
    ids = batch["input_ids"]                                                   # [B, T]
    b, t = ids.shape
    if self.num_predict > t:
      raise ValueError(f"num_predict={self.num_predict} exceeds the sequence length {t}")
    eligible = jnp.ones_like(ids, bool)
    if "attention_mask" in batch:
      eligible &= batch["attention_mask"] > 0
    for s in self.special_ids:
      eligible &= ids != s
    k_tgt, k_ord = jax.random.split(key)
    is_target = jax.vmap(lambda k, e: sample_targets(k, e, self.num_predict, self.max_span,
                                                     self.mask_alpha))(jax.random.split(k_tgt, b), eligible)
    rank = jax.vmap(lambda k: sample_order(k, t, self.perm_size or t))(jax.random.split(k_ord, b))
    positions, weights = target_mapping(is_target, self.num_predict)          # [B, P]
    inputs = model_inputs(batch)
    inputs["perm_mask"] = permutation_masks(rank, is_target).astype(jnp.float32)          # [B, T, T]
    inputs["target_mapping"] = jax.nn.one_hot(positions, t) * weights[..., None]         # [B, P, T]
    labels = jnp.take_along_axis(ids, positions, axis=-1)
    return {"inputs": inputs, "targets": {"labels": labels, "weights": weights,
                                          "is_target": is_target, "rank": rank}}

  def loss(self, outputs: dict, prepared: dict) -> tuple[Array, dict]:
    tg = prepared["targets"]
    loss, acc, count = token_cross_entropy(outputs["logits"], tg["labels"], tg["weights"])
    return loss, {"plm_loss": loss, "plm_accuracy": acc, "num_targets": count, "loss": loss}
