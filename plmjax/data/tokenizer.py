"""Tokenizers: one `Tokenizer` wrapper over sentencepiece models and Hugging Face `tokenizers`.

    tok = load_tokenizer(spec)           # a .model file, a tokenizer.json, a checkpoint folder
    ids = tok.encode("some text")        # list[int], no special tokens added
    ids, words = tok.encode_with_words("some text")   # np.int32 [n], [n]: whitespace-word index
    tok.decode(ids); tok.vocab_size; tok.pad_id, cls_id, sep_id, mask_id, bos_id, eos_id, unk_id

Training: `train_sentencepiece(files_or_lines, model_prefix, vocab_size, model_type)` writes
`<prefix>.model` with ids [PAD]=0 [UNK]=1 [BOS]=2 [EOS]=3 [CLS]=4 [SEP]=5 [MASK]=6 (then any extra
user symbols). `train_tokenizer_cli` is the same for the `plmjax` CLI.

A checkpoint folder loads, in this order: tokenizer.json; WordPiece vocab.txt (do_lower_case and
tokenize_chinese_chars honoured from tokenizer_config.json, BERT's defaults otherwise); byte-level
BPE vocab.json + merges.txt; a sentencepiece *.model. Special tokens come from
special_tokens_map.json / tokenizer_config.json when named there, else from the usual spellings
([PAD] or <pad>, ...). A missing special token is None, except `pad_id`, which falls back to
`eos_id` (GPT-2 has no pad token) and then to 0.

Word indices are whitespace words (what whole-word masking and the synthetic corpus' spans use):
a token belongs to the word holding its last character (a lone "▁"/"Ġ" belongs to the next word).
"""
from __future__ import annotations

import itertools
import json
import os
import re
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

SP_SPECIALS = dict(pad=("[PAD]", 0), unk=("[UNK]", 1), bos=("[BOS]", 2), eos=("[EOS]", 3))
SP_USER_SYMBOLS = ("[CLS]", "[SEP]", "[MASK]")
SPELLINGS = {
    "pad": ("[PAD]", "<pad>", "<|padding|>"), "unk": ("[UNK]", "<unk>", "<|unk|>"),
    "cls": ("[CLS]", "<s>", "<cls>"), "sep": ("[SEP]", "</s>", "<sep>"),
    "mask": ("[MASK]", "<mask>"), "bos": ("[BOS]", "<s>", "<|endoftext|>", "[CLS]"),
    "eos": ("[EOS]", "</s>", "<|endoftext|>", "[SEP]"),
}
_WORD = re.compile(r"\S+")


class Tokenizer:
  """A sentencepiece processor or a `tokenizers.Tokenizer`, with the special ids the objectives use."""

  def __init__(self, backend, name: str = "", special_tokens: dict[str, str] | None = None):
    self.backend, self.name = backend, name
    self._sp = isinstance(backend, spm.SentencePieceProcessor)
    if self._sp:
      self.vocab_size = backend.get_piece_size()
      pieces = [backend.id_to_piece(i) for i in range(self.vocab_size)]
      self._starts_word = np.array([p.startswith("\u2581") for p in pieces], bool)
    else:
      backend.no_padding()          # a checkpoint's tokenizer.json may pad/truncate: the pipeline does
      backend.no_truncation()
      self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
    named = special_tokens or {}
    for kind, spellings in SPELLINGS.items():
      candidates = ((named[kind],) if kind in named else ()) + spellings
      setattr(self, f"{kind}_id", next((i for i in map(self.token_to_id, candidates) if i is not None), None))
    if self.pad_id is None:
      self.pad_id = self.eos_id if self.eos_id is not None else 0
    ids = {getattr(self, f"{k}_id") for k in SPELLINGS} - {None}
    if self._sp:
      ids |= {i for i in range(self.vocab_size) if backend.is_control(i) or backend.is_unknown(i)}
      ids |= {i for i in map(self.token_to_id, SP_USER_SYMBOLS) if i is not None}
    else:
      ids |= {i for i, t in backend.get_added_tokens_decoder().items() if t.special}
    self.special_ids = tuple(sorted(ids))

  def __repr__(self):
    return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size})"

  def token_to_id(self, token: str) -> int | None:
    if self._sp:
      i = self.backend.piece_to_id(token)
      return None if i == self.backend.unk_id() and token != self.backend.id_to_piece(i) else i
    return self.backend.token_to_id(token)

  def id_to_token(self, i: int) -> str:
    return self.backend.id_to_piece(i) if self._sp else self.backend.id_to_token(i)

  def encode(self, text: str) -> list[int]:
    if self._sp:
      return self.backend.encode(text)
    return self.backend.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    if self._sp:
      return self.backend.encode(list(texts))
    return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

  def encode_with_words(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    return self.encode_lines_with_words([text])[0]

  def encode_lines_with_words(self, lines: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each line -> (ids [n], word [n]) int32, word = index of the whitespace word in the line."""
    out = []
    if self._sp:
      for ids in self.backend.encode(list(lines)):
        ids = np.asarray(ids, np.int32)
        words = np.maximum(np.cumsum(self._starts_word[ids]) - 1, 0) if len(ids) else ids
        out.append((ids, words.astype(np.int32)))
      return out
    for line, enc in zip(lines, self.backend.encode_batch(list(lines), add_special_tokens=False)):
      ends = np.array([m.end() for m in _WORD.finditer(line)], np.int64)
      last_char = np.array([e - 1 for _, e in enc.offsets], np.int64).reshape(-1)
      words = np.minimum(np.searchsorted(ends, last_char, side="right"), max(len(ends) - 1, 0))
      out.append((np.asarray(enc.ids, np.int32), words.astype(np.int32)))
    return out

  def decode(self, ids: Iterable[int]) -> str:
    ids = [int(i) for i in ids]
    return self.backend.decode(ids) if self._sp else self.backend.decode(ids, skip_special_tokens=True)


# ---- sentencepiece -----------------------------------------------------------------------------------
# sentencepiece skips longer lines (in bytes) silently, and fails with "!sentences_.empty()" when
# no line is left; train_sentencepiece counts them and names the first.
SP_MAX_SENTENCE_BYTES = 4192


class _Lines:
  """The training lines; remembers where the first too-long one came from ("FILE:LINE")."""

  def __init__(self, files_or_lines):
    self.items = [files_or_lines] if isinstance(files_or_lines, (str, os.PathLike)) else files_or_lines
    self.kept = self.too_long = 0
    self.first_too_long = ""

  def __iter__(self) -> Iterable[str]:
    from plmjax.data.textfile import text_lines
    n = 0
    for item in self.items:
      if isinstance(item, os.PathLike) or (isinstance(item, str) and os.path.isfile(item)):
        pairs = ((f"{os.fspath(item)}:{i}", ln) for i, ln in enumerate(text_lines(item, None), 1))
      else:
        n += 1
        pairs = [(f"training text line {n}", item)]
      for where, ln in pairs:
        if not ln.strip():
          continue
        if len(ln.encode()) > SP_MAX_SENTENCE_BYTES:
          self.too_long += 1
          self.first_too_long = self.first_too_long or f"{where} ({len(ln.encode()):,} bytes)"
          continue
        self.kept += 1
        yield ln


def train_sentencepiece(files_or_lines, model_prefix: str, vocab_size: int, model_type: str = "unigram",
                        *, user_defined_symbols: Sequence[str] = (), character_coverage: float = 0.9995,
                        input_sentence_size: int = 1_000_000, num_threads: int = 2) -> Tokenizer:
  """Trains `<model_prefix>.model` on files (one sentence per line) or an iterable of lines.

  Ids: [PAD]=0 [UNK]=1 [BOS]=2 [EOS]=3 [CLS]=4 [SEP]=5 [MASK]=6, then `user_defined_symbols`.
  The vocabulary may come out smaller than `vocab_size` on a tiny corpus (a soft limit)."""
  if model_type not in ("unigram", "bpe", "word", "char"):
    raise ValueError(f"model_type must be unigram, bpe, word or char, not {model_type!r}")
  os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
  lines = _Lines(files_or_lines)
  it = iter(lines)
  first = next(it, None)
  if first is None:
    if lines.too_long:
      raise ValueError(f"sentencepiece training: every line is longer than {SP_MAX_SENTENCE_BYTES} "
                       f"bytes (its max_sentence_length), the first at {lines.first_too_long}; split "
                       "the text into sentences or paragraphs, one per line")
    raise ValueError("sentencepiece training: no text (empty input)")
  spm.SentencePieceTrainer.train(
      sentence_iterator=itertools.chain([first], it), model_prefix=model_prefix, vocab_size=vocab_size,
      max_sentence_length=SP_MAX_SENTENCE_BYTES,
      model_type=model_type, character_coverage=character_coverage, hard_vocab_limit=False,
      input_sentence_size=input_sentence_size, shuffle_input_sentence=True, num_threads=num_threads,
      user_defined_symbols=list(SP_USER_SYMBOLS) + list(user_defined_symbols),
      **{f"{k}_id": i for k, (_, i) in SP_SPECIALS.items()},
      **{f"{k}_piece": p for k, (p, _) in SP_SPECIALS.items()},
      minloglevel=2)
  return load_tokenizer(model_prefix + ".model")


def train_tokenizer_cli(input_paths: Sequence[str], out_prefix: str, vocab_size: int,
                        model_type: str = "unigram") -> str:
  """`plmjax tokenizer`: trains a sentencepiece model on text files; returns the .model path."""
  missing = [p for p in input_paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"tokenizer input files not found: {missing}")
  tok = train_sentencepiece(list(input_paths), out_prefix, vocab_size, model_type)
  print(f"wrote {out_prefix}.model ({tok.vocab_size} pieces, {model_type})")
  return out_prefix + ".model"


# ---- loading -----------------------------------------------------------------------------------------
def _read_json(path: str) -> dict:
  if not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None


def _named_specials(folder: str) -> dict[str, str]:
  named = {}
  for fname in ("tokenizer_config.json", "special_tokens_map.json"):
    for k, v in _read_json(os.path.join(folder, fname)).items():
      if k.endswith("_token") and k[:-6] in SPELLINGS and v:
        named[k[:-6]] = v["content"] if isinstance(v, dict) else v
  return named


def load_tokenizer(spec: str) -> Tokenizer:
  """`spec`: a sentencepiece .model file, a tokenizer.json, or a checkpoint folder (see above)."""
  if not os.path.exists(spec):
    raise FileNotFoundError(f"tokenizer not found: {spec!r} (data.tokenizer)")
  if os.path.isfile(spec):
    if spec.endswith(".json"):
      return Tokenizer(tokenizers.Tokenizer.from_file(spec), spec,
                       _named_specials(os.path.dirname(spec)))
    sp = spm.SentencePieceProcessor()
    try:
      sp.load(spec)
    except (OSError, RuntimeError) as e:
      raise ValueError(f"{spec}: not a sentencepiece model ({e})") from None
    return Tokenizer(sp, spec)
  folder, named = spec, _named_specials(spec)
  path = lambda f: os.path.join(folder, f)
  config = _read_json(path("tokenizer_config.json"))
  if os.path.isfile(path("tokenizer.json")):
    return Tokenizer(tokenizers.Tokenizer.from_file(path("tokenizer.json")), folder, named)
  if os.path.isfile(path("vocab.txt")):
    from tokenizers.implementations import BertWordPieceTokenizer
    wp = BertWordPieceTokenizer(
        path("vocab.txt"), lowercase=config.get("do_lower_case", True),
        strip_accents=config.get("strip_accents"),
        handle_chinese_chars=config.get("tokenize_chinese_chars", True))
    return Tokenizer(wp._tokenizer, folder, named)
  if os.path.isfile(path("vocab.json")) and os.path.isfile(path("merges.txt")):
    from tokenizers.implementations import ByteLevelBPETokenizer
    bpe = ByteLevelBPETokenizer(path("vocab.json"), path("merges.txt"),
                                add_prefix_space=config.get("add_prefix_space", False))
    return Tokenizer(bpe._tokenizer, folder, named)
  sp_models = sorted(f for f in os.listdir(folder) if f.endswith(".model"))
  if sp_models:
    return load_tokenizer(path(sp_models[0]))
  raise FileNotFoundError(f"{folder}: no tokenizer.json, vocab.txt, vocab.json+merges.txt or *.model")


def wordpiece_tokenizer(vocab: Sequence[str], name: str = "wordpiece") -> Tokenizer:
  """A whitespace-split WordPiece tokenizer over an explicit vocabulary (the synthetic corpus')."""
  wp = tokenizers.Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                             max_input_chars_per_word=200))
  wp.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  wp.decoder = decoders.WordPiece()
  wp.add_special_tokens([t for t in vocab if t.startswith("[") and t.endswith("]")])
  return Tokenizer(wp, name)


def synthetic_tokenizer() -> Tokenizer:
  from plmjax.data import synthetic
  return wordpiece_tokenizer(synthetic.grammar().vocab(), "synthetic")
