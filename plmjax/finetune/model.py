"""Task models: a pretrained encoder with one head per task, and the task losses.

    model = TaskModel(encoder, heads=(HeadSpec("sst2", "classification", 2),), pooling="pooler")
    params = {"encoder": pretrained, "heads": {"sst2": ...}, ["scalar_mix": ...]}
    out = model.apply({"params": params}, batch, task="sst2", train=True, rngs={"dropout": key})
    loss, metrics = task_loss(spec_kind, out, batch, lm_coef)

The encoder is any plmjax model whose call takes the batch dict and returns `hidden` [B, T, E]
(and `pooled`, `hidden_states` [L+1, B, T, E] with return_hidden_states=True, `logits` [B, T, V]
for a causal LM). Heads, by kind:

    classification   pooled [B, E] -> dropout -> dense -> logits [B, C]        cross-entropy
    regression       pooled [B, E] -> dropout -> dense -> score [B]             squared error
    tagging          hidden [B, T, E] -> dropout -> dense -> logits [B, T, C]   CE on label_mask
    span             hidden [B, T, E] -> dense -> start, end logits [B, T]      CE on start + end

Pooling (`pooling`): "pooler" (BERT's tanh pooler), "cls" (h[:, 0]), "mean" (over real tokens),
"extract" (h at batch["extract"], GPT-1's extract token).

Features (`features`): "last" uses the top layer; "scalar_mix" (ELMo) feeds the heads with
gamma * sum_j softmax(w)_j h_j over the L+1 hidden states, w and gamma learned.
`freeze_encoder` runs the encoder without dropout under stop_gradient (feature extraction: no
backward pass through it; the optimizer also leaves it untouched, see plmjax.train.optim).

GPT-1's auxiliary LM objective (Radford et al. 2018, eq. 5): L = L_task + lm_coef * L_LM, with
L_LM the next-token loss over the framed input (needs the encoder's `logits`); `lm_coef` 0.5.
SiATL's (Chronopoulou et al. 2019) weight decays: gamma_n = lm_coef * decay ** (step // every)
(`aux_lm_schedule`, computed from the step counter inside the jitted step).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from plmjax.models.siatl import aux_lm_weight
from plmjax.nn.heads import gather_positions, mean_pool

Array = jax.Array
KINDS = ("classification", "regression", "tagging", "span")


@dataclasses.dataclass(frozen=True)
class HeadSpec:
  name: str             # task name (multi-task models have several)
  kind: str             # one of KINDS
  num_labels: int = 2


def _dense(features: int, axes=("embed", "classes"), name: Optional[str] = None) -> nn.Dense:
  return nn.Dense(features, name=name,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]))


class ScalarMix(nn.Module):
  """ELMo's scalar mix: layers [K, ...] -> gamma * sum_k softmax(w)_k layers[k]  ([...])."""

  @nn.compact
  def __call__(self, layers: Array) -> Array:
    k = layers.shape[0]
    w = self.param("weights", nn.with_logical_partitioning(nn.initializers.zeros, ("layers",)), (k,))
    gamma = self.param("gamma", nn.with_logical_partitioning(nn.initializers.ones, ()), ())
    s = jax.nn.softmax(w).astype(layers.dtype)
    return gamma * jnp.tensordot(s, layers, axes=1)


class Head(nn.Module):
  spec: HeadSpec
  dropout: float = 0.1

  @nn.compact
  def __call__(self, pooled: Array, hidden: Array, batch: dict, train: bool) -> dict:
    kind, drop = self.spec.kind, nn.Dropout(self.dropout, deterministic=not train)
    if kind == "classification":
      return {"logits": _dense(self.spec.num_labels)(drop(pooled)).astype(jnp.float32)}     # [B, C]
    if kind == "regression":
      return {"score": _dense(1)(drop(pooled))[:, 0].astype(jnp.float32)}                  # [B]
    if kind == "tagging":
      return {"logits": _dense(self.spec.num_labels)(drop(hidden)).astype(jnp.float32)}    # [B, T, C]
    if kind == "span":
      se = _dense(2)(hidden).astype(jnp.float32)                                           # [B, T, 2]
      neg = jnp.where(batch["context_mask"] > 0, 0.0, -1e9)
      return {"start_logits": se[..., 0] + neg, "end_logits": se[..., 1] + neg}
    raise ValueError(f"head kind {kind!r}: expected one of {KINDS}")


class TaskModel(nn.Module):
  encoder: nn.Module
  heads: tuple                  # HeadSpec, ...
  pooling: str = "pooler"
  features: str = "last"        # "last" | "scalar_mix"
  freeze_encoder: bool = False
  dropout: float = 0.1
  lm_aux: bool = False          # keep the encoder's LM logits (GPT-1 auxiliary loss)

  def setup(self):
    if self.pooling not in ("pooler", "cls", "mean", "extract"):
      raise ValueError(f"head.pooling={self.pooling!r}: expected pooler, cls, mean or extract")
    if self.features not in ("last", "scalar_mix"):
      raise ValueError(f"features={self.features!r}: expected 'last' or 'scalar_mix'")
    if self.features == "scalar_mix" and self.pooling == "pooler":
      raise ValueError("head.pooling='pooler' reads the top layer only; with a scalar mix use "
                       "'cls', 'mean' or 'extract'")
    self.head_modules = {h.name: Head(h, self.dropout, name=f"head_{h.name}") for h in self.heads}
    if self.features == "scalar_mix":
      self.mix = ScalarMix(name="scalar_mix")

  def _features(self, batch: dict, train: bool):
    mix = self.features == "scalar_mix"
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    out = self.encoder(inputs, train=train and not self.freeze_encoder, return_hidden_states=mix)
    if self.freeze_encoder:
      out = jax.lax.stop_gradient(out)
    hidden = self.mix(out["hidden_states"]) if mix else out["hidden"]                # [B, T, E]
    if self.pooling == "pooler":
      if "pooled" not in out:
        raise ValueError("head.pooling='pooler' but the encoder has no pooler; use 'cls' or 'mean'")
      pooled = out["pooled"]
    elif self.pooling == "cls":
      pooled = hidden[:, 0]
    elif self.pooling == "mean":
      pooled = mean_pool(hidden, batch["attention_mask"])
    else:
      pooled = gather_positions(hidden, batch["extract"][:, None])[:, 0]              # [B, E]
    return out, hidden, pooled

  def __call__(self, batch: dict, *, task: str, train: bool = False) -> dict:
    out, hidden, pooled = self._features(batch, train)
    res = self.head_modules[task](pooled, hidden, batch, train)
    if self.lm_aux:
      res["lm_logits"] = out["logits"]                                                # [B, T, V]
    return res

  def init_all(self, batch: dict) -> dict:
    """Touches every head (init: `model.init(key, batch, method=TaskModel.init_all)`)."""
    out, hidden, pooled = self._features(batch, False)
    return {name: m(pooled, hidden, batch, False) for name, m in self.head_modules.items()}


# ---- losses -----------------------------------------------------------------------------------------
def _mean(x: Array, w: Array) -> Array:
  return (x * w).sum() / jnp.maximum(w.sum(), 1.0)


def lm_loss(logits: Array, batch: dict) -> Array:
  """Next-token cross-entropy over the real tokens: logits [B, T, V], batch input_ids [B, T]."""
  ids, mask = batch["input_ids"], batch["attention_mask"]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], ids[:, 1:])   # [B, T-1]
  w = (mask[:, 1:] * batch["weights"][:, None]).astype(jnp.float32)
  return _mean(ce, w)


def task_loss(kind: str, out: dict, batch: dict, lm_coef=None) -> tuple[Array, dict]:
  """-> (scalar loss, {name: scalar}). Rows with weights 0 (batch padding) do not count.

  lm_coef: None (no auxiliary LM loss) or its weight, a float or a traced scalar (SiATL's weight
  decays with the step: `aux_lm_schedule`); adds metrics lm_loss and lm_coef."""
  w = batch["weights"]                                                                 # [B]
  if kind == "classification":
    ce = optax.softmax_cross_entropy_with_integer_labels(out["logits"], batch["label"])
    loss = _mean(ce, w)
    metrics = {"accuracy": _mean((out["logits"].argmax(-1) == batch["label"]).astype(jnp.float32), w)}
  elif kind == "regression":
    loss = _mean((out["score"] - batch["label"]) ** 2, w)
    metrics = {}
  elif kind == "tagging":
    ce = optax.softmax_cross_entropy_with_integer_labels(out["logits"], batch["labels"])   # [B, T]
    tw = batch["label_mask"].astype(jnp.float32) * w[:, None]
    loss = _mean(ce, tw)
    metrics = {"token_accuracy": _mean((out["logits"].argmax(-1) == batch["labels"]).astype(jnp.float32), tw)}
  elif kind == "span":
    ce_s = optax.softmax_cross_entropy_with_integer_labels(out["start_logits"], batch["start"])
    ce_e = optax.softmax_cross_entropy_with_integer_labels(out["end_logits"], batch["end"])
    loss = _mean((ce_s + ce_e) / 2, w)
    metrics = {}
  else:
    raise ValueError(f"head kind {kind!r}: expected one of {KINDS}")
  metrics["task_loss"] = loss
  if lm_coef is not None:
    aux = lm_loss(out["lm_logits"], batch)
    metrics["lm_loss"], metrics["lm_coef"] = aux, jnp.asarray(lm_coef, jnp.float32)
    loss = loss + lm_coef * aux
  return loss, metrics


def aux_lm_schedule(lm_coef: float, decay: float = 1.0, every: int = 1):
  """-> None (no auxiliary LM loss: lm_coef 0) or step -> weight, traced inside the jitted step.

  GPT-1: a constant lm_coef (decay 1). SiATL: gamma_n = lm_coef * decay ** n with n = step // every
  (plmjax.models.siatl.aux_lm_weight; the paper's n is the epoch)."""
  if not lm_coef:
    return None
  return lambda step: aux_lm_weight(jnp.asarray(step) // max(int(every), 1), float(lm_coef), float(decay))


def predictions(kind: str, out: dict) -> dict:
  """Device-side predictions to bring back to the host for metrics."""
  if kind == "classification":
    return {"pred": out["logits"].argmax(-1)}
  if kind == "regression":
    return {"pred": out["score"]}
  if kind == "tagging":
    return {"pred": out["logits"].argmax(-1)}
  return {"start_logits": out["start_logits"], "end_logits": out["end_logits"]}


class TaskObjective:
  """Fine-tuning under the objective contract (plmjax.objectives.base), so that a task run goes
  through the engine's one train step: `prepare` passes the task batch through and names the head
  (`apply_kwargs`, the static task of a multi-task run), `loss` is `task_loss` with the auxiliary
  LM weight of the step (GPT-1 constant, SiATL decaying), `predictions` what the host scores."""
  uses_step = True
  uses_task = True

  def __init__(self, kinds: dict, lm_weight=None):
    self.kinds, self.lm_weight = dict(kinds), lm_weight     # {task: head kind}, step -> weight

  def prepare(self, batch: dict, key, step=None, task=None) -> dict:
    del key                                                   # no sampling: the batch is the task
    task = task if task is not None else next(iter(self.kinds))
    lm_coef = None
    if self.lm_weight is not None:
      lm_coef = self.lm_weight(jnp.zeros([], jnp.int32) if step is None else step)
    return {"inputs": batch, "apply_kwargs": {"task": task}, "task": task, "lm_coef": lm_coef}

  def loss(self, outputs: dict, prepared: dict):
    return task_loss(self.kinds[prepared["task"]], outputs, prepared["inputs"], prepared["lm_coef"])

  def predictions(self, outputs: dict, prepared: dict) -> dict:
    return predictions(self.kinds[prepared["task"]], outputs)
