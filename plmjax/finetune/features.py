"""From examples to padded batches: input framing, truncation, length bucketing.

    framing  = Framing.bert(tok)  or  Framing.gpt(start, delim, extract, pad)
    features = encode_sentences(examples, tok, framing, max_len)        # list of per-row dicts
    stream, steps_per_epoch = train_stream({name: task}, batch_size, buckets, pad_id, seed, group)
    for name, batch in stream: ...                                       # grain IterDataset
    for batch in eval_batches(features, batch_size, buckets, pad_id): ...

Framing is how a text (pair) becomes one sequence:

    BERT   [CLS] a [SEP]            [CLS] a [SEP] b [SEP]      token types 0.. / 1..
    GPT-1  <s> a <e>                <s> a $ b <e>              (Radford et al. 2018, Fig. 1)

`extract` is the position of the last framing token, where GPT-1's classifier reads the sequence;
pairs are truncated longest-first to fit `max_len`.

Batching is grain transforms over the features (a grain MapDataset source): shuffle + repeat (a new
order every epoch), batch, and a map that pads. Length bucketing: a batch is padded to the smallest
bucket length that holds its longest row, so a run compiles at most len(buckets) step shapes while
short rows do not pay for `max_len`. With `group_by_length` rows are drawn 50 batches at a time and
sorted by length before they are cut into batches (transformers' LengthGroupedSampler), so each
batch pays only for its own length range. Evaluation batches are sorted by length; the last one is
filled with zero-weight rows (`weights` [B]) so that the batch shape stays static.

A feature is a dict of 1-D int arrays of the row's length (`input_ids`, `token_type_ids`, and for
tagging `labels` / `label_mask`, for spans `context_mask`) plus scalars (`label`, `extract`,
`start`, `end`, `index`). Batches: the same keys, [B, T] or [B], plus `attention_mask` [B, T] and
`weights` [B].
"""
from __future__ import annotations

import dataclasses
import functools
import threading
from typing import Optional, Sequence

import grain
import numpy as np

TOKEN_KEYS = ("input_ids", "token_type_ids", "labels", "label_mask", "context_mask")


@dataclasses.dataclass(frozen=True)
class Framing:
  start: int
  delim: int
  end: int
  pad: int
  token_types: bool = True            # BERT segment ids; GPT-1 has none

  @staticmethod
  def bert(tok) -> "Framing":
    if tok.cls_id is None or tok.sep_id is None:
      raise ValueError(f"{tok!r}: no [CLS]/[SEP] tokens; BERT framing needs both")
    return Framing(tok.cls_id, tok.sep_id, tok.sep_id, tok.pad_id)

  @staticmethod
  def gpt(start: int, delim: int, extract: int, pad: int) -> "Framing":
    return Framing(start, delim, extract, pad, token_types=False)

  def frame(self, a: Sequence[int], b: Optional[Sequence[int]], max_len: int):
    """-> (ids [n], token types [n], extract position)."""
    budget = max_len - (3 if b is not None else 2)
    if budget < 1:
      raise ValueError(f"data.max_len={max_len} leaves no room for text")
    a, b = list(a), (list(b) if b is not None else None)
    if b is None:
      a = a[:budget]
    else:
      while len(a) + len(b) > budget:             # longest-first truncation
        (a if len(a) >= len(b) else b).pop()
    ids = [self.start] + a + ([self.delim] + b if b is not None else []) + [self.end]
    types = [0] * (len(a) + 2) + ([1] * (len(b) + 1) if b is not None else [])
    if not self.token_types:
      types = [0] * len(ids)
    return np.asarray(ids, np.int32), np.asarray(types, np.int32), len(ids) - 1


def encode_sentences(examples: Sequence[dict], tok, framing: Framing, max_len: int,
                     regression: bool = False) -> list[dict]:
  """Sentence / sentence-pair examples -> features with `label` (int, or float for regression)."""
  a = tok.encode_batch([e["text_a"] for e in examples])
  has_b = [e.get("text_b") is not None for e in examples]
  b_texts = tok.encode_batch([e["text_b"] for e, h in zip(examples, has_b) if h]) if any(has_b) else []
  b_iter = iter(b_texts)
  out = []
  for i, (e, ids_a, h) in enumerate(zip(examples, a, has_b)):
    ids, types, extract = framing.frame(ids_a, next(b_iter) if h else None, max_len)
    label = np.float32(e["label"]) if regression else np.int32(e["label"])
    out.append({"input_ids": ids, "token_type_ids": types, "extract": np.int32(extract),
                "label": label, "index": np.int32(i)})
  return out


# ---- batching --------------------------------------------------------------------------------------
def bucket_of(length: int, buckets: Sequence[int]) -> int:
  for b in buckets:
    if length <= b:
      return b
  raise ValueError(f"row of length {length} is longer than the largest bucket {buckets[-1]} "
                   "(data.buckets must end at data.max_len)")


def pad_batch(rows: Sequence[dict], batch_size: int, length: int, pad_id: int) -> dict:
  """Rows -> {key: [B, T] or [B]} padded to `length` and `batch_size` (extra rows weight 0)."""
  batch = {}
  for key in rows[0]:
    first = rows[0][key]
    if key in TOKEN_KEYS:
      fill = pad_id if key == "input_ids" else 0
      arr = np.full((batch_size, length), fill, first.dtype)
      for i, r in enumerate(rows):
        arr[i, :len(r[key])] = r[key]
    else:
      arr = np.zeros((batch_size,), np.asarray(first).dtype)
      arr[:len(rows)] = [r[key] for r in rows]
    batch[key] = arr
  mask = np.zeros((batch_size, length), np.int32)
  for i, r in enumerate(rows):
    mask[i, :len(r["input_ids"])] = 1
  batch["attention_mask"] = mask
  weights = np.zeros((batch_size,), np.float32)
  weights[:len(rows)] = 1.0
  batch["weights"] = weights
  return batch


class _LengthSorted(grain.experimental.FlatMapTransform):
  """A megabatch (index, rows of `k` batches) -> its `k` batches of rows of similar length: sorted by
  length, cut into batches, the batches in a random order seeded by the megabatch index. grain calls
  flat_map once per output batch, so the last megabatch's split is kept (thread-safe)."""

  def __init__(self, batch_size: int, k: int, seed: int):
    self.bs, self.max_fan_out, self.seed = batch_size, k, seed
    self._lock, self._last = threading.Lock(), (None, None)

  def flat_map(self, element):
    index, rows = element
    with self._lock:
      if self._last[0] == index:
        return self._last[1]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    groups = [[rows[i] for i in order[j:j + self.bs]] for j in range(0, len(order), self.bs)]
    perm = np.random.default_rng((self.seed, index)).permutation(len(groups))
    groups = [groups[i] for i in perm]
    with self._lock:
      self._last = (index, groups)
    return groups


def task_batches(features: Sequence[dict], batch_size: int, buckets: Sequence[int], pad_id: int, *,
                 seed: int, group_by_length: bool = False, megabatch: int = 50) -> grain.MapDataset:
  """The endless training stream of one task, as grain transforms: the rows reshuffled every epoch
  (grain's shuffle + repeat), `batch_size` rows a batch, each batch padded to the smallest bucket
  that holds its longest row. `group_by_length`: rows are drawn `megabatch` batches at a time,
  sorted by length and cut into batches (transformers' LengthGroupedSampler), so a batch holds rows
  of similar length and pays only for its own bucket."""
  buckets = tuple(sorted(buckets))
  rows = grain.MapDataset.source(list(features)).shuffle(seed=seed).repeat()
  if group_by_length:
    mega = rows.batch(batch_size * megabatch, batch_fn=list).map_with_index(lambda i, r: (i, r))
    groups = grain.experimental.FlatMapMapDataset(mega, _LengthSorted(batch_size, megabatch, seed))
  else:
    groups = rows.batch(batch_size, batch_fn=list)
  return groups.map(functools.partial(pad_to_bucket, batch_size=batch_size, buckets=buckets,
                                      pad_id=pad_id))


def train_stream(tasks: dict, batch_size: int, buckets: Sequence[int], pad_id: int, seed: int,
                 group_by_length: bool) -> tuple[grain.IterDataset, int]:
  """The training stream of a fine-tuning run -> (an IterDataset of (task, batch), steps per epoch).

  One task: its `task_batches`. Several (MT-DNN): the tasks' streams mixed in proportion to their
  batches per epoch (grain's mix), in a random order within windows of one epoch (grain's window
  shuffle) — every task's batches at its share, in random order, as MT-DNN's merged-and-shuffled
  epochs. Its iterators are grain DatasetIterators: the engine checkpoints their position with
  grain's handler. Each yields the whole global batch (plmjax.finetune.run slices process rows)."""
  names = list(tasks)
  per_task = [num_batches(len(tasks[n].train), batch_size) for n in names]
  streams = [task_batches(tasks[n].train, batch_size, buckets, pad_id, seed=seed * 1000 + i,
                          group_by_length=group_by_length).map(functools.partial(_tagged, n))
             for i, n in enumerate(names)]
  ds = streams[0]
  if len(streams) > 1:
    ds = grain.MapDataset.mix(streams, weights=per_task)
    ds = grain.experimental.WindowShuffleMapDataset(ds, window_size=sum(per_task), seed=seed)
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)), sum(per_task)


def _tagged(name, batch):
  return name, batch


def eval_batches(features: Sequence[dict], batch_size: int, buckets: Sequence[int],
                 pad_id: int) -> grain.MapDataset:
  """One pass for evaluation: rows sorted by length (the tightest padding), the last batch filled
  with zero-weight rows so the step shape stays static."""
  order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
  rows = grain.MapDataset.source([features[i] for i in order])
  return rows.batch(batch_size, batch_fn=list).map(functools.partial(
      pad_to_bucket, batch_size=batch_size, buckets=tuple(sorted(buckets)), pad_id=pad_id))


def pad_to_bucket(rows: Sequence[dict], *, batch_size: int, buckets: Sequence[int], pad_id: int) -> dict:
  return pad_batch(rows, batch_size, bucket_of(max(len(r["input_ids"]) for r in rows), buckets), pad_id)


def num_batches(n: int, batch_size: int) -> int:
  return -(-n // batch_size)
