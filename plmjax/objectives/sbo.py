"""The span boundary objective (SpanBERT, Joshi et al., 2020).

Every token x_i of a masked span (x_s..x_e) is predicted once more, this time only from the encoder
outputs at the span's two boundary tokens and the token's position inside the span:

    h_i = LN(GeLU(W2 LN(GeLU(W1 [x_{s-1}; x_{e+1}; p_{i-s}]))))            p: offset embedding
    logits_i = tok^T h_i + b                                                 (tied to the input table)
    L(x_i) = L_MLM(x_i) + L_SBO(x_i)

`mask_tokens` gives each target its span's boundaries (`span_left` = s - 1, `span_right` = e + 1)
and offset (`span_offset` = i - s), where a span is a maximal run of selected tokens, so touching
spans share their outer boundaries, as in SpanBERT. A target carries SBO loss when both boundaries
lie inside the row and its offset is below `sbo_max_offset` (SpanBERT's `max_pair_targets`): the
offset table has that many rows.

Model-side wiring: a module builds `SpanBoundaryHead(cfg, max_offset)` and calls
`sbo_logits(hidden, batch, head, tok.attend)` with its batch (prepared["inputs"]), putting the result
in outputs["sbo_logits"] [B, P, V].
"""
from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.nn.embeddings import embed
from plmjax.nn.heads import gather_positions
from plmjax.nn.transformer import TransformerConfig, dense, layer_norm
from plmjax.objectives.clm import token_cross_entropy

Array = jax.Array


class SpanBoundaryHead(nn.Module):
  """left, right [B, P, E] boundary outputs, offset [B, P] -> logits [B, P, V] (float32).

  The MLP is 2 x (dense -> GeLU -> LayerNorm) at width E; the offset embedding has
  `position_size` features (default E, so the first dense sees 3E inputs)."""
  cfg: TransformerConfig
  max_offset: int = 20
  position_size: Optional[int] = None

  @nn.compact
  def __call__(self, left: Array, right: Array, offset: Array, attend: Callable[[Array], Array]) -> Array:
    cfg = self.cfg
    kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype)
    pos = embed(self.max_offset, self.position_size or cfg.hidden_size, cfg.init_std,
                name="offset_embed", **kw)(jnp.clip(offset, 0, self.max_offset - 1))  # [B, P, D]
    h = jnp.concatenate([left.astype(pos.dtype), right.astype(pos.dtype), pos], axis=-1)
    for i in range(2):
      h = dense(cfg, cfg.hidden_size, ("embed", "mlp"), f"dense_{i}")(h)
      h = layer_norm(cfg, f"ln_{i}")(jax.nn.gelu(h, approximate=False))            # [B, P, E]
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                      (cfg.vocab_size,), cfg.jnp_param_dtype)
    logits = attend(h).astype(jnp.float32) + bias
    return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


def sbo_logits(hidden: Array, prepared: dict, head: SpanBoundaryHead,
               attend: Callable[[Array], Array]) -> Array:
  """hidden [B, T, E] encoder outputs -> SBO logits [B, P, V]. `prepared` is the model batch (or the
  whole prepared dict) holding `span_left`, `span_right`, `span_offset` [B, P]."""
  batch = prepared.get("inputs", prepared)
  left = gather_positions(hidden, batch["span_left"])                              # [B, P, E]
  right = gather_positions(hidden, batch["span_right"])                            # [B, P, E]
  return head(left, right, batch["span_offset"], attend)


def sbo_weights(mask: dict, max_offset: int) -> Array:
  """[B, P] float32: real targets whose span has both boundaries in the row and offset < max_offset."""
  return mask["span_valid"] * (mask["span_offset"] < max_offset).astype(jnp.float32)


def sbo_loss(logits: Array, targets: Array, weights: Array) -> tuple[Array, dict]:
  """logits [B, P, V], targets [B, P], weights [B, P] -> (loss, {sbo_loss, sbo_accuracy})."""
  loss, acc, _ = token_cross_entropy(logits, targets, weights)
  return loss, {"sbo_loss": loss, "sbo_accuracy": acc}
