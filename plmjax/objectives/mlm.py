"""Masked language modelling (BERT, Devlin et al., 2019) and the objectives built on it.

    prepare:  mask = mask_tokens(batch, key)            (masking.py: unit selection + 80/10/10)
              inputs = batch with the corrupted ids and `masked_positions` [B, P]
    model:    logits [B, P, V], projected only at the P target slots (gathered before the vocab matmul)
    loss:     mlm_loss = sum_p w_p CE(logits_p, masked_ids_p) / sum_p w_p      (float32)

Dynamic vs static masking. `prepare` draws the mask from the step's key, so every visit of an
example sees a new mask: RoBERTa's dynamic masking comes for free. BERT masked once, offline, and
duplicated the data `dupe_factor` (= 10) times with different masks. `static_masking=True`
reproduces that for the ablation: each row's key is derived from the example, not the step,

    key_b = fold_in(fold_in(key(static_seed), example_hash_b), variant_b),  variant_b ~ U{0..dupe_factor-1}

so an example has exactly `dupe_factor` possible masks and each visit uses one of them at random
(BERT's copies are likewise visited in shuffled order). example_hash_b is batch["example_id"][b]
when the pipeline provides it, else a hash of the row's token ids (identical rows then share masks).

Variants: "mlm" (RoBERTa; BERT-style units via `unit`), "mlm_nsp" (BERT: + next-sentence
prediction, nsp_weight = 0 switches it off), "span_mlm_sbo" (SpanBERT: geometric spans + the span
boundary objective of sbo.py).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from plmjax.objectives.clm import model_inputs, token_cross_entropy
from plmjax.objectives.masking import MaskSpec, Vocab, mask_tokens
from plmjax.objectives.nsp import nsp_loss
from plmjax.objectives.sbo import sbo_loss, sbo_weights

Array = jax.Array

# Fixed odd multipliers for the row hash (a constant of the code, so hashes are stable across runs).
_HASH_SEED = 0x5EED


def row_hash(input_ids: Array) -> Array:
  """[B, T] ids -> [B] uint32: sum_t ids[t] * c_t mod 2^32 with fixed random odd c_t."""
  T = input_ids.shape[1]
  c = np.random.RandomState(_HASH_SEED).randint(0, 2**31, size=T, dtype=np.int64) * 2 + 1
  return (input_ids.astype(jnp.uint32) * jnp.asarray(c, jnp.uint32)).sum(axis=1, dtype=jnp.uint32)


def static_row_keys(batch: dict, key: Array, seed: int, dupe_factor: int) -> Array:
  """Per-row keys [B] that depend on the example and on one of `dupe_factor` variants only."""
  ids = batch["input_ids"]
  B = ids.shape[0]
  example = batch["example_id"].astype(jnp.uint32) if "example_id" in batch else row_hash(ids)
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  base = jax.random.key(seed) if typed else jax.random.PRNGKey(seed)
  variant = jax.random.randint(key, (B,), 0, dupe_factor).astype(jnp.uint32)
  per_example = jax.vmap(lambda h: jax.random.fold_in(base, h))(example)
  return jax.vmap(jax.random.fold_in)(per_example, variant)


def masked_lm_loss(outputs: dict, targets: dict, name: str) -> tuple[Array, dict]:
  """Cross-entropy of the gathered logits [B, P, V] against targets' masked_ids / masked_weights
  [B, P] -> (loss, {mlm_loss, mlm_accuracy, num_targets}). `name` labels the shape error."""
  logits = outputs["logits"]                                                       # [B, P, V]
  if logits.shape[:2] != targets["masked_ids"].shape:
    raise ValueError(f"{name}: logits {logits.shape} are not [B, P, V] for P = "
                     f"{targets['masked_ids'].shape[1]}; call the model with batch['masked_positions']")
  loss, acc, n = token_cross_entropy(logits, targets["masked_ids"], targets["masked_weights"])
  return loss, {"mlm_loss": loss, "mlm_accuracy": acc, "num_targets": n}


@dataclasses.dataclass(frozen=True)
class MaskedLM:
  """Objectives "mlm", "mlm_nsp" (nsp_weight > 0) and "span_mlm_sbo" (sbo_weight > 0)."""
  spec: MaskSpec
  vocab: Vocab
  static_masking: bool = False
  dupe_factor: int = 10
  static_seed: int = 0
  nsp_weight: float = 0.0
  sbo_weight: float = 0.0
  sbo_max_offset: int = 20

  def __post_init__(self):
    if self.static_masking and self.dupe_factor < 1:
      raise ValueError(f"objective.dupe_factor={self.dupe_factor}: static masking needs >= 1 variants")
    if self.sbo_max_offset < 1:
      raise ValueError(f"objective.sbo_max_offset={self.sbo_max_offset}: expected >= 1")

  def prepare(self, batch: dict, key: Array) -> dict:
    if self.nsp_weight and "next_sentence_label" not in batch:
      raise ValueError("objective.nsp_weight > 0 needs batch['next_sentence_label'] (data mode 'pairs')")
    if self.static_masking:
      key = static_row_keys(batch, key, self.static_seed, self.dupe_factor)
    m = mask_tokens(batch, key, self.spec, self.vocab)
    inputs = {**model_inputs(batch), "input_ids": m["input_ids"],
              "masked_positions": m["masked_positions"]}                           # [B, T], [B, P]
    targets = {"masked_ids": m["masked_ids"], "masked_weights": m["masked_weights"]}
    if self.sbo_weight:
      inputs.update({k: m[k] for k in ("span_left", "span_right", "span_offset")})
      targets["sbo_weights"] = sbo_weights(m, self.sbo_max_offset)
    if self.nsp_weight:
      targets["next_sentence_label"] = batch["next_sentence_label"].astype(jnp.int32)
    return {"inputs": inputs, "targets": targets}

  def loss(self, outputs: dict, prepared: dict) -> tuple[Array, dict]:
    t = prepared["targets"]
    loss, metrics = masked_lm_loss(outputs, t, "mlm")
    total = loss
    if self.nsp_weight:
      if "nsp_logits" not in outputs:
        raise ValueError("objective.nsp_weight > 0 but the model returned no 'nsp_logits'")
      l_nsp, m_nsp = nsp_loss(outputs["nsp_logits"], t["next_sentence_label"])
      total, metrics = total + self.nsp_weight * l_nsp, {**metrics, **m_nsp}
    if self.sbo_weight:
      if "sbo_logits" not in outputs:
        raise ValueError("objective.sbo_weight > 0 but the model returned no 'sbo_logits'")
      l_sbo, m_sbo = sbo_loss(outputs["sbo_logits"], t["masked_ids"], t["sbo_weights"])
      total, metrics = total + self.sbo_weight * l_sbo, {**metrics, **m_sbo}
    return total, {**metrics, "loss": total}
