"""CoNLL-2003 named-entity recognition: reading, subword alignment, word-level predictions.

    sentences = read_conll("eng.train", labels)          [{"words": [...], "tags": [...]}]
    features  = encode_tagging(sentences, tok, framing, max_len, labels)
    word_tags = word_predictions(features, token_pred, labels, sentences)

Files: one token per line, `word POS chunk NER`, blank lines between sentences, `-DOCSTART-`
lines skipped; tags are IOB1 as distributed (I-X inside and at the start of an entity, B-X only
when an entity directly follows another of the same type).

Each word is tokenized on its own; its tag is the target of its *first* subword (`label_mask` 1),
the other subwords are not scored, as in BERT's NER recipe. Words cut off by `max_len` are
predicted "O" so that entity F1 is computed over every gold word.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from plmjax.data.conll import read_sentences


def read_conll(path: str, labels: Sequence[str], max_sentences: int = -1) -> list[dict]:
  """A CoNLL file -> [{"words", "tags"}] (the last column is the tag), through the reader
  pre-training's CoNLL source uses (plmjax.data.conll.read_sentences)."""
  out = []
  for doc in read_sentences(path):
    for sentence in doc:
      if 0 <= max_sentences <= len(out):
        return out
      for lineno, parts in sentence:
        if parts[-1] not in labels:
          raise ValueError(f"{path}:{lineno}: tag {parts[-1]!r} is not one of {list(labels)}")
      out.append({"words": [p[0] for _, p in sentence], "tags": [p[-1] for _, p in sentence]})
  return out


def encode_tagging(sentences: Sequence[dict], tok, framing, max_len: int,
                   labels: Sequence[str]) -> list[dict]:
  """-> features with per-token `labels` / `label_mask` [n] and `word_start` (first-subword positions)."""
  flat = [w for s in sentences for w in s["words"]]
  pieces = tok.encode_batch(flat)
  unk = tok.token_to_id("[UNK]") if tok.token_to_id("[UNK]") is not None else framing.pad
  out, k = [], 0
  for i, s in enumerate(sentences):
    ids, lab, mask, starts, full = [framing.start], [0], [0], [], False
    for w, tag in zip(s["words"], s["tags"]):
      p = pieces[k] or [unk]                       # a word the tokenizer drops still gets a slot
      k += 1
      full = full or len(ids) + len(p) > max_len - 1
      if full:
        continue                                   # this and later words cut off: predicted "O"
      starts.append(len(ids))
      ids += p
      lab += [labels.index(tag)] + [0] * (len(p) - 1)
      mask += [1] + [0] * (len(p) - 1)
    ids.append(framing.end)
    lab.append(0)
    mask.append(0)
    out.append({"input_ids": np.asarray(ids, np.int32), "token_type_ids": np.zeros(len(ids), np.int32),
                "labels": np.asarray(lab, np.int32), "label_mask": np.asarray(mask, np.int32),
                "index": np.int32(i), "num_words": np.int32(len(starts))})
  return out


def word_predictions(pred_by_index: dict[int, np.ndarray], features: Sequence[dict],
                     sentences: Sequence[dict], labels: Sequence[str]) -> list[list[str]]:
  """Per-token predicted label ids (by feature index) -> IOB tags per word of every sentence."""
  out = []
  for f in features:
    i = int(f["index"])
    pred = pred_by_index[i]                              # [T] label ids, padded
    starts = np.nonzero(f["label_mask"])[0]
    tags = [labels[int(pred[j])] for j in starts]
    out.append(tags + ["O"] * (len(sentences[i]["words"]) - len(tags)))
  return out
