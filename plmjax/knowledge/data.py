"""Entity-aligned batches for ERNIE (THU): BERT's NSP pairs plus the entity of every mention, at the
mention's first token, and the fine-tuning inputs of the paper (entity typing, relation classification).

`data.path = "kg:synthetic" | "kg:PATH"` (plmjax.knowledge.kg) routes `plmjax.data.build_dataset` here;
data.mode must be "pairs". Batches are the pipeline's "pairs" batches (same keys, same pair rules:
plmjax.data.pipeline.make_pair) plus

    ent_ids [B, T] int32   the entity id (row of entity2vec.vec) of the mention that starts at token
                           t, -1 everywhere else (ERNIE aligns each entity to its mention's first token)

Alignment: a mention is a word span of the document (the knowledge source's anchors); its first
token is the first subword of its first word. A mention whose first token is cut off by the pair's
trimming loses its entity. The pair builder moves token ids without reading them, so the entity id
rides along in the id's high digits (id + V (ent + 1)) through `make_pair` and is split off after.

Fine-tuning inputs (the paper's section 4.3-4.4): `mark_relation` puts [HD] ... [HD] around the
head mention and [TL] ... [TL] around the tail (relation classification); `mark_entity` puts
[ENT] ... [ENT] around the mention (entity typing). In both the entities stay aligned to the
first *name* token. The tokenizer of a knowledge source has the three markers as special tokens; a
public BERT vocabulary without them uses its reserved [unused0] / [unused1] / [unused2] instead.
"""
from __future__ import annotations

import copy
import functools

import grain
import numpy as np

from plmjax.data import pipeline, sources, synthetic
from plmjax.data.tokenizer import Tokenizer, wordpiece_tokenizer
from plmjax.knowledge import kg as kg_lib

MARKERS = ("[HD]", "[TL]", "[ENT]")
# A public BERT vocabulary (vocab.txt) has no markers but reserved [unusedK] tokens: they stand in.
MARKER_FALLBACK = {"[HD]": "[unused0]", "[TL]": "[unused1]", "[ENT]": "[unused2]"}


def marker_id(tok: Tokenizer, marker: str):
  """The id of `marker`, or of its [unusedK] stand-in (MARKER_FALLBACK); None if neither exists."""
  i = tok.token_to_id(marker)
  return tok.token_to_id(MARKER_FALLBACK[marker]) if i is None else i


@functools.lru_cache(maxsize=1)
def _synthetic_tokenizer() -> Tokenizer:
  return wordpiece_tokenizer(synthetic.grammar().vocab() + list(MARKERS), "synthetic+markers")


def knowledge_tokenizer(data_cfg) -> Tokenizer:
  """The built-in WordPiece plus markers for kg:synthetic; for a text folder the pipeline's
  sentencepiece over it, trained with the markers among `data.tokenizer_symbols` (the config adds them)."""
  body = data_cfg.path[len(kg_lib.PREFIX):]
  if data_cfg.tokenizer:
    tok = sources.corpus_tokenizer(data_cfg)
  elif body == kg_lib.SYNTHETIC:
    tok = _synthetic_tokenizer()
  else:
    cfg = copy.deepcopy(data_cfg)
    cfg.path = body                           # (a locked ConfigDict still allows changing a value)
    tok = sources.corpus_tokenizer(cfg)
  missing = [m for m in MARKERS if marker_id(tok, m) is None]
  if missing:
    raise ValueError(f"data.path={data_cfg.path!r}: tokenizer {tok.name!r} lacks the markers {missing} "
                     f"(and their stand-ins {[MARKER_FALLBACK[m] for m in missing]}); add them to "
                     f"data.tokenizer_symbols")
  return tok


def first_token_entities(tokens: dict, doc: dict) -> np.ndarray:
  """tokens: pipeline.tokenize_document output (doc-level "word" per token); doc: "entity_spans"
  [n, 2] word spans + "entity_kg" [n] -> [n_tokens] entity id at each mention's first token, else -1."""
  word = tokens["word"]
  out = np.full(len(word), -1, np.int32)
  first_of_word = np.concatenate([[True], word[1:] != word[:-1]]) if len(word) else np.zeros(0, bool)
  pos_of_word = {int(w): i for i, w in zip(np.nonzero(first_of_word)[0], word[first_of_word])}
  for (a, _), e in zip(np.asarray(doc["entity_spans"]).reshape(-1, 2).tolist(), np.asarray(doc["entity_kg"]).tolist()):
    if a in pos_of_word:
      out[pos_of_word[a]] = e
  return out


class _EncodedDocs:
  """docs[i] -> tokenized document whose ids carry the aligned entity: id + V (ent + 1)."""

  def __init__(self, docs: list[dict], tok: Tokenizer, size: int):
    self.docs, self.tok = docs, tok
    self._get = functools.lru_cache(maxsize=size)(self._encode)

  def _encode(self, i: int) -> dict:
    d = self.docs[i]
    x = pipeline.tokenize_document({"text": d["text"]}, self.tok)
    ent = first_token_entities(x, d)
    return {**x, "ids": (x["ids"] + self.tok.vocab_size * (ent + 1)).astype(np.int32)}

  def __len__(self):
    return len(self.docs)

  def __getitem__(self, i):
    return self._get(int(i))


def split_entities(row: dict, vocab_size: int) -> dict:
  """Undoes the id encoding of a made pair: input_ids in [0, V), ent_ids = aligned entity or -1."""
  ids = row["input_ids"]
  return {**row, "input_ids": (ids % vocab_size).astype(np.int32), "ent_ids": (ids // vocab_size - 1).astype(np.int32)}


def build_dataset(data_cfg, *, split: str, global_batch_size: int, seq_len: int, seed: int, mode: str,
                  process_index: int, process_count: int, shuffle: bool, repeat: bool) -> pipeline.TextDataset:
  """Called by plmjax.data.build_dataset for data.path "kg:..." (arguments already checked there)."""
  if mode != "pairs":
    raise ValueError(f"data.path={data_cfg.path!r} (entity-aligned ERNIE data) needs data.mode='pairs', "
                     f"not {mode!r}")
  ks = kg_lib.open_knowledge(data_cfg.path, data_cfg.data_dir)
  tok = knowledge_tokenizer(data_cfg)
  split = sources.canonical_split(split, ("train", "valid", "test"))
  docs = _EncodedDocs(ks.documents(split), tok, data_cfg.doc_cache)
  rows = global_batch_size // process_count
  order = grain.MapDataset.range(len(docs))
  if shuffle:
    order = order.shuffle(seed=seed)
  order = order[process_index::process_count]
  order = order.repeat() if repeat else order
  V = tok.vocab_size

  def pair(i, rng):
    row = pipeline.make_pair(i, rng, docs, seq_len, tok, data_cfg.short_seq_prob, data_cfg.random_next_prob)
    return split_entities(row, V)

  read = grain.ReadOptions(num_threads=data_cfg.read_threads, prefetch_buffer_size=max(4 * rows, 16))
  ds = order.random_map(pair, seed=seed).to_iter_dataset(read).batch(rows, drop_remainder=repeat)
  if not repeat:
    ds = ds.map(lambda b: pipeline._pad_batch(b, rows, tok.pad_id))
  info = dict(source=f"{data_cfg.path}[{split}]", documents=len(docs), mode=mode, seq_len=seq_len,
              batch_rows=rows, tokenizer=tok.name, vocab_size=V, num_entities=ks.num_entities,
              knowledge_folder=ks.folder)
  return pipeline.TextDataset(ds, tok, info)


# ---- fine-tuning inputs --------------------------------------------------------------------------------
def _encode_marked(words: list[str], marks: list[tuple[int, int, str, int]], tok: Tokenizer,
                   seq_len: int) -> dict:
  """words + (start, end, marker, entity) spans -> one row [CLS] ... [SEP] with the markers around
  each span and the entity aligned to the span's first token."""
  pieces, ents = [tok.cls_id], [-1]
  starts = {a: (b, m, e) for a, b, m, e in marks}
  ends = {b: m for a, b, m, e in marks}
  for i, w in enumerate(words):
    if i in ends:
      pieces.append(marker_id(tok, ends.pop(i)))
      ents.append(-1)
    if i in starts:
      _, m, e = starts[i]
      pieces.append(marker_id(tok, m))
      ents.append(-1)
      ids = tok.encode(w)
      pieces += ids
      ents += [e] + [-1] * (len(ids) - 1)
    else:
      ids = tok.encode(w)
      pieces += ids
      ents += [-1] * len(ids)
  for m in ends.values():
    pieces.append(marker_id(tok, m))
    ents.append(-1)
  pieces, ents = pieces[:seq_len - 1] + [tok.sep_id], ents[:seq_len - 1] + [-1]
  n = len(pieces)
  pad = seq_len - n
  return {"input_ids": np.asarray(pieces + [tok.pad_id] * pad, np.int32),
          "attention_mask": np.asarray([1] * n + [0] * pad, np.int32),
          "token_type_ids": np.zeros(seq_len, np.int32),
          "ent_ids": np.asarray(ents + [-1] * pad, np.int32)}


def mark_relation(ex: dict, tok: Tokenizer, seq_len: int) -> dict:
  """Relation classification input: [CLS] ... [HD] head [HD] ... [TL] tail [TL] ... [SEP]."""
  (ha, hb), (ta, tb) = ex["head"], ex["tail"]
  return _encode_marked(ex["words"], [(ha, hb, "[HD]", ex["head_kg"]), (ta, tb, "[TL]", ex["tail_kg"])],
                        tok, seq_len)


def mark_entity(ex: dict, tok: Tokenizer, seq_len: int) -> dict:
  """Entity typing input: [CLS] ... [ENT] mention [ENT] ... [SEP]."""
  a, b = ex["span"]
  return _encode_marked(ex["words"], [(a, b, "[ENT]", ex["kg"])], tok, seq_len)


def stack_rows(rows: list[dict]) -> dict:
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
