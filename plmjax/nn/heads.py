"""Output heads: pooler, tied (masked-)LM head, next-sentence head, position gathering."""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.nn.transformer import ACTIVATIONS, TransformerConfig, dense, layer_norm

Array = jax.Array


def gather_positions(x: Array, positions: Array) -> Array:
  """x [B, T, ...], positions [B, P] -> [B, P, ...]. Masked-LM heads gather before projecting to
  the vocabulary, so only positions that have a target pay for the [H, V] matmul."""
  idx = positions.reshape(positions.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


class Pooler(nn.Module):
  """BERT's pooler: tanh(W h[:, 0] + b) -> [B, E]."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, h: Array) -> Array:
    return jnp.tanh(dense(self.cfg, self.cfg.hidden_size, ("embed", "mlp"), "dense")(h[:, 0]))


class MaskedLMHead(nn.Module):
  """BERT/RoBERTa MLM head: dense -> activation -> LayerNorm -> tied projection + output bias.
  h [B, P, E] -> logits [B, P, V] (float32)."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, h: Array, attend: Callable[[Array], Array]) -> Array:
    cfg = self.cfg
    h = dense(cfg, cfg.hidden_size, ("embed", "mlp"), "transform")(h)
    h = layer_norm(cfg, "ln")(ACTIVATIONS[cfg.activation](h))
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                      (cfg.vocab_size,), cfg.jnp_param_dtype)
    logits = attend(h).astype(jnp.float32) + bias
    return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


class ClassifierHead(nn.Module):
  """A dense layer to `num_classes` (BERT's NSP head: pooled [B, E] -> [B, 2])."""
  cfg: TransformerConfig
  num_classes: int = 2

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return dense(self.cfg, self.num_classes, ("embed", "classes"), "dense")(x).astype(jnp.float32)


def mean_pool(hidden: Array, attention_mask: Array) -> Array:
  """Mean of hidden [B, T, E] over the real tokens of attention_mask [B, T] -> [B, E]
  (sentence-transformers' mean pooling)."""
  m = attention_mask.astype(hidden.dtype)[..., None]
  return (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
