"""A plmjax tokenizer -> Hugging Face tokenizer files that transformers' AutoTokenizer loads.

    write_tokenizer(tokenizer, folder)     # -> the file names written

* a `tokenizers` tokenizer (the synthetic WordPiece, a tokenizer.json, vocab.txt, byte-level BPE):
  its tokenizer.json as is;
* a sentencepiece model (what `plmjax train` trains on a real corpus): the .model is copied as
  spiece.model (plmjax's load_tokenizer reads it) and rebuilt as a tokenizer.json from its pieces
  and scores (unigram: a Unigram model; bpe: a BPE model whose merges are read off the vocabulary,
  as transformers' own sentencepiece converter does), with sentencepiece's normalisation
  (its precompiled character map, whitespace collapsing, the "▁" word prefix), user-defined
  symbols kept whole and control symbols as special tokens. The tests check the ids against
  sentencepiece's on WikiText-2 text; known differences: text spelling a named special token
  ([CLS], [SEP], [MASK]: AutoTokenizer gives its id, sentencepiece a "▁" piece before it) and, for
  BPE models only, text that starts with a user-defined symbol or with whitespace.

Both get tokenizer_config.json (tokenizer_class PreTrainedTokenizerFast, the special tokens by
name) and special_tokens_map.json. No special tokens are added on encode (plmjax's pipeline adds
[CLS] / [SEP] itself); the tokenizer files say which tokens they are.
"""
from __future__ import annotations

import json
import os
import shutil

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

SPECIAL_KINDS = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
# sentencepiece ModelProto.SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def sentencepiece_to_tokenizers(model_file: str) -> tokenizers.Tokenizer:
  """A sentencepiece unigram / BPE model -> an equivalent `tokenizers.Tokenizer`."""
  from sentencepiece import sentencepiece_model_pb2 as pb
  proto = pb.ModelProto()
  with open(model_file, "rb") as f:
    proto.ParseFromString(f.read())
  pieces = [(p.piece, p.score, p.type) for p in proto.pieces]
  unk_id = proto.trainer_spec.unk_id
  kind = proto.trainer_spec.model_type          # 1 unigram, 2 bpe, 3 word, 4 char
  byte_fallback = proto.trainer_spec.byte_fallback
  if kind == 1:
    tok = tokenizers.Tokenizer(models.Unigram([(p, s) for p, s, _ in pieces], unk_id, byte_fallback))
  elif kind == 2:
    vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
    merges = []
    for piece, _, t in pieces:       # ids follow the merge order: a merge ranks as its result
      if t != NORMAL:
        continue
      local = [(piece[:i], piece[i:]) for i in range(1, len(piece))
               if piece[:i] in vocab and piece[i:] in vocab]
      merges += sorted(local, key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
    tok = tokenizers.Tokenizer(models.BPE(vocab, merges, unk_token=pieces[unk_id][0], fuse_unk=True,
                                          byte_fallback=byte_fallback))
  else:
    raise ValueError(f"{model_file}: sentencepiece model type {kind} (word / char) has no tokenizer.json "
                     "conversion here")
  # sentencepiece normalises the whole text (character map, whitespace), prepends "▁", writes
  # spaces as "▁", then matches user-defined symbols whole. Unigram: those symbols are pieces of
  # score 0 (the highest), so the Viterbi segmentation takes them whole too. BPE: they are added
  # tokens, found in the normalised text; where the text starts with one or with whitespace, the
  # leading "▁" differs from sentencepiece's (the known differences).
  spec = proto.normalizer_spec
  norm = []
  if spec.precompiled_charsmap:
    norm.append(normalizers.Precompiled(spec.precompiled_charsmap))
  if spec.remove_extra_whitespaces:
    norm += [normalizers.Strip(left=True, right=True), normalizers.Replace(tokenizers.Regex(" {2,}"), " ")]
  if spec.add_dummy_prefix and kind == 1:
    norm.append(normalizers.Prepend("\u2581"))
  norm.append(normalizers.Replace(" ", "\u2581"))
  tok.normalizer = normalizers.Sequence(norm)
  scheme = "first" if spec.add_dummy_prefix and kind == 2 else "never"
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme,
                                               split=bool(proto.trainer_spec.split_by_whitespace))
  tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
  tok.add_special_tokens([tokenizers.AddedToken(p, special=True, normalized=False)
                          for p, _, t in pieces if t == CONTROL])
  if kind == 2:
    tok.add_tokens([tokenizers.AddedToken(p, special=False, normalized=True)
                    for p, _, t in pieces if t == USER_DEFINED])
  return tok


def write_tokenizer(tokenizer, path: str) -> list[str]:
  """Writes `tokenizer` (plmjax.data.tokenizer.Tokenizer) into the HF folder `path`; -> file names."""
  os.makedirs(path, exist_ok=True)
  specials = {f"{k}_token": tokenizer.id_to_token(getattr(tokenizer, f"{k}_id"))
              for k in SPECIAL_KINDS if getattr(tokenizer, f"{k}_id") is not None}
  files = []
  if tokenizer._sp:
    shutil.copyfile(tokenizer.name, os.path.join(path, "spiece.model"))
    files.append("spiece.model")
    backend = sentencepiece_to_tokenizers(tokenizer.name)
  else:
    backend = tokenizer.backend
  backend.save(os.path.join(path, "tokenizer.json"))
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000_000, **specials}
  for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", specials)):
    with open(os.path.join(path, name), "w", encoding="utf-8") as f:
      json.dump(content, f, indent=2)
  return files + ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
