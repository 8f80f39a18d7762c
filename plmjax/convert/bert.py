"""BERT / RoBERTa checkpoints (BertModel, BertForMaskedLM, BertForPreTraining, RobertaModel,
RobertaForMaskedLM) -> plmjax `Bert`.

Which heads the imported model has follows the weights present: pooler, MLM head (`cls.predictions`
or `lm_head`), NSP head (`cls.seq_relationship`).
"""
from __future__ import annotations

import jax.numpy as jnp

from plmjax.convert.hf import (CheckpointError, StateMapper, activation, heads_in, heads_out,
                               linear, register)
from plmjax.models.bert import Bert, BertConfig

IGNORED = [r"embeddings\.position_ids", r"embeddings\.token_type_ids"]


def _ln(m: StateMapper, hf: str, ours: str, out: dict | None = None):
  """LayerNorm weight/bias (or TF-era gamma/beta) -> scale/bias."""
  put = (lambda k, v: out.__setitem__(k, v)) if out is not None else m.put
  put(f"{ours}/scale", m.get(f"{hf}.weight", f"{hf}.gamma"))
  put(f"{ours}/bias", m.get(f"{hf}.bias", f"{hf}.beta"))


def _dense(m: StateMapper, hf: str, ours: str, out: dict | None = None):
  put = (lambda k, v: out.__setitem__(k, v)) if out is not None else m.put
  put(f"{ours}/kernel", linear(m.get(f"{hf}.weight")))
  put(f"{ours}/bias", m.get(f"{hf}.bias"))


def bert_config_from_hf(c: dict, **overrides) -> dict:
  if c.get("position_embedding_type", "absolute") != "absolute":
    raise CheckpointError(f"config.json: position_embedding_type={c['position_embedding_type']!r} "
                          "is not supported (only 'absolute')")
  roberta = c["model_type"] in ("roberta", "xlm-roberta")
  return {**dict(
      vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_layers=c["num_hidden_layers"],
      num_heads=c["num_attention_heads"], mlp_dim=c["intermediate_size"],
      max_len=c["max_position_embeddings"], type_vocab_size=c.get("type_vocab_size", 2),
      activation=activation(c.get("hidden_act", "gelu"), "config.json hidden_act"),
      ln_eps=c.get("layer_norm_eps", 1e-12), dropout_rate=c.get("hidden_dropout_prob", 0.1),
      attention_dropout_rate=c.get("attention_probs_dropout_prob", 0.1),
      init_std=c.get("initializer_range", 0.02), pad_token_id=c.get("pad_token_id") or 0,
      padding_offset_positions=roberta), **overrides}


@register("bert", "roberta")
def convert_bert(c: dict, state: dict, *, dtype: str = "float32", **overrides):
  m = StateMapper(state, prefixes=("bert.", "roberta."), ignore=IGNORED)
  roberta = c["model_type"] == "roberta"
  mlm_prefix = "lm_head" if roberta else "cls.predictions"
  mlm_transform = "lm_head.dense" if roberta else "cls.predictions.transform.dense"
  mlm_ln = "lm_head.layer_norm" if roberta else "cls.predictions.transform.LayerNorm"
  cfg = BertConfig(**bert_config_from_hf(c, dtype=dtype, **{
      "pooler": m.has("pooler.dense.weight"),
      "mlm_head": m.has(f"{mlm_transform}.weight"),
      "nsp_head": m.has("cls.seq_relationship.weight"), **overrides}))
  n = cfg.num_heads

  word = m.get("embeddings.word_embeddings.weight")
  m.put("token_embed/embedding", word)
  m.put("position_embed/embedding", m.get("embeddings.position_embeddings.weight"))
  m.put("type_embed/embedding", m.get("embeddings.token_type_embeddings.weight"))
  _ln(m, "embeddings.LayerNorm", "embed_ln")

  layers = []
  for i in range(cfg.num_layers):
    p, L = f"encoder.layer.{i}", {}
    for name in ("query", "key", "value"):
      L[f"attention/{name}/kernel"] = heads_in(linear(m.get(f"{p}.attention.self.{name}.weight")), n)
      L[f"attention/{name}/bias"] = heads_in(m.get(f"{p}.attention.self.{name}.bias"), n)
    L["attention/out/kernel"] = heads_out(linear(m.get(f"{p}.attention.output.dense.weight")), n)
    L["attention/out/bias"] = m.get(f"{p}.attention.output.dense.bias")
    _ln(m, f"{p}.attention.output.LayerNorm", "ln_attention", L)
    _dense(m, f"{p}.intermediate.dense", "mlp/wi", L)
    _dense(m, f"{p}.output.dense", "mlp/wo", L)
    _ln(m, f"{p}.output.LayerNorm", "ln_mlp", L)
    layers.append(L)
  m.stack(layers, "encoder/layers")

  if cfg.pooler:
    _dense(m, "pooler.dense", "pooler/dense")
  if cfg.mlm_head:
    _dense(m, mlm_transform, "mlm_head/transform")
    _ln(m, mlm_ln, "mlm_head/ln")
    bias = m.get(f"{mlm_prefix}.bias", f"{mlm_prefix}.decoder.bias")
    m.put("mlm_head/bias", bias)
    m.tied(f"{mlm_prefix}.decoder.weight", word)
    m.tied(f"{mlm_prefix}.decoder.bias", bias)
  if cfg.nsp_head:
    _dense(m, "cls.seq_relationship", "nsp_head/dense")

  module = Bert(cfg)
  ids = jnp.zeros((1, 4), jnp.int32)
  return module, m.finish(module, {"input_ids": ids}, f"{c['model_type']} checkpoint")
