"""Knowledge-graph files in the formats of the ERNIE (THU) release (Zhang et al., 2019).

The release (github.com/thunlp/ERNIE, `kg_embed/`) ships TransE embeddings of Wikidata trained with
OpenKE, in these files, which plmjax reads and writes:

    entity2id.txt     first line: the number of entities n; then n lines "NAME<TAB>ID", ID in 0..n-1
    relation2id.txt   the same for relations
    entity2vec.vec    n lines, line ID = the vector of entity ID: d floats separated by tabs
    relation2vec.vec  the same for relations
    train2id.txt      OpenKE's triple file: first line the number of triples, then "HEAD TAIL REL"
                      (entity ids, entity ids, relation id; note OpenKE's order: tail before relation)

plus two plain files of ours:

    triples.tsv       "HEAD<TAB>RELATION<TAB>TAIL" by name, one fact a line (what `plmjax transe` reads)
    anchors.tsv       mention anchors: "DOC<TAB>START<TAB>END<TAB>ENTITY" with [START, END) a word span
                      of document DOC (words counted over the document, sentences joined); the
                      release stores its anchors inline in the pre-processed text instead.

Every reader names the file and line of the first malformed line.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np


class FormatError(ValueError):
  """A malformed knowledge file; the message names the file and line."""


def _lines(path: str) -> list[str]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"knowledge file not found: {path}")
  with open(path, encoding="utf-8") as f:
    return [ln.rstrip("\n") for ln in f]


def write_id_file(path: str, names: Sequence[str]) -> None:
  """entity2id.txt / relation2id.txt: count line, then NAME<TAB>ID."""
  for n in names:
    if "\t" in n or "\n" in n:
      raise ValueError(f"{path}: name {n!r} holds a tab or newline")
  with open(path, "w", encoding="utf-8") as f:
    f.write(f"{len(names)}\n")
    f.writelines(f"{n}\t{i}\n" for i, n in enumerate(names))


def read_id_file(path: str) -> list[str]:
  """-> names ordered by id (ids must be exactly 0..n-1)."""
  lines = _lines(path)
  if not lines or not lines[0].strip().isdigit():
    raise FormatError(f"{path}:1: expected the number of entries, got {lines[0] if lines else ''!r}")
  n = int(lines[0])
  body = [ln for ln in lines[1:] if ln.strip()]
  if len(body) != n:
    raise FormatError(f"{path}:1: says {n} entries, the file has {len(body)}")
  names: list[str | None] = [None] * n
  for lineno, ln in enumerate(lines[1:], start=2):
    if not ln.strip():
      continue
    parts = ln.split("\t")
    if len(parts) != 2 or not parts[1].strip().isdigit():
      raise FormatError(f"{path}:{lineno}: expected NAME<TAB>ID, got {ln!r}")
    i = int(parts[1])
    if i >= n or names[i] is not None:
      raise FormatError(f"{path}:{lineno}: id {i} is out of range 0..{n - 1} or repeated")
    names[i] = parts[0]
  return names  # type: ignore[return-value]


def write_vectors(path: str, vectors: np.ndarray) -> None:
  """entity2vec.vec / relation2vec.vec: one row a line, tab-separated (float32 round-trips exactly
  through repr of its float64 value)."""
  v = np.asarray(vectors, np.float32)
  if v.ndim != 2:
    raise ValueError(f"{path}: vectors must be [n, d], got shape {v.shape}")
  with open(path, "w", encoding="utf-8") as f:
    for row in v:
      f.write("\t".join(repr(float(x)) for x in row) + "\n")


def read_vectors(path: str, expected_rows: int | None = None) -> np.ndarray:
  """-> float32 [n, d]; every line must hold the same number of floats."""
  rows, width = [], None
  for lineno, ln in enumerate(_lines(path), start=1):
    if not ln.strip():
      continue
    try:
      row = [float(x) for x in ln.split()]
    except ValueError:
      raise FormatError(f"{path}:{lineno}: not a line of floats: {ln[:60]!r}") from None
    if width is None:
      width = len(row)
    elif len(row) != width:
      raise FormatError(f"{path}:{lineno}: {len(row)} values, earlier lines have {width}")
    rows.append(row)
  if not rows:
    raise FormatError(f"{path}: no vectors")
  out = np.asarray(rows, np.float32)
  if expected_rows is not None and len(out) != expected_rows:
    raise FormatError(f"{path}: {len(out)} vectors for {expected_rows} ids (entity2id.txt)")
  return out


def write_openke_triples(path: str, triples: np.ndarray) -> None:
  """train2id.txt: count, then "HEAD TAIL REL" (OpenKE order) from triples [n, 3] = (h, r, t)."""
  t = np.asarray(triples, np.int64).reshape(-1, 3)
  with open(path, "w", encoding="utf-8") as f:
    f.write(f"{len(t)}\n")
    f.writelines(f"{h} {tl} {r}\n" for h, r, tl in t)


def read_openke_triples(path: str) -> np.ndarray:
  """-> int32 [n, 3] as (head, relation, tail)."""
  lines = _lines(path)
  if not lines or not lines[0].strip().isdigit():
    raise FormatError(f"{path}:1: expected the number of triples")
  out = []
  for lineno, ln in enumerate(lines[1:], start=2):
    if not ln.strip():
      continue
    parts = ln.split()
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
      raise FormatError(f"{path}:{lineno}: expected HEAD TAIL REL ids, got {ln!r}")
    h, tl, r = map(int, parts)
    out.append((h, r, tl))
  if len(out) != int(lines[0]):
    raise FormatError(f"{path}:1: says {lines[0].strip()} triples, the file has {len(out)}")
  return np.asarray(out, np.int32).reshape(-1, 3)


def write_triples_tsv(path: str, triples: Iterable[tuple[str, str, str]]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for h, r, t in triples:
      for x in (h, r, t):
        if "\t" in x or "\n" in x:
          raise ValueError(f"{path}: name {x!r} holds a tab or newline")
      f.write(f"{h}\t{r}\t{t}\n")


def read_triples_tsv(path: str) -> list[tuple[str, str, str]]:
  out = []
  for lineno, ln in enumerate(_lines(path), start=1):
    if not ln.strip() or ln.startswith("#"):
      continue
    parts = ln.split("\t")
    if len(parts) != 3 or not all(p.strip() for p in parts):
      raise FormatError(f"{path}:{lineno}: expected HEAD<TAB>RELATION<TAB>TAIL, got {ln!r}")
    out.append(tuple(p.strip() for p in parts))
  if not out:
    raise FormatError(f"{path}: no triples")
  return out  # type: ignore[return-value]


def write_anchors(path: str, anchors: Iterable[tuple[int, int, int, str]]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(f"{d}\t{a}\t{b}\t{e}\n" for d, a, b, e in anchors)


def read_anchors(path: str) -> list[tuple[int, int, int, str]]:
  out = []
  for lineno, ln in enumerate(_lines(path), start=1):
    if not ln.strip():
      continue
    parts = ln.split("\t")
    if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]) or int(parts[1]) >= int(parts[2] or 0):
      raise FormatError(f"{path}:{lineno}: expected DOC<TAB>START<TAB>END<TAB>ENTITY with START < END, "
                        f"got {ln!r}")
    out.append((int(parts[0]), int(parts[1]), int(parts[2]), parts[3]))
  return out


def index_triples(triples: Sequence[tuple[str, str, str]], entities: Sequence[str],
                  relations: Sequence[str], path: str = "triples") -> np.ndarray:
  """Named triples -> int32 [n, 3] (h, r, t) ids; an unknown name is an error naming it."""
  e = {n: i for i, n in enumerate(entities)}
  r = {n: i for i, n in enumerate(relations)}
  out = []
  for k, (h, rel, t) in enumerate(triples):
    for name, table, kind in ((h, e, "entity"), (rel, r, "relation"), (t, e, "entity")):
      if name not in table:
        raise FormatError(f"{path}: triple {k} names unknown {kind} {name!r}")
    out.append((e[h], r[rel], e[t]))
  return np.asarray(out, np.int32).reshape(-1, 3)
