"""The synthetic corpus: determinism, structure (sentences, word-aligned spans, long-range entity
references, state transitions) and the entropy floor (analytic vs empirical, text-only scoring)."""
import math
import time
from collections import Counter

import numpy as np
import pytest

from plmjax.data import synthetic
from plmjax.data.tokenizer import synthetic_tokenizer


@pytest.fixture(scope="module")
def docs():
  return synthetic.split_documents("train", 2000, seed=0)


def test_deterministic_and_seeded():
  a = synthetic.corpus_text(synthetic.generate(50, seed=3))
  assert a == synthetic.corpus_text(synthetic.generate(50, seed=3))
  assert a != synthetic.corpus_text(synthetic.generate(50, seed=4))
  train = {d.text for d in synthetic.split_documents("train", 200)}
  valid = {d.text for d in synthetic.split_documents("valid", 200)}
  assert len(train & valid) < 5                    # disjoint seed streams (rare exact collisions)
  with pytest.raises(ValueError, match="splits"):
    synthetic.split_documents("dev", 10)


def test_size_and_speed():
  t = time.perf_counter()
  text = synthetic.corpus_text(synthetic.split_documents("train", 6000))
  assert time.perf_counter() - t < 5.0
  assert 1.0e6 < len(text) < 2.5e6
  blocks = text.strip().split("\n\n")
  assert len(blocks) == 6000 and all(len(b.split("\n")) >= 2 for b in blocks)


def test_spans_align_with_words(docs):
  g = synthetic.grammar()
  for d in docs[:300]:
    words = [w for s in d.sentences for w in s]
    assert all(s[-1] == synthetic.END for s in d.sentences)
    for (a, b), e in zip(d.entity_spans, d.entities):
      assert tuple(words[a:b]) == g.entity_names[e]
      # the span is maximal: the neighbours are not name words
      for j in (a - 1, b):
        assert j < 0 or j >= len(words) or g.word_class[words[j]][0] != "E"
    for a, b in d.phrase_spans:
      assert tuple(words[a:b]) in g.phrase.index and b - a >= 2
    assert len(d.entities) == len(d.entity_spans) >= 2     # introduced, then referred to


def test_long_range_entity_references(docs):
  far = 0
  for d in docs:
    n0 = len(d.sentences[0])
    cast = {e for (a, _), e in zip(d.entity_spans, d.entities) if a < n0}
    later = [(a, e) for (a, _), e in zip(d.entity_spans, d.entities) if a >= n0]
    assert {e for _, e in later} <= cast
    far += sum(a - n0 >= 20 for a, _ in later)
  assert far > len(docs)                                  # many references 20+ words back


def test_state_transitions_match_p_advance(docs):
  g = synthetic.grammar()
  cfg = g.cfg
  nxt = tot = 0
  for d in docs:
    states = [next(g.word_class[w][1] for w in s if g.word_class[w][0] in "NVA") for s in d.sentences]
    nxt += sum(b == (a + 1) % cfg.num_states for a, b in zip(states, states[1:]))
    tot += len(states) - 1
  expect = cfg.p_advance + (1 - cfg.p_advance) / cfg.num_states
  assert abs(nxt / tot - expect) < 4 * math.sqrt(expect * (1 - expect) / tot)


def test_text_determines_the_likelihood(docs):
  for d in docs[:300]:
    assert synthetic.score_document(d.text) == pytest.approx(d.nll, abs=1e-9)
  d = docs[0]
  swapped = d.sentences[1:2] + d.sentences[:1] + d.sentences[2:]     # intro no longer first
  with pytest.raises(ValueError):
    synthetic.score_document("\n".join(" ".join(s) for s in swapped))
  with pytest.raises(ValueError, match="unknown word"):
    synthetic.score_document(d.text.replace(d.sentences[0][-2], "xyzzy"))


def test_entropy_floor_matches_empirical(docs):
  floor = synthetic.entropy_floor_nats()
  nll = np.array([d.nll for d in docs])
  se = nll.std() / math.sqrt(len(nll))
  assert abs(nll.mean() - floor["per_document"]) < 4 * se
  words = np.array([sum(map(len, d.sentences)) for d in docs])
  assert abs(words.mean() - floor["words_per_document"]) < 4 * words.std() / math.sqrt(len(docs))
  tok = synthetic_tokenizer()
  tokens = np.array([len(tok.encode(d.text.replace("\n", " "))) for d in docs])
  assert abs(tokens.mean() - floor["tokens_per_document"]) < 4 * tokens.std() / math.sqrt(len(docs))
  assert floor["per_token"] == pytest.approx(floor["per_document"] / floor["tokens_per_document"])
  assert 0 < floor["per_token"] < floor["per_word"] < math.log(tok.vocab_size) * 3


def test_plugin_entropy_of_a_component(docs):
  """Template choice: plug-in entropy of the observed templates vs the analytic one."""
  g = synthetic.grammar()
  counts = Counter()
  for d in docs:
    for s in d.sentences[1:]:
      counts[tuple(u[0] for u in g._chunk(s, 0)[:-1])] += 1
  p = np.array(list(counts.values()), float) / sum(counts.values())
  assert set(counts) == set(synthetic.TEMPLATES)
  assert -(p * np.log(p)).sum() == pytest.approx(g.template.entropy, abs=0.01)


def test_tokenization_is_syllabic():
  tok = synthetic_tokenizer()
  g = synthetic.grammar()
  for w in g.noun[0].items[:20] + [g.conj, synthetic.END]:
    ids, words = tok.encode_with_words(w)
    assert len(ids) == max(len(w) // 2, 1) and tok.unk_id not in ids and set(words) == {0}
  assert tok.decode(tok.encode(g.noun[1].items[0])) == g.noun[1].items[0]


def test_token_unigram_is_exact(docs):
  """The exact token frequencies (Grammar.token_unigram) against 2,000 documents' counts: every
  token within 4 standard errors (a document is the sampling unit), the same support, and the
  expected tokens per document equal to the entropy floor's."""
  g, tok = synthetic.grammar(), synthetic_tokenizer()
  uni = g.token_unigram()
  assert sum(uni.values()) == pytest.approx(1.0)
  per_doc = [Counter(tok.id_to_token(i) for i in tok.encode(d.text.replace("\n", " "))) for d in docs]
  lengths = np.array([sum(c.values()) for c in per_doc], float)
  assert set().union(*per_doc) <= set(uni)
  for t, p in uni.items():
    counts = np.array([c.get(t, 0) for c in per_doc], float)
    # ratio estimator sum(counts) / sum(lengths); its standard error by the delta method
    r = counts.sum() / lengths.sum()
    se = np.std(counts - r * lengths) / math.sqrt(len(docs)) / lengths.mean()
    assert abs(r - p) < 4 * se + 1e-4, (t, r, p)
  h = synthetic.unigram_entropy_nats()
  emp = Counter()
  for c in per_doc:
    emp.update(c)
  q = np.array(list(emp.values())) / lengths.sum()
  assert h == pytest.approx(float(-(q * np.log(q)).sum()), abs=0.01)
  assert 4.5 < h < math.log(tok.vocab_size)
