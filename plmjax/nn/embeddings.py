"""Token, position and segment embeddings.

Logical axes: token table ('vocab', 'embed'); position and segment tables ('table', 'embed'),
where 'table' is never sharded (small tables).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def embed(num: int, features: int, std: float, axes=("table", "embed"), dtype: Any = jnp.float32,
          param_dtype: Any = jnp.float32, name: str | None = None) -> nn.Embed:
  """An `nn.Embed` with a normal(std) init and logical axis names on its table."""
  return nn.Embed(num_embeddings=num, features=features, dtype=dtype, param_dtype=param_dtype,
                  embedding_init=nn.with_logical_partitioning(nn.initializers.normal(std), axes),
                  name=name)


def token_embed(vocab_size: int, features: int, std: float, **kw) -> nn.Embed:
  """Token table [V, E]; its `.attend(h)` is the tied output projection [.., E] -> [.., V]."""
  return embed(vocab_size, features, std, axes=("vocab", "embed"), **kw)


def sinusoidal_positions(positions: Array, dim: int, max_timescale: float = 10000.0) -> Array:
  """Transformer sinusoids: positions [...] -> [..., dim], first half sin, second half cos
  (Transformer-XL's layout: concat(sin, cos) over the same inverse frequencies)."""
  inv_freq = 1.0 / (max_timescale ** (np.arange(0, dim, 2, dtype=np.float32) / dim))   # [dim/2]
  angles = positions[..., None].astype(jnp.float32) * inv_freq                            # [..., dim/2]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def default_positions(input_ids: Array, offset: Array | int = 0) -> Array:
  """[B, T] -> [B, T] positions offset + 0..T-1."""
  return jnp.broadcast_to(jnp.arange(input_ids.shape[1]) + offset, input_ids.shape)


def padding_offset_positions(input_ids: Array, pad_id: int) -> Array:
  """RoBERTa's positions: non-padding tokens count from pad_id + 1, padding sits at pad_id."""
  keep = (input_ids != pad_id).astype(jnp.int32)
  return jnp.cumsum(keep, axis=1) * keep + pad_id
