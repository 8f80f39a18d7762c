"""Predictions of a fine-tuned task run (plmjax.finetune.run.FinetuneRun) for given sentences:
`plmjax predict WORKDIR classify SENTENCE... | --tsv FILE` (plmjax/predict.py), through the run's
own tokenizer, framing, length buckets and the task's head (FinetuneRun._predict, the path `plmjax
eval` writes test predictions with)."""
from __future__ import annotations

import os
from typing import Optional

from plmjax.finetune.features import encode_sentences
from plmjax.predict import PredictError


def read_examples_tsv(path: str, spec) -> list[dict]:
  """TSV rows: text_a[<TAB>text_b]; a first line naming the task's columns is a header."""
  if not os.path.isfile(path):
    raise PredictError(f"plmjax predict: --tsv {path!r} is not a file")
  with open(path, encoding="utf-8-sig") as f:
    lines = [ln.rstrip("\n").rstrip("\r") for ln in f]
  cols = (0, 1)
  if lines and isinstance(spec.text_a, str) and spec.text_a in lines[0].split("\t"):
    head = lines.pop(0).split("\t")
    cols = (head.index(spec.text_a), head.index(spec.text_b) if spec.text_b in head else None)
  out = []
  for lineno, ln in enumerate(lines, 1):
    if not ln.strip():
      continue
    row = ln.split("\t")
    if spec.text_b is not None and (cols[1] is None or len(row) <= cols[1]):
      raise PredictError(f"{path}:{lineno}: task {spec.name} needs two tab-separated sentences")
    out.append({"text_a": row[cols[0]], "text_b": row[cols[1]] if spec.text_b is not None else None,
                "label": 0})
  return out


def classify(run, examples: list[dict], task: Optional[str] = None) -> list[dict]:
  """-> per example {"text_a", ("text_b"), "prediction"} from the fine-tuned run's own path
  (FinetuneRun._predict: framing, buckets, the task's head)."""
  name = task or next(iter(run.tasks))
  if name not in run.tasks:
    raise PredictError(f"plmjax predict: --task {name!r}: the run's tasks are {list(run.tasks)}")
  spec = run.tasks[name].spec
  if spec.kind not in ("classification", "regression"):
    raise PredictError(f"plmjax predict: classify supports sentence tasks; {name} is {spec.kind}")
  if spec.text_b is not None and any(e.get("text_b") is None for e in examples):
    raise PredictError(f"plmjax predict: task {name} takes sentence pairs: give a --tsv file "
                       "with two tab-separated columns")
  feats = encode_sentences(examples, run.tokenizer, run.framing, int(run.config.data.max_len),
                           regression=spec.kind == "regression")
  pred = run._predict(name, feats)
  out = []
  for i, e in enumerate(examples):
    p = pred[i]["pred"]
    label = spec.labels[int(p)] if spec.kind == "classification" else float(p)
    out.append({k: v for k, v in (("text_a", e["text_a"]), ("text_b", e.get("text_b"))) if v is not None}
               | {"prediction": label})
  return out
