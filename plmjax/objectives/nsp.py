"""Next-sentence prediction (BERT, Devlin et al., 2019).

Half of the pre-training pairs (A, B) have B the sentence that follows A, half a random sentence;
the pooled [CLS] output is classified into {0: is next, 1: random next}:

    nsp_loss = mean_b CE(nsp_logits[b], next_sentence_label[b])        nsp_logits [B, 2]

BERT trains MLM + NSP ("mlm_nsp"); RoBERTa and SpanBERT drop NSP ("mlm", or nsp_weight = 0).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from plmjax.objectives.clm import token_cross_entropy

Array = jax.Array


def nsp_loss(nsp_logits: Array, labels: Array, weights: Array | None = None) -> tuple[Array, dict]:
  """nsp_logits [B, 2], labels [B] in {0, 1}, optional row weights [B] (UNILM: bidirectional rows
  only) -> (weighted mean loss, {nsp_loss, nsp_accuracy})."""
  if nsp_logits.ndim != 2 or nsp_logits.shape[-1] != 2:
    raise ValueError(f"nsp: expected nsp_logits [B, 2], got {nsp_logits.shape}")
  weights = jnp.ones(labels.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
  loss, acc, _ = token_cross_entropy(nsp_logits, labels, weights)
  return loss, {"nsp_loss": loss, "nsp_accuracy": acc}
