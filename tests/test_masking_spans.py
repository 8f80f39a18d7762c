"""SpanBERT geometric span masking and the span boundaries handed to the SBO (masking.py)."""
import jax
import numpy as np

from plmjax.objectives.masking import (MaskSpec, _geometric_segments, sample_span_lengths,
                                      span_length_probs)
from tests.test_masking_units import SEP, Z, eligible, masked, selected, unit_groups

MEAN = float((np.arange(1, 11) * span_length_probs(0.2, 10)).sum())     # 3.797...


def test_span_length_distribution():
  L = np.asarray(sample_span_lengths(jax.random.key(0), (200_000,), 0.2, 10))
  assert L.min() == 1 and L.max() == 10
  assert abs(MEAN - 3.8) < 0.005
  assert abs(L.mean() - MEAN) <= Z * L.std() / np.sqrt(L.size)
  probs = span_length_probs(0.2, 10)
  for length, p in enumerate(probs, start=1):
    assert abs((L == length).mean() - p) <= Z * np.sqrt(p * (1 - p) / L.size), length


def test_tiling_segments_follow_the_span_length_distribution():
  """The segments that tile a sentence are the sampled spans: mean 3.8 +- 0.1 words, at most 10.
  Rows: [CLS] + 510 one-token words + [SEP]; each row's last segment (cut at the end) is left out."""
  B, T = 64, 512
  t = np.arange(T)
  eligible_row = (t > 0) & (t < T - 1)
  words = np.where(eligible_row, t, -1)
  u = jax.random.uniform(jax.random.key(3), (B, T))
  seg = jax.jit(jax.vmap(lambda u: _geometric_segments(u, words, eligible_row, MaskSpec(unit="span"))))
  seg = np.asarray(seg(u))[:, eligible_row]                                     # [B, 510]
  assert (np.diff(seg, axis=1) >= 0).all() and (seg[:, 0] == 0).all()          # consecutive tiles
  lengths = np.concatenate([np.bincount(r)[:-1] for r in seg])
  assert lengths.size > 8000 and lengths.min() >= 1 and lengths.max() == 10
  assert abs(lengths.mean() - 3.8) < 0.1, lengths.mean()
  assert abs(lengths.mean() - MEAN) <= 0.02 + Z * lengths.std() / np.sqrt(lengths.size), lengths.mean()


def spanbert_reference_mean(data, seed=0):
  """SpanBERT's sequential sampler (span length ~ clipped Geo(0.2), random anchor word, extend over
  whole words, stop at the budget, cutting the last span) on the same rows: mean words per span."""
  rng = np.random.RandomState(seed)
  probs = span_length_probs(0.2, 10)
  el = eligible(data)
  spans = []
  for row_words, row_el in zip(data["word_ids"], el):
    pieces = np.bincount(row_words[row_el])
    W, b = len(pieces), int(np.round(0.15 * row_el.sum()))
    count, masked = 0, np.zeros(W, bool)
    while count < b:
      length, w = rng.choice(np.arange(1, 11), p=probs), rng.randint(W)
      if masked[w]:
        continue
      n = 0
      while n < length and w < W and count < b:
        count += 0 if masked[w] else min(pieces[w], b - count)
        masked[w], w, n = True, w + 1, n + 1
      spans.append(n)
  return np.mean(spans)


def test_selected_spans_are_whole_words_and_no_shorter_than_spanberts():
  """Selected spans: 1-10 words. Budget-limited selection shortens them on average (inspection
  paradox, see masking.py); ours stay closer to 3.8 than SpanBERT's own sampler on the same rows."""
  data, out = masked("span", B=1024, T=128, pair=False)
  rows, slots = unit_groups(out)
  pos = out["masked_positions"]
  words = np.array([len(np.unique(data["word_ids"][r[0], pos[r, s]])) for r, s in zip(rows, slots)])
  assert words.size > 2500 and words.min() >= 1 and words.max() <= 10
  reference = spanbert_reference_mean(data)
  assert 3.4 < words.mean() < 3.8 and words.mean() > reference + 0.2, (words.mean(), reference)


def test_spans_stay_inside_one_sentence():
  data, out = masked("span")
  sentence = np.cumsum(data["input_ids"] == SEP, axis=1)              # 0: first segment, 1: second
  rows, slots = unit_groups(out)
  pos = out["masked_positions"]
  assert all(len(np.unique(sentence[r[0], pos[r, s]])) == 1 for r, s in zip(rows, slots))
  # and both sentences get spans
  first = [sentence[r[0], pos[r[0], s[0]]] for r, s in zip(rows, slots)]
  assert 0.3 < np.mean(first) < 0.7


def test_span_boundaries_enclose_maximal_runs():
  for unit in ("span", "word", "token"):
    data, out = masked(unit)
    T = data["input_ids"].shape[1]
    sel = selected(out, T)
    w = out["masked_weights"] > 0
    pos, left, right, off = (out[k] for k in ("masked_positions", "span_left", "span_right", "span_offset"))
    valid = out["span_valid"] > 0
    assert (valid <= w).all()
    b, s = np.nonzero(w)
    start = pos[b, s] - off[b, s]
    assert (off[b, s] >= 0).all()
    # the run [start, end] is selected, and its outside neighbours are not (or lie outside the row)
    assert sel[b, start].all()
    assert ((start == 0) | ~sel[b, np.maximum(start - 1, 0)]).all()
    v = valid[b, s]
    np.testing.assert_array_equal(left[b, s][v], start[v] - 1)
    assert not sel[b[v], left[b, s][v]].any() and not sel[b[v], right[b, s][v]].any()
    assert (right[b, s][v] > pos[b, s][v]).all()
    covered = np.cumsum(sel, axis=1)                  # every position strictly inside is selected
    lo, hi = left[b, s][v], right[b, s][v]
    np.testing.assert_array_equal(covered[b[v], hi - 1] - covered[b[v], lo], hi - lo - 1)
    # every row here starts with [CLS] and ends its real part with [SEP]: all boundaries are inside
    assert v.all()
    if unit == "span":
      assert (right - left - 1)[w].max() > 10          # merged touching spans share boundaries
