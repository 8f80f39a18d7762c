"""Span-extraction QA in SQuAD v1.1 format: reading, encoding with character offsets, decoding.

    examples = read_squad("dev.json")           [{"id", "question", "context", "answers", "answer_start"}]
    features, offsets = encode_spans(examples, tok, framing, max_len)
    answers = decode_spans(start_logits, end_logits, features, offsets, examples)   {id: text}
    squad_metrics(answers, examples) -> {"exact_match", "f1"}

Input: [CLS] question [SEP] context [SEP]; `context_mask` marks the context tokens, the only ones a
span may start or end on. The target is the token span covering the first answer's characters;
a training answer cut off by `max_len` points at position 0 ([CLS]), as in BERT's SQuAD code.
Contexts longer than `max_len` are truncated (no document stride: this is for short contexts).
Character offsets need a Hugging Face `tokenizers` backend (WordPiece / BPE checkpoints).
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from plmjax.finetune import metrics as M


def read_squad(path: str, max_examples: int = -1) -> list[dict]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: SQuAD file not found (set data.dir)")
  with open(path, encoding="utf-8") as f:
    try:
      data = json.load(f)["data"]
    except (json.JSONDecodeError, KeyError) as e:
      raise ValueError(f"{path}: not a SQuAD-format file ({e})") from None
  out = []
  for a_i, article in enumerate(data):
    for p_i, par in enumerate(article["paragraphs"]):
      ctx = par["context"]
      for qa in par["qas"]:
        if 0 <= max_examples <= len(out):
          return out
        answers = [a["text"] for a in qa.get("answers", [])]
        if not answers:
          raise ValueError(f"{path}: data[{a_i}].paragraphs[{p_i}] question {qa.get('id')!r} has no "
                           "answers (SQuAD v2 unanswerable questions are not supported)")
        start = qa["answers"][0]["answer_start"]
        if ctx[start:start + len(answers[0])] != answers[0]:
          raise ValueError(f"{path}: question {qa['id']!r}: answer_start {start} does not point at "
                           f"{answers[0]!r} in its context")
        out.append({"id": qa["id"], "question": qa["question"], "context": ctx,
                    "answers": answers, "answer_start": start})
  return out


def encode_spans(examples: Sequence[dict], tok, framing, max_len: int):
  """-> (features, offsets): offsets[i] = [(char_start, char_end)] per token of feature i
  ((0, 0) outside the context)."""
  if not hasattr(tok.backend, "encode_batch") or getattr(tok, "_sp", False):
    raise ValueError(f"{tok!r}: span QA needs a Hugging Face tokenizers backend (character offsets)")
  q_enc = tok.backend.encode_batch([e["question"] for e in examples], add_special_tokens=False)
  c_enc = tok.backend.encode_batch([e["context"] for e in examples], add_special_tokens=False)
  features, offsets = [], []
  for i, (e, q, c) in enumerate(zip(examples, q_enc, c_enc)):
    q_ids = q.ids[:max(max_len // 2, 1)]
    room = max_len - len(q_ids) - 3
    c_ids, c_off = c.ids[:room], c.offsets[:room]
    ids = [framing.start] + q_ids + [framing.delim] + c_ids + [framing.end]
    first = len(q_ids) + 2                                 # position of the first context token
    ctx_mask = np.zeros(len(ids), np.int32)
    ctx_mask[first:first + len(c_ids)] = 1
    types = np.zeros(len(ids), np.int32)
    types[first:] = 1
    a0, a1 = e["answer_start"], e["answer_start"] + len(e["answers"][0])
    start = end = 0
    toks = [j for j, (s, t) in enumerate(c_off) if s < a1 and t > a0]
    if toks and c_off[toks[-1]][1] >= a1:
      start, end = first + toks[0], first + toks[-1]
    features.append({"input_ids": np.asarray(ids, np.int32), "token_type_ids": types,
                     "context_mask": ctx_mask, "start": np.int32(start), "end": np.int32(end),
                     "index": np.int32(i)})
    offsets.append([(0, 0)] * first + list(c_off) + [(0, 0)])
  return features, offsets


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, context_mask: np.ndarray,
              max_answer_len: int = 30) -> tuple[int, int]:
  """argmax of start + end over context spans with start <= end < start + max_answer_len."""
  s = np.where(context_mask > 0, start_logits, -np.inf)
  e = np.where(context_mask > 0, end_logits, -np.inf)
  score = s[:, None] + e[None, :]                                      # [T, T]
  t = len(s)
  i, j = np.indices((t, t))
  score = np.where((j >= i) & (j < i + max_answer_len), score, -np.inf)
  flat = int(np.argmax(score))
  return flat // t, flat % t


def decode_spans(start_logits: dict, end_logits: dict, features: Sequence[dict], offsets,
                 examples: Sequence[dict], max_answer_len: int = 30) -> dict[str, str]:
  """Per-feature logits (by feature index) -> {question id: answer text}."""
  out = {}
  for f in features:
    i = int(f["index"])
    n = len(f["input_ids"])
    s, e = best_span(start_logits[i][:n], end_logits[i][:n], f["context_mask"], max_answer_len)
    ctx = examples[i]["context"]
    out[examples[i]["id"]] = ctx[offsets[i][s][0]:offsets[i][e][1]]
  return out


def squad_metrics(answers: dict[str, str], examples: Sequence[dict]) -> dict:
  em = f1 = 0.0
  for e in examples:
    a, b = M.squad_em_f1(answers.get(e["id"], ""), e["answers"])
    em += a
    f1 += b
  n = max(len(examples), 1)
  return {"exact_match": em / n, "f1": f1 / n}
