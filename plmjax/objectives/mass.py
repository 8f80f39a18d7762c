"""MASS: masked sequence-to-sequence pre-training (Song et al., 2019).

An encoder-decoder Transformer (plmjax/models/seq2seq.py) reads a sentence with one contiguous
fragment x^{u:v} of k tokens masked, and its decoder predicts exactly that fragment, left to right,
seeing only the fragment's own earlier tokens and the encoder:

    encoder input   x^{\\u:v}  = x_1 .. x_{u-1} [M] .. [M] x_{v+1} .. x_m
    decoder input   [M] x_u .. x_{v-1}              at positions u .. v  (the fragment's own)
    decoder target  x_u .. x_v
    L = - sum_{t=u..v} log p(x_t | x_{u..t-1}, x^{\\u:v})

Fragment length and placement, per row, on device from the step's key (as the MASS code does it):

    m = number of eligible tokens (real, not special); the fragment runs over them in order
    k = span_tokens if span_tokens > 0 else round(mask_ratio * m)    clipped to [1, min(m, K)]
    u = 0 with probability start_prob (0.2), m - k with end_prob (0.2), else uniform on {0..m-k}

K is the static number of decoder slots: span_tokens, or ceil(mask_ratio * T) for rows of T
tokens. The masked encoder tokens are corrupted 80/10/10 per token ([MASK] / random / unchanged),
as in the MASS code; `mask_token_prob=1` gives the paper's all-[MASK] fragment.

The two ends of k (the paper's Table/Figure 3 argument), on one example (tests/test_mass.py):
  k = 1   the encoder input equals BERT's masked-LM corruption of that one token, the decoder input
          is a lone [MASK] at the token's position and the target is the token: one masked-LM
          prediction, made through the decoder.
  k = m   the encoder sees only [MASK]s (no token of the sentence), and the decoder's inputs,
          targets and weights are exactly the causal LM's on [M] x_1 .. x_m (clm.py's shift): a
          left-to-right language model of the sentence.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from plmjax.objectives.clm import token_cross_entropy
from plmjax.objectives.masking import MASK, RANDOM, KEEP, Vocab, eligible_tokens, random_regular_tokens

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class MaskedSeq2Seq:
  """Objective "mass"."""
  vocab: Vocab
  mask_ratio: float = 0.5
  span_tokens: int = 0
  start_prob: float = 0.2
  end_prob: float = 0.2
  mask_token_prob: float = 0.8
  random_token_prob: float = 0.1

  def __post_init__(self):
    if not 0.0 < self.mask_ratio <= 1.0:
      raise ValueError(f"objective.mask_ratio={self.mask_ratio}: expected 0 < mask_ratio <= 1")
    if self.span_tokens < 0:
      raise ValueError(f"objective.span_tokens={self.span_tokens}: expected >= 0 (0: use mask_ratio)")
    if min(self.start_prob, self.end_prob) < 0 or self.start_prob + self.end_prob > 1:
      raise ValueError(f"objective.start_prob={self.start_prob}, objective.end_prob={self.end_prob}: "
                       f"expected probabilities summing to <= 1")
    if min(self.mask_token_prob, self.random_token_prob) < 0 or \
        self.mask_token_prob + self.random_token_prob > 1:
      raise ValueError(f"objective.mask_token_prob={self.mask_token_prob}, objective.random_token_prob="
                       f"{self.random_token_prob}: expected probabilities summing to <= 1")

  def slots(self, seq_len: int) -> int:
    """K, the static number of decoder positions for rows of `seq_len` tokens."""
    return min(seq_len, self.span_tokens or math.ceil(self.mask_ratio * seq_len))

  def sample_fragment(self, key: Array, m: Array, num_slots: int) -> tuple[Array, Array]:
    """Per row: m [B] eligible counts -> (start u [B], length k [B]) over the eligible tokens."""
    want = jnp.full_like(m, self.span_tokens) if self.span_tokens else jnp.round(self.mask_ratio * m)
    k = jnp.where(m > 0, jnp.clip(want, 1, jnp.minimum(m, num_slots)), 0).astype(jnp.int32)
    u_place, u_start = jax.random.uniform(key, (2,) + m.shape)
    room = jnp.maximum(m - k, 0)                                                   # last start
    uniform = jnp.minimum(jnp.floor(u_start * (room + 1)), room).astype(jnp.int32)
    start = jnp.where(u_place < self.start_prob, 0,
                      jnp.where(u_place < self.start_prob + self.end_prob, room, uniform))
    return start.astype(jnp.int32), k

  def prepare(self, batch: dict, key: Array) -> dict:
    ids = batch["input_ids"]                                                       # [B, T]
    B, T = ids.shape
    K = self.slots(T)
    eligible = eligible_tokens(ids, batch.get("attention_mask"), self.vocab)       # [B, T]
    k_frag, k_action, k_random = jax.random.split(key, 3)
    start, k = self.sample_fragment(k_frag, eligible.sum(1).astype(jnp.int32), K)
    u_action, u_random = jax.random.uniform(k_action, (B, T)), jax.random.uniform(k_random, (B, T))
    out = fragment_inputs(ids, eligible, start, k, K, self.vocab, self._actions(u_action), u_random)
    enc_mask = batch.get("attention_mask", (ids != self.vocab.pad_id).astype(jnp.int32))
    inputs = {"input_ids": out["input_ids"], "attention_mask": enc_mask,
              "decoder_input_ids": out["decoder_input_ids"],
              "decoder_positions": out["decoder_positions"],
              "decoder_attention_mask": out["decoder_attention_mask"]}
    targets = {"ids": out["target_ids"], "weights": out["target_weights"], "start": start, "length": k}
    return {"inputs": inputs, "targets": targets}

  def _actions(self, u: Array) -> Array:
    return jnp.where(u < self.mask_token_prob, MASK,
                     jnp.where(u < self.mask_token_prob + self.random_token_prob, RANDOM, KEEP))

  def loss(self, outputs: dict, prepared: dict) -> tuple[Array, dict]:
    t = prepared["targets"]
    logits = outputs["logits"]                                                     # [B, K, V]
    if logits.shape[:2] != t["ids"].shape:
      raise ValueError(f"mass: decoder logits {logits.shape} do not cover the fragment targets "
                       f"{t['ids'].shape}; the model must be Seq2Seq called with decoder_input_ids")
    loss, acc, n = token_cross_entropy(logits, t["ids"], t["weights"])
    return loss, {"mass_loss": loss, "mass_accuracy": acc, "num_targets": n, "loss": loss}


def fragment_inputs(ids: Array, eligible: Array, start: Array, k: Array, num_slots: int, vocab: Vocab,
                    actions: Array, u_random: Array) -> dict:
  """The deterministic half of MASS: a given fragment (start, k over the eligible tokens) ->
  encoder and decoder arrays. ids, eligible, actions (MASK/RANDOM/KEEP), u_random [B, T]; start,
  k [B]. Returns input_ids [B, T], and [B, K]: decoder_input_ids, decoder_positions,
  decoder_attention_mask, target_ids, target_weights; fragment [B, T] bool."""
  B, T = ids.shape
  # row position of the j-th eligible token, j = 0..T-1 (T - 1 past the last one)
  order = jax.vmap(lambda e: jnp.nonzero(e, size=T, fill_value=T - 1)[0])(eligible)   # [B, T]
  slot = jnp.arange(num_slots)                                                     # [K]
  valid = slot[None, :] < k[:, None]                                               # [B, K]
  j = jnp.clip(start[:, None] + slot[None, :], 0, T - 1)
  positions = jnp.where(valid, jnp.take_along_axis(order, j, axis=1), 0)           # [B, K]
  fragment = jnp.zeros((B, T), bool).at[jnp.arange(B)[:, None], positions].max(valid)
  target = jnp.take_along_axis(ids, positions, axis=1)                             # [B, K]

  corrupted = jnp.where(actions == MASK, vocab.mask_id,
                        jnp.where(actions == RANDOM, random_regular_tokens(u_random, vocab), ids))
  enc_ids = jnp.where(fragment, corrupted, ids).astype(ids.dtype)                  # [B, T]

  shifted = jnp.concatenate([jnp.full((B, 1), vocab.mask_id, ids.dtype), target[:, :-1]], axis=1)
  return {
      "input_ids": enc_ids,
      "decoder_input_ids": jnp.where(valid, shifted, vocab.pad_id).astype(ids.dtype),
      "decoder_positions": positions.astype(jnp.int32),
      "decoder_attention_mask": valid.astype(jnp.int32),
      "target_ids": jnp.where(valid, target, 0).astype(jnp.int32),
      "target_weights": valid.astype(jnp.float32),
      "fragment": fragment,
  }
