"""BERT / RoBERTa / ERNIE 1.0 checkpoints <-> plmjax `Bert`.

Import: BertModel, BertForMaskedLM, BertForPreTraining, RobertaModel, RobertaForMaskedLM, ErnieModel,
ErnieForMaskedLM, ErnieForPreTraining (model_type "ernie", with or without `use_task_id`: the
task-type embedding becomes BertConfig.task_type_vocab_size). Which heads the imported model has
follows the weights present: pooler, MLM head (`cls.predictions` or `lm_head`), NSP head
(`cls.seq_relationship`).

Export (registry names): bert, bert_wwm, spanbert, unilm -> BERT (BertForPreTraining with an NSP
head, else BertForMaskedLM, else BertModel); roberta -> RobertaForMaskedLM; ernie1 ->
ErnieForPreTraining / ErnieForMaskedLM / ErnieModel. SpanBERT's span boundary head has no Hugging
Face counterpart and is dropped (the encoder and MLM head are exported).
"""
from __future__ import annotations

import jax.numpy as jnp

from plmjax.convert.hf import CheckpointError, activation, hf_activation, register, register_export
from plmjax.convert.mapping import LINEAR, StateMapper, heads_in, heads_out
from plmjax.models.bert import Bert, BertConfig

IGNORED = [r"embeddings\.position_ids", r"embeddings\.token_type_ids"]
PREFIX = {"bert": "bert.", "roberta": "roberta.", "ernie": "ernie."}


def _ln(m: StateMapper, hf: str, ours: str, layer=None):
  """LayerNorm weight/bias (or TF-era gamma/beta) <-> scale/bias."""
  m.map(f"{hf}.weight", f"{ours}/scale", alias=(f"{hf}.gamma",), layer=layer)
  m.map(f"{hf}.bias", f"{ours}/bias", alias=(f"{hf}.beta",), layer=layer)


def _dense(m: StateMapper, hf: str, ours: str, layer=None):
  m.map(f"{hf}.weight", f"{ours}/kernel", LINEAR, layer=layer)
  m.map(f"{hf}.bias", f"{ours}/bias", layer=layer)


def bert_mapping(m: StateMapper, cfg: BertConfig, roberta: bool):
  """The one BERT-family weight mapping (HF names without the base-model prefix)."""
  n = cfg.num_heads
  m.map("embeddings.word_embeddings.weight", "token_embed/embedding")
  m.map("embeddings.position_embeddings.weight", "position_embed/embedding")
  m.map("embeddings.token_type_embeddings.weight", "type_embed/embedding")
  if cfg.task_type_vocab_size:
    m.map("embeddings.task_type_embeddings.weight", "task_embed/embedding")
  _ln(m, "embeddings.LayerNorm", "embed_ln")
  for i in range(cfg.num_layers):
    p, L = f"encoder.layer.{i}", "encoder/layers"
    for name in ("query", "key", "value"):
      m.map(f"{p}.attention.self.{name}.weight", f"{L}/attention/{name}/kernel", LINEAR.then(heads_in(n)), layer=i)
      m.map(f"{p}.attention.self.{name}.bias", f"{L}/attention/{name}/bias", heads_in(n), layer=i)
    m.map(f"{p}.attention.output.dense.weight", f"{L}/attention/out/kernel", LINEAR.then(heads_out(n)), layer=i)
    m.map(f"{p}.attention.output.dense.bias", f"{L}/attention/out/bias", layer=i)
    _ln(m, f"{p}.attention.output.LayerNorm", f"{L}/ln_attention", i)
    _dense(m, f"{p}.intermediate.dense", f"{L}/mlp/wi", i)
    _dense(m, f"{p}.output.dense", f"{L}/mlp/wo", i)
    _ln(m, f"{p}.output.LayerNorm", f"{L}/ln_mlp", i)
  if cfg.pooler:
    _dense(m, "pooler.dense", "pooler/dense")
  if cfg.mlm_head:
    head = "lm_head" if roberta else "cls.predictions"
    _dense(m, "lm_head.dense" if roberta else "cls.predictions.transform.dense", "mlm_head/transform")
    _ln(m, "lm_head.layer_norm" if roberta else "cls.predictions.transform.LayerNorm", "mlm_head/ln")
    m.map(f"{head}.bias", "mlm_head/bias", alias=(f"{head}.decoder.bias",))
    m.tied(f"{head}.decoder.weight", same_as="embeddings.word_embeddings.weight")
    m.tied(f"{head}.decoder.bias", same_as=f"{head}.bias")
  if cfg.nsp_head:
    _dense(m, "cls.seq_relationship", "nsp_head/dense")


def bert_config_from_hf(c: dict, **overrides) -> dict:
  if c.get("position_embedding_type", "absolute") != "absolute":
    raise CheckpointError(f"config.json: position_embedding_type={c['position_embedding_type']!r} "
                          "is not supported (only 'absolute')")
  roberta = c["model_type"] in ("roberta", "xlm-roberta")
  task = c.get("task_type_vocab_size", 3) if c.get("use_task_id") else 0
  return {**dict(
      vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_layers=c["num_hidden_layers"],
      num_heads=c["num_attention_heads"], mlp_dim=c["intermediate_size"],
      max_len=c["max_position_embeddings"], type_vocab_size=c.get("type_vocab_size", 2),
      activation=activation(c.get("hidden_act", "gelu"), "config.json hidden_act"),
      ln_eps=c.get("layer_norm_eps", 1e-12), dropout_rate=c.get("hidden_dropout_prob", 0.1),
      attention_dropout_rate=c.get("attention_probs_dropout_prob", 0.1),
      init_std=c.get("initializer_range", 0.02), pad_token_id=c.get("pad_token_id") or 0,
      padding_offset_positions=roberta, task_type_vocab_size=task), **overrides}


@register("bert", "roberta", "ernie")
def convert_bert(c: dict, state: dict, *, dtype: str = "float32", **overrides):
  t = c["model_type"]
  m = StateMapper.importing(state, prefixes=(PREFIX[t],), ignore=IGNORED)
  roberta = t == "roberta"
  cfg = BertConfig(**bert_config_from_hf(c, dtype=dtype, **{
      "pooler": m.has("pooler.dense.weight"),
      "mlm_head": m.has("lm_head.dense.weight" if roberta else "cls.predictions.transform.dense.weight"),
      "nsp_head": m.has("cls.seq_relationship.weight"), **overrides}))
  bert_mapping(m, cfg, roberta)
  module = Bert(cfg)
  return module, m.finish(module, {"input_ids": jnp.zeros((1, 4), jnp.int32)}, f"{t} checkpoint")


def bert_config_to_hf(cfg: BertConfig, model_type: str) -> dict:
  roberta, ernie = model_type == "roberta", model_type == "ernie"
  if cfg.padding_offset_positions != roberta:
    raise CheckpointError(f"{model_type} export: padding_offset_positions={cfg.padding_offset_positions} "
                          f"does not match the Hugging Face {model_type} position ids")
  if cfg.task_type_vocab_size and not ernie:
    raise CheckpointError(f"{model_type} export: task_type_vocab_size={cfg.task_type_vocab_size} needs ERNIE")
  if cfg.nsp_head and roberta:
    raise CheckpointError("roberta export: RoBERTa has no NSP head (nsp_head=True)")
  name = {"bert": "Bert", "roberta": "Roberta", "ernie": "Ernie"}[model_type]
  arch = ("ForPreTraining" if cfg.nsp_head else "ForMaskedLM") if cfg.mlm_head else "Model"
  if cfg.nsp_head and not cfg.mlm_head:
    arch = "ForNextSentencePrediction"
  c = dict(
      model_type=model_type, architectures=[name + arch], vocab_size=cfg.vocab_size,
      hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      intermediate_size=cfg.mlp_dim, max_position_embeddings=cfg.max_len,
      type_vocab_size=cfg.type_vocab_size, hidden_act=hf_activation(cfg.activation, "model.activation"),
      layer_norm_eps=cfg.ln_eps, hidden_dropout_prob=cfg.dropout_rate,
      attention_probs_dropout_prob=cfg.attention_dropout_rate, initializer_range=cfg.init_std,
      pad_token_id=cfg.pad_token_id, position_embedding_type="absolute", tie_word_embeddings=True)
  if ernie:
    c.update(use_task_id=bool(cfg.task_type_vocab_size), task_type_vocab_size=cfg.task_type_vocab_size or 3)
  return c


def _exporter(model_type: str):
  def export(cfg: BertConfig, params: dict):
    if cfg.pre_ln:
      raise CheckpointError(f"{model_type} export: pre_ln=True has no Hugging Face BERT counterpart")
    m = StateMapper.exporting_params(params)
    bert_mapping(m, cfg, model_type == "roberta")
    dropped = ["sbo_head"] if cfg.sbo_head else []
    bare = not (cfg.mlm_head or cfg.nsp_head)          # a bare BertModel: keys without prefix
    state = m.finish_export(f"{model_type} export", prefix="" if bare else PREFIX[model_type],
                            heads=("cls.", "lm_head."), dropped=dropped)
    return bert_config_to_hf(cfg, model_type), state
  return export


register_export("bert", "bert_wwm", "spanbert", "unilm")(_exporter("bert"))
register_export("roberta")(_exporter("roberta"))
register_export("ernie1")(_exporter("ernie"))
