"""One task's data, ready for the loop: examples read, encoded to features, and scored back.

    td = prepare_task(name, spec, data_dir, tok, framing, max_len, max_train, max_eval, unit)
    td.train, td.dev             features (plmjax.finetune.features)
    td.head                      HeadSpec for the task model
    td.score(outputs_by_index)   {metric: value} from per-dev-feature predictions

`outputs_by_index` maps a dev feature's `index` to its host-side predictions (the dict of
`plmjax.finetune.model.predictions`, one row): "pred" (label id / score / [T] tag ids) or
"start_logits" / "end_logits" [T].
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from plmjax.finetune import conll, squad
from plmjax.finetune.features import encode_sentences
from plmjax.finetune.metrics import entity_f1
from plmjax.finetune.model import HeadSpec
from plmjax.finetune.tasks import TaskSpec, chinese_units, read_task, sentence_metrics


@dataclasses.dataclass
class TaskData:
  name: str
  spec: TaskSpec
  head: HeadSpec
  train: list
  dev: list
  score: Callable[[dict], dict]
  train_texts: Any = None       # unit-split training text (for data.tokenizer = "build")


def read_examples(spec: TaskSpec, data_dir: str, max_train: int, max_eval: int, unit: str):
  train, dev = read_task(spec, data_dir, max_train, max_eval)
  if spec.chinese:
    raw = [e["text_a"] for e in train]
    train, dev = chinese_units(train, unit, raw), chinese_units(dev, unit, raw)
  return train, dev


def texts_of(examples: list) -> list[str]:
  """Every text of a task's examples (tokenizer training)."""
  out = []
  for e in examples:
    if "words" in e:
      out.append(" ".join(e["words"]))
    elif "question" in e:
      out += [e["question"], e["context"]]
    else:
      out += [e["text_a"]] + ([e["text_b"]] if e.get("text_b") else [])
  return out


def prepare_task(name: str, spec: TaskSpec, examples, tok, framing, max_len: int) -> TaskData:
  train_ex, dev_ex = examples
  kind = spec.kind
  if kind in ("classification", "regression"):
    enc = lambda ex: encode_sentences(ex, tok, framing, max_len, regression=kind == "regression")  # noqa: E731
    train, dev = enc(train_ex), enc(dev_ex)
    gold = np.array([e["label"] for e in dev_ex])

    def score(out):
      pred = np.array([out[i]["pred"] for i in range(len(dev_ex))])
      return sentence_metrics(spec, pred, gold)
    head = HeadSpec(name, kind, len(spec.labels) if kind == "classification" else 1)
  elif kind == "tagging":
    train = conll.encode_tagging(train_ex, tok, framing, max_len, spec.labels)
    dev = conll.encode_tagging(dev_ex, tok, framing, max_len, spec.labels)

    def score(out):
      pred = conll.word_predictions({i: out[i]["pred"] for i in out}, dev, dev_ex, spec.labels)
      return entity_f1(pred, [s["tags"] for s in dev_ex])
    head = HeadSpec(name, kind, len(spec.labels))
  elif kind == "span":
    train, _ = squad.encode_spans(train_ex, tok, framing, max_len)
    dev, offsets = squad.encode_spans(dev_ex, tok, framing, max_len)

    def score(out):
      answers = squad.decode_spans({i: out[i]["start_logits"] for i in out},
                                   {i: out[i]["end_logits"] for i in out}, dev, offsets, dev_ex)
      return squad.squad_metrics(answers, dev_ex)
    head = HeadSpec(name, kind, 2)
  else:
    raise ValueError(f"task {name!r}: unknown kind {kind!r}")
  return TaskData(name, spec, head, train, dev, score)
