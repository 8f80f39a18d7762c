"""Document sources: local text built once into TFDS array_record, TFDS catalog names, the synthetic
corpus. All give random access to documents, for grain, with TensorFlow neither imported nor needed.

    source = open_source(data_cfg, split)     # len(source); source[i] -> {"text": str, spans...}
    tok = corpus_tokenizer(data_cfg)           # data.tokenizer, else trained once and cached

`data.path`:
  ""                   the built-in synthetic corpus (plmjax/data/synthetic.py), generated in memory;
                       documents also carry "entity_spans" / "phrase_spans" [n, 2] (word spans).
  "conll:PATH"         CoNLL-2003 files (plmjax/data/conll.py): documents with "phrase_spans" from the
                       chunk column and "entity_spans" from the NER column (ERNIE 1.0's units).
  "tfds:NAME[:VER]"    a TFDS catalog dataset through `tfds.data_source` (array_record); the text
                       feature is `data.text_key`.
  a file or folder     local text. A folder's files name their split (train / valid|validation|dev /
                       test as a dot- or underscore-separated part: "wiki.valid.tokens", "dev.txt");
                       a single file, or a folder without split names, is "train", and every
                       `data.holdout_every`-th document goes to "valid" instead.
Local text is one document per blank-line-separated block, one sentence per line; `data.doc_split`
"heading" (chosen by "auto" when the text has WikiText's " = Title = " lines) starts a document at
each top-level heading instead and keeps every other non-blank line, sub-headings included, as is;
"line" makes each line a document. The build (`<data_dir>/local_text/<name>_<fingerprint>/1.0.0/`)
is keyed by the files' paths, sizes and mtimes and the split options, so it is idempotent and a
changed file rebuilds. Documents keep their order (no TFDS shuffling); the pipeline shuffles.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import logging
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from plmjax.data import conll, synthetic
from plmjax.data.textfile import text_lines
from plmjax.data.tokenizer import Tokenizer, load_tokenizer, synthetic_tokenizer, train_sentencepiece

SPLIT_ALIASES = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid",
                 "eval": "valid", "test": "test"}
TEXT_SUFFIXES = (".txt", ".tokens", ".raw", ".text")
_TOP_HEADING = re.compile(r"^ ?= [^=].* = ?$")


def data_dir(data_cfg) -> str:
  return os.path.expanduser(data_cfg.data_dir or "~/.cache/plmjax/tfds")


# ---- local text -> documents -------------------------------------------------------------------------
def split_files(path: str) -> dict[str, list[str]]:
  """{split: [files]} for a local file or folder (see the module docstring)."""
  if os.path.isfile(path):
    return {"train": [path]}
  if not os.path.isdir(path):
    raise FileNotFoundError(f"data.path {path!r}: no such file or folder")
  files = sorted(f for f in glob.glob(os.path.join(path, "*")) if f.endswith(TEXT_SUFFIXES))
  if not files:
    raise FileNotFoundError(f"data.path {path!r}: no text files ({', '.join(TEXT_SUFFIXES)})")
  splits: dict[str, list[str]] = {}
  for f in files:
    parts = re.split(r"[._\-]", os.path.basename(f).lower())
    names = {SPLIT_ALIASES[p] for p in parts if p in SPLIT_ALIASES and p != "eval"}
    if len(names) > 1:
      raise ValueError(f"{f}: file name matches several splits {sorted(names)}")
    if names:
      splits.setdefault(names.pop(), []).append(f)
  return splits or {"train": files}


def read_documents(path: str, doc_split: str = "auto") -> list[str]:
  """One file -> documents (sentences joined by "\\n")."""
  lines = list(text_lines(path))            # errors name the file and line (not UTF-8, huge line)
  if doc_split == "auto":
    doc_split = "heading" if sum(bool(_TOP_HEADING.match(ln)) for ln in lines[:20000]) >= 2 else "blank"
  docs: list[list[str]] = []
  if doc_split == "heading":
    for ln in lines:
      if _TOP_HEADING.match(ln) or not docs:
        docs.append([])
      if ln.strip():
        docs[-1].append(ln.strip())
  elif doc_split == "blank":
    docs.append([])
    for ln in lines:
      if ln.strip():
        docs[-1].append(ln.strip())
      elif docs[-1]:
        docs.append([])
  elif doc_split == "line":
    docs = [[ln.strip()] for ln in lines if ln.strip()]
  else:
    raise ValueError(f"data.doc_split must be auto, heading, blank or line, not {doc_split!r}")
  return ["\n".join(d) for d in docs if d]


class LocalText(tfds.core.GeneratorBasedBuilder):
  """Local text files as an array_record TFDS dataset of {"text": document}."""
  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, files: dict[str, list[str]], doc_split: str, holdout_every: int, **kw):
    self._files, self._doc_split, self._holdout = files, doc_split, holdout_every
    super().__init__(**kw)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # No checksums file to find. (TFDS' own lookup imports `importlib_resources`, which
    # tensorflow-datasets does not declare and which is absent from a plain install.)
    return None

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, disable_shuffling=True,
                                 features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    docs = {s: [d for f in fs for d in read_documents(f, self._doc_split)] for s, fs in self._files.items()}
    if "valid" not in docs and self._holdout > 0:
      train, k = docs["train"], self._holdout
      docs["valid"] = [d for i, d in enumerate(train) if i % k == k - 1]
      docs["train"] = [d for i, d in enumerate(train) if i % k != k - 1]
    for s, d in docs.items():
      if not d:
        raise ValueError(f"split {s!r} of {self._files} has no documents")
    return {s: self._generate_examples(d) for s, d in docs.items()}

  def _generate_examples(self, docs):
    for i, d in enumerate(docs):
      yield i, {"text": d}


class _QuietCustomConfig(logging.Filter):
  """Drops TFDS' per-call warnings about our (intentionally) per-corpus builder configs."""

  def filter(self, record):
    msg = record.getMessage()
    return not (msg.startswith("Using custom data configuration") or "has no dataset_info.json" in msg)


logging.getLogger("absl").addFilter(_QuietCustomConfig())


def local_builder(data_cfg) -> LocalText:
  path = os.path.abspath(os.path.expanduser(data_cfg.path))
  files = split_files(path)
  h = hashlib.sha1(repr((data_cfg.doc_split, data_cfg.holdout_every)).encode())
  for f in sorted(f for fs in files.values() for f in fs):
    st = os.stat(f)
    h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
  name = re.sub(r"[^a-z0-9]+", "_", os.path.basename(path.rstrip("/")).lower()).strip("_") or "text"
  config = tfds.core.BuilderConfig(name=f"{name}_{h.hexdigest()[:10]}", description=path)
  return LocalText(files=files, doc_split=data_cfg.doc_split, holdout_every=data_cfg.holdout_every,
                   data_dir=data_dir(data_cfg), config=config, file_format="array_record")


def build_local(data_cfg) -> LocalText:
  """Builds (once; later calls only read the metadata) and returns the builder."""
  builder = local_builder(data_cfg)
  if not builder.is_prepared():
    tfds.display_progress_bar(False)
    builder.download_and_prepare()
  return builder


# ---- random-access sources ---------------------------------------------------------------------------
class DocumentSource:
  """len() and [i] -> {"text": str, ...}; wraps TFDS data sources (bytes) and in-memory lists."""

  def __init__(self, records, name: str, text_key: str = "text"):
    self.records, self.name, self.text_key = records, name, text_key

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, i: int) -> dict:
    rec = self.records[int(i)]
    if self.text_key not in rec:
      raise KeyError(f"{self.name}: record has no text feature {self.text_key!r} (data.text_key); "
                     f"features: {sorted(rec)}")
    text = rec[self.text_key]
    out = {k: v for k, v in rec.items() if k.endswith("_spans")}
    out["text"] = text.decode("utf-8") if isinstance(text, bytes) else str(text)
    return out

  def __repr__(self):
    return f"DocumentSource({self.name}, {len(self)} documents)"


@functools.lru_cache(maxsize=4)
def _synthetic_records(split: str, n: int, seed: int) -> tuple[dict, ...]:
  docs = synthetic.split_documents(split, n, seed=seed)
  span = lambda s: np.asarray(s, np.int32).reshape(-1, 2)
  return tuple({"text": d.text, "entity_spans": span(d.entity_spans), "phrase_spans": span(d.phrase_spans)}
               for d in docs)


def canonical_split(split: str, available) -> str:
  """Our split name ("train", "valid" and its aliases, "test") -> a name in `available`."""
  available = list(available)
  if split in available:
    return split
  want = SPLIT_ALIASES.get(split)
  for name in available:
    if want is not None and SPLIT_ALIASES.get(name) == want:
      return name
  raise ValueError(f"split {split!r} not found; available splits: {available}")


def open_source(data_cfg, split: str) -> DocumentSource:
  if not data_cfg.path:
    split = canonical_split(split, synthetic.SPLIT_SEED_OFFSET)
    syn = data_cfg.synthetic
    n = syn.num_docs if split == "train" else syn.eval_docs
    return DocumentSource(_synthetic_records(split, n, syn.seed), f"synthetic[{split}]")
  if data_cfg.path.startswith(conll.PREFIX):
    path = data_cfg.path[len(conll.PREFIX):]
    split, docs = conll.documents(path, split)
    return DocumentSource(docs, f"conll:{os.path.basename(path.rstrip('/'))}[{split}]")
  if data_cfg.path.startswith("tfds:"):
    name = data_cfg.path[len("tfds:"):]
    builder = tfds.builder(name, data_dir=data_cfg.data_dir or None, file_format="array_record")
    available = list(builder.info.splits) or [split]
    split = canonical_split(split, available)
    records = tfds.data_source(name, split=split, data_dir=data_cfg.data_dir or None,
                               builder_kwargs={"file_format": "array_record"})
    return DocumentSource(records, f"{name}[{split}]", data_cfg.text_key)
  builder = build_local(data_cfg)
  split = canonical_split(split, builder.info.splits)
  return DocumentSource(builder.as_data_source()[split], f"{builder.builder_config.name}[{split}]")


def corpus_tokenizer(data_cfg) -> Tokenizer:
  """data.tokenizer if set; the synthetic WordPiece for the synthetic corpus; else a sentencepiece
  model (data.vocab_size, data.tokenizer_type, data.tokenizer_symbols) trained on the train split
  once, cached next to the built dataset."""
  if data_cfg.tokenizer:
    return load_tokenizer(os.path.expanduser(data_cfg.tokenizer))
  if not data_cfg.path:
    return synthetic_tokenizer()
  if data_cfg.path.startswith("tfds:"):
    folder = os.path.join(data_dir(data_cfg), "tokenizers", re.sub(r"[^\w.]+", "_", data_cfg.path[5:]))
  elif data_cfg.path.startswith(conll.PREFIX):
    folder = os.path.join(data_dir(data_cfg), "tokenizers", re.sub(r"[^\w.]+", "_", data_cfg.path))
  else:
    builder = build_local(data_cfg)
    folder = os.fspath(builder.data_path)
  symbols = tuple(data_cfg.tokenizer_symbols)
  tag = hashlib.sha1(repr(symbols).encode()).hexdigest()[:6] if symbols else "plain"
  prefix = os.path.join(folder, f"sp_{data_cfg.tokenizer_type}_{data_cfg.vocab_size}_{tag}")
  if not os.path.isfile(prefix + ".model"):
    train = open_source(data_cfg, "train")
    lines = (ln for i in range(min(len(train), data_cfg.tokenizer_max_docs))
             for ln in train[i]["text"].split("\n"))
    tmp = f"{prefix}.tmp{os.getpid()}"
    train_sentencepiece(lines, tmp, data_cfg.vocab_size, data_cfg.tokenizer_type,
                        user_defined_symbols=symbols)
    os.replace(tmp + ".vocab", prefix + ".vocab")
    os.replace(tmp + ".model", prefix + ".model")                  # last: its presence marks done
  return load_tokenizer(prefix + ".model")
