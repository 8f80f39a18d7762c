"""Downstream metrics against values computed by hand (and, where installed, scikit-learn)."""
import numpy as np
import pytest

from plmjax.finetune import metrics as M

PRED = [1, 1, 0, 0, 1]
GOLD = [1, 0, 0, 1, 1]      # tp 2, fp 1, tn 1, fn 1


def test_accuracy_and_f1():
  assert M.accuracy(PRED, GOLD) == pytest.approx(3 / 5)
  assert M.f1_binary(PRED, GOLD) == pytest.approx(2 * 2 / (3 + 3))      # 2 tp / (|pred| + |gold|)
  assert M.f1_binary([0, 0], [0, 0]) == 0.0
  with pytest.raises(ValueError, match="predictions"):
    M.accuracy([1, 0], [1])


def test_matthews():
  # (tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2 - 1) / sqrt(3 * 3 * 2 * 2) = 1/6
  assert M.matthews(PRED, GOLD) == pytest.approx(1 / 6)
  assert M.matthews([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
  assert M.matthews([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
  assert M.matthews([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0          # constant prediction: undefined -> 0


def test_pearson_spearman():
  # x = 1,2,3; y = 2,4,7: sum dx dy = 5, sxx = 2, syy = 114/9
  assert M.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / np.sqrt(2 * 114 / 9))
  # ranks with a tie: x -> 1, 2.5, 2.5, 4; y -> 1, 3, 2, 4: r = 4.5 / sqrt(4.5 * 5)
  assert M.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / np.sqrt(4.5 * 5))
  assert M.spearman([1, 5, 9], [0, 1, 100]) == pytest.approx(1.0)


def test_iob1_and_iob2_chunks():
  # IOB1: I- starts an entity after O or another type; B- only splits two adjacent same-type entities
  tags = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-MISC"]
  assert M.iob_chunks(tags) == [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("ORG", 5, 6),
                                ("MISC", 6, 7)]
  assert M.iob_chunks(["B-PER", "I-PER", "B-PER", "O", "I-LOC"]) == [
      ("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]
  assert M.iob_chunks(["O", "O"]) == []


def test_entity_f1():
  gold = [["I-PER", "I-PER", "O", "I-LOC"], ["I-ORG", "O"]]
  pred = [["I-PER", "O", "O", "I-LOC"], ["I-ORG", "I-ORG"]]
  # gold: PER(0,2) LOC(3,4) | ORG(0,1); pred: PER(0,1) LOC(3,4) | ORG(0,2): 1 correct of 3 and 3
  r = M.entity_f1(pred, gold)
  assert r["precision"] == pytest.approx(1 / 3) and r["recall"] == pytest.approx(1 / 3)
  assert r["f1"] == pytest.approx(1 / 3)
  assert M.entity_f1(gold, gold)["f1"] == 1.0
  with pytest.raises(ValueError, match="sentence 0"):
    M.entity_f1([["O"]], [["O", "O"]])


def test_squad_em_f1():
  assert M.normalize_answer("The  Cat!") == "cat"
  assert M.squad_em_f1("the cat", ["Cat", "dog"]) == (1.0, 1.0)
  em, f1 = M.squad_em_f1("a big cat sat", ["big cat"])     # tokens big cat sat vs big cat
  assert em == 0.0 and f1 == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
  assert M.squad_em_f1("nothing", ["big cat"]) == (0.0, 0.0)


def test_against_sklearn_on_random_labels():
  sk = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(0)
  for classes in (2, 3):
    p, g = rng.integers(0, classes, 200), rng.integers(0, classes, 200)
    assert M.matthews(p, g) == pytest.approx(sk.matthews_corrcoef(g, p))
  p, g = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
  assert M.f1_binary(p, g) == pytest.approx(sk.f1_score(g, p))
