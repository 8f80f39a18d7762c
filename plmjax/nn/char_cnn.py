"""ELMo's context-independent token representation: a character CNN, highway layers, a projection
(Peters et al., 2018, following Kim et al., 2016 and Jozefowicz et al., 2016).

    chars   [B, T, C]   every token as C character ids: begin-of-word, its UTF-8 bytes, end-of-word,
                        padding (`char_ids_for_tokens`)
    e       [B, T, C, d]           character embedding, d = 16
    per filter width w (1..7):     conv over characters, max over positions, activation -> [B, T, n_w]
    x       [B, T, sum n_w]        concatenated (2048 filters in the original model)
    x       highway x 2            x = g * relu(W_h x) + (1 - g) * x,  g = sigmoid(W_g x)
    x       [B, T, P]              linear projection (P = 512)

Character vocabulary: 0 padding, 1 begin-of-word, 2 end-of-word, 3 + b for byte b (262 in all).
Highway gates start biased towards carrying the input (bias -2), as in the original code.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

PAD_CHAR, BOW, EOW, BYTE_OFFSET = 0, 1, 2, 3
NUM_CHARS = 256 + BYTE_OFFSET + 3      # 262, a few spare ids as in the original vocabulary
ELMO_FILTERS = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024))


def char_ids_for_tokens(tokens: Sequence[str], max_chars: int = 50) -> np.ndarray:
  """Token strings [N] -> int32 [N, max_chars]: BOW, bytes (truncated), EOW, padding."""
  if max_chars < 3:
    raise ValueError(f"max_chars={max_chars}: needs room for begin, one byte and end of word")
  out = np.full((len(tokens), max_chars), PAD_CHAR, np.int32)
  for i, tok in enumerate(tokens):
    b = list(tok.encode("utf-8"))[: max_chars - 2]
    out[i, : len(b) + 2] = [BOW] + [BYTE_OFFSET + x for x in b] + [EOW]
  return out


def _dense(features: int, axes, name: str, bias: float = 0.0, dtype: Any = jnp.float32) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.constant(bias), axes[-1:]))


class Highway(nn.Module):
  """x [.., D] -> [.., D]: g * relu(W_h x + b_h) + (1 - g) * x with g = sigmoid(W_g x + b_g)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d = x.shape[-1]
    h = jax.nn.relu(_dense(d, ("embed", "mlp"), "transform", dtype=self.dtype)(x))
    g = jax.nn.sigmoid(_dense(d, ("embed", "mlp"), "gate", bias=-2.0, dtype=self.dtype)(x))
    return g * h + (1.0 - g) * x


class CharCNN(nn.Module):
  """chars [B, T, C] int -> token representations [B, T, out_size]."""
  out_size: int = 512
  char_dim: int = 16
  filters: tuple = ELMO_FILTERS          # (width, number of filters), ...
  num_highway: int = 2
  num_chars: int = NUM_CHARS
  activation: str = "relu"              # the original model: relu (tanh in Kim et al.)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, chars: Array) -> Array:
    if chars.ndim != 3:
      raise ValueError(f"CharCNN expects character ids [B, T, C], got shape {chars.shape}")
    act = {"relu": jax.nn.relu, "tanh": jnp.tanh}[self.activation]
    b, t, c = chars.shape
    table = nn.Embed(self.num_chars, self.char_dim, dtype=self.dtype, name="char_embed",
                     embedding_init=nn.with_logical_partitioning(nn.initializers.uniform(1.0),
                                                                 ("table", "kv")))
    e = table(chars.reshape(b * t, c))                                           # [BT, C, d]
    pooled = []
    for width, num in self.filters:
      if width > c:
        raise ValueError(f"CharCNN: filter width {width} exceeds max_chars {c}")
      conv = nn.Conv(num, (width,), padding="VALID", dtype=self.dtype, name=f"conv_{width}",
                     kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                              (None, "kv", "mlp")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))
      pooled.append(act(conv(e).max(axis=1)))                                    # [BT, n_w]
    x = jnp.concatenate(pooled, axis=-1)                                         # [BT, F]
    for i in range(self.num_highway):
      x = Highway(self.dtype, name=f"highway_{i}")(x)
    x = _dense(self.out_size, ("mlp", "embed"), "projection", dtype=self.dtype)(x)  # [BT, P]
    return x.reshape(b, t, self.out_size)
