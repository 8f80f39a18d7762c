"""AWD-LSTM (Merity et al., 2018), the language model ULMFiT (Howard & Ruder, 2018) pretrains,
fine-tunes on the target task's text, then turns into a classifier.

    E        = embedding_dropout(table)                  [V, E]   whole words dropped (p_embed)
    x        = locked_dropout(E[ids])                    [B, T, E]  (p_input)
    h^l      = LSTM_l(locked_dropout(h^{l-1}))           [B, T, H_l]  W_h weight-dropped (p_weight),
                                                                    H = 1150, 1150, 400; p_hidden
    logits   = locked_dropout(h^L) table^T + b           [B, T, V]  tied (H_L = E), p_output
    ar, tar  = alpha mean(dropped h^L ^2), beta mean((h^L_t - h^L_{t-1})^2)

The LSTM state is explicit: `batch["rnn_state"]` (optional) is the state the previous batch of the
same streams ended in, and `outputs["rnn_state"]` the one this batch ends in (stop-gradient:
truncated BPTT). Without it every batch starts from zeros.

Classifier (ULMFiT's concat pooling): the encoder's top states over the real tokens are pooled as

    pooled = [h^L_last; max_t h^L_t; mean_t h^L_t]       [B, 3E]

and, with `classifier_hidden` = 50 as in the paper (0 by default, so that a pretrained LM and its
classifier have the same parameters and `plmjax finetune` can load one into the other), passed through dropout, a 50-unit ReLU layer
(`outputs["pooled"]` [B, 50]); the task head (plmjax.finetune) adds dropout and the output layer.
The paper puts batch normalisation before each of the two layers; this version has none (no mutable
batch statistics in the engine). Discriminative learning rates, slanted triangular LR and gradual
unfreezing come from `plmjax.train.optim`: parameters are named so that its layer rules find
them (`embed` -> layer 0, `rnn/layers_l` -> layer l + 1, the rest -> the top).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.nn.recurrent import (LSTMStack, LSTMStackConfig, activation_regularisers,
                                 detach_state, embedding_dropout, initial_state, locked_dropout,
                                 uniform_init)

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class AwdLstmConfig:
  vocab_size: int = 60000
  embed_size: int = 400
  hidden_size: int = 1150
  num_layers: int = 3                 # the last layer has embed_size units (tied decoder)
  embed_dropout: float = 0.05         # ULMFiT: 0.4 input, 0.3 hidden, 0.05 embedding, 0.5 weight,
  input_dropout: float = 0.4          # 0.4 output (AWD-LSTM on PTB: 0.65, 0.3, 0.1, 0.5, 0.4)
  hidden_dropout: float = 0.3
  weight_drop: float = 0.5
  output_dropout: float = 0.4
  ar_alpha: float = 2.0
  tar_beta: float = 1.0
  tie_weights: bool = True
  concat_pool: bool = True            # add `pooled` (concat pooling; no params unless hidden > 0)
  classifier_hidden: int = 0          # the paper's 50-unit layer; 0: pooled is the [B, 3E] pool
  max_len: int = 1 << 30              # no positional limit (generic code asks for max_len)
  classifier_dropout: float = 0.4
  dtype: str = "float32"

  def __post_init__(self):
    if self.num_layers < 1:
      raise ValueError(f"AwdLstmConfig.num_layers={self.num_layers}: needs at least one layer")

  @property
  def lstm(self) -> LSTMStackConfig:
    sizes = (self.hidden_size,) * (self.num_layers - 1) + (self.embed_size,)
    return LSTMStackConfig(hidden_sizes=sizes, weight_drop=self.weight_drop,
                           hidden_dropout=self.hidden_dropout, dtype=self.dtype)

  def replace(self, **kw):
    return dataclasses.replace(self, **kw)


def awd_lstm(**kw) -> AwdLstmConfig:
  """ULMFiT's AWD-LSTM: 400-d embedding, 3 layers of 1150 / 1150 / 400, the paper's dropouts."""
  return AwdLstmConfig(**kw)


def last_token(h: Array, mask: Array) -> Array:
  """h [B, T, D] at the last real token of each row (right padding) -> [B, D]."""
  idx = jnp.maximum(mask.astype(jnp.int32).sum(1) - 1, 0)                        # [B]
  return jnp.take_along_axis(h, idx[:, None, None], axis=1)[:, 0]


def concat_pool(h: Array, mask: Array) -> Array:
  """ULMFiT's concat pooling over real tokens: h [B, T, D], mask [B, T] -> [B, 3D]."""
  m = mask.astype(h.dtype)[..., None]                                            # [B, T, 1]
  mx = jnp.where(m > 0, h, jnp.finfo(h.dtype).min).max(1)
  mx = jnp.where(m.sum(1) > 0, mx, 0.0)                    # an empty (padding) row pools to 0
  mean = (h * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
  return jnp.concatenate([last_token(h, mask), mx, mean], axis=-1)


class AwdLstm(nn.Module):
  """batch: input_ids [B, T], optional attention_mask [B, T], rnn_state -> {logits [B, T, V],
  hidden [B, T, E], rnn_state, ar, tar, (pooled [B, 50] with concat_pool), (hidden_states)}."""
  config: AwdLstmConfig

  @nn.compact
  def __call__(self, batch: dict, *, train: bool = False, return_hidden_states: bool = False) -> dict:
    cfg = self.config
    ids = batch["input_ids"]                                                     # [B, T]
    mask = batch.get("attention_mask")
    table = self.param("embed", nn.with_logical_partitioning(
        uniform_init(0.1), ("vocab", "embed")), (cfg.vocab_size, cfg.embed_size))   # U(-0.1, 0.1)
    key = self.make_rng("dropout") if train and cfg.embed_dropout > 0 else None
    x = jnp.take(embedding_dropout(table, cfg.embed_dropout, key), ids, axis=0)   # [B, T, E]
    x = locked_dropout(cfg.input_dropout, train)(x.astype(jnp.dtype(cfg.dtype)))
    layers, state = LSTMStack(cfg.lstm, name="rnn")(x, batch.get("rnn_state"), mask, train=train)
    top = layers[-1]                                                             # [B, T, E]
    dropped = locked_dropout(cfg.output_dropout, train)(top)
    if cfg.tie_weights:
      bias = self.param("decoder_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                        (cfg.vocab_size,))
      logits = dropped @ table.T.astype(dropped.dtype) + bias                    # [B, T, V]
    else:
      logits = nn.Dense(cfg.vocab_size, name="decoder")(dropped)
    out = {"logits": nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length", "vocab")),
           "hidden": top, "rnn_state": detach_state(state)}
    if train:
      out["ar"], out["tar"] = activation_regularisers(dropped, top, mask, cfg.ar_alpha, cfg.tar_beta)
    if cfg.concat_pool:
      m = jnp.ones(ids.shape, jnp.int32) if mask is None else mask
      pooled = concat_pool(top, m)                                               # [B, 3E]
      if cfg.classifier_hidden:
        pooled = nn.Dropout(cfg.classifier_dropout, deterministic=not train)(pooled)
        pooled = jax.nn.relu(nn.Dense(cfg.classifier_hidden, name="pool_hidden", kernel_init=(
            nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))))(pooled))
      out["pooled"] = pooled
    if return_hidden_states:
      widths = {h.shape[-1] for h in [x] + layers}
      if len(widths) > 1:
        raise ValueError(f"AwdLstm: layers have widths {sorted(widths)}; hidden_states (a scalar "
                         "mix) needs equal widths (set hidden_size = embed_size)")
      out["hidden_states"] = jnp.stack([x] + layers)                             # [L+1, B, T, E]
    return out

  def initial_state(self, batch_size: int):
    return initial_state(self.config.lstm, batch_size)
