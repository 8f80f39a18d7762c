"""CoNLL-2003 as an annotated pre-training corpus (plmjax/data/conll.py): IOB1 chunk / NER columns
-> phrase / entity spans -> the pipeline's phrase_ids / entity_ids, which ERNIE's masking keeps whole."""
import os

import jax
import jax.numpy as jnp
import numpy as np

from plmjax.data import default_data_config
from plmjax.data.conll import documents, iob1_spans, read_documents
from plmjax.data.pipeline import build_dataset
from plmjax.objectives.masking import MaskSpec, Vocab, mask_tokens

TEXT = """-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
met VBD I-VP O
it PRP B-NP O

-DOCSTART- -X- O O

New NNP I-NP I-LOC
York NNP I-NP I-LOC
Paris NNP B-NP B-LOC
"""


def write(tmp_path):
  folder = tmp_path / "conll"
  folder.mkdir()
  for name in ("eng.train", "eng.testa"):
    (folder / name).write_text(TEXT * 20 if name == "eng.train" else TEXT)
  return str(folder)


def test_iob1_spans():
  assert iob1_spans(["I-NP", "I-NP", "B-NP", "O", "I-VP", "I-NP"]) == [(0, 2, "NP"), (2, 3, "NP"), (4, 5, "VP"), (5, 6, "NP")]
  assert iob1_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [(0, 2, "PER"), (3, 4, "LOC")]     # IOB2 too


def test_documents_carry_word_spans(tmp_path):
  folder = write(tmp_path)
  docs = read_documents(os.path.join(folder, "eng.testa"))
  assert len(docs) == 2
  words = docs[0]["text"].replace("\n", " ").split()
  ents = [" ".join(words[a:b]) for a, b in docs[0]["entity_spans"]]
  phrases = [" ".join(words[a:b]) for a, b in docs[0]["phrase_spans"]]
  assert ents == ["EU", "German", "Peter Blackburn"]
  assert phrases == ["EU", "rejects", "German call", "Peter Blackburn", "met", "it"]
  w1 = docs[1]["text"].split()
  assert [" ".join(w1[a:b]) for a, b in docs[1]["entity_spans"]] == ["New York", "Paris"]
  split, dev = documents(folder, "dev")                     # eng.testa is the development split
  assert split == "valid" and len(dev) == 2 and len(documents(folder, "train")[1]) == 40


def test_pipeline_gives_phrase_and_entity_ids_that_masking_keeps_whole(tmp_path):
  cfg = default_data_config()
  cfg.path = "conll:" + write(tmp_path)
  cfg.data_dir = str(tmp_path / "cache")
  cfg.vocab_size = 60
  cfg.tokenizer_type = "char"
  ds = build_dataset(cfg, split="train", global_batch_size=4, seq_len=24, mode="pairs", seed=0)
  batch = next(iter(ds))
  tok = ds.tokenizer
  assert (batch["entity_ids"] >= 0).any() and (batch["phrase_ids"] >= 0).any()
  text = [tok.decode([i]) for i in batch["input_ids"][0]]
  vocab = Vocab(tok.vocab_size, tok.pad_id, tok.mask_id, tuple(sorted({tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id})))
  spec = MaskSpec(mask_prob=0.3, max_predictions=12, unit="entity")
  b = {k: jnp.asarray(v) for k, v in batch.items()}
  for seed in range(10):
    m = mask_tokens(b, jax.random.key(seed), spec, vocab)
    sel = np.zeros(batch["input_ids"].shape, bool)
    for r in range(sel.shape[0]):
      sel[r, np.asarray(m["masked_positions"][r])[np.asarray(m["masked_weights"][r]) > 0]] = True
    ent = batch["entity_ids"]
    for r in range(sel.shape[0]):
      for e in set(ent[r][ent[r] >= 0].tolist()):
        picked = sel[r][ent[r] == e]
        assert picked.all() or not picked.any(), (seed, r, e, text)
