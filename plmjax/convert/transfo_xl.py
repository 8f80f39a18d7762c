"""Transformer-XL checkpoints (TransfoXLLMHeadModel / TransfoXLModel, model_type "transfo-xl")
<-> plmjax `TransformerXL` (registry name transformer_xl).

HF layouts: `qkv_net` [3·N·D, E] (query, key, value stacked), `o_net` [E, N·D], `r_net` [N·D, E];
adaptive embedding `emb_layers.i.weight` [n_i, d_i] and `emb_projs.i` [E, d_i] (used as x P^T);
adaptive softmax `crit.out_layers.i` (weights tied to the embedding tables), `crit.out_projs.i`
[E, d_i] (tied to `emb_projs.i` where `tie_projs[i]`), `crit.cluster_weight` / `cluster_bias`.
The attention LayerNorm is `dec_attn.layer_norm`, the feed-forward one `pos_ff.layer_norm`.
"""
from __future__ import annotations

import jax.numpy as jnp

from plmjax.convert.hf import CheckpointError, register, register_export
from plmjax.convert.mapping import LINEAR, StateMapper, heads_in, heads_out, split
from plmjax.models.transformer_xl import TransformerXL, TransformerXLConfig

IGNORED = [r"pos_emb\.inv_freq"]


def transfo_xl_config_from_hf(c: dict, **overrides) -> dict:
  if c.get("attn_type", 0) != 0:
    raise CheckpointError(f"config.json: attn_type={c['attn_type']} is not supported (only 0, "
                          "Transformer-XL's relative attention)")
  if c.get("sample_softmax", -1) > 0:
    raise CheckpointError("config.json: sample_softmax > 0 is not supported")
  if not c.get("tie_word_embeddings", True):
    raise CheckpointError("config.json: tie_word_embeddings=False (untied adaptive softmax) is not "
                          "supported")
  if not c.get("adaptive", True):
    raise CheckpointError("config.json: adaptive=False is not supported")
  n_clusters = len(c.get("cutoffs", [])) + 1
  tie_projs = c.get("tie_projs") or [False] + [True] * (n_clusters - 1)
  return {**dict(
      vocab_size=c["vocab_size"], hidden_size=c["d_model"], num_layers=c["n_layer"],
      num_heads=c["n_head"], head_size=c["d_head"], mlp_dim=c["d_inner"], activation="relu",
      ln_eps=c.get("layer_norm_epsilon", 1e-5), pre_ln=c.get("pre_lnorm", False),
      embed_size=c["d_embed"], cutoffs=tuple(c.get("cutoffs", [])), div_val=c.get("div_val", 1),
      tie_projs=tuple(bool(t) for t in tie_projs), mem_len=c.get("mem_len", 0),
      clamp_len=c.get("clamp_len", -1), same_length=c.get("same_length", False),
      untie_r=c.get("untie_r", True), dropout_rate=c.get("dropout", 0.1),
      attention_dropout_rate=c.get("dropatt", 0.0), init_std=c.get("init_std", 0.02),
      proj_init_std=c.get("proj_init_std", 0.01)), **overrides}


def tie_projs(cfg: TransformerXLConfig) -> tuple:
  n_clusters = len(cfg.cutoffs) + 1
  return tuple(bool(t) for t in cfg.tie_projs) or (False,) + (True,) * (n_clusters - 1)


def transfo_xl_mapping(m: StateMapper, cfg: TransformerXLConfig):
  n = cfg.num_heads
  n_tables = 1 if cfg.div_val == 1 else len(cfg.cutoffs) + 1
  needs_proj = cfg.div_val > 1 or cfg.d_embed != cfg.hidden_size
  for i in range(n_tables):
    m.map(f"word_emb.emb_layers.{i}.weight", f"embed/table_{i}")
    if needs_proj:
      m.map(f"word_emb.emb_projs.{i}", f"embed/proj_{i}", LINEAR)          # [d_i, E]
  if not cfg.untie_r:
    for b in ("r_w_bias", "r_r_bias"):
      m.map(b, b)
  L = "layers"
  for i in range(cfg.num_layers):
    p = f"layers.{i}"
    m.map(f"{p}.dec_attn.qkv_net.weight", tuple(f"{L}/attention/{q}/kernel" for q in ("query", "key", "value")),
          LINEAR.then(split(3, -1, heads_in(n))), layer=i)                  # [E, 3·N·D]
    m.map(f"{p}.dec_attn.r_net.weight", f"{L}/attention/pos/kernel", LINEAR.then(heads_in(n)), layer=i)
    m.map(f"{p}.dec_attn.o_net.weight", f"{L}/attention/out", LINEAR.then(heads_out(n)), layer=i)
    for b in ("r_w_bias", "r_r_bias"):
      if cfg.untie_r:
        m.map(f"{p}.dec_attn.{b}", f"{L}/attention/{b}", layer=i)
      else:   # PyTorch checkpoints repeat the shared bias in every layer
        m.tied(f"{p}.dec_attn.{b}", same_as=b)
    for hf, ours in (("dec_attn.layer_norm", "ln_attention"), ("pos_ff.layer_norm", "ln_mlp")):
      m.map(f"{p}.{hf}.weight", f"{L}/{ours}/scale", layer=i)
      m.map(f"{p}.{hf}.bias", f"{L}/{ours}/bias", layer=i)
    for hf, ours in (("0", "wi"), ("3", "wo")):
      m.map(f"{p}.pos_ff.CoreNet.{hf}.weight", f"{L}/mlp/{ours}/kernel", LINEAR, layer=i)
      m.map(f"{p}.pos_ff.CoreNet.{hf}.bias", f"{L}/mlp/{ours}/bias", layer=i)

  # Adaptive softmax: tables tied to the embedding; projections tied where tie_projs says so.
  n_clusters = len(cfg.cutoffs) + 1
  if n_clusters > 1:
    m.map("crit.cluster_weight", "softmax/cluster_weight")
    m.map("crit.cluster_bias", "softmax/cluster_bias")
  if cfg.div_val == 1:   # one output layer, sliced per cluster
    edges = [0] + list(cfg.cutoffs) + [cfg.vocab_size]
    m.map("crit.out_layers.0.bias", tuple(f"softmax/bias_{i}" for i in range(n_clusters)),
          split([edges[i + 1] - edges[i] for i in range(n_clusters)], 0))
    m.tied("crit.out_layers.0.weight", same_as="word_emb.emb_layers.0.weight")
  else:
    for i in range(n_clusters):
      m.map(f"crit.out_layers.{i}.bias", f"softmax/bias_{i}")
      m.tied(f"crit.out_layers.{i}.weight", same_as=f"word_emb.emb_layers.{i}.weight")
  if needs_proj:
    for i in range(n_clusters):
      if tie_projs(cfg)[i]:
        m.tied(f"crit.out_projs.{i}", same_as=f"word_emb.emb_projs.{0 if cfg.div_val == 1 else i}")
      else:
        m.map(f"crit.out_projs.{i}", f"softmax/out_proj_{i}", LINEAR)


@register("transfo-xl")
def convert_transfo_xl(c: dict, state: dict, *, dtype: str = "float32", **overrides):
  m = StateMapper.importing(state, prefixes=("transformer.",), ignore=IGNORED)
  cfg = TransformerXLConfig(**transfo_xl_config_from_hf(c, dtype=dtype, **overrides))
  transfo_xl_mapping(m, cfg)
  module = TransformerXL(cfg)
  sample = {"input_ids": jnp.zeros((1, 4), jnp.int32)}
  return module, m.finish(module, sample, "transfo-xl checkpoint")


@register_export("transformer_xl")
def export_transfo_xl(cfg: TransformerXLConfig, params: dict):
  if cfg.activation != "relu":
    raise CheckpointError(f"transfo-xl export: activation {cfg.activation!r}; Hugging Face "
                          "Transformer-XL's feed-forward is ReLU")
  m = StateMapper.exporting_params(params)
  transfo_xl_mapping(m, cfg)
  state = m.finish_export("transfo-xl export", prefix="transformer.", heads=("crit.",))
  n_clusters = len(cfg.cutoffs) + 1
  ties = list(tie_projs(cfg))
  c = dict(model_type="transfo-xl", architectures=["TransfoXLLMHeadModel"], vocab_size=cfg.vocab_size,
           d_model=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads, d_head=cfg.head_dim,
           d_inner=cfg.mlp_dim, d_embed=cfg.d_embed, cutoffs=list(cfg.cutoffs), div_val=cfg.div_val,
           proj_share_all_but_first=ties == [False] + [True] * (n_clusters - 1),
           tie_projs=ties, pre_lnorm=cfg.pre_ln, mem_len=cfg.mem_len, clamp_len=cfg.clamp_len,
           same_length=cfg.same_length, untie_r=cfg.untie_r, attn_type=0, sample_softmax=-1,
           adaptive=True, dropout=cfg.dropout_rate, dropatt=cfg.attention_dropout_rate,
           init_std=cfg.init_std, proj_init_std=cfg.proj_init_std, layer_norm_epsilon=cfg.ln_eps,
           tie_word_embeddings=True)
  return c, state
