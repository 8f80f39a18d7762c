"""XLNet checkpoints (XLNetLMHeadModel / XLNetModel, model_type "xlnet") <-> plmjax `XLNet` (registry
name xlnet).

HF keeps the attention projections as einsum tensors: q, k, v, r [E, N, D] (plmjax's kernel
layout as is) and o [E, N, D] (plmjax's out kernel [N, D, E] transposed); per-layer r_w_bias,
r_r_bias, r_s_bias [N, D] and seg_embed [2, N, D]; `rel_attn.layer_norm` follows the attention,
`ff.layer_norm` the feed-forward. `mask_emb` [1, 1, E] starts the query stream; `lm_loss` is the
output layer (weight tied to `word_embedding`, own bias).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from plmjax.convert.hf import CheckpointError, activation, hf_activation, register, register_export
from plmjax.convert.mapping import LINEAR, StateMapper, permute, reshape
from plmjax.models.xlnet import XLNet, XLNetConfig


def xlnet_config_from_hf(c: dict, **overrides) -> dict:
  if c.get("attn_type", "bi") not in ("bi", "uni"):
    raise CheckpointError(f"config.json: attn_type={c['attn_type']!r}: expected 'bi' or 'uni'")
  if c["d_model"] != c["n_head"] * c.get("d_head", c["d_model"] // c["n_head"]):
    raise CheckpointError("config.json: d_head * n_head != d_model is not supported")
  return {**dict(
      vocab_size=c["vocab_size"], hidden_size=c["d_model"], num_layers=c["n_layer"],
      num_heads=c["n_head"], mlp_dim=c["d_inner"],
      activation=activation(c.get("ff_activation", "gelu"), "config.json ff_activation"),
      ln_eps=c.get("layer_norm_eps", 1e-12), dropout_rate=c.get("dropout", 0.1),
      attention_dropout_rate=c.get("dropout", 0.1), init_std=c.get("initializer_range", 0.02),
      mem_len=c.get("mem_len") or 0, reuse_len=c.get("reuse_len") or 0,
      bi_data=c.get("bi_data", False), clamp_len=c.get("clamp_len", -1),
      attn_type=c.get("attn_type", "bi"), same_length=bool(c.get("same_length", False)),
      pad_token_id=c.get("pad_token_id") or 0), **overrides}


def xlnet_mapping(m: StateMapper, cfg: XLNetConfig):
  e = cfg.hidden_size
  m.map("word_embedding.weight", "token_embed/embedding")
  m.map("mask_emb", "mask_emb", reshape((1, 1, e), (e,)))
  L = "layers"
  for i in range(cfg.num_layers):
    p = f"layer.{i}.rel_attn"
    for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("pos", "r")):
      m.map(f"{p}.{theirs}", f"{L}/attention/{ours}/kernel", layer=i)
    m.map(f"{p}.o", f"{L}/attention/out", permute(1, 2, 0), layer=i)       # [E, N, D] -> [N, D, E]
    for b in ("r_w_bias", "r_r_bias", "r_s_bias", "seg_embed"):
      m.map(f"{p}.{b}", f"{L}/attention/{b}", layer=i)
    f = f"layer.{i}.ff"
    for hf, ours in ((f"{p}.layer_norm", "ln_attention"), (f"{f}.layer_norm", "ln_mlp")):
      m.map(f"{hf}.weight", f"{L}/{ours}/scale", layer=i)
      m.map(f"{hf}.bias", f"{L}/{ours}/bias", layer=i)
    for hf, ours in (("layer_1", "wi"), ("layer_2", "wo")):
      m.map(f"{f}.{hf}.weight", f"{L}/mlp/{ours}/kernel", LINEAR, layer=i)
      m.map(f"{f}.{hf}.bias", f"{L}/mlp/{ours}/bias", layer=i)
  # a bare XLNetModel has no output bias: zeros
  m.map("lm_loss.bias", "lm_bias", default=np.zeros((cfg.vocab_size,), np.float32))
  m.tied("lm_loss.weight", same_as="word_embedding.weight")


@register("xlnet")
def convert_xlnet(c: dict, state: dict, *, dtype: str = "float32", **overrides):
  m = StateMapper.importing(state, prefixes=("transformer.",))
  cfg = XLNetConfig(**xlnet_config_from_hf(c, dtype=dtype, **overrides))
  xlnet_mapping(m, cfg)
  module = XLNet(cfg)
  return module, m.finish(module, {"input_ids": jnp.zeros((2, 4), jnp.int32)}, "xlnet checkpoint")


@register_export("xlnet")
def export_xlnet(cfg: XLNetConfig, params: dict):
  m = StateMapper.exporting_params(params)
  xlnet_mapping(m, cfg)
  state = m.finish_export("xlnet export", prefix="transformer.", heads=("lm_loss.",))
  if cfg.dropout_rate != cfg.attention_dropout_rate:
    raise CheckpointError(f"xlnet export: dropout_rate={cfg.dropout_rate} != attention_dropout_rate="
                          f"{cfg.attention_dropout_rate}; Hugging Face XLNet has one dropout")
  c = dict(model_type="xlnet", architectures=["XLNetLMHeadModel"], vocab_size=cfg.vocab_size,
           d_model=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
           d_head=cfg.head_dim, d_inner=cfg.mlp_dim,
           ff_activation=hf_activation(cfg.activation, "model.activation"), untie_r=True,
           attn_type=cfg.attn_type, layer_norm_eps=cfg.ln_eps, dropout=cfg.dropout_rate,
           initializer_range=cfg.init_std, mem_len=cfg.mem_len or None, reuse_len=cfg.reuse_len or None,
           bi_data=cfg.bi_data, clamp_len=cfg.clamp_len, same_length=cfg.same_length,
           pad_token_id=cfg.pad_token_id, tie_word_embeddings=True)
  return c, state
