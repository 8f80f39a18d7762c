"""ELMo (Peters et al., 2018): a bidirectional language model of two directional LSTM LMs, and its
layers as features for downstream tasks.

    x_t      = CharCNN(chars of token t)                 [B, T, P]   context-independent, shared
    f^l_t    = forward LSTM layer l over x_1..x_t        [B, T, P]   (4096 cells projected to 512)
    b^l_t    = backward LSTM layer l over x_t..x_T       [B, T, P]
    p(x_{t+1} | x_1..x_t) = softmax(W f^L_t)             logits_fwd  [B, T, V]
    p(x_{t-1} | x_t..x_T) = softmax(W b^L_t)             logits_bwd  [B, T, V]   (W shared)

The two directions share the token representation and the softmax, and nothing else: layer l + 1 of
the forward LM reads only f^l, the backward only b^l, and each direction predicts from its own top
state. That separation is what makes the objective a language model. `mix_directions=True` builds
the "leaky" alternative the survey warns about, a deep BiLSTM whose layers read [f^l; b^l] and which
predicts from [f^L; b^L]: the backward half at t has already read x_{t+1}, so the next-word loss can
go to zero by copying (`experiments/label_leakage.py` measures it).

Features for a downstream task are the L + 1 layers h^0 = [x; x], h^l = [f^l; b^l] (`hidden_states`
[L+1, B, T, 2P]), combined by a learned scalar mix gamma * sum_l softmax(s)_l h^l
(`plmjax.finetune.model.ScalarMix`, `features="scalar_mix"`).

Tokens become characters through `char_vocab` (the token strings, index = token id: a constant
lookup table) or come as `char_ids` [B, T, C] in the batch. `token_encoder="embed"` replaces the
character CNN by a plain embedding table (fast word-level experiments). The original model has a
793,471-word softmax trained with sampled softmax; here the softmax is full (small vocabularies).
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from plmjax.nn.char_cnn import ELMO_FILTERS, NUM_CHARS, CharCNN, char_ids_for_tokens
from plmjax.nn.embeddings import token_embed
from plmjax.nn.recurrent import LSTMStack, LSTMStackConfig

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ElmoConfig:
  vocab_size: int = 793471
  token_encoder: str = "char_cnn"     # "char_cnn" | "embed"
  char_vocab: tuple = ()              # token strings by id (char_cnn without batch["char_ids"])
  max_chars: int = 50
  char_dim: int = 16
  filters: tuple = ELMO_FILTERS
  num_highway: int = 2
  proj_size: int = 512                # token representation and LSTM projection width
  hidden_size: int = 4096             # LSTM cells
  num_layers: int = 2
  cell_clip: float = 3.0
  proj_clip: float = 3.0
  residual: bool = True               # skip connection from layer 1 to layer 2
  dropout_rate: float = 0.1
  mix_directions: bool = False        # True: the leaky deep BiLSTM (see the module docstring)
  max_len: int = 1 << 30              # no positional limit
  dtype: str = "float32"

  def __post_init__(self):
    # configs read back from JSON hold lists; the module needs hashable tuples
    object.__setattr__(self, "char_vocab", tuple(self.char_vocab))
    object.__setattr__(self, "filters", tuple(tuple(f) for f in self.filters))
    if self.token_encoder not in ("char_cnn", "embed"):
      raise ValueError(f"ElmoConfig.token_encoder={self.token_encoder!r}: expected 'char_cnn' or 'embed'")
    if self.char_vocab and len(self.char_vocab) != self.vocab_size:
      raise ValueError(f"ElmoConfig.char_vocab has {len(self.char_vocab)} tokens but "
                       f"vocab_size={self.vocab_size}")

  def replace(self, **kw):
    return dataclasses.replace(self, **kw)

  @property
  def lstm(self) -> LSTMStackConfig:
    return LSTMStackConfig(hidden_sizes=(self.hidden_size,) * self.num_layers, proj_size=self.proj_size,
                           cell_clip=self.cell_clip, proj_clip=self.proj_clip, residual=self.residual,
                           hidden_dropout=self.dropout_rate, bidirectional=True,
                           mix_directions=self.mix_directions, dtype=self.dtype)


def elmo_original(**kw) -> ElmoConfig:
  """The paper's model (bilm-tf options): 2048 char filters, 2 highway, 2 x LSTM 4096 -> 512."""
  return ElmoConfig(**kw)


@functools.lru_cache(maxsize=8)
def _char_table(char_vocab: tuple, max_chars: int) -> np.ndarray:
  return char_ids_for_tokens(char_vocab, max_chars)                             # [V, C]


class Elmo(nn.Module):
  """batch: input_ids [B, T], optional attention_mask [B, T], char_ids [B, T, C]
  -> {logits_fwd, logits_bwd [B, T, V], hidden [B, T, 2P], hidden_states [L+1, B, T, 2P] (with
  return_hidden_states), token_repr [B, T, P]}."""
  config: ElmoConfig

  def token_representation(self, batch: dict) -> Array:
    cfg = self.config
    ids = batch["input_ids"]
    if cfg.token_encoder == "embed":
      return token_embed(cfg.vocab_size, cfg.proj_size, 1.0, name="token_embed")(ids)
    if "char_ids" in batch:
      chars = batch["char_ids"]
    elif cfg.char_vocab:
      chars = jnp.asarray(_char_table(cfg.char_vocab, cfg.max_chars))[ids]       # [B, T, C]
    else:
      raise ValueError("Elmo with token_encoder='char_cnn' needs batch['char_ids'] or "
                       "config.char_vocab (the token strings) to spell its tokens")
    return CharCNN(cfg.proj_size, cfg.char_dim, cfg.filters, cfg.num_highway, NUM_CHARS,
                   dtype=jnp.dtype(cfg.dtype), name="char_cnn")(chars)

  @nn.compact
  def __call__(self, batch: dict, *, train: bool = False, return_hidden_states: bool = False) -> dict:
    cfg = self.config
    mask = batch.get("attention_mask")
    x = self.token_representation(batch)                                         # [B, T, P]
    drop = nn.Dropout(cfg.dropout_rate, deterministic=not train)
    layers, _ = LSTMStack(cfg.lstm, name="bilm")(drop(x), None, mask, train=train)  # L x [B, T, 2P]
    top = layers[-1]
    if cfg.mix_directions:     # each prediction reads both directions: the backward half leaks
      fwd = nn.Dense(cfg.proj_size, name="mix_fwd")(top)
      bwd = nn.Dense(cfg.proj_size, name="mix_bwd")(top)
    else:                      # each direction predicts from its own top state only
      fwd, bwd = jnp.split(top, 2, axis=-1)                                      # [B, T, P] each
    softmax = nn.Dense(cfg.vocab_size, name="softmax", kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ("embed", "vocab")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)))
    out = {"token_repr": x, "hidden": top,
           "logits_fwd": softmax(drop(fwd)).astype(jnp.float32),                # [B, T, V]
           "logits_bwd": softmax(drop(bwd)).astype(jnp.float32)}
    if return_hidden_states:
      out["hidden_states"] = jnp.stack([jnp.concatenate([x, x], -1)] + layers)   # [L+1, B, T, 2P]
    return out
