"""Masking strategies for masked-LM pre-training, run on device inside the jitted train step.

BERT (Devlin et al., 2019) picks 15 % of a sequence's tokens as prediction targets and corrupts the
input at those positions: 80 % become [MASK], 10 % a random token, 10 % stay unchanged. Its
descendants change *what* is picked together, the masking unit:

    token    every subword is its own unit                        (BERT, RoBERTa)
    word     all pieces of a word, from `word_ids`                (BERT whole-word masking)
    phrase   all tokens of a phrase, from `phrase_ids`            (ERNIE 1.0 phrase-level masking)
    entity   all tokens of a named entity, from `entity_ids`      (ERNIE 1.0 entity-level masking)
    span     contiguous spans of whole words, span length in words
             ~ Geometric(p=0.2) clipped at 10 (mean 3.8)          (SpanBERT)

Tokens outside any phrase / entity fall back to word units, and tokens without a word to single
tokens. Special tokens and padding are never targets.

Selection (one row; rows are independent, `jax.vmap` does the batch):

  1. n = number of eligible tokens; the budget is  b = min(P, max(1, round(mask_prob * n)))
     (0 if n = 0), where P = `max_predictions` is the static number of target slots.
  2. Every unit gets a uniform random priority; units are sorted by it and their token counts
     accumulated:  incl_i = sizes of units 1..i,  excl_i = incl_i - size_i.
  3. Units with incl_i <= b are taken. The one unit that crosses the budget (excl_i < b < incl_i) is
     taken with probability (b - excl_i) / size_i, and only if incl_i <= P. Later units are not.

So units are never split, the number of targets never exceeds P, it differs from b by less than the
crossing unit's size (|count - b| <= size - 1; exactly b for token units), and it equals b *in
expectation* (E[count] = excl + size * (b - excl) / size = b), which keeps the masking rate at
`mask_prob` for every unit type instead of biasing it down (always skip the crossing unit) or up
(always take it). The exception is a crossing unit that would overflow the P slots (incl > P): it is
skipped, and the count falls short by less than one unit. So multi-token units need headroom,
P >= b + (largest unit - 1): at T = 128 (b = 19), whole words lose nothing at BERT's P = 20 (rate
14.99 %), but geometric spans fall to 14.0 % at P = 20, 14.7 % at P = 24 and reach 15.0 % at P = 30.
A row whose first-drawn unit is larger than its budget may get no target at all (1 % of rows for
spans at T = 128); the rate stays right on average. (This is BERT's whole-word rule, "skip a word that
would overflow", made unbiased; SpanBERT instead cuts its last span at the budget, mid-word.)

A budget-limited draw cannot keep both the rate and the unit lengths unbiased: the unit that reaches
the budget is length-biased (the inspection paradox), so whatever is done with it, the units taken
before it are on average shorter than the unit distribution. Selected spans therefore average fewer
words than the 3.8 that spans are sampled with: about 3.5 at T = 128 and 3.7 at T = 512 (one
sentence, 1.5 pieces per word); SpanBERT's own sequential sampler, with the same budget on the same
rows, gives about 3.1 and 3.6 (tests/test_masking_spans.py compares the two).

SpanBERT spans. Rather than sampling (start, length) pairs until the budget is met and resolving
their overlaps, which is sequential, each sentence (a run of eligible tokens between special tokens)
is *tiled* by consecutive segments whose lengths are i.i.d. draws of the clipped geometric, the last
one cut at the sentence's end. The segments are then the units of the selection above. They are
disjoint, start at word starts, cover whole words and follow the sampled lengths, apart from the
segment cut at a sentence's end (SpanBERT clips spans at the sequence end too). Selected segments
that touch merge into one span, as SpanBERT merges touching spans.

80/10/10 is decided once per unit: all tokens of a selected unit get the same action (for spans, per
merged span, as in SpanBERT's `replacement='span'`). A random replacement draws a fresh token per
position, uniformly over the non-special vocabulary.

For the span boundary objective every target also carries its span's boundaries: the contiguous run
of selected tokens [s, e] it belongs to gives left = s - 1, right = e + 1, offset = t - s.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

UNITS = ("token", "word", "phrase", "entity", "span")
UNIT_KEYS = {"word": ("word_ids",), "phrase": ("phrase_ids", "word_ids"),
             "entity": ("entity_ids", "word_ids"), "span": ("word_ids",)}
MASK, RANDOM, KEEP = 0, 1, 2   # values of `masked_actions`


@dataclasses.dataclass(frozen=True)
class Vocab:
  """The token ids masking needs (hashable, so it can be closed over by jitted functions)."""
  vocab_size: int
  pad_id: int
  mask_id: int
  special_ids: tuple[int, ...]

  @classmethod
  def from_tokenizer(cls, tok: Any) -> "Vocab":
    ids = {int(i) for i in tuple(getattr(tok, "special_ids", ())) +
           tuple(getattr(tok, a) for a in ("pad_id", "cls_id", "sep_id", "mask_id"))
           if i is not None and 0 <= int(i) < tok.vocab_size}
    return cls(int(tok.vocab_size), int(tok.pad_id), int(tok.mask_id), tuple(sorted(ids)))


@dataclasses.dataclass(frozen=True)
class MaskSpec:
  """How to mask: the `mlm` objective's config fields of the same names."""
  mask_prob: float = 0.15
  max_predictions: int = 20
  unit: str = "token"
  mask_token_prob: float = 0.8
  random_token_prob: float = 0.1
  span_p: float = 0.2
  span_max_words: int = 10

  def __post_init__(self):
    if self.unit not in UNITS:
      raise ValueError(f"objective.unit={self.unit!r}: expected one of {UNITS}")
    if not 0.0 < self.mask_prob < 1.0:
      raise ValueError(f"objective.mask_prob={self.mask_prob}: expected 0 < mask_prob < 1")
    if self.max_predictions < 1:
      raise ValueError(f"objective.max_predictions={self.max_predictions}: expected >= 1")
    if min(self.mask_token_prob, self.random_token_prob) < 0 or \
        self.mask_token_prob + self.random_token_prob > 1:
      raise ValueError(f"objective.mask_token_prob={self.mask_token_prob}, objective.random_token_prob="
                       f"{self.random_token_prob}: expected probabilities summing to <= 1")
    if not 0.0 < self.span_p <= 1.0 or self.span_max_words < 1:
      raise ValueError(f"objective.span_p={self.span_p}, objective.span_max_words="
                       f"{self.span_max_words}: expected 0 < span_p <= 1 and span_max_words >= 1")


def eligible_tokens(input_ids: Array, attention_mask: Array | None, vocab: Vocab) -> Array:
  """[B, T] True where a token may be a target: real (not padding) and not a special token. A [B, T]
  attention mask marks the real tokens; without one (or with a [B, T, T] visibility matrix) the
  padding is found by `pad_id`."""
  if attention_mask is None or attention_mask.ndim != 2:
    ok = input_ids != vocab.pad_id
  else:
    ok = attention_mask.astype(bool)
  return ok & ~jnp.isin(input_ids, jnp.asarray(vocab.special_ids or (-1,), input_ids.dtype))


def span_length_probs(p: float, max_len: int) -> np.ndarray:
  """P(L = l) for l = 1..max_len: Geometric(p) clipped at max_len and renormalised."""
  probs = p * (1 - p) ** np.arange(max_len)
  return probs / probs.sum()


def span_lengths(u: Array, p: float, max_len: int) -> Array:
  """Uniforms u [...] -> span lengths (in words) ~ clipped Geometric(p), int32 in [1, max_len], by
  inverting the CDF: L = 1 + #{l < max_len : u >= P(L <= l)}."""
  cdf = jnp.asarray(np.cumsum(span_length_probs(p, max_len))[:-1], jnp.float32)   # [max_len - 1]
  return 1 + (u[..., None] >= cdf).sum(-1).astype(jnp.int32)


def sample_span_lengths(key: Array, shape: tuple[int, ...], p: float, max_len: int) -> Array:
  return span_lengths(jax.random.uniform(key, shape), p, max_len)


# --------------------------------------------------------------------------------------------------
# Units, one row at a time. A unit array u [T] gives each eligible token the index (in [0, T)) of
# its unit, and -1 to ineligible tokens.


def _first_position_units(keys: Array, eligible: Array, num_keys: int) -> Array:
  """keys [T] in [0, num_keys) -> u [T]: the first eligible position carrying the same key."""
  t = jnp.arange(keys.shape[0])
  first = jnp.full((num_keys,), keys.shape[0], jnp.int32)
  first = first.at[jnp.where(eligible, keys, num_keys)].min(t, mode="drop")
  return jnp.where(eligible, first[jnp.clip(keys, 0, num_keys - 1)], -1)


def _row_units(row: dict, eligible: Array, unit: str) -> Array:
  """Token -> unit index for the non-span units, with the fallbacks span -> word -> token."""
  T = eligible.shape[0]
  t = jnp.arange(T)
  if unit == "token":
    return jnp.where(eligible, t, -1)
  keys = jnp.where(row["word_ids"] >= 0, T + row["word_ids"], 2 * T + t)          # word or token
  if unit in ("phrase", "entity"):
    span_ids = row[f"{unit}_ids"]
    keys = jnp.where(span_ids >= 0, span_ids, keys)
  return _first_position_units(keys, eligible, 3 * T)


def _geometric_segments(u: Array, words: Array, eligible: Array, spec: MaskSpec) -> Array:
  """Word units [T] -> segment units [T]: each sentence's words tiled by clipped-geometric segments.

  One i.i.d. length sequence L_0, L_1, ... is drawn per row; its segment starts c_i = L_0 + ... +
  L_{i-1} live on a virtual word axis. A sentence whose first word has index r is laid on that axis
  from c_r on (word k sits at c_r + k - r), so it is tiled by L_r, L_{r+1}, ...: lengths no earlier
  sentence used, since a sentence of m words uses at most m segments. Word k starts a segment iff
  its virtual coordinate is one of the c_i."""
  T = eligible.shape[0]
  t = jnp.arange(T)
  word_start = eligible & (words == t)                                             # [T]
  start_rank = jnp.cumsum(word_start) - 1                                          # word index
  rank = jnp.where(eligible, start_rank[jnp.clip(words, 0, T - 1)], 0)             # [T]
  prev_eligible = jnp.concatenate([jnp.zeros((1,), bool), eligible[:-1]])
  first_word = jnp.zeros((T,), bool).at[
      jnp.where(word_start & ~prev_eligible, start_rank, T)].set(True, mode="drop")  # by word index
  sentence = jax.lax.cummax(jnp.where(first_word, t, 0))                          # its first word
  lengths = span_lengths(u, spec.span_p, spec.span_max_words)                      # [T]
  starts = jnp.cumsum(lengths) - lengths                                           # c_i, ascending
  virtual = starts[sentence] + t - sentence                                        # by word index
  seg_start = starts[jnp.clip(jnp.searchsorted(starts, virtual), 0, T - 1)] == virtual
  segment = jnp.cumsum(seg_start) - 1                                              # by word index
  return jnp.where(eligible, segment[rank], -1)


def _select_units(u_priority: Array, u_cross: Array, units: Array, eligible: Array, mask_prob: float,
                  max_predictions: int) -> Array:
  """Budgeted random unit selection (module docstring, steps 1-3) -> selected [T] bool."""
  T = units.shape[0]
  size = jnp.zeros((T,), jnp.int32).at[jnp.where(eligible, units, T)].add(1, mode="drop")
  n = eligible.sum()
  budget = jnp.where(n > 0, jnp.clip(jnp.round(mask_prob * n), 1, max_predictions), 0)
  priority = jnp.where(size > 0, u_priority, 2.0)
  order = jnp.argsort(priority)                                                    # [T] unit ids
  s = size[order]
  incl = jnp.cumsum(s)
  excl = incl - s
  crossing = (excl < budget) & (incl > budget) & (incl <= max_predictions)
  keep_crossing = u_cross * s < budget - excl
  take = (s > 0) & ((incl <= budget) | (crossing & keep_crossing))
  chosen = jnp.zeros((T,), bool).at[order].set(take)                              # by unit id
  return eligible & chosen[jnp.clip(units, 0, T - 1)]


def _runs(selected: Array) -> tuple[Array, Array]:
  """For each position, the start and end of the contiguous run of selected tokens holding it."""
  T = selected.shape[0]
  t = jnp.arange(T)
  prev = jnp.concatenate([jnp.zeros((1,), bool), selected[:-1]])
  nxt = jnp.concatenate([selected[1:], jnp.zeros((1,), bool)])
  start = jax.lax.cummax(jnp.where(selected & ~prev, t, 0))
  end = jax.lax.cummin(jnp.where(selected & ~nxt, t, T - 1), reverse=True)
  return start, end


def random_regular_tokens(u: Array, vocab: Vocab) -> Array:
  """Uniforms u [...] -> ids uniform over the vocabulary minus the special ids: r = floor(u * (V -
  #special)), then r steps over each special id in increasing order."""
  n = vocab.vocab_size - len(vocab.special_ids)
  r = jnp.minimum((u * n).astype(jnp.int32), n - 1)
  for s in vocab.special_ids:                      # a handful of static ids, not a loop over data
    r = r + (r >= s).astype(jnp.int32)
  return r


def _mask_row(key: Array, row: dict, spec: MaskSpec, vocab: Vocab) -> dict:
  ids = row["input_ids"]                                                           # [T]
  T, P = ids.shape[0], spec.max_predictions
  # One uniform draw per position for each random choice (a single PRNG call: cheap to compile).
  u_span, u_priority, u_cross, u_action, u_random = jax.random.uniform(key, (5, T))
  eligible = row["eligible"]
  units = _row_units(row, eligible, "word" if spec.unit == "span" else spec.unit)
  if spec.unit == "span":
    units = _geometric_segments(u_span, units, eligible, spec)
  selected = _select_units(u_priority, u_cross, units, eligible, spec.mask_prob, P)           # [T]

  run_start, run_end = _runs(selected)
  decider = run_start if spec.unit == "span" else jnp.clip(units, 0, T - 1)        # [T]
  u = u_action[decider]                                                            # one draw per unit
  action = jnp.where(u < spec.mask_token_prob, MASK,
                     jnp.where(u < spec.mask_token_prob + spec.random_token_prob, RANDOM, KEEP))
  corrupted = jnp.where(action == MASK, vocab.mask_id,
                        jnp.where(action == RANDOM, random_regular_tokens(u_random, vocab), ids))
  corrupted = jnp.where(selected, corrupted, ids)

  positions = jnp.nonzero(selected, size=P, fill_value=0)[0].astype(jnp.int32)     # [P] ascending
  weights = jnp.arange(P) < selected.sum()                                         # [P]
  left, right = run_start[positions] - 1, run_end[positions] + 1
  return {
      "input_ids": corrupted.astype(ids.dtype),
      "masked_positions": positions,
      "masked_ids": jnp.where(weights, ids[positions], 0).astype(jnp.int32),
      "masked_weights": weights.astype(jnp.float32),
      "masked_actions": jnp.where(weights, action[positions], KEEP).astype(jnp.int32),
      "masked_units": jnp.where(weights, units[positions], -1).astype(jnp.int32),
      "span_left": jnp.clip(left, 0, T - 1).astype(jnp.int32),
      "span_right": jnp.clip(right, 0, T - 1).astype(jnp.int32),
      "span_offset": jnp.where(weights, positions - run_start[positions], 0).astype(jnp.int32),
      "span_valid": (weights & (left >= 0) & (right <= T - 1)).astype(jnp.float32),
  }


def mask_tokens(batch: dict, key: Array, spec: MaskSpec, vocab: Vocab) -> dict:
  """Select and corrupt masked-LM targets for a batch.

  batch: `input_ids` [B, T], optional `attention_mask` [B, T], and the unit arrays the unit needs
  (`word_ids`, `phrase_ids`, `entity_ids` [B, T], -1 outside). key: one key (split per row) or
  per-row keys [B] (static masking derives them from the examples). Returns, with P =
  spec.max_predictions:
    input_ids [B, T]          the corrupted ids
    masked_positions [B, P]   target positions, ascending, padded with 0
    masked_ids [B, P]         the original ids there (0 in padding slots)
    masked_weights [B, P]     float32, 1 for a real target, 0 for a padding slot
    masked_actions [B, P]     MASK / RANDOM / KEEP, the 80/10/10 decision
    masked_units [B, P]       index of the target's unit within the row (span: its segment), -1 pad
    span_left, span_right [B, P]   the boundary positions s - 1, e + 1 of the target's span
    span_offset [B, P]        t - s, the target's offset in its span
    span_valid [B, P]         float32, 1 where both boundaries lie inside the row
  """
  ids = batch["input_ids"]
  B, T = ids.shape
  for name in UNIT_KEYS.get(spec.unit, ()):
    if name not in batch:
      raise ValueError(f"objective.unit={spec.unit!r} needs batch[{name!r}] (per-token unit ids, "
                       f"-1 outside); the data pipeline did not provide it")
  if spec.max_predictions > T:
    raise ValueError(f"objective.max_predictions={spec.max_predictions} exceeds the sequence length {T}")
  row = {"input_ids": ids, "eligible": eligible_tokens(ids, batch.get("attention_mask"), vocab)}
  for name in UNIT_KEYS.get(spec.unit, ()):
    row[name] = batch[name].astype(jnp.int32)
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  keys = jax.random.split(key, B) if key.ndim == (0 if typed else 1) else key     # per-row keys
  return jax.vmap(lambda k, r: _mask_row(k, r, spec, vocab))(keys, row)
