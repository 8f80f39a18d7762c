"""Statistics of the masking samplers (plmjax/objectives/masking.py), measured over thousands of rows.

Tolerances are Z = 4.5 standard deviations of the quantity measured (binomial, or the sample std of a
per-row quantity over sqrt(rows)): with ~60 such checks in the files, a correct sampler trips one with
probability < 1e-3, while e.g. a 2-point error in the 80/10/10 split (sd 0.37 points over ~6600 units)
fails. Every draw uses fixed keys, so the tests are deterministic.
"""
import functools

import jax
import numpy as np
import pytest

from plmjax.objectives.masking import KEEP, MASK, RANDOM, MaskSpec, Vocab, mask_tokens

PAD, CLS, SEP, MSK, UNK = 0, 1, 2, 3, 4
VOCAB = Vocab(vocab_size=100, pad_id=PAD, mask_id=MSK, special_ids=(PAD, CLS, SEP, MSK, UNK))
Z = 4.5


def make_batch(seed: int, B: int, T: int, pair: bool = True, pad: bool = True) -> dict:
  """[CLS] A [SEP] (B [SEP]) pad..., words of 1-3 pieces, phrases of 2-4 words and entities of 1-3
  words inside sentences; unit ids index units within the row, -1 outside."""
  rng = np.random.RandomState(seed)
  ids = np.full((B, T), PAD, np.int32)
  word, phrase, entity = (np.full((B, T), -1, np.int32) for _ in range(3))
  for b in range(B):
    n = rng.randint(T // 2, T + 1) if pad else T
    inner = n - (3 if pair else 2)
    cut = rng.randint(inner // 3, 2 * inner // 3) if pair else inner
    ids[b, 0] = CLS
    t, w, ph, en = 1, 0, 0, 0
    for length in ([cut, inner - cut] if pair else [inner]):
      end = t + length
      starts = []
      while t < end:
        k = min(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]), end - t)
        ids[b, t:t + k] = rng.randint(5, 100, k)
        word[b, t:t + k] = w
        starts.append(t)
        t, w = t + k, w + 1
      starts.append(end)
      for unit_ids, prob, sizes, counter in ((phrase, 0.3, (2, 4), "ph"), (entity, 0.2, (1, 3), "en")):
        i = 0
        while i < len(starts) - 1:
          k = rng.randint(sizes[0], sizes[1] + 1)
          if rng.rand() < prob and i + k < len(starts):
            c = ph if counter == "ph" else en
            unit_ids[b, starts[i]:starts[i + k]] = c
            ph, en = (ph + 1, en) if counter == "ph" else (ph, en + 1)
            i += k
          else:
            i += 1
      ids[b, t] = SEP
      t += 1
  return {"input_ids": ids, "attention_mask": (ids != PAD).astype(np.int32),
          "word_ids": word, "phrase_ids": phrase, "entity_ids": entity}


@functools.lru_cache(maxsize=None)
def batch(B=2048, T=64, pair=True, pad=True):
  return make_batch(0, B, T, pair, pad)


@functools.lru_cache(maxsize=None)
def masker(unit: str, P: int = 64):
  return jax.jit(functools.partial(mask_tokens, spec=MaskSpec(unit=unit, max_predictions=P), vocab=VOCAB))


@functools.lru_cache(maxsize=None)
def masked(unit: str, P: int = 64, B: int = 2048, T: int = 64, pair: bool = True, seed: int = 1):
  data = batch(B, T, pair)
  return data, {k: np.asarray(v) for k, v in masker(unit, P)(data, jax.random.key(seed)).items()}


def eligible(data):
  return (data["attention_mask"] > 0) & ~np.isin(data["input_ids"], VOCAB.special_ids)


def budget(data, P, prob=0.15):
  n = eligible(data).sum(1)
  return np.where(n > 0, np.clip(np.round(prob * n), 1, P), 0), n


def selected(out, T):
  sel = np.zeros((out["masked_positions"].shape[0], T), bool)
  rows, slots = np.nonzero(out["masked_weights"])
  sel[rows, out["masked_positions"][rows, slots]] = True
  return sel


def unit_groups(out, key=None):
  """[(row, unit, values of `key` over the unit's targets)] for every selected unit."""
  rows, slots = np.nonzero(out["masked_weights"])
  units = out["masked_units"][rows, slots]
  order = np.lexsort((units, rows))
  rows, slots, units = rows[order], slots[order], units[order]
  breaks = np.flatnonzero(np.diff(rows * 10**6 + units)) + 1
  return np.split(rows, breaks), np.split(slots, breaks)


ALL_UNITS = ["token", "word", "phrase", "entity", "span"]


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_targets_are_real_and_consistent(unit):
  data, out = masked(unit)
  T = data["input_ids"].shape[1]
  sel = selected(out, T)
  w = out["masked_weights"] > 0
  assert not (sel & ~eligible(data)).any(), "special token or padding chosen as a target"
  assert (w.sum(1) == sel.sum(1)).all(), "duplicate target positions"
  pos = out["masked_positions"]
  assert (np.diff(np.where(w, pos, T + np.arange(pos.shape[1])), axis=1) > 0).all()  # ascending
  np.testing.assert_array_equal(out["masked_ids"][w], np.take_along_axis(data["input_ids"], pos, 1)[w])
  # non-targets are untouched, [MASK] / kept targets read as such, random ones are regular tokens
  np.testing.assert_array_equal(out["input_ids"][~sel], data["input_ids"][~sel])
  seen = np.take_along_axis(out["input_ids"], pos, 1)
  a = out["masked_actions"]
  assert (seen[w & (a == MASK)] == MSK).all()
  assert (seen[w & (a == KEEP)] == out["masked_ids"][w & (a == KEEP)]).all()
  rand = seen[w & (a == RANDOM)]
  assert rand.size and not np.isin(rand, VOCAB.special_ids).any() and (rand < 100).all()
  assert len(np.unique(rand)) > 80                                           # spread over the vocab


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_budget_is_met_in_expectation_and_bounded(unit):
  data, out = masked(unit)
  count = out["masked_weights"].sum(1)
  b, n = budget(data, P=64)
  max_unit = {"token": 1, "word": 3, "phrase": 12, "entity": 9, "span": 30}[unit]
  assert (np.abs(count - b) <= max_unit - 1).all()
  diff = count - b
  assert abs(diff.mean()) <= Z * max(diff.std(), 1e-9) / np.sqrt(len(diff)), (diff.mean(), diff.std())
  rate, target = count.sum() / n.sum(), b.sum() / n.sum()
  assert abs(target - 0.15) < 0.003                                          # rounding of b only
  assert abs(rate - target) <= Z * max(diff.std(), 1e-9) / np.sqrt(len(diff)) * len(n) / n.sum()
  if unit == "token":
    np.testing.assert_array_equal(count, b)


def test_token_selection_is_uniform_over_positions():
  """Each eligible token is a target with probability b / n; check by quartile of its rank."""
  data, out = masked("token")
  el = eligible(data)
  b, n = budget(data, P=64)
  p = np.where(el, (b / np.maximum(n, 1))[:, None], 0.0)
  rank = np.cumsum(el, 1) - 1
  quartile = np.where(el, (4 * rank) // np.maximum(n, 1)[:, None], -1)
  sel = selected(out, el.shape[1])
  for q in range(4):
    obs, exp, var = sel[quartile == q].sum(), p[quartile == q].sum(), (p * (1 - p))[quartile == q].sum()
    assert abs(obs - exp) <= Z * np.sqrt(var), (q, obs, exp, np.sqrt(var))


@pytest.mark.parametrize("unit,ids", [("word", "word_ids"), ("phrase", "phrase_ids"),
                                      ("entity", "entity_ids"), ("phrase", "word_ids"),
                                      ("entity", "word_ids"), ("span", "word_ids")])
def test_units_are_never_split(unit, ids):
  data, out = masked(unit)
  sel = selected(out, data["input_ids"].shape[1])
  uid = data[ids]
  key = np.where(uid >= 0, np.arange(len(uid))[:, None] * 1000 + uid, -1)
  inside = key >= 0
  k, s = key[inside], sel[inside]
  k = np.unique(k, return_inverse=True)[1]
  some, allsel = np.zeros(k.max() + 1, bool), np.ones(k.max() + 1, bool)
  np.logical_or.at(some, k, s)
  np.logical_and.at(allsel, k, s)
  assert some.sum() > 1000 and (np.bincount(k) > 1).sum() > 1000     # many multi-token units
  np.testing.assert_array_equal(some, allsel)


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_80_10_10_is_decided_per_unit(unit):
  data, out = masked(unit)
  rows, slots = unit_groups(out)
  acts = [out["masked_actions"][r, s] for r, s in zip(rows, slots)]
  assert all((a == a[0]).all() for a in acts), "tokens of one unit got different decisions"
  if unit == "span":     # the decision is per merged span: contiguous targets share it
    pos, a, w = out["masked_positions"], out["masked_actions"], out["masked_weights"]
    touching = (np.diff(pos, axis=1) == 1) & (w[:, 1:] > 0)
    assert (a[:, 1:][touching] == a[:, :-1][touching]).all()
    first = (w > 0) & ~np.concatenate([np.zeros_like(touching[:, :1]), touching], 1)
    per_unit = a[first]
  else:
    per_unit = np.array([x[0] for x in acts])
  N = len(per_unit)
  assert N > 2000
  for action, p in ((MASK, 0.8), (RANDOM, 0.1), (KEEP, 0.1)):
    frac = (per_unit == action).mean()
    assert abs(frac - p) <= Z * np.sqrt(p * (1 - p) / N), (action, frac, N)


@pytest.mark.parametrize("unit", ["token", "span"])
def test_max_predictions_caps_targets(unit):
  P = 5
  data, out = masked(unit, P=P)
  count = out["masked_weights"].sum(1)
  b, _ = budget(data, P=P)
  assert count.max() <= P and out["masked_positions"].shape[1] == P
  assert (b == P).mean() > 0.5                       # the cap binds for most rows
  if unit == "token":
    np.testing.assert_array_equal(count, b)
  assert not (selected(out, data["input_ids"].shape[1]) & ~eligible(data)).any()


def test_rows_without_eligible_tokens_get_no_targets():
  data = {k: v.copy() for k, v in batch().items()}
  data["input_ids"][0] = PAD
  data["attention_mask"][0] = 0
  data["input_ids"][1, :] = PAD
  data["input_ids"][1, :3] = (CLS, SEP, SEP)
  data["attention_mask"][1] = data["input_ids"][1] != PAD
  out = masker("word", 64)(data, jax.random.key(0))
  assert float(out["masked_weights"][:2].sum()) == 0.0
  np.testing.assert_array_equal(out["input_ids"][:2], data["input_ids"][:2])
  assert float(out["masked_weights"][2:].sum()) > 0


def test_missing_unit_ids_name_the_key():
  data = {k: v for k, v in batch().items() if k != "entity_ids"}
  with pytest.raises(ValueError, match="entity_ids"):
    mask_tokens(data, jax.random.key(0), MaskSpec(unit="entity"), VOCAB)
  with pytest.raises(ValueError, match="objective.unit"):
    MaskSpec(unit="sentence")


def test_chinese_whole_word_masking_from_segmented_text(tmp_path):
  """Chinese WWM (Cui et al.): the corpus is written with spaces between segmented words, a
  character-level WordPiece vocab.txt (BERT-Chinese style) drops the spaces, and `word_ids` from
  the spaces group each word's characters; masking by word then takes whole words only."""
  from plmjax.data.pipeline import tokenize_document
  from plmjax.data.tokenizer import load_tokenizer
  words = ["我们", "使用", "语言", "模型", "预测", "下", "一个", "词", "中文", "分词", "很", "重要",
           "自然语言", "处理"]
  chars = sorted({c for w in words for c in w})
  (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars))
  tok = load_tokenizer(str(tmp_path))
  rng = np.random.RandomState(0)
  lines = [" ".join(rng.choice(words, 12)) for _ in range(64)]
  rows = [tokenize_document({"text": line}, tok) for line in lines]
  for line, r in zip(lines, rows):
    seg = line.split()
    assert [tok.backend.id_to_token(int(i)) for i in r["ids"]] == list("".join(seg))  # characters
    assert r["word"].tolist() == [j for j, w in enumerate(seg) for _ in w]           # grouped by word
  T = max(len(r["ids"]) for r in rows) + 2
  ids, word, att = (np.zeros((len(rows), T), np.int32) for _ in range(3))
  word[:] = -1
  for b, r in enumerate(rows):
    n = len(r["ids"])
    ids[b, 0], ids[b, 1:n + 1], ids[b, n + 1] = tok.cls_id, r["ids"], tok.sep_id
    word[b, 1:n + 1], att[b, :n + 2] = r["word"], 1
  vocab = Vocab(vocab_size=tok.vocab_size, pad_id=tok.pad_id, mask_id=tok.mask_id,
                special_ids=(tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id))
  out = mask_tokens({"input_ids": ids, "attention_mask": att, "word_ids": word}, jax.random.key(3),
                    MaskSpec(unit="word", max_predictions=12), vocab)
  sel = selected({k: np.asarray(v) for k, v in out.items()}, T)
  multi = 0
  for b in range(len(rows)):
    for w in np.unique(word[b][word[b] >= 0]):
      s = sel[b][word[b] == w]
      assert s.all() or not s.any(), (b, w, s)
      multi += int(s.all() and len(s) > 1)
  assert multi > 20                                  # multi-character words were masked whole
