"""Downstream tasks: what a task's files look like and how it is scored.

    spec = TASKS["mrpc"]                       # TaskSpec
    train, dev = read_task(spec, data_dir, max_train_examples=N)

A `TaskSpec` names the task's kind (the head it needs), its files, how rows map to examples and
which metrics it reports. Kinds:

    classification   text (or text pair) -> one of `labels`        GLUE, ChnSentiCorp
    regression       text pair -> float                             STS-B
    tagging          words -> one IOB1 tag per word                 CoNLL-2003 (plmjax.finetune.conll)
    span             question + context -> answer span              SQuAD format (plmjax.finetune.squad)

Examples are plain dicts: {"text_a", "text_b" (or None), "label"} for sentence tasks, {"words",
"tags"} for tagging, {"id", "question", "context", "answers", "answer_start"} for span tasks.

All GLUE tasks go through one TSV reader: `columns` name the text and label columns by header name
or index (GLUE's files differ: CoLA has no header, MRPC's header carries a byte-order mark, MNLI's
label is the last column). A malformed row is an error naming the file and line.

ChnSentiCorp's `unit` switch (the survey's Q9, characters vs words as input units for Chinese):
"char" puts every CJK character into its own unit; "word" segments with `jieba` when installed and
otherwise with a forward-maximum-matching segmenter over frequent character n-grams of the training
text (`NgramSegmenter`). Units are joined by spaces, so a whitespace-level tokenizer sees them as
tokens (a WordPiece tokenizer with tokenize_chinese_chars splits CJK characters either way).
"""
from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Optional, Sequence, Union

from plmjax.data.textfile import text_lines
from plmjax.finetune import metrics as M

Column = Union[int, str]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  name: str
  kind: str                                   # classification | regression | tagging | span
  folder: str                                 # default folder name under the data root
  train_file: str = "train.tsv"
  dev_file: str = "dev.tsv"
  text_a: Column = 0
  text_b: Optional[Column] = None
  label: Column = 1
  header: bool = True
  labels: tuple = ()                          # label strings in id order (classification)
  metrics: tuple = ("accuracy",)              # keys of METRICS
  chinese: bool = False
  test_file: str = "test.tsv"                 # unlabelled; its first column is the row id
  test_text: tuple = ()                       # its text column names where they differ from train's


def _glue(name, folder, a, b, label, labels=("0", "1"), header=True, metrics=("accuracy",),
          dev="dev.tsv", kind="classification"):
  return TaskSpec(name, kind, folder, dev_file=dev, text_a=a, text_b=b, label=label, header=header,
                  labels=labels, metrics=metrics)


TASKS: dict[str, TaskSpec] = {s.name: s for s in [
    _glue("sst2", "SST-2", "sentence", None, "label"),
    dataclasses.replace(_glue("cola", "CoLA", 3, None, 1, header=False, metrics=("matthews", "accuracy")),
                        test_text=("sentence",)),
    _glue("mrpc", "MRPC", "#1 String", "#2 String", "Quality", metrics=("accuracy", "f1")),
    _glue("rte", "RTE", "sentence1", "sentence2", "label", labels=("entailment", "not_entailment")),
    _glue("qnli", "QNLI", "question", "sentence", "label", labels=("entailment", "not_entailment")),
    _glue("wnli", "WNLI", "sentence1", "sentence2", "label"),
    _glue("qqp", "QQP", "question1", "question2", "is_duplicate", metrics=("accuracy", "f1")),
    _glue("mnli", "MNLI", "sentence1", "sentence2", -1, dev="dev_matched.tsv",
          labels=("contradiction", "entailment", "neutral")),
    _glue("stsb", "STS-B", "sentence1", "sentence2", "score", labels=(), kind="regression",
          metrics=("pearson", "spearman")),
    TaskSpec("chnsenticorp", "classification", "ChnSentiCorp", text_a="text_a", label="label",
             labels=("0", "1"), chinese=True),
    TaskSpec("conll2003", "tagging", "conll2003", train_file="eng.train", dev_file="eng.testa",
             labels=("O", "I-PER", "I-LOC", "I-ORG", "I-MISC", "B-PER", "B-LOC", "B-ORG", "B-MISC"),
             metrics=("f1", "precision", "recall")),
    TaskSpec("squad", "span", "squad", train_file="train.json", dev_file="dev.json",
             metrics=("exact_match", "f1")),
]}


def get_task(name: str) -> TaskSpec:
  if name not in TASKS:
    raise KeyError(f"config.task={name!r}: unknown task; known: {sorted(TASKS)}")
  return TASKS[name]


# ---- metrics by task ---------------------------------------------------------------------------------
def sentence_metrics(spec: TaskSpec, pred, gold) -> dict:
  """Flat dict of the task's metrics from predicted / gold label ids (or floats, regression)."""
  table = {"accuracy": lambda: M.accuracy(pred, gold), "f1": lambda: M.f1_binary(pred, gold),
           "matthews": lambda: M.matthews(pred, gold), "pearson": lambda: M.pearson(pred, gold),
           "spearman": lambda: M.spearman(pred, gold)}
  return {k: table[k]() for k in spec.metrics}


# ---- TSV ---------------------------------------------------------------------------------------------
def _column(col: Column, header: Optional[list[str]], path: str) -> int:
  if isinstance(col, int):
    return col
  if header is None or col not in header:
    raise ValueError(f"{path}: line 1: no column named {col!r} in header {header}")
  return header.index(col)


def read_tsv(spec: TaskSpec, path: str, max_examples: int = -1) -> list[dict]:
  """Rows of a GLUE-style TSV -> examples. Label strings are mapped to ids for classification."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: task file not found (task {spec.name!r}; set data.dir)")
  out = []
  lines = text_lines(path, max_line_bytes=None)     # not UTF-8 -> "PATH:LINE: not UTF-8 ..."
  header = next(lines, "").split("\t") if spec.header else None
  cols = [_column(c, header, path) if c is not None else None for c in (spec.text_a, spec.text_b, spec.label)]
  first = 2 if spec.header else 1
  for lineno, line in enumerate(lines, start=first):
    if 0 <= max_examples <= len(out):
      break
    line = line.rstrip("\n").rstrip("\r")
    if not line:
      continue
    row = line.split("\t")
    need = max((c if c >= 0 else -c - 1) for c in cols if c is not None) + 1
    if len(row) < need:
      raise ValueError(f"{path}:{lineno}: expected at least {need} tab-separated columns, "
                       f"got {len(row)}: {line[:80]!r}")
    text_a = row[cols[0]]
    text_b = row[cols[1]] if cols[1] is not None else None
    raw = row[cols[2]].strip()
    if spec.kind == "regression":
      try:
        label = float(raw)
      except ValueError:
        raise ValueError(f"{path}:{lineno}: label {raw!r} is not a number") from None
    else:
      if raw not in spec.labels:
        raise ValueError(f"{path}:{lineno}: label {raw!r} is not one of {list(spec.labels)}")
      label = spec.labels.index(raw)
    out.append({"text_a": text_a, "text_b": text_b, "label": label})
  if not out:
    raise ValueError(f"{path}: no examples")
  return out


def read_test(spec: TaskSpec, path: str) -> tuple[list[str], list[dict]]:
  """A GLUE-style unlabelled test TSV (header; first column the row id) -> (ids, examples with
  label 0). Text columns: spec.test_text, else the train file's column names."""
  names = spec.test_text or tuple(c for c in (spec.text_a, spec.text_b) if c is not None)
  ids, out = [], []
  lines = enumerate(text_lines(path), start=1)
  header = next(lines, (1, ""))[1].split("\t")
  cols = [_column(c, header, path) for c in names]
  for lineno, line in lines:
    if not line:
      continue
    row = line.split("\t")
    if len(row) <= max(cols):
      raise ValueError(f"{path}:{lineno}: expected at least {max(cols) + 1} tab-separated columns, "
                       f"got {len(row)}: {line[:80]!r}")
    ids.append(row[0])
    out.append({"text_a": row[cols[0]], "text_b": row[cols[1]] if len(cols) > 1 else None, "label": 0})
  return ids, out


def read_task(spec: TaskSpec, data_dir: str, max_train_examples: int = -1,
              max_eval_examples: int = -1) -> tuple[list[dict], list[dict]]:
  """(train, dev) examples of a task from its folder (`data_dir`)."""
  if spec.kind == "tagging":
    from plmjax.finetune.conll import read_conll
    read = lambda p, n: read_conll(p, spec.labels, n)   # noqa: E731
  elif spec.kind == "span":
    from plmjax.finetune.squad import read_squad
    read = read_squad
  else:
    read = lambda p, n: read_tsv(spec, p, n)   # noqa: E731
  return (read(os.path.join(data_dir, spec.train_file), max_train_examples),
          read(os.path.join(data_dir, spec.dev_file), max_eval_examples))


# ---- Chinese input units -----------------------------------------------------------------------------
_CJK = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef])")


def split_chars(text: str) -> str:
  """Every CJK character (and full-width punctuation) becomes its own space-separated unit."""
  return " ".join(_CJK.sub(r" \1 ", text).split())


class NgramSegmenter:
  """Forward maximum matching over a lexicon of frequent 2..max_n character n-grams of a corpus
  (an unsupervised stand-in for a word segmenter when jieba is not installed). `min_count`
  defaults to one occurrence per 500 texts (at least 2)."""

  def __init__(self, texts: Sequence[str], max_n: int = 4, min_count: Optional[int] = None):
    min_count = max(2, len(texts) // 500) if min_count is None else min_count
    counts = collections.Counter()
    for t in texts:
      for run in re.findall(r"[\u4e00-\u9fff]+", t):
        for n in range(2, max_n + 1):
          counts.update(run[i:i + n] for i in range(len(run) - n + 1))
    self.max_n = max_n
    self.lexicon = {w for w, c in counts.items() if c >= min_count}

  def __call__(self, text: str) -> list[str]:
    units, i = [], 0
    while i < len(text):
      for n in range(self.max_n, 0, -1):
        w = text[i:i + n]
        if n == 1 or w in self.lexicon:
          units.append(w)
          i += n
          break
    return units


def chinese_units(examples: list[dict], unit: str, train_texts: Sequence[str]) -> list[dict]:
  """Rewrites text_a / text_b into space-separated characters ("char") or words ("word")."""
  if unit == "char":
    seg = split_chars
  elif unit == "word":
    try:
      import jieba   # optional
      seg = lambda t: " ".join(w for w in jieba.lcut(t) if w.strip())   # noqa: E731
    except ImportError:
      ngram = NgramSegmenter(train_texts)
      seg = lambda t: " ".join(w for w in ngram(t) if w.strip())   # noqa: E731
  else:
    raise ValueError(f"data.unit={unit!r}: expected 'char' or 'word'")
  return [{**e, "text_a": seg(e["text_a"]), "text_b": seg(e["text_b"]) if e["text_b"] else None}
          for e in examples]
