"""Transformer-XL checkpoints (TransfoXLLMHeadModel / TransfoXLModel, model_type "transfo-xl")
-> plmjax `TransformerXL`.

HF layouts: `qkv_net` [3·N·D, E] (query, key, value stacked), `o_net` [E, N·D], `r_net` [N·D, E];
adaptive embedding `emb_layers.i.weight` [n_i, d_i] and `emb_projs.i` [E, d_i] (used as x P^T);
adaptive softmax `crit.out_layers.i` (weights tied to the embedding tables), `crit.out_projs.i`
[E, d_i] (tied to `emb_projs.i` where `tie_projs[i]`), `crit.cluster_weight` / `cluster_bias`.
The attention LayerNorm is `dec_attn.layer_norm`, the feed-forward one `pos_ff.layer_norm`.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from plmjax.convert.hf import CheckpointError, StateMapper, heads_in, heads_out, linear, register
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


@register("transfo-xl")
def convert_transfo_xl(c: dict, state: dict, *, dtype: str = "float32", **overrides):
  m = StateMapper(state, prefixes=("transformer.",), ignore=IGNORED)
  cfg = TransformerXLConfig(**transfo_xl_config_from_hf(c, dtype=dtype, **overrides))
  n, d = cfg.num_heads, cfg.head_dim
  n_tables = 1 if cfg.div_val == 1 else len(cfg.cutoffs) + 1

  tables, projs = [], []
  for i in range(n_tables):
    tables.append(m.get(f"word_emb.emb_layers.{i}.weight"))
    m.put(f"embed/table_{i}", tables[-1])
    if cfg.div_val > 1 or cfg.d_embed != cfg.hidden_size:
      projs.append(linear(m.get(f"word_emb.emb_projs.{i}")))            # [d_i, E]
      m.put(f"embed/proj_{i}", projs[-1])

  shared = {}
  if not cfg.untie_r:
    shared = {b: m.get(b) for b in ("r_w_bias", "r_r_bias")}
    for b, v in shared.items():
      m.put(b, v)
  layers = []
  for i in range(cfg.num_layers):
    p, L = f"layers.{i}", {}
    qkv = linear(m.get(f"{p}.dec_attn.qkv_net.weight"))                  # [E, 3·N·D]
    for j, name in enumerate(("query", "key", "value")):
      L[f"attention/{name}/kernel"] = None if qkv is None else heads_in(qkv[:, j * n * d:(j + 1) * n * d], n)
    L["attention/pos/kernel"] = heads_in(linear(m.get(f"{p}.dec_attn.r_net.weight")), n)
    L["attention/out"] = heads_out(linear(m.get(f"{p}.dec_attn.o_net.weight")), n)
    for b in ("r_w_bias", "r_r_bias"):
      if cfg.untie_r:
        L[f"attention/{b}"] = m.get(f"{p}.dec_attn.{b}")
      else:   # PyTorch checkpoints repeat the shared bias in every layer
        m.tied(f"{p}.dec_attn.{b}", shared[b])
    L["ln_attention/scale"] = m.get(f"{p}.dec_attn.layer_norm.weight")
    L["ln_attention/bias"] = m.get(f"{p}.dec_attn.layer_norm.bias")
    L["mlp/wi/kernel"] = linear(m.get(f"{p}.pos_ff.CoreNet.0.weight"))
    L["mlp/wi/bias"] = m.get(f"{p}.pos_ff.CoreNet.0.bias")
    L["mlp/wo/kernel"] = linear(m.get(f"{p}.pos_ff.CoreNet.3.weight"))
    L["mlp/wo/bias"] = m.get(f"{p}.pos_ff.CoreNet.3.bias")
    L["ln_mlp/scale"] = m.get(f"{p}.pos_ff.layer_norm.weight")
    L["ln_mlp/bias"] = m.get(f"{p}.pos_ff.layer_norm.bias")
    layers.append(L)
  m.stack(layers, "layers")

  # Adaptive softmax: tables tied to the embedding; projections tied where tie_projs says so.
  n_clusters = len(cfg.cutoffs) + 1
  if n_clusters > 1:
    m.put("softmax/cluster_weight", m.get("crit.cluster_weight"))
    m.put("softmax/cluster_bias", m.get("crit.cluster_bias"))
  if cfg.div_val == 1:   # one output layer, sliced per cluster
    bias = m.get("crit.out_layers.0.bias")
    edges = [0] + list(cfg.cutoffs) + [cfg.vocab_size]
    for i in range(n_clusters):
      m.put(f"softmax/bias_{i}", None if bias is None else bias[edges[i]:edges[i + 1]])
    m.tied("crit.out_layers.0.weight", tables[0])
  else:
    for i in range(n_clusters):
      m.put(f"softmax/bias_{i}", m.get(f"crit.out_layers.{i}.bias"))
      m.tied(f"crit.out_layers.{i}.weight", tables[i])
  needs_proj = cfg.div_val > 1 or cfg.d_embed != cfg.hidden_size
  for i in range(n_clusters):
    key = f"crit.out_projs.{i}"
    if not needs_proj:
      continue
    if cfg.tie_projs[i]:
      m.tied(key, None if not projs else projs[0 if cfg.div_val == 1 else i].T)
    else:
      m.put(f"softmax/out_proj_{i}", linear(m.get(key)))

  module = TransformerXL(cfg)
  sample = {"input_ids": jnp.zeros((1, 4), jnp.int32)}
  return module, m.finish(module, sample, "transfo-xl checkpoint")
