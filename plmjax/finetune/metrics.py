"""Downstream metrics, in plain numpy (no scikit-learn): each takes predictions and references and
returns a float, or a dict of floats for the task-level `compute` functions.

    accuracy(pred, gold)                         fraction equal
    f1_binary(pred, gold, positive=1)            F1 of the positive class (MRPC, QQP)
    matthews(pred, gold)                         Matthews correlation (CoLA), multi-class form
    pearson(x, y), spearman(x, y)                correlations (STS-B); spearman on average ranks
    iob_chunks(tags)                             [(type, start, end)] entity spans, conlleval rules
    entity_f1(pred_seqs, gold_seqs)              micro precision / recall / F1 over entities (CoNLL)
    squad_em_f1(prediction, answers)             SQuAD exact match and token F1 (max over answers)

`iob_chunks` follows conlleval: a chunk starts at B-X, or at I-X after a tag of another type or
after O (IOB1, where B- only separates two adjacent entities of one type); it also reads IOB2 and
plain "X" tags.
"""
from __future__ import annotations

import collections
import re
import string
from typing import Sequence

import numpy as np


def accuracy(pred, gold) -> float:
  pred, gold = np.asarray(pred), np.asarray(gold)
  if pred.shape != gold.shape:
    raise ValueError(f"accuracy: predictions {pred.shape} vs references {gold.shape}")
  return float((pred == gold).mean()) if gold.size else 0.0


def f1_binary(pred, gold, positive: int = 1) -> float:
  pred, gold = np.asarray(pred) == positive, np.asarray(gold) == positive
  tp = float((pred & gold).sum())
  denom = float(pred.sum() + gold.sum())
  return 2 * tp / denom if denom else 0.0


def matthews(pred, gold) -> float:
  """Gorodkin's multi-class MCC (equals the binary formula for two classes); 0 when undefined."""
  pred, gold = np.asarray(pred), np.asarray(gold)
  labels = np.union1d(pred, gold)
  c = np.array([[np.sum((gold == a) & (pred == b)) for b in labels] for a in labels], np.float64)
  t, p, n = c.sum(1), c.sum(0), c.sum()          # true counts per class, predicted counts, total
  cov_xy = np.trace(c) * n - t @ p
  cov_xx, cov_yy = n * n - p @ p, n * n - t @ t
  denom = np.sqrt(cov_xx * cov_yy)
  return float(cov_xy / denom) if denom else 0.0


def pearson(x, y) -> float:
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  x, y = x - x.mean(), y - y.mean()
  denom = np.sqrt((x * x).sum() * (y * y).sum())
  return float((x * y).sum() / denom) if denom else 0.0


def _ranks(x) -> np.ndarray:
  """Average ranks (ties share the mean of their positions), 1-based."""
  x = np.asarray(x, np.float64)
  order = np.argsort(x, kind="mergesort")
  ranks = np.empty(len(x), np.float64)
  sx = x[order]
  i = 0
  while i < len(x):
    j = i
    while j + 1 < len(x) and sx[j + 1] == sx[i]:
      j += 1
    ranks[order[i:j + 1]] = (i + j) / 2 + 1
    i = j + 1
  return ranks


def spearman(x, y) -> float:
  return pearson(_ranks(x), _ranks(y))


# ---- entities -------------------------------------------------------------------------------------
def _split(tag: str) -> tuple[str, str]:
  if tag in ("O", "", None):
    return "O", ""
  if len(tag) > 1 and tag[1] == "-" and tag[0] in "BIES":
    return tag[0], tag[2:]
  return "I", tag


def iob_chunks(tags: Sequence[str]) -> list[tuple[str, int, int]]:
  """Tags -> entity chunks (type, start, end exclusive), conlleval's start/end-of-chunk rules."""
  chunks, start, kind = [], None, ""
  prev_p, prev_t = "O", ""
  for i, tag in enumerate(list(tags) + ["O"]):
    p, t = _split(tag)
    ends = prev_p != "O" and (p in ("O", "B", "S") or t != prev_t or prev_p in ("E", "S"))
    begins = p != "O" and (p in ("B", "S") or prev_p in ("O", "E", "S") or t != prev_t)
    if ends and start is not None:
      chunks.append((kind, start, i))
      start = None
    if begins:
      start, kind = i, t
    prev_p, prev_t = p, t
  return chunks


def entity_f1(pred_seqs: Sequence[Sequence[str]], gold_seqs: Sequence[Sequence[str]]) -> dict:
  """Micro-averaged entity precision / recall / F1 over sentences (an entity counts when its type
  and both boundaries match), as conlleval reports them (fractions, not percentages)."""
  if len(pred_seqs) != len(gold_seqs):
    raise ValueError(f"entity_f1: {len(pred_seqs)} predicted vs {len(gold_seqs)} gold sentences")
  tp = n_pred = n_gold = 0
  for i, (p, g) in enumerate(zip(pred_seqs, gold_seqs)):
    if len(p) != len(g):
      raise ValueError(f"entity_f1: sentence {i} has {len(p)} predicted vs {len(g)} gold tags")
    pc, gc = set(iob_chunks(p)), set(iob_chunks(g))
    tp += len(pc & gc)
    n_pred += len(pc)
    n_gold += len(gc)
  precision = tp / n_pred if n_pred else 0.0
  recall = tp / n_gold if n_gold else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1}


# ---- SQuAD ------------------------------------------------------------------------------------------
def normalize_answer(s: str) -> str:
  """SQuAD v1.1 evaluation: lower case, drop punctuation and articles, squeeze whitespace."""
  s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
  s = re.sub(r"\b(a|an|the)\b", " ", s)
  return " ".join(s.split())


def _token_f1(prediction: str, truth: str) -> float:
  p, t = normalize_answer(prediction).split(), normalize_answer(truth).split()
  common = collections.Counter(p) & collections.Counter(t)
  same = sum(common.values())
  if same == 0:
    return 0.0
  precision, recall = same / len(p), same / len(t)
  return 2 * precision * recall / (precision + recall)


def squad_em_f1(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
  """(exact match, F1) of one prediction against its reference answers (max over answers)."""
  if not answers:
    raise ValueError("squad_em_f1: a question needs at least one reference answer")
  em = max(float(normalize_answer(prediction) == normalize_answer(a)) for a in answers)
  return em, max(_token_f1(prediction, a) for a in answers)
