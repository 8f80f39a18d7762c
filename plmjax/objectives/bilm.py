"""Language-model losses of the recurrent family: ELMo's two-direction LM and AWD-LSTM's regularised
causal LM.

Bidirectional LM (ELMo, Peters et al., 2018): the forward LM scores the next token, the backward LM
the previous one, and the objective is the mean of the two log-likelihoods

    L = - 1/2 sum_t [ log p(x_{t+1} | x_1..x_t) + log p(x_{t-1} | x_t..x_T) ]

with logits_fwd[b, t] scoring x[b, t + 1] and logits_bwd[b, t] scoring x[b, t - 1]; padding is never
a target (weights = mask[t] * mask[t +- 1]).

Recurrent LM (AWD-LSTM, Merity et al., 2018; ULMFiT's pretraining): the causal LM loss plus the
activation regularisers the model returns (`ar`, `tar`, already scaled by alpha and beta). On
"stream" data (`target_ids` in the batch: the next token of the stream, so the last position has a
target too) the targets come from the stream; otherwise they are the inputs shifted left.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from plmjax.objectives.clm import model_inputs, shift_targets, token_cross_entropy

Array = jax.Array


def previous_targets(input_ids: Array, attention_mask: Array | None) -> tuple[Array, Array]:
  """[B, T] -> targets[b, t] = input_ids[b, t - 1] (0 at t = 0), weights mask[t] mask[t - 1]."""
  mask = jnp.ones_like(input_ids) if attention_mask is None else attention_mask
  mask = mask.astype(jnp.float32)
  zeros = jnp.zeros_like(input_ids[:, :1])
  targets = jnp.concatenate([zeros, input_ids[:, :-1]], axis=1).astype(jnp.int32)
  weights = jnp.concatenate([zeros.astype(jnp.float32), mask[:, 1:] * mask[:, :-1]], axis=1)
  return targets, weights


@dataclasses.dataclass(frozen=True)
class BidirectionalLM:
  """Objective "bilm" (ELMo). The model returns logits_fwd and logits_bwd [B, T, V]."""

  def prepare(self, batch: dict, key: Array) -> dict:
    del key
    ids, mask = batch["input_ids"], batch.get("attention_mask")
    fwd, fwd_w = shift_targets(ids, mask)
    bwd, bwd_w = previous_targets(ids, mask)
    return {"inputs": model_inputs(batch, drop=("token_type_ids", "target_ids")),
            "targets": {"fwd": fwd, "fwd_weights": fwd_w, "bwd": bwd, "bwd_weights": bwd_w}}

  def loss(self, outputs: dict, prepared: dict) -> tuple[Array, dict]:
    t = prepared["targets"]
    for k in ("logits_fwd", "logits_bwd"):
      if k not in outputs:
        raise ValueError(f"bilm: the model returned no {k!r} (outputs: {sorted(outputs)}); "
                         "the bidirectional LM objective needs a two-direction model such as Elmo")
    fwd, acc_f, n = token_cross_entropy(outputs["logits_fwd"], t["fwd"], t["fwd_weights"])
    bwd, acc_b, _ = token_cross_entropy(outputs["logits_bwd"], t["bwd"], t["bwd_weights"])
    loss = 0.5 * (fwd + bwd)
    return loss, {"fwd_loss": fwd, "bwd_loss": bwd, "fwd_accuracy": acc_f, "bwd_accuracy": acc_b,
                  "num_targets": n, "loss": loss}


@dataclasses.dataclass(frozen=True)
class RecurrentLM:
  """Objective "rnn_lm" (AWD-LSTM / ULMFiT / SiATL pretraining): CLM + AR + TAR."""
  pad_id: int = 0

  def prepare(self, batch: dict, key: Array) -> dict:
    del key
    ids, mask = batch["input_ids"], batch.get("attention_mask")
    if "target_ids" in batch:
      targets = batch["target_ids"].astype(jnp.int32)
      real = jnp.ones_like(ids) if mask is None else mask
      weights = (real * (targets != self.pad_id)).astype(jnp.float32)
    else:
      targets, weights = shift_targets(ids, mask)
    return {"inputs": model_inputs(batch, drop=("token_type_ids", "target_ids")),
            "targets": {"ids": targets, "weights": weights}}

  def loss(self, outputs: dict, prepared: dict) -> tuple[Array, dict]:
    t = prepared["targets"]
    lm, acc, n = token_cross_entropy(outputs["logits"], t["ids"], t["weights"])
    ar, tar = outputs.get("ar", jnp.zeros([])), outputs.get("tar", jnp.zeros([]))
    loss = lm + ar + tar
    return loss, {"lm_loss": lm, "lm_accuracy": acc, "ar": ar, "tar": tar, "num_targets": n,
                  "loss": loss}


DEFAULTS = {"bilm": dict(name="bilm"), "rnn_lm": dict(name="rnn_lm")}


def build(cfg, vocab) -> BidirectionalLM | RecurrentLM:
  """Objective `cfg.name` in {"bilm", "rnn_lm"} (`vocab`: the tokenizer, for its pad id)."""
  name = cfg["name"]
  extra = sorted(set(dict(cfg.items()) if hasattr(cfg, "items") else cfg) - {"name"})
  if name not in DEFAULTS:
    raise ValueError(f"objective.name={name!r}: the recurrent LM objectives are {sorted(DEFAULTS)}")
  if extra:
    raise ValueError(f"objective.{extra[0]}: unknown key for objective {name!r} (it has none)")
  return BidirectionalLM() if name == "bilm" else RecurrentLM(pad_id=int(vocab.pad_id))
