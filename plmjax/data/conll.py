"""CoNLL-2003 as a pre-training corpus with phrase and entity annotations (for ERNIE 1.0).

ERNIE 1.0 masks whole phrases and whole named entities, so the corpus must say where they are.
CoNLL-2003's English files carry both, one token per line as `word POS chunk NER`, sentences
separated by blank lines and documents by `-DOCSTART-` lines:

    chunk column (IOB1: I-NP, I-VP, B-NP, O)  -> phrase spans
    NER column   (IOB1: I-PER, I-ORG, B-LOC)  -> entity spans

IOB1 starts a span at a B-X tag, or at an I-X tag whose predecessor is O or of another type; the
span runs while the I-X tags of that type continue (IOB2 files, with B-X at every start, read the
same). A document becomes {"text": one sentence per line, words joined by spaces,
"phrase_spans", "entity_spans": [n, 2] int32 [start, end) word indices over the document}, the
format the pipeline turns into `phrase_ids` / `entity_ids` (pipeline.tokenize_document).

Use it with `data.path="conll:/path/to/conll2003"` (a folder with eng.train / eng.testa /
eng.testb, or one file, which is then the train split). NER fine-tuning (plmjax/finetune/conll.py)
reads its sentences through the same `read_sentences`.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from plmjax.data.textfile import text_lines

PREFIX = "conll:"
# file-name suffix -> split (CoNLL-2003: testa is the development set, testb the test set)
SPLITS = {"train": "train", "testa": "valid", "dev": "valid", "valid": "valid", "testb": "test",
          "test": "test"}


def iob1_spans(tags: list[str]) -> list[tuple[int, int, str]]:
  """IOB1 (or IOB2) tags -> [(start, end, type)] with end exclusive."""
  spans, start, kind = [], None, None
  for i, tag in enumerate(list(tags) + ["O"]):
    prefix, _, t = tag.partition("-")
    if prefix not in ("B", "I", "O") or (prefix != "O" and not t):
      raise ValueError(f"tag {tag!r} at {i}: expected O, B-X or I-X")
    begins = prefix == "B" or (prefix == "I" and t != kind)
    if start is not None and (prefix == "O" or begins):
      spans.append((start, i, kind))
      start, kind = None, None
    if prefix != "O" and begins:
      start, kind = i, t
  return spans


def read_sentences(path: str, columns: int | None = None) -> list[list[list[tuple[int, list[str]]]]]:
  """A CoNLL file -> documents -> sentences -> rows (line number, the row's columns). Blank lines end
  a sentence, `-DOCSTART-` lines a document; every row has `columns` columns (None: at least two,
  word ... tag). Both CoNLL users read through it: pre-training documents (`read_documents`) and NER
  fine-tuning sentences (plmjax/finetune/conll.py); errors name the file and line."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: CoNLL file not found")
  docs: list = []
  doc: list = []
  sentence: list = []
  for lineno, line in enumerate(text_lines(path), start=1):
    parts = line.split()
    if not parts or parts[0] == "-DOCSTART-":
      if sentence:
        doc.append(sentence)
        sentence = []
      if parts and doc:
        docs.append(doc)
        doc = []
    elif (columns is not None and len(parts) != columns) or len(parts) < 2:
      want = f"{columns} columns ('word POS chunk NER')" if columns else "'word ... tag'"
      raise ValueError(f"{path}:{lineno}: expected {want}, got {line.rstrip()!r}")
    else:
      sentence.append((lineno, parts))
  if sentence:
    doc.append(sentence)
  if doc:
    docs.append(doc)
  if not docs:
    raise ValueError(f"{path}: no sentences")
  return docs


def read_documents(path: str) -> list[dict]:
  """A CoNLL-2003 file -> documents (module docstring)."""
  return [_document([[(p[0], p[2], p[3]) for _, p in s] for s in doc])
          for doc in read_sentences(path, columns=4)]


def _document(sentences: list[list[tuple[str, str, str]]]) -> dict:
  lines, phrases, entities, offset = [], [], [], 0
  for s in sentences:
    words, chunks, ner = zip(*s)
    lines.append(" ".join(words))
    phrases += [(offset + a, offset + b) for a, b, _ in iob1_spans(list(chunks))]
    entities += [(offset + a, offset + b) for a, b, _ in iob1_spans(list(ner))]
    offset += len(words)
  span = lambda x: np.asarray(x, np.int32).reshape(-1, 2)
  return {"text": "\n".join(lines), "phrase_spans": span(phrases), "entity_spans": span(entities)}


def split_files(path: str) -> dict[str, str]:
  """{split: file} for a CoNLL folder (eng.train, eng.testa, eng.testb) or a single file (train)."""
  if os.path.isfile(path):
    return {"train": path}
  if not os.path.isdir(path):
    raise FileNotFoundError(f"data.path {PREFIX}{path!r}: no such file or folder")
  out = {}
  for name in sorted(os.listdir(path)):
    split = SPLITS.get(name.rsplit(".", 1)[-1].lower())
    if split and os.path.isfile(os.path.join(path, name)):
      if split in out:
        raise ValueError(f"{path}: several files for split {split!r}: {out[split]}, {name}")
      out[split] = os.path.join(path, name)
  if "train" not in out:
    raise FileNotFoundError(f"{path}: no CoNLL train file (*.train)")
  return out


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int) -> tuple[dict, ...]:
  del mtime_ns                                     # part of the cache key: a changed file is re-read
  return tuple(read_documents(path))


def documents(path: str, split: str) -> tuple[str, tuple[dict, ...]]:
  """-> (the split's name in `path`, its documents); `split` may be an alias (valid/dev/eval)."""
  files = split_files(os.path.expanduser(path))
  want = {"eval": "valid", "validation": "valid"}.get(split, SPLITS.get(split, split))
  if want not in files:
    raise ValueError(f"split {split!r} not found in {PREFIX}{path}; available splits: {sorted(files)}")
  f = files[want]
  return want, _cached(f, os.stat(f).st_mtime_ns)
