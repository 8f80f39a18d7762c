"""Document sources: split discovery, document splitting (blank lines, WikiText headings), the
array_record TFDS build (idempotent, no TensorFlow), catalog routing, the cached tokenizer."""
import importlib.util
import os
import sys

import pytest

from plmjax.data import sources
from plmjax.data.pipeline import default_data_config

WIKITEXT2 = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "wikitext-2")

WIKI = """ 
 = First Article = 
 
 Intro line one . 
 
 = = Section = = 
 
 Body of the first . 
 
 = Second Article = 
 
 Only line . 
"""


def cfg_for(path, tmp_path, **kw):
  cfg = default_data_config()
  cfg.path, cfg.data_dir = str(path), str(tmp_path / "cache")
  cfg.update(kw)
  return cfg


def test_split_files(tmp_path):
  for name in ("wiki.train.tokens", "wiki.valid.tokens", "dev_test.txt", "notes.md", "test.txt"):
    (tmp_path / name).write_text("x\n")
  with pytest.raises(ValueError, match="dev_test.txt.*several splits"):
    sources.split_files(str(tmp_path))
  os.remove(tmp_path / "dev_test.txt")
  assert sources.split_files(str(tmp_path)) == {
      "train": [str(tmp_path / "wiki.train.tokens")], "valid": [str(tmp_path / "wiki.valid.tokens")],
      "test": [str(tmp_path / "test.txt")]}
  assert sources.split_files(str(tmp_path / "test.txt")) == {"train": [str(tmp_path / "test.txt")]}
  with pytest.raises(FileNotFoundError, match="data.path"):
    sources.split_files(str(tmp_path / "missing"))


def test_read_documents_modes(tmp_path):
  f = tmp_path / "wiki.txt"
  f.write_text(WIKI)
  docs = sources.read_documents(str(f))                             # auto -> heading
  assert docs == ["= First Article =\nIntro line one .\n= = Section = =\nBody of the first .",
                  "= Second Article =\nOnly line ."]
  assert len(sources.read_documents(str(f), "blank")) == 6
  assert len(sources.read_documents(str(f), "line")) == 6
  g = tmp_path / "plain.txt"
  g.write_text("a b\nc d\n\n\n\ne f\n")
  assert sources.read_documents(str(g)) == ["a b\nc d", "e f"]
  with pytest.raises(ValueError, match="data.doc_split"):
    sources.read_documents(str(g), "paragraph")
  h = tmp_path / "latin1.txt"
  h.write_bytes(b"caf\xe9\n")
  with pytest.raises(ValueError, match="latin1.txt:1: not UTF-8"):
    sources.read_documents(str(h))


def test_local_build_is_idempotent_and_tf_free(tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  (corpus / "train.txt").write_text("".join(f"doc {i} line one\ndoc {i} line two\n\n" for i in range(30)))
  (corpus / "valid.txt").write_text("v one\n\nv two\n")
  cfg = cfg_for(corpus, tmp_path)
  src = sources.open_source(cfg, "train")
  assert len(src) == 30 and src[7] == {"text": "doc 7 line one\ndoc 7 line two"}   # order kept
  assert len(sources.open_source(cfg, "validation")) == 2                          # alias
  with pytest.raises(ValueError, match="available splits"):
    sources.open_source(cfg, "test")
  built = sources.local_builder(cfg).data_path
  stamp = {f: os.stat(os.path.join(built, f)).st_mtime_ns for f in os.listdir(built)}
  sources.open_source(cfg, "train")
  assert {f: os.stat(os.path.join(built, f)).st_mtime_ns for f in os.listdir(built)} == stamp
  assert any(f.endswith(".array_record-00000-of-00001") for f in stamp)
  (corpus / "valid.txt").write_text("v one\n\nv two\n\nv three\n")       # changed -> rebuilt
  assert len(sources.open_source(cfg, "valid")) == 3
  assert "tensorflow" not in sys.modules and importlib.util.find_spec("tensorflow") is None


def test_single_file_holdout(tmp_path):
  f = tmp_path / "one.txt"
  f.write_text("".join(f"doc {i}\n\n" for i in range(10)))
  cfg = cfg_for(f, tmp_path, holdout_every=4)
  valid = sources.open_source(cfg, "valid")
  assert [valid[i]["text"] for i in range(len(valid))] == ["doc 3", "doc 7"]
  assert len(sources.open_source(cfg, "train")) == 8
  cfg = cfg_for(f, tmp_path, holdout_every=0)
  with pytest.raises(ValueError, match="available splits"):
    sources.open_source(cfg, "valid")


def test_wikitext2_build(tmp_path):
  path = WIKITEXT2
  if not os.path.isdir(path):
    pytest.skip("no WikiText-2 here")
  cfg = cfg_for(path, tmp_path)
  n = {s: len(sources.open_source(cfg, s)) for s in ("train", "valid", "test")}
  assert n == {"train": 629, "valid": 60, "test": 62}
  doc = sources.open_source(cfg, "valid")[0]["text"]
  assert doc.startswith("= Homarus gammarus =\n") and "\n= = Description = =\n" in doc


def test_synthetic_source():
  cfg = default_data_config()
  cfg.synthetic.num_docs, cfg.synthetic.eval_docs = 20, 5
  src = sources.open_source(cfg, "train")
  assert len(src) == 20 and len(sources.open_source(cfg, "eval")) == 5
  assert src[0]["entity_spans"].shape[1] == 2 and src[0]["text"].count("\n") >= 2
  assert sources.corpus_tokenizer(cfg).name == "synthetic"


def test_tfds_catalog_routing(monkeypatch):
  calls = {}

  class FakeBuilder:
    class info:
      splits = {"train": None, "validation": None}

  def fake_builder(name, data_dir=None, **kw):
    calls["builder"] = (name, data_dir)
    return FakeBuilder()

  def fake_data_source(name, split, data_dir=None, **kw):
    calls["source"] = (name, split, data_dir)
    return [{"content": b"hello world"}]

  monkeypatch.setattr(sources.tfds, "builder", fake_builder)
  monkeypatch.setattr(sources.tfds, "data_source", fake_data_source)
  cfg = default_data_config()
  cfg.path, cfg.text_key, cfg.data_dir = "tfds:wikipedia/20230601.en:1.0.0", "content", "/d"
  src = sources.open_source(cfg, "valid")
  assert calls["source"] == ("wikipedia/20230601.en:1.0.0", "validation", "/d")
  assert src[0] == {"text": "hello world"}
  cfg.text_key = "text"
  with pytest.raises(KeyError, match="data.text_key"):
    sources.open_source(cfg, "train")[0]


def test_tokenizer_trained_once_and_cached(tmp_path, monkeypatch):
  corpus = tmp_path / "c.txt"
  corpus.write_text("".join(f"the cat number {i} sat on the <unk> mat\n\n" for i in range(60)))
  cfg = cfg_for(corpus, tmp_path, vocab_size=40)
  tok = sources.corpus_tokenizer(cfg)
  assert "sp_unigram_40_" in tok.name and tok.mask_id == 6
  ids, words = tok.encode_with_words("on the <unk> mat")
  assert tok.token_to_id("<unk>") == 7 and 7 in ids[words == 2]          # "<unk>" is one piece
  assert tok.decode(ids[words == 2]) == "<unk>" and len(ids[words == 2]) <= 2
  monkeypatch.setattr(sources, "train_sentencepiece", lambda *a, **k: pytest.fail("retrained"))
  assert sources.corpus_tokenizer(cfg).encode("the cat") == tok.encode("the cat")
