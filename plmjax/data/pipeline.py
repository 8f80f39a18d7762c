"""The input pipeline (grain): documents -> shuffled, tokenized, packed / paired / streamed batches.

    ds = build_dataset(cfg.data, split="train", global_batch_size=32, seq_len=128, seed=0,
                       mode="packed", process_index=jax.process_index(), process_count=jax.process_count())
    it = iter(ds)                       # a grain DatasetIterator
    batch = next(it)                    # dict of np.int32, this process' rows (global / process_count)
    state = it.get_state(); it.set_state(state)   # JSON-able; restores exactly the same next batches

Order: document indices are shuffled with `seed` (train split; reshuffled every epoch; eval splits
keep order and run one epoch), then process p takes every process_count-th document starting at p,
so processes see disjoint documents and each builds its own rows. Each document is tokenized by
sentence (line) with whitespace-word indices; the synthetic corpus adds phrase/entity spans.

Modes (every batch array is [B, T] unless noted, B = global_batch_size / process_count):
  "packed"  documents concatenated into one token stream and cut into rows of T. `data.special_tokens`:
            "cls_sep": each row is [CLS] x_1..x_{T-2} [SEP] and documents end with [SEP] (BERT-style
            full-length MLM); "bos_eos": each document is [BOS] doc [EOS], rows are plain T-chunks;
            "eos": each document is followed by [EOS] (GPT-2); "none": no special tokens.
  "pairs"   BERT's NSP examples, one per document per epoch: [CLS] A [SEP] B [SEP] padded to T, A a
            run of sentences from a random start, B its continuation (next_sentence_label 0) or, with
            probability data.random_next_prob, sentences of another document (label 1) [B];
            token_type_ids 0 on [CLS] A [SEP], 1 on B [SEP]; with prob data.short_seq_prob the target
            length is shorter than T (as in BERT); an over-long pair loses tokens from the start of A
            or the end of B, never at the A|B seam.
  "stream"  Transformer-XL: row i of every batch continues row i of the previous batch: the
            process' documents are dealt round-robin to B streams, each stream concatenates its
            documents (separated as in "packed", no per-row [CLS]) and advances T tokens per batch.
            Adds `target_ids` [B, T]: the next token of the stream, so the last position's target is
            the first token of the next batch's row (pad_id where the stream has ended).
Always: input_ids, attention_mask (1 = real token), token_type_ids, word_ids, phrase_ids, entity_ids:
index of the unit within the row (0, 1, ... in order; a unit cut by the row edge counts in both rows),
-1 on special tokens, padding and outside any unit. word_ids are whitespace words; phrase_ids and
entity_ids come from the synthetic corpus' annotations and are all -1 for plain text.
Eval splits end with a partial batch padded with empty rows (attention_mask 0; label 0 in "pairs").
Tokenized documents are kept in a per-process LRU cache of `data.doc_cache` documents.
"""
from __future__ import annotations

import copy
import functools

import grain
import ml_collections
import numpy as np

from plmjax.data import sources, synthetic
from plmjax.data.tokenizer import Tokenizer

MODES = ("packed", "pairs", "stream")
CONVENTIONS = ("cls_sep", "bos_eos", "eos", "none")
UNITS = ("word", "phrase", "entity")


def default_data_config() -> ml_collections.ConfigDict:
  """Every data key with its default (the trainer's configs embed this as `config.data`)."""
  return ml_collections.ConfigDict(dict(
      path="",                  # "" synthetic | file or folder of text | "tfds:name/config:version"
      tokenizer="",             # "" built-in / trained; or a .model, tokenizer.json, checkpoint folder
      vocab_size=8000,          # sentencepiece training (when data.tokenizer is "")
      tokenizer_type="unigram",  # unigram | bpe | word | char
      tokenizer_max_docs=100_000,  # train-split documents read to train the tokenizer
      tokenizer_symbols=("<unk>",),  # extra unsplittable pieces (WikiText / PTB write "<unk>")
      seq_len=128,
      mode="packed",            # packed | pairs | stream
      special_tokens="cls_sep",  # cls_sep | bos_eos | eos | none
      data_dir="",              # TFDS build / cache folder ("" -> ~/.cache/plmjax/tfds)
      doc_split="auto",         # auto | heading | blank | line
      holdout_every=50,         # single-file corpora: every n-th document is "valid" (0: none)
      text_key="text",          # text feature of TFDS catalog datasets
      eval_split="valid",
      short_seq_prob=0.1,       # pairs
      random_next_prob=0.5,     # pairs
      read_threads=2,           # grain read threads (packed, pairs)
      doc_cache=2048,           # tokenized documents kept per process (LRU)
      synthetic=dict(num_docs=6000, eval_docs=300, seed=0),
  ))


# ---- documents -> token arrays -----------------------------------------------------------------------
def tokenize_document(doc: dict, tok: Tokenizer) -> dict[str, np.ndarray]:
  """{"text", optional spans} -> ids, word, phrase, entity, sent: int32 [n] (doc-level indices)."""
  lines = doc["text"].split("\n")
  ids, word, sent, offset = [], [], [], 0
  for i, (line, (li, lw)) in enumerate(zip(lines, tok.encode_lines_with_words(lines))):
    n_words = max(len(line.split()), 1)
    ids.append(li)
    word.append(np.minimum(lw, n_words - 1) + offset)      # (a normaliser may split a word further)
    sent.append(np.full(len(li), i, np.int32))
    offset += n_words
  out = {"ids": np.concatenate(ids), "word": np.concatenate(word), "sent": np.concatenate(sent)}
  for unit in ("phrase", "entity"):
    of_word = np.full(offset + 1, -1, np.int32)
    for j, (a, b) in enumerate(doc.get(f"{unit}_spans", ())):
      of_word[a:b] = j
    out[unit] = of_word[out["word"]]
  return {k: v.astype(np.int32) for k, v in out.items()}


def _specials(ids: list[int]) -> dict[str, np.ndarray]:
  n = len(ids)
  return {"ids": np.asarray(ids, np.int32), "doc": np.full(n, -1, np.int32),
          **{u: np.full(n, -1, np.int32) for u in UNITS}}


def _concat(parts: list[dict]) -> dict[str, np.ndarray]:
  return {k: np.concatenate([p[k] for p in parts]) for k in ("ids", "doc", *UNITS)}


def renumber(unit: np.ndarray, doc: np.ndarray) -> np.ndarray:
  """Doc-level unit indices [T] -> 0, 1, ... within the row, -1 kept; `doc` separates documents."""
  valid = unit >= 0
  new = valid & np.concatenate([[True], (unit[1:] != unit[:-1]) | (doc[1:] != doc[:-1])])
  return np.where(valid, np.cumsum(new) - 1, -1).astype(np.int32)


def _row(parts: list[dict], seq_len: int, pad_id: int, types=None) -> dict[str, np.ndarray]:
  """Token pieces -> one padded row of model arrays [T]."""
  x = _concat(parts)
  n = len(x["ids"])
  pad = lambda a, v: np.concatenate([a, np.full(seq_len - n, v, np.int32)])
  row = {"input_ids": pad(x["ids"], pad_id), "attention_mask": pad(np.ones(n, np.int32), 0),
         "token_type_ids": pad(np.zeros(n, np.int32) if types is None else types, 0)}
  for u in UNITS:
    row[f"{u}_ids"] = pad(renumber(x[u], x["doc"]), -1)
  return row


# ---- a token stream over a document iterator, with a small exact state -----------------------------
class _DocStream:
  """Concatenated documents (each as prefix + doc + suffix) from a grain iterator, read in chunks.
  State = (parent state before the first unfinished document, offset in it): restoring refetches
  that document, so the state stays small whatever the document length."""

  def __init__(self, parent, prefix: list[int], suffix: list[int]):
    self.parent, self.prefix, self.suffix = parent, prefix, suffix
    self.buffer: list[tuple[dict, dict]] = []      # (parent state before it, token arrays)
    self.pos = 0
    self.serial = 0

  def _fetch(self) -> bool:
    state = copy.deepcopy(self.parent.get_state())
    try:
      doc = next(self.parent)
    except StopIteration:
      return False
    body = {"ids": doc["ids"], "doc": np.full(len(doc["ids"]), self.serial, np.int32),
            **{u: doc[u] for u in UNITS}}
    self.serial += 1
    self.buffer.append((state, _concat([_specials(self.prefix), body, _specials(self.suffix)])))
    return True

  def peek(self, n: int) -> dict[str, np.ndarray]:
    parts, i, p = [], 0, self.pos
    while n > 0:
      if i == len(self.buffer) and not self._fetch():
        break
      x = self.buffer[i][1]
      k = min(n, len(x["ids"]) - p)
      parts.append({key: v[p:p + k] for key, v in x.items()})
      n, i, p = n - k, i + 1, 0
    return _concat(parts) if parts else _specials([])

  def skip(self, n: int) -> None:
    while n > 0 and (self.buffer or self._fetch()):
      left = len(self.buffer[0][1]["ids"]) - self.pos
      if n < left:
        self.pos += n
        return
      n -= left
      self.buffer.pop(0)
      self.pos = 0

  def get_state(self) -> dict:
    return {"parent": self.buffer[0][0] if self.buffer else self.parent.get_state(), "pos": self.pos}

  def set_state(self, state: dict) -> None:
    self.parent.set_state(state["parent"])
    self.buffer, self.pos = [], 0
    if state["pos"]:
      self._fetch()
      self.pos = state["pos"]


def _convention(tok: Tokenizer, name: str) -> tuple[list, list, list, list]:
  """-> (doc prefix, doc suffix, row prefix, row suffix) token ids of `data.special_tokens`."""
  need = {"cls_sep": ("cls_id", "sep_id"), "bos_eos": ("bos_id", "eos_id"), "eos": ("eos_id",),
          "none": ()}
  if name not in need:
    raise ValueError(f"data.special_tokens must be one of {CONVENTIONS}, not {name!r}")
  missing = [a for a in need[name] if getattr(tok, a) is None]
  if missing:
    raise ValueError(f"data.special_tokens={name!r} needs {missing} but tokenizer {tok.name!r} has none")
  return {"cls_sep": ([], [tok.sep_id], [tok.cls_id], [tok.sep_id]),
          "bos_eos": ([tok.bos_id], [tok.eos_id], [], []),
          "eos": ([], [tok.eos_id], [], []), "none": ([], [], [], [])}[name]


class _PackIterator(grain.DatasetIterator):
  def __init__(self, parent, seq_len, tok, convention):
    super().__init__(parent)
    doc_pre, doc_suf, self.row_pre, self.row_suf = _convention(tok, convention)
    self.stream, self.seq_len, self.pad_id = _DocStream(parent, doc_pre, doc_suf), seq_len, tok.pad_id
    self.width = seq_len - len(self.row_pre) - len(self.row_suf)
    if self.width < 1:
      raise ValueError(f"seq_len={seq_len} leaves no room for tokens")

  def __next__(self):
    x = self.stream.peek(self.width)
    if not len(x["ids"]):
      raise StopIteration
    self.stream.skip(len(x["ids"]))
    return _row([_specials(self.row_pre), x, _specials(self.row_suf)], self.seq_len, self.pad_id)

  def get_state(self):
    return self.stream.get_state()

  def set_state(self, state):
    self.stream.set_state(state)


class _StreamIterator(grain.DatasetIterator):
  def __init__(self, parents, seq_len, tok, convention):
    super().__init__(parents)
    doc_pre, doc_suf, _, _ = _convention(tok, convention)
    self.streams = [_DocStream(p, doc_pre, doc_suf) for p in parents]
    self.seq_len, self.pad_id = seq_len, tok.pad_id

  def __next__(self):
    rows, targets, live = [], [], False
    for s in self.streams:
      x = s.peek(self.seq_len + 1)
      s.skip(self.seq_len)
      n = min(len(x["ids"]), self.seq_len)
      live |= n > 0
      rows.append(_row([{k: v[:n] for k, v in x.items()}], self.seq_len, self.pad_id))
      t = x["ids"][1:self.seq_len + 1]
      targets.append(np.concatenate([t, np.full(self.seq_len - len(t), self.pad_id, np.int32)]))
    if not live:
      raise StopIteration
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    batch["target_ids"] = np.stack(targets)
    return batch

  def get_state(self):
    return {"streams": [s.get_state() for s in self.streams]}

  def set_state(self, state):
    for s, st in zip(self.streams, state["streams"]):
      s.set_state(st)


class _Packed(grain.IterDataset):
  def __init__(self, parent, seq_len, tok, convention):
    super().__init__(parent)
    self.args = (seq_len, tok, convention)

  def __iter__(self):
    return _PackIterator(self._parent.__iter__(), *self.args)


class _Streams(grain.IterDataset):
  def __init__(self, parents, seq_len, tok, convention):
    super().__init__(parents)
    self.args = (seq_len, tok, convention)

  def __iter__(self):
    return _StreamIterator([p.__iter__() for p in self._parents], *self.args)


def document_rows(texts, tok: Tokenizer, seq_len: int, mode: str = "packed",
                  special_tokens: str = "eos") -> dict[str, np.ndarray]:
  """Documents (sentences joined by "\n") -> every row the pipeline cuts them into, in order,
  stacked [N, T]: "packed" rows (as an eval split reads them), or "stream" rows of one stream with
  `target_ids` [N, T]. What `plmjax predict ... score` scores, so that it reads a text as
  `plmjax eval` does."""
  docs = grain.MapDataset.source([tokenize_document({"text": t}, tok) for t in texts])
  docs = docs.to_iter_dataset(grain.ReadOptions(num_threads=0))
  if mode == "packed":
    rows = list(_Packed(docs, seq_len, tok, special_tokens))
  elif mode == "stream":
    rows = [{k: v[0] for k, v in b.items()} for b in _Streams([docs], seq_len, tok, special_tokens)]
  else:
    raise ValueError(f"document_rows: mode must be 'packed' or 'stream', not {mode!r}")
  if not rows:
    raise ValueError("document_rows: the text has no tokens")
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


# ---- sentence pairs (NSP) ------------------------------------------------------------------------------
def _sentences(doc: dict, a: int, b: int) -> dict[str, np.ndarray]:
  lo, hi = np.searchsorted(doc["sent"], [a, b])
  return {u: doc[u][lo:hi] for u in ("ids", *UNITS)}


def _num_sentences(doc: dict) -> int:
  return int(doc["sent"][-1]) + 1 if len(doc["sent"]) else 1     # (a document may tokenize to nothing)


def make_pair(i: int, rng: np.random.Generator, docs, seq_len: int, tok: Tokenizer, short_seq_prob: float,
              random_next_prob: float) -> dict[str, np.ndarray]:
  """One NSP example from document i (`docs[j]` -> tokenized document); see the module docstring."""
  room = seq_len - 3
  target = room if rng.random() >= short_seq_prob else int(rng.integers(2, room + 1))
  doc = docs[i]
  n_sent = _num_sentences(doc)
  start = int(rng.integers(0, n_sent))
  end = start + 1                                   # sentences [start, end) fill up to `target`
  while end < n_sent and np.sum(doc["sent"] < end) - np.sum(doc["sent"] < start) < target:
    end += 1
  split = int(rng.integers(start + 1, end)) if end - start >= 2 else end
  a = _sentences(doc, start, split)
  label = int(end - start < 2 or rng.random() < random_next_prob)
  if label:
    j = int(rng.integers(0, len(docs) - 1)) if len(docs) > 1 else i
    other = docs[j + (j >= i) if len(docs) > 1 else i]
    m = _num_sentences(other)
    s0 = int(rng.integers(0, m))
    b = _sentences(other, s0, m)
    b = {k: v[:max(target - len(a["ids"]), 1)] for k, v in b.items()}
  else:
    b = _sentences(doc, split, end)
  a, b = {k: v.copy() for k, v in a.items()}, {k: v.copy() for k, v in b.items()}
  while len(a["ids"]) + len(b["ids"]) > room:      # trim the longer side at its outer end, so the
    x, cut = (a, slice(1, None)) if len(a["ids"]) > len(b["ids"]) else (b, slice(None, -1))  # A|B seam
    for k in x:                                   # stays exact (BERT trims either end at random)
      x[k] = x[k][cut]
  seg = lambda x, d: {"ids": x["ids"], "doc": np.full(len(x["ids"]), d, np.int32), **{u: x[u] for u in UNITS}}
  parts = [_specials([tok.cls_id]), seg(a, 0), _specials([tok.sep_id]), seg(b, 1), _specials([tok.sep_id])]
  na, nb = len(a["ids"]) + 2, len(b["ids"]) + 1
  row = _row(parts, seq_len, tok.pad_id, np.concatenate([np.zeros(na, np.int32), np.ones(nb, np.int32)]))
  row["next_sentence_label"] = np.int32(label)
  return row


# ---- the dataset ------------------------------------------------------------------------------------------
class _CachedDocs:
  """docs[i] -> tokenize_document(source[i]), LRU-cached (pairs read two documents per example)."""

  def __init__(self, source, tok: Tokenizer, size: int):
    self.source = source
    self._get = functools.lru_cache(maxsize=size)(lambda i: tokenize_document(source[i], tok))

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return self._get(int(i))


class TextDataset:
  """`iter(ds)` -> a fresh grain DatasetIterator over batches; `.tokenizer`; `.info` (dict)."""

  def __init__(self, dataset: grain.IterDataset, tokenizer: Tokenizer, info: dict):
    self.dataset, self.tokenizer, self.info = dataset, tokenizer, info

  def __iter__(self) -> grain.DatasetIterator:
    return iter(self.dataset)

  def __repr__(self):
    return f"TextDataset({self.info})"


def _pad_batch(batch: dict, rows: int, pad_id: int) -> dict:
  n = len(batch["input_ids"])
  if n == rows:
    return batch
  value = {"input_ids": pad_id, "target_ids": pad_id, "attention_mask": 0, "token_type_ids": 0,
           "next_sentence_label": 0}
  fill = lambda k, v: np.full((rows - n,) + v.shape[1:], value.get(k, -1), np.int32)
  return {k: np.concatenate([v, fill(k, v)]) for k, v in batch.items()}


def build_dataset(data_cfg, *, split: str = "train", global_batch_size: int, seq_len: int | None = None,
                  seed: int = 0, mode: str | None = None, process_index: int = 0, process_count: int = 1,
                  shuffle: bool | None = None, repeat: bool | None = None) -> TextDataset:
  """Batches of this process' rows (see the module docstring). `shuffle` and `repeat` default to
  True for the train split and False otherwise."""
  seq_len = seq_len or data_cfg.seq_len
  mode = mode or data_cfg.mode
  if mode not in MODES:
    raise ValueError(f"data.mode must be one of {MODES}, not {mode!r}")
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} is not divisible by process_count={process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} outside [0, {process_count})")
  rows = global_batch_size // process_count
  is_train = split == "train"
  shuffle = is_train if shuffle is None else shuffle
  repeat = is_train if repeat is None else repeat
  if data_cfg.path.startswith("kg:"):                    # ERNIE (THU): entity-aligned pairs
    from plmjax.knowledge import data as knowledge_data
    return knowledge_data.build_dataset(data_cfg, split=split, global_batch_size=global_batch_size,
                                        seq_len=seq_len, seed=seed, mode=mode, process_index=process_index,
                                        process_count=process_count, shuffle=shuffle, repeat=repeat)
  tok = sources.corpus_tokenizer(data_cfg)
  _convention(tok, data_cfg.special_tokens)                # fail now on a bad data.special_tokens
  source = sources.open_source(data_cfg, split)
  docs = _CachedDocs(source, tok, data_cfg.doc_cache)
  order = grain.MapDataset.range(len(source))
  if shuffle:
    order = order.shuffle(seed=seed)
  order = order[process_index::process_count]
  if len(order) == 0:
    raise ValueError(f"{source}: no documents for process {process_index} of {process_count}")
  info = dict(source=source.name, documents=len(source), mode=mode, seq_len=seq_len,
              batch_rows=rows, tokenizer=tok.name, vocab_size=tok.vocab_size)
  if not data_cfg.path:
    info["entropy_floor_nats"] = synthetic.entropy_floor_nats()
    info["unigram_entropy_nats"] = synthetic.unigram_entropy_nats()
  read = grain.ReadOptions(num_threads=data_cfg.read_threads, prefetch_buffer_size=max(4 * rows, 16))
  if mode == "stream":
    if len(order) < rows:
      raise ValueError(f"{source}: {len(order)} documents cannot fill {rows} streams (mode='stream')")
    per_stream = [order[j::rows] for j in range(rows)]
    per_stream = [(o.repeat() if repeat else o).map(lambda i: docs[i]) for o in per_stream]
    ds = _Streams([o.to_iter_dataset(grain.ReadOptions(num_threads=0)) for o in per_stream],
                  seq_len, tok, data_cfg.special_tokens)
  else:
    order = order.repeat() if repeat else order
    if mode == "packed":
      ds = _Packed(order.map(lambda i: docs[i]).to_iter_dataset(read), seq_len, tok, data_cfg.special_tokens)
    else:
      if tok.cls_id is None or tok.sep_id is None:
        raise ValueError(f"mode='pairs' needs [CLS] and [SEP]; tokenizer {tok.name!r} lacks them")
      pair = lambda i, rng: make_pair(i, rng, docs, seq_len, tok, data_cfg.short_seq_prob,
                                      data_cfg.random_next_prob)
      ds = order.random_map(pair, seed=seed).to_iter_dataset(read)
    ds = ds.batch(rows, drop_remainder=repeat)
    if not repeat:
      ds = ds.map(lambda b: _pad_batch(b, rows, tok.pad_id))
  return TextDataset(ds, tok, info)
