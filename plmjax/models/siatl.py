"""SiATL (Chronopoulou et al., 2019): transfer a pretrained LSTM LM by adding a task-specific
recurrent layer with self-attention, and keep the LM objective as an auxiliary loss whose weight
decays during fine-tuning.

    lm        = the pretrained LSTM LM over the text  (AWD-LSTM here: embedding, LSTM stack, tied
                softmax; `plmjax.models.awd_lstm`)     logits [B, T, V], top states h [B, T, E]
    u         = LSTM_task(dropout(h))                  [B, T, U]   new, randomly initialised
    e_t       = v^T tanh(W u_t + b)                    [B, T]      self-attention scores (padding -inf)
    a         = softmax_t(e)                           [B, T]
    pooled    = sum_t a_t u_t                          [B, U]      -> task head (dropout, dense)

    L = L_task + gamma_n L_LM,   gamma_n = gamma_0 * decay ** n   (n = epoch; exponential decay)

(`aux_lm_weight`; `plmjax finetune` computes it from the step counter inside the jitted step:
head.lm_coef = gamma_0, head.lm_coef_decay, head.lm_decay_every; experiments/rnn_finetune.py.)
`from_awd_lstm` puts a pretrained AWD-LSTM LM (a ULMFiT run) inside SiATL (model.wrap = "siatl").

Sequential unfreezing (the paper): first only the new layers train, then the pretrained LSTM layers
join, then the embedding. Here it is `plmjax.train.optim`'s gradual unfreezing over the layer
ids embed -> 0, lm/rnn/layers_l -> l + 1, task layers -> top, which thaws the pretrained LSTM layers
one at a time from the top before the embedding.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.models.awd_lstm import AwdLstm, AwdLstmConfig
from plmjax.nn.recurrent import LSTM

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SiatlConfig:
  vocab_size: int = 50000
  embed_size: int = 400
  hidden_size: int = 1000
  num_layers: int = 2
  embed_dropout: float = 0.1
  input_dropout: float = 0.2
  hidden_dropout: float = 0.2
  weight_drop: float = 0.0
  output_dropout: float = 0.2
  classifier: bool = True             # False: the LM alone (pretraining)
  task_hidden: int = 100              # the added task-specific LSTM
  task_dropout: float = 0.3
  max_len: int = 1 << 30              # no positional limit
  dtype: str = "float32"

  @property
  def lm(self) -> AwdLstmConfig:
    return AwdLstmConfig(vocab_size=self.vocab_size, embed_size=self.embed_size,
                         hidden_size=self.hidden_size, num_layers=self.num_layers,
                         embed_dropout=self.embed_dropout, input_dropout=self.input_dropout,
                         hidden_dropout=self.hidden_dropout, weight_drop=self.weight_drop,
                         output_dropout=self.output_dropout, ar_alpha=0.0, tar_beta=0.0,
                         concat_pool=False, dtype=self.dtype)

  def replace(self, **kw):
    return dataclasses.replace(self, **kw)


def siatl(**kw) -> SiatlConfig:
  """The paper's shape: word embeddings 400, a 2-layer LSTM LM, a task LSTM with self-attention."""
  return SiatlConfig(**kw)


class SelfAttentionPool(nn.Module):
  """u [B, T, U], mask [B, T] -> (pooled [B, U], weights [B, T])."""

  @nn.compact
  def __call__(self, u: Array, mask: Array):
    k = u.shape[-1]
    init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))
    e = nn.Dense(1, name="score", kernel_init=init)(jnp.tanh(nn.Dense(k, name="proj", kernel_init=init)(u)))
    e = jnp.where(mask > 0, e[..., 0].astype(jnp.float32), -1e9)                # [B, T]
    a = jax.nn.softmax(e, axis=-1)
    return jnp.einsum("bt,btu->bu", a.astype(u.dtype), u), a


class Siatl(nn.Module):
  """batch: input_ids, attention_mask [B, T] -> {logits [B, T, V] (the LM), hidden [B, T, E],
  pooled [B, U] and attention [B, T] (with classifier)}."""
  config: SiatlConfig

  @nn.compact
  def __call__(self, batch: dict, *, train: bool = False, return_hidden_states: bool = False) -> dict:
    cfg = self.config
    out = AwdLstm(cfg.lm, name="lm")(batch, train=train)
    if not cfg.classifier:
      return out
    mask = batch.get("attention_mask")
    mask = jnp.ones(batch["input_ids"].shape, jnp.int32) if mask is None else mask
    h = nn.Dropout(cfg.task_dropout, deterministic=not train)(out["hidden"])
    u, _ = LSTM(cfg.task_hidden, dtype=jnp.dtype(cfg.dtype), name="task_lstm")(h, None, mask,
                                                                               train=train)
    out["pooled"], out["attention"] = SelfAttentionPool(name="attention")(u, mask)
    return out


def aux_lm_weight(epoch, gamma0: float = 0.2, decay: float = 0.5):
  """gamma_n = gamma0 * decay ** n: the auxiliary LM loss weight in epoch n (exponential decay)."""
  return gamma0 * decay ** jnp.asarray(epoch, jnp.float32)


def from_awd_lstm(lm: AwdLstmConfig, **task) -> SiatlConfig:
  """SiATL around a pretrained AWD-LSTM LM (a ULMFiT run): the LM's fields, the classifier on,
  `task` (task_hidden, task_dropout, ...) on top. Its params are {"lm": the AWD-LSTM's params}."""
  if not lm.tie_weights:
    raise ValueError("SiATL's LM has a tied decoder; this AWD-LSTM has tie_weights=False")
  shared = {f.name: getattr(lm, f.name) for f in dataclasses.fields(SiatlConfig)
            if hasattr(lm, f.name) and f.name != "classifier"}
  return SiatlConfig(**{**shared, "classifier": True, **task})
