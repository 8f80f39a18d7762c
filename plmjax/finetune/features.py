"""From examples to padded batches: input framing, truncation, length bucketing.

    framing  = Framing.bert(tok)  or  Framing.gpt(start, delim, extract, pad)
    features = encode_sentences(examples, tok, framing, max_len)        # list of per-row dicts
    for batch in batches(features, batch_size, buckets, pad_id, shuffle=True, seed=s): ...

Framing is how a text (pair) becomes one sequence:

    BERT   [CLS] a [SEP]            [CLS] a [SEP] b [SEP]      token types 0.. / 1..
    GPT-1  <s> a <e>                <s> a $ b <e>              (Radford et al. 2018, Fig. 1)

`extract` is the position of the last framing token, where GPT-1's classifier reads the sequence;
pairs are truncated longest-first to fit `max_len`.

Length bucketing: a batch is padded to the smallest bucket length that holds its longest row, so a
run compiles at most len(buckets) step shapes while short rows do not pay for `max_len`. With
`group_by_length` rows are first assigned to their bucket and batches are drawn within a bucket
(shuffled inside each bucket, batch order shuffled across buckets; rows left over in a bucket move
up to the next one), so each batch pays only for its own length range. The last batch of an epoch
is padded with zero-weight rows (`weights` [B]) so that the batch shape stays static.

A feature is a dict of 1-D int arrays of the row's length (`input_ids`, `token_type_ids`, and for
tagging `labels` / `label_mask`, for spans `context_mask`) plus scalars (`label`, `extract`,
`start`, `end`, `index`). Batches: the same keys, [B, T] or [B], plus `attention_mask` [B, T] and
`weights` [B].
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

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


def batches(features: Sequence[dict], batch_size: int, buckets: Sequence[int], pad_id: int, *,
            shuffle: bool = False, seed: int = 0, group_by_length: bool = False,
            drop_remainder: bool = False) -> Iterator[dict]:
  """One epoch of padded batches (see the module docstring)."""
  buckets = sorted(buckets)
  lengths = np.array([len(f["input_ids"]) for f in features])
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(features)) if shuffle else np.arange(len(features))
  if not group_by_length:
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
  else:
    if not shuffle:   # evaluation: sort by length, the tightest padding
      order = order[np.argsort(lengths[order], kind="stable")]
      groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    else:
      groups, carry = [], np.zeros((0,), np.int64)
      for b in buckets:
        lo = buckets[buckets.index(b) - 1] if buckets.index(b) else 0
        rows = np.concatenate([carry, order[(lengths[order] > lo) & (lengths[order] <= b)]])
        full = len(rows) // batch_size * batch_size
        groups += [rows[i:i + batch_size] for i in range(0, full, batch_size)]
        carry = rows[full:]
      if len(carry):
        groups.append(carry)
      groups = [groups[i] for i in rng.permutation(len(groups))]
  for g in groups:
    if drop_remainder and len(g) < batch_size:
      continue
    length = bucket_of(int(lengths[g].max()), buckets)
    yield pad_batch([features[i] for i in g], batch_size, length, pad_id)


def num_batches(n: int, batch_size: int, drop_remainder: bool = False) -> int:
  return n // batch_size if drop_remainder else -(-n // batch_size)


class TaskBatches:
  """The training stream of a fine-tuning run, as a checkpointable iterator (the engine saves its
  position with grain's checkpoint handler: get_state / set_state / start_prefetch).

  Epoch e is `batches(...)` of every task shuffled with seed * 1000 + e (multi-task: all batches of
  all tasks in one random order, MT-DNN's schedule); every epoch has the same number of batches, so
  the position (batches consumed) alone says where a resumed run continues. Yields (task, batch):
  the whole global batch on every process (plmjax.finetune.run slices each process' rows)."""

  def __init__(self, tasks: dict, batch_size: int, buckets, pad_id: int, seed: int,
               group_by_length: bool):
    self.tasks, self.bs, self.buckets, self.pad = tasks, batch_size, tuple(buckets), pad_id
    self.seed, self.group = int(seed), bool(group_by_length)
    self.steps_per_epoch = sum(num_batches(len(td.train), batch_size) for td in tasks.values())
    self.position, self._epoch, self._plan = 0, None, []

  def _plan_of(self, epoch: int) -> list:
    plan = [(name, b) for name, td in self.tasks.items()
            for b in batches(td.train, self.bs, self.buckets, self.pad, shuffle=True,
                             seed=self.seed * 1000 + epoch, group_by_length=self.group)]
    if len(self.tasks) > 1:
      plan = [plan[i] for i in np.random.default_rng(self.seed + epoch).permutation(len(plan))]
    return plan

  def __iter__(self):
    return self

  def __next__(self):
    epoch, i = divmod(self.position, self.steps_per_epoch)
    if epoch != self._epoch:
      self._epoch, self._plan = epoch, self._plan_of(epoch)
    self.position += 1
    return self._plan[i]

  def get_state(self) -> bytes:
    import json
    return json.dumps({"position": self.position}).encode()

  def set_state(self, state: bytes) -> None:
    import json
    self.position = int(json.loads(state)["position"])

  def start_prefetch(self) -> None:
    """(grain's restore calls it; batches are built on demand.)"""
