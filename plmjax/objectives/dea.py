"""ERNIE (THU)'s pre-training: masked LM + next-sentence prediction + denoising entity auto-encoder
(dEA, Zhang et al., 2019, section 3.4), all sampled on device in the jitted step.

    MLM, NSP   as BERT (mlm.py, nsp.py; masking.py's 15 % and 80/10/10)
    dEA        every token aligned to an entity (batch["ent_ids"] >= 0) is a target: predict its
               entity among the row's entity candidates (the distinct entities aligned in the row),
                   p(e_c | w_p) = softmax_c( LN(GELU(W w_p)) . TransE[e_c] )
               with the entity *input* corrupted per aligned token:
                   dea_replace_prob (5 %)   replaced by another entity, uniform over the others
                   dea_mask_prob   (15 %)   masked: the alignment is dropped (ent_ids = -1), the
                                            token takes the K-Encoder's token-only path
                   the rest        (80 %)   unchanged
               Targets stay the original entities in all three cases.
    loss       mlm_loss + nsp_weight * nsp_loss + dea_weight * dea_loss

Static shapes: the first `max_entities` aligned tokens of a row are its dEA targets
(`dea_positions` [B, P]) and the first `max_entities` distinct entities its candidates
(`dea_candidates` [B, C], -1 = empty); a target whose entity is not among the candidates, or an
overflowing aligned token, carries no loss (`dea_weights`). dEA metrics: dea_loss, dea_accuracy,
num_entity_targets.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from plmjax.objectives.clm import token_cross_entropy
from plmjax.objectives.mlm import MaskedLM

Array = jax.Array
REPLACED, MASKED, KEPT = 0, 1, 2      # values of targets["dea_actions"]


def first_slots(flags: Array, num: int) -> tuple[Array, Array]:
  """flags [T] bool -> (positions [num] of the first `num` True entries in order, valid [num])."""
  order = jnp.argsort(~flags, stable=True)[:num]
  return order.astype(jnp.int32), flags[order]


def corrupt_entities(ent_ids: Array, key: Array, num_entities: int, replace_prob: float,
                     mask_prob: float) -> tuple[Array, Array]:
  """ent_ids [B, T] (-1 = none) -> (corrupted ids, actions [B, T] in {REPLACED, MASKED, KEPT},
  -1 where no entity)."""
  k_u, k_r = jax.random.split(key)
  aligned = ent_ids >= 0
  u = jax.random.uniform(k_u, ent_ids.shape)
  action = jnp.where(u < replace_prob, REPLACED, jnp.where(u < replace_prob + mask_prob, MASKED, KEPT))
  action = jnp.where(aligned, action, -1)
  other = (ent_ids + jax.random.randint(k_r, ent_ids.shape, 1, max(num_entities, 2))) % max(num_entities, 1)
  out = jnp.where(action == REPLACED, other, jnp.where(action == MASKED, -1, ent_ids))
  return out.astype(jnp.int32), action.astype(jnp.int32)


def dea_targets(ent_ids: Array, attention_mask: Array | None, max_entities: int) -> dict:
  """Original alignment [B, T] -> dea_positions, dea_candidates, dea_labels, dea_weights [B, P]."""
  aligned = ent_ids >= 0
  if attention_mask is not None:
    aligned = aligned & attention_mask.astype(bool)
  T = ent_ids.shape[1]
  earlier = jnp.tril(jnp.ones((T, T), bool), k=-1)                                 # [t, t'] t' < t

  def row(ent, al):
    same = (ent[:, None] == ent[None, :]) & al[None, :] & earlier                 # [T, T]
    first = al & ~same.any(axis=1)                                                # first occurrence
    pos, valid = first_slots(al, max_entities)                                    # [P]
    cpos, cvalid = first_slots(first, max_entities)                               # [C]
    cand = jnp.where(cvalid, ent[cpos], -1)
    target_ent = ent[pos]
    hit = (cand[None, :] == target_ent[:, None]) & cvalid[None, :]                # [P, C]
    label = jnp.argmax(hit, axis=1).astype(jnp.int32)
    weight = (valid & hit.any(axis=1)).astype(jnp.float32)
    return pos, cand.astype(jnp.int32), label, weight

  pos, cand, label, weight = jax.vmap(row)(ent_ids, aligned)
  return {"dea_positions": pos, "dea_candidates": cand, "dea_labels": label, "dea_weights": weight}


@dataclasses.dataclass(frozen=True)
class ErnieDEA:
  """Objective "ernie_dea"."""
  mlm: MaskedLM
  num_entities: int
  dea_weight: float = 1.0
  dea_replace_prob: float = 0.05
  dea_mask_prob: float = 0.15
  max_entities: int = 16

  def __post_init__(self):
    if self.num_entities < 1:
      raise ValueError(f"objective.num_entities={self.num_entities}: set objective.knowledge (the "
                       f"model's entity_vectors) or the knowledge source's entity count")
    if not (0 <= self.dea_replace_prob and 0 <= self.dea_mask_prob and self.dea_replace_prob + self.dea_mask_prob <= 1):
      raise ValueError(f"objective.dea_replace_prob={self.dea_replace_prob}, dea_mask_prob={self.dea_mask_prob}: "
                       f"expected probabilities that sum to at most 1")
    if self.max_entities < 1:
      raise ValueError(f"objective.max_entities={self.max_entities}: expected >= 1")

  def prepare(self, batch: dict, key: Array) -> dict:
    if "ent_ids" not in batch:
      raise ValueError("objective 'ernie_dea' needs batch['ent_ids'] (data.path 'kg:...', plmjax.knowledge.data)")
    k_mlm, k_ent = jax.random.split(key)
    prepared = self.mlm.prepare(batch, k_mlm)
    ent = batch["ent_ids"].astype(jnp.int32)
    corrupted, actions = corrupt_entities(ent, k_ent, self.num_entities, self.dea_replace_prob,
                                          self.dea_mask_prob)
    t = dea_targets(ent, batch.get("attention_mask"), self.max_entities)
    inputs = {**prepared["inputs"], "ent_ids": corrupted, "dea_positions": t["dea_positions"],
              "dea_candidates": t["dea_candidates"]}
    targets = {**prepared["targets"], "dea_labels": t["dea_labels"], "dea_weights": t["dea_weights"],
               "dea_actions": actions}
    return {"inputs": inputs, "targets": targets}

  def loss(self, outputs: dict, prepared: dict) -> tuple[Array, dict]:
    total, metrics = self.mlm.loss(outputs, prepared)
    t = prepared["targets"]
    if "dea_logits" not in outputs:
      raise ValueError("objective 'ernie_dea': the model returned no 'dea_logits' (model ernie_thu with dea_head)")
    logits = outputs["dea_logits"]
    if logits.shape[:2] != t["dea_labels"].shape:
      raise ValueError(f"ernie_dea: dea_logits {logits.shape} are not [B, P, C] for P = {t['dea_labels'].shape[1]}")
    l_dea, acc, n = token_cross_entropy(logits, t["dea_labels"], t["dea_weights"])
    if self.dea_weight:
      total = total + self.dea_weight * l_dea
    return total, {**metrics, "dea_loss": l_dea, "dea_accuracy": acc, "num_entity_targets": n, "loss": total}
