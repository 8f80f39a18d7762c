"""Knowledge sources for ERNIE (THU): an entity vocabulary, facts, TransE vectors and text with
mentions linked to the entities, prepared once into a folder of the release's files (formats.py).

    ks = open_knowledge("kg:synthetic")                 # the generated KG over the built-in corpus
    ks = open_knowledge("kg:../shared/data/wikitext-2") # WikiText-2 with the linker below
    ks.entities, ks.relations, ks.vectors [E, d] (frozen TransE), ks.documents(split), ks.folder

`spec` is "kg:synthetic" or "kg:PATH" with PATH a WikiText-style folder (train / valid / test text
files with " = Title = " article headings). The folder (under data_dir/kg/, default
~/.cache/plmjax/kg/) holds entity2id.txt, relation2id.txt, triples.tsv, train2id.txt, test2id.txt,
entity2vec.vec, relation2vec.vec, anchors.tsv (train split) and transe.json (the link-prediction
metrics of its TransE); it is built on first use and reused after (keyed by the source and settings).

WikiText-2 linker (a documented rule, not an entity linker):
  entities   the titles of the train articles (" = Title = " lines), plus every run of 2-4 words that
             all start with an upper-case letter and that occurs at least 5 times in the train text
             (e.g. "Valkyria Chronicles", "United States"), minus runs that start with a common
             sentence-initial word (The, A, In, ...), minus names without a capitalised word other
             than <unk> and one-word names under 3 characters. Names keep their WikiText spelling.
  mentions   greedy longest-first exact, case-sensitive matches of those word sequences in every line
             of every split (headings included), never overlapping; no aliases, no coreference,
             no disambiguation (one name = one entity), no lower-case or inflected mentions.
  facts      (article title, REL, entity mentioned in the article, not the title itself) for the
             train articles, REL = the level-2 section the mention is in ("section:<name>" for the 24
             most frequent section names, "section:other" for the rest, "lead" before any section).
             So the relations are the article structure, not semantics; valid / test articles
             contribute mentions but no facts.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import os
import re

import numpy as np

from plmjax.knowledge import formats, synthetic_kg, transe

PREFIX = "kg:"
SYNTHETIC = "synthetic"
TRANSE_SYNTHETIC = transe.TransEConfig(dim=100, norm=1, margin=2.0, negatives=8, batch_size=256,
                                       steps=3000, learning_rate=0.01, seed=0)
TRANSE_TEXT = dataclasses.replace(TRANSE_SYNTHETIC, steps=4000)
HELD_OUT = 0.1
_HEADING = re.compile(r"^= ([^=].*) =$")
_SECTION = re.compile(r"^= = ([^=].*) = =$")
_STOP_STARTS = {"The", "A", "An", "In", "On", "At", "It", "He", "She", "They", "This", "That", "As",
                "After", "During", "His", "Her", "Its", "Their", "When", "While", "For", "From", "By",
                "With", "Of", "And", "But", "However", "Although", "There", "These", "Those", "To"}


@dataclasses.dataclass
class KnowledgeSource:
  name: str
  folder: str
  entities: list[str]
  relations: list[str]
  vectors: np.ndarray            # [E, d] TransE entity vectors (frozen in ERNIE)
  train_triples: np.ndarray      # [N, 3] (h, r, t)
  test_triples: np.ndarray       # held-out facts of the link-prediction check
  transe_metrics: dict
  _docs: object = None           # split -> list of documents

  @property
  def num_entities(self) -> int:
    return len(self.entities)

  def documents(self, split: str) -> list[dict]:
    """{"text", "entity_spans" [n, 2] (document word spans), "entity_kg" [n] entity ids}."""
    return self._docs(split)


def is_spec(spec: str) -> bool:
  return isinstance(spec, str) and spec.startswith(PREFIX)


def _cache_root(data_dir: str = "") -> str:
  return os.path.join(os.path.expanduser(data_dir or "~/.cache/plmjax"), "kg")


def _write_folder(folder: str, entities, relations, train, test, params, metrics, anchors) -> None:
  tmp = f"{folder}.tmp{os.getpid()}"
  os.makedirs(tmp, exist_ok=True)
  formats.write_id_file(os.path.join(tmp, "entity2id.txt"), entities)
  formats.write_id_file(os.path.join(tmp, "relation2id.txt"), relations)
  formats.write_triples_tsv(os.path.join(tmp, "triples.tsv"),
                            [(entities[h], relations[r], entities[t]) for h, r, t in np.concatenate([train, test]).tolist()])
  formats.write_openke_triples(os.path.join(tmp, "train2id.txt"), train)
  formats.write_openke_triples(os.path.join(tmp, "test2id.txt"), test)
  formats.write_vectors(os.path.join(tmp, "entity2vec.vec"), params["entities"])
  formats.write_vectors(os.path.join(tmp, "relation2vec.vec"), params["relations"])
  formats.write_anchors(os.path.join(tmp, "anchors.tsv"), anchors)
  with open(os.path.join(tmp, "transe.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  if os.path.isdir(folder):          # another process won the race
    import shutil
    shutil.rmtree(tmp)
  else:
    os.replace(tmp, folder)


def _read_folder(name: str, folder: str, docs) -> KnowledgeSource:
  ents = formats.read_id_file(os.path.join(folder, "entity2id.txt"))
  rels = formats.read_id_file(os.path.join(folder, "relation2id.txt"))
  with open(os.path.join(folder, "transe.json")) as f:
    metrics = json.load(f)
  return KnowledgeSource(name, folder, ents, rels,
                         formats.read_vectors(os.path.join(folder, "entity2vec.vec"), len(ents)),
                         formats.read_openke_triples(os.path.join(folder, "train2id.txt")),
                         formats.read_openke_triples(os.path.join(folder, "test2id.txt")), metrics, docs)


def _prepare(name: str, folder: str, entities, relations, facts, docs, cfg: transe.TransEConfig):
  if not os.path.isdir(folder):
    train, test = transe.split_triples(facts, HELD_OUT, cfg.seed)
    params, curve = transe.train(cfg, train, len(entities), len(relations), log_every=500)
    metrics = {**transe.evaluate(params, test, facts, cfg.norm),
               "random": transe.random_baseline(len(entities)), "loss_curve": curve,
               "config": dataclasses.asdict(cfg), "num_train_triples": int(len(train))}
    anchors = [(d, int(a), int(b), entities[e]) for d, doc in enumerate(docs("train"))
               for (a, b), e in zip(doc["entity_spans"].tolist(), doc["entity_kg"].tolist())]
    _write_folder(folder, entities, relations, train, test, params, metrics, anchors)
  return _read_folder(name, folder, docs)


# ---- the generated KG -----------------------------------------------------------------------------
def _synthetic(data_dir: str) -> KnowledgeSource:
  cfg = synthetic_kg.KGConfig()
  key = hashlib.sha1(repr((cfg, TRANSE_SYNTHETIC, HELD_OUT)).encode()).hexdigest()[:10]
  kg = synthetic_kg.build_kg(cfg)
  docs = functools.lru_cache(maxsize=3)(lambda split: synthetic_kg.documents(split, cfg))
  return _prepare("synthetic", os.path.join(_cache_root(data_dir), f"synthetic_{key}"), kg.entities,
                  kg.relations, kg.facts, docs, TRANSE_SYNTHETIC)


# ---- WikiText ---------------------------------------------------------------------------------------
def _split_file(path: str, split: str) -> str:
  from plmjax.data import sources
  files = sources.split_files(path)
  if split not in files:
    raise FileNotFoundError(f"{path}: no {split!r} split among {sorted(files)}")
  return files[split][0]


def _nameable(name: str) -> bool:
  """A name must hold a word that starts with an upper-case letter or a digit, other than WikiText's
  <unk>; one-word names must start upper-case and have at least 3 characters."""
  words = name.split()
  if not any(w[:1].isupper() or w[:1].isdigit() for w in words if w != "<unk>"):
    return False
  return len(words) > 1 or (words[0][:1].isupper() and len(words[0]) >= 3)


def link_wikitext(path: str):
  """-> (entities, relations, facts [N, 3], docs(split) -> documents); see the module docstring."""
  from plmjax.data import sources
  raw = {s: sources.read_documents(_split_file(path, s), "heading") for s in ("train", "valid", "test")}
  titles, counts = [], collections.Counter()
  for doc in raw["train"]:
    lines = doc.split("\n")
    m = _HEADING.match(lines[0])
    if m:
      titles.append(m.group(1).strip())
    for ln in lines[1:]:
      if ln.startswith("="):
        continue
      w = ln.split()
      for n in (2, 3, 4):
        for i in range(len(w) - n + 1):
          run = w[i:i + n]
          if all(x[:1].isupper() for x in run) and run[0] not in _STOP_STARTS:
            counts[" ".join(run)] += 1
  names = [n for n in dict.fromkeys(titles + sorted(k for k, c in counts.items() if c >= 5)) if _nameable(n)]
  index = {tuple(n.split()): i for i, n in enumerate(names)}
  longest = max(len(k) for k in index)

  def link(doc: str):
    spans, ents, sections, base, section = [], [], [], 0, "lead"
    for li, ln in enumerate(doc.split("\n")):
      w = ln.split()
      m = _SECTION.match(ln)
      if m:
        section = m.group(1).strip().lower()
      i = 0
      while i < len(w):
        for n in range(min(longest, len(w) - i), 0, -1):
          e = index.get(tuple(w[i:i + n]))
          if e is not None:
            spans.append((base + i, base + i + n))
            ents.append(e)
            sections.append(None if li == 0 else section)
            i += n
            break
        else:
          i += 1
      base += max(len(w), 1)
    return spans, ents, sections

  linked = {s: [link(d) for d in docs] for s, docs in raw.items()}
  sec_counts = collections.Counter(s for _, _, secs in linked["train"] for s in secs if s not in (None, "lead"))
  top = {s for s, _ in sec_counts.most_common(24)}
  relations = ["lead"] + [f"section:{s}" for s in sorted(top)] + ["section:other"]
  rel_id = {r: i for i, r in enumerate(relations)}
  facts = set()
  for doc, (spans, ents, secs) in zip(raw["train"], linked["train"]):
    m = _HEADING.match(doc.split("\n")[0])
    if not m:
      continue
    head = index.get(tuple(m.group(1).strip().split()))
    if head is None:                     # a title that is no name (all <unk>, see _nameable)
      continue
    for e, s in zip(ents, secs):
      if s is None or e == head:
        continue
      r = "lead" if s == "lead" else (f"section:{s}" if s in top else "section:other")
      facts.add((head, rel_id[r], e))
  facts = np.asarray(sorted(facts), np.int32).reshape(-1, 3)

  def docs(split: str) -> list[dict]:
    return [{"text": d, "entity_spans": np.asarray(sp, np.int32).reshape(-1, 2), "entity_kg": np.asarray(en, np.int32)}
            for d, (sp, en, _) in zip(raw[split], linked[split])]
  return names, relations, facts, docs


def _wikitext(path: str, data_dir: str) -> KnowledgeSource:
  path = os.path.abspath(os.path.expanduser(path))
  h = hashlib.sha1(repr((TRANSE_TEXT, HELD_OUT, 1)).encode())
  for s in ("train", "valid", "test"):
    st = os.stat(_split_file(path, s))
    h.update(f"{s}:{st.st_size}:{st.st_mtime_ns}".encode())
  name = re.sub(r"[^a-z0-9]+", "_", os.path.basename(path.rstrip("/")).lower()).strip("_")
  folder = os.path.join(_cache_root(data_dir), f"{name}_{h.hexdigest()[:10]}")
  entities, relations, facts, docs = link_wikitext(path)
  return _prepare(name, folder, entities, relations, facts, functools.lru_cache(maxsize=3)(docs), TRANSE_TEXT)


@functools.lru_cache(maxsize=8)
def open_knowledge(spec: str, data_dir: str = "") -> KnowledgeSource:
  """"kg:synthetic" | "kg:PATH" -> the prepared KnowledgeSource (module docstring)."""
  if not is_spec(spec):
    raise ValueError(f"knowledge source {spec!r}: expected 'kg:synthetic' or 'kg:PATH'")
  body = spec[len(PREFIX):]
  if body == SYNTHETIC:
    return _synthetic(data_dir)
  if not os.path.isdir(os.path.expanduser(body)):
    raise FileNotFoundError(f"knowledge source {spec!r}: no folder {body!r}")
  return _wikitext(body, data_dir)


@functools.lru_cache(maxsize=8)
def entity_vectors(spec: str) -> np.ndarray:
  """`model.entity_vectors` / `objective.knowledge`: "kg:..." (a knowledge source's TransE vectors) or
  the path of an entity2vec.vec file -> read-only float32 [num_entities, dim]."""
  if not spec:
    raise ValueError("no entity vectors given (model.entity_vectors / objective.knowledge is empty): set "
                     "'kg:synthetic', 'kg:PATH' or an entity2vec.vec file")
  table = open_knowledge(spec).vectors if is_spec(spec) else formats.read_vectors(os.path.expanduser(spec))
  table = np.array(table, np.float32)
  table.setflags(write=False)
  return table
