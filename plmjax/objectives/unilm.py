"""UNILM: unified language model pre-training (Dong et al., 2019).

One shared Transformer encoder (plmjax/models/bert.py) is trained as four language models at once;
what distinguishes them is only the self-attention mask M [T, T] (True = query i may attend to key
j; the paper adds 0 or -inf to the attention logits) and the segment embedding, which doubles as
an LM identifier. A row is [CLS] S1 [SEP] S2 [SEP] (source segment = token type 0 in the data,
target segment = 1); j ranges over real (non-padding) tokens:

    mode            M[i, j] True iff                                   token types  share
    bidirectional   always                                              0 | 1        1/3
    left-to-right   j <= i                                              2            1/6
    right-to-left   j >= i                                              3            1/6
    seq2seq         j in S1, or (i, j both in S2 and j <= i)            4 | 5        1/3

(the token types follow the UNILM code's `new_segment_ids`). The mode is drawn per row on device
from the step's key, in the paper's proportions. In every mode the targets are BERT's masked-LM
targets (masking.py: 15 %, 80/10/10), drawn over *both* segments; the model predicts a [MASK] at
position i from what row i of M lets it see, so a left-to-right row predicts each masked token
from its left context only. (The paper masks a bigram or trigram 20 % of the time: the paper
setting uses span units with span_p = 0.8, span_max_words = 3, i.e. 1/2/3 words with probability
0.81/0.16/0.03.) The paper also trains next-sentence prediction with the bidirectional LM:
`nsp_weight` > 0 adds NSP on the bidirectional rows only (the other modes' [CLS] does not see the
whole pair), with data.random_next_prob = 0.5 and model.nsp_head = True (the `large` config). The
paper does not say what the other modes do with a random second segment; here they train on it
like any pair (its tokens are still a sentence to model). With nsp_weight = 0 (the tiny config)
the data's pairs are true continuations (data.random_next_prob = 0).

Seq2seq fine-tuning ("unilm_s2s"): every row uses the seq2seq mask and only target tokens are
masked (`mask_prob` of them, 0.7 in the paper), the closing [SEP] included, so that the model
learns to end. Generation then appends a [MASK] after the source and the target so far, predicts it,
and replaces it by the prediction: plmjax.decode.PrefixLMDecoding, with a KV cache whose source
slots are prefilled with full visibility.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from plmjax.objectives.clm import model_inputs, token_cross_entropy
from plmjax.objectives.masking import MaskSpec, Vocab, mask_tokens
from plmjax.objectives.mlm import masked_lm_loss
from plmjax.objectives.nsp import nsp_loss

Array = jax.Array

BIDIRECTIONAL, LEFT_TO_RIGHT, RIGHT_TO_LEFT, SEQ2SEQ = 0, 1, 2, 3
MODE_NAMES = ("bidirectional", "left_to_right", "right_to_left", "seq2seq")
PAPER_PROPORTIONS = (1 / 3, 1 / 6, 1 / 6, 1 / 3)
# token type of (source, target) tokens in each mode
MODE_TOKEN_TYPES = ((0, 1), (2, 2), (3, 3), (4, 5))
NUM_TOKEN_TYPES = 6


def mode_attention_mask(mode: Array, segment: Array, real: Array) -> Array:
  """mode [B] in 0..3, segment [B, T] (0 source, 1 target), real [B, T] bool -> M [B, T, T] bool,
  the table of the module docstring. Padding keys are never visible; a padding query sees itself
  (so that no softmax row is empty)."""
  T = segment.shape[1]
  i = jnp.arange(T)[:, None]                                                       # query
  j = jnp.arange(T)[None, :]                                                       # key
  src = (real & (segment == 0))[:, None, :]                                        # key in S1
  tgt_q = (real & (segment == 1))[:, :, None]                                      # query in S2
  tgt_k = (real & (segment == 1))[:, None, :]                                      # key in S2
  rules = jnp.stack([
      jnp.ones((1, T, T), bool) & real[:, None, :],                                # bidirectional
      jnp.broadcast_to(j <= i, (1, T, T)) & real[:, None, :],                      # left-to-right
      jnp.broadcast_to(j >= i, (1, T, T)) & real[:, None, :],                      # right-to-left
      src | (tgt_q & tgt_k & (j <= i)),                                            # seq2seq
  ], axis=1)                                                                       # [B|1, 4, T, T]
  rules = jnp.broadcast_to(rules, (segment.shape[0], 4, T, T))
  chosen = jnp.take_along_axis(rules, mode[:, None, None, None], axis=1)[:, 0]     # [B, T, T]
  return chosen | (jnp.eye(T, dtype=bool)[None] & ~real[:, :, None])


def mode_token_types(mode: Array, segment: Array) -> Array:
  """mode [B], segment [B, T] in {0, 1} -> token_type_ids [B, T] (MODE_TOKEN_TYPES)."""
  table = jnp.asarray(MODE_TOKEN_TYPES, jnp.int32)                                 # [4, 2]
  return table[mode[:, None], jnp.clip(segment, 0, 1)]


@dataclasses.dataclass(frozen=True)
class UnifiedLM:
  """Objectives "unilm" (pre-training: modes mixed per row) and "unilm_s2s" (seq2seq fine-tuning:
  `target_only`, every row seq2seq, [MASK]s only in the target, its closing [SEP] included)."""
  spec: MaskSpec
  vocab: Vocab
  proportions: tuple[float, ...] = PAPER_PROPORTIONS
  target_only: bool = False
  sep_id: int = -1
  nsp_weight: float = 0.0

  def __post_init__(self):
    if len(self.proportions) != 4 or min(self.proportions) < 0 or abs(sum(self.proportions) - 1) > 1e-6:
      raise ValueError(f"objective.proportions={self.proportions}: expected 4 probabilities "
                       f"({', '.join(MODE_NAMES)}) summing to 1")
    if self.nsp_weight and self.target_only:
      raise ValueError("unilm_s2s: objective.nsp_weight must be 0 (every row is seq2seq)")
    if self.target_only and self.sep_id < 0:
      raise ValueError("unilm_s2s: the tokenizer has no [SEP] id (needed to mask the target's end)")

  def sample_modes(self, key: Array, batch_size: int) -> Array:
    """[B] int32 modes drawn i.i.d. with `proportions`."""
    logp = jnp.log(jnp.asarray(self.proportions, jnp.float32))
    return jax.random.categorical(key, logp, shape=(batch_size,)).astype(jnp.int32)

  def prepare(self, batch: dict, key: Array) -> dict:
    ids = batch["input_ids"]                                                       # [B, T]
    B = ids.shape[0]
    real = batch.get("attention_mask", (ids != self.vocab.pad_id).astype(jnp.int32)).astype(bool)
    segment = batch.get("token_type_ids", jnp.zeros_like(ids)).astype(jnp.int32)
    k_mode, k_mask = jax.random.split(key)
    if self.target_only:
      mode = jnp.full((B,), SEQ2SEQ, jnp.int32)
      vocab = dataclasses.replace(self.vocab, special_ids=tuple(
          s for s in self.vocab.special_ids if s != self.sep_id))                 # [SEP] may be a target
      pool = {"input_ids": ids, "attention_mask": (real & (segment == 1)).astype(jnp.int32)}
    else:
      mode = self.sample_modes(k_mode, B)
      vocab = self.vocab
      pool = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "word_ids",
                                                       "phrase_ids", "entity_ids")}
    m = mask_tokens(pool, k_mask, self.spec, vocab)
    inputs = {**model_inputs(batch), "input_ids": m["input_ids"],
              "attention_mask": mode_attention_mask(mode, segment, real),          # [B, T, T]
              "token_type_ids": mode_token_types(mode, segment),
              "masked_positions": m["masked_positions"]}                           # [B, P]
    targets = {"masked_ids": m["masked_ids"], "masked_weights": m["masked_weights"], "mode": mode}
    if self.nsp_weight:
      if "next_sentence_label" not in batch:
        raise ValueError("unilm: objective.nsp_weight > 0 needs batch['next_sentence_label'] "
                         "(data mode 'pairs')")
      targets["next_sentence_label"] = batch["next_sentence_label"].astype(jnp.int32)
    return {"inputs": inputs, "targets": targets}

  def loss(self, outputs: dict, prepared: dict) -> tuple[Array, dict]:
    t = prepared["targets"]
    loss, metrics = masked_lm_loss(outputs, t, "unilm")
    if not self.target_only:            # per-mode losses, to watch the four LMs separately
      for mode, name in enumerate(MODE_NAMES):
        w = t["masked_weights"] * (t["mode"] == mode)[:, None]
        metrics[f"{name}_loss"] = token_cross_entropy(outputs["logits"], t["masked_ids"], w)[0]
    if self.nsp_weight:
      if "nsp_logits" not in outputs:
        raise ValueError("unilm: objective.nsp_weight > 0 needs model.nsp_head = True")
      l_nsp, m_nsp = nsp_loss(outputs["nsp_logits"], t["next_sentence_label"],
                              t["mode"] == BIDIRECTIONAL)                          # [B] row weights
      loss, metrics = loss + self.nsp_weight * l_nsp, {**metrics, **m_nsp}
    return loss, {**metrics, "loss": loss}
