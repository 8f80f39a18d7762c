"""Causal language modelling (GPT-1, Radford et al., 2018; GPT-2, 2019).

Maximise  sum_t log p(x_{t+1} | x_1..x_t):  the logits at position t score the token at t + 1, so
the targets are the input ids shifted left by one.

    targets[b, t] = input_ids[b, t + 1]                         (t < T - 1; 0 at t = T - 1)
    weights[b, t] = mask[b, t] * mask[b, t + 1]                  (0 at t = T - 1)

where mask is `attention_mask` (or all ones): padding is never a target and never a context, and the
last position, which has nothing to predict within the row, carries no loss. The loss is the mean
cross-entropy over real targets, in float32; perplexity is exp(clm_loss).

`token_cross_entropy` is the weighted cross-entropy every token-level objective here scores with
(MLM, SBO, CLM).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array

# Batch entries that describe the data, not the model input; objectives keep them out of "inputs".
DATA_ONLY_KEYS = ("word_ids", "phrase_ids", "entity_ids", "next_sentence_label", "example_id")


def model_inputs(batch: dict, drop: tuple[str, ...] = ()) -> dict:
  """The batch minus data-only entries (and `drop`): what the model is called with."""
  return {k: v for k, v in batch.items() if k not in DATA_ONLY_KEYS + drop}


def token_cross_entropy(logits: Array, targets: Array, weights: Array) -> tuple[Array, Array, Array]:
  """logits [..., V], targets [...] int, weights [...] -> (mean loss, accuracy, number of targets).

  Float32 throughout; means are over sum(weights), taken as at least 1 so an empty batch gives 0."""
  logits = logits.astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)                                        # [...]
  target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  nll = log_z - target_logit                                                       # [...]
  count = weights.sum()
  denom = jnp.maximum(count, 1.0)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return (nll * weights).sum() / denom, (correct * weights).sum() / denom, count


def shift_targets(input_ids: Array, attention_mask: Array | None) -> tuple[Array, Array]:
  """[B, T] ids (and mask) -> targets [B, T] int32, weights [B, T] float32 (module docstring)."""
  mask = jnp.ones_like(input_ids) if attention_mask is None else attention_mask
  mask = mask.astype(jnp.float32)
  zeros = jnp.zeros_like(input_ids[:, :1])
  targets = jnp.concatenate([input_ids[:, 1:], zeros], axis=1).astype(jnp.int32)
  weights = jnp.concatenate([mask[:, :-1] * mask[:, 1:], zeros.astype(jnp.float32)], axis=1)
  return targets, weights


@dataclasses.dataclass(frozen=True)
class CausalLM:
  """Objective "clm". The model sees the ids unchanged; `token_type_ids` are dropped because GPT adds
  tok[token_type_ids] to its input (a fine-tuning device) and pre-training has no segments."""

  def prepare(self, batch: dict, key: Array) -> dict:
    del key                                                  # nothing random in causal LM
    targets, weights = shift_targets(batch["input_ids"], batch.get("attention_mask"))
    return {"inputs": model_inputs(batch, drop=("token_type_ids",)),
            "targets": {"ids": targets, "weights": weights}}

  def loss(self, outputs: dict, prepared: dict) -> tuple[Array, dict]:
    t = prepared["targets"]
    logits = outputs["logits"]                                                     # [B, T, V]
    if logits.shape[:2] != t["ids"].shape:
      raise ValueError(f"clm: logits {logits.shape} do not cover the targets {t['ids'].shape}")
    loss, acc, n = token_cross_entropy(logits, t["ids"], t["weights"])
    return loss, {"clm_loss": loss, "clm_accuracy": acc, "num_targets": n, "loss": loss}
