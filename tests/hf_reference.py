"""Builders of small random-weight transformers (PyTorch) models, the references for parity tests.

Every parameter (LayerNorm and biases included) is re-drawn from N(0, 0.2²), so a mapping that
swaps or drops any weight shows up as a large difference.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need the test extra: pip install -e '.[test]'")
transformers = pytest.importorskip("transformers")

SMALL = dict(hidden=32, layers=2, heads=4, mlp=64, vocab=120, positions=40)


def randomize(model, seed: int = 0):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=g) * 0.2)
  model.eval()
  return model


def bert_config(**kw):
  s = SMALL
  return transformers.BertConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                                 num_attention_heads=s["heads"], intermediate_size=s["mlp"],
                                 max_position_embeddings=s["positions"], **kw)


def roberta_config(**kw):
  s = SMALL
  return transformers.RobertaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                                    num_attention_heads=s["heads"], intermediate_size=s["mlp"],
                                    max_position_embeddings=s["positions"] + 2, type_vocab_size=1,
                                    pad_token_id=1, **kw)


def gpt1_config(**kw):
  s = SMALL
  return transformers.OpenAIGPTConfig(vocab_size=s["vocab"], n_embd=s["hidden"], n_layer=s["layers"],
                                      n_head=s["heads"], n_positions=s["positions"], **kw)


def gpt2_config(**kw):
  s = SMALL
  return transformers.GPT2Config(vocab_size=s["vocab"], n_embd=s["hidden"], n_layer=s["layers"],
                                 n_head=s["heads"], n_positions=s["positions"], n_inner=s["mlp"], **kw)


def save(model, path, safe: bool = True) -> str:
  # Tied weights are shared tensors; re-tie after randomisation so the checkpoint is consistent.
  if hasattr(model, "tie_weights"):
    model.tie_weights()
  model.save_pretrained(path, safe_serialization=safe)
  return str(path)


def random_batch(seed: int, batch: int = 3, length: int = 12, vocab: int = SMALL["vocab"],
                 pad_id: int = 0, two_segments: bool = True):
  """ids with right padding (row r has length - 3r real tokens) and two segments."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab, size=(batch, length)).astype(np.int64)
  mask = np.ones((batch, length), np.int64)
  for r in range(batch):
    n = length - 3 * r
    mask[r, n:] = 0
    ids[r, n:] = pad_id
  tt = np.zeros_like(ids)
  if two_segments:
    tt[:, length // 2:] = 1
    tt *= mask
  return ids, mask, tt
