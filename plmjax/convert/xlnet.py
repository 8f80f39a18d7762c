"""XLNet checkpoints (XLNetLMHeadModel / XLNetModel, model_type "xlnet") -> plmjax `XLNet`.

HF keeps the attention projections as einsum tensors: q, k, v, r [E, N, D] (plmjax's kernel
layout as is) and o [E, N, D] (plmjax's out kernel [N, D, E] transposed); per-layer r_w_bias,
r_r_bias, r_s_bias [N, D] and seg_embed [2, N, D]; `rel_attn.layer_norm` follows the attention,
`ff.layer_norm` the feed-forward. `mask_emb` [1, 1, E] starts the query stream; `lm_loss` is the
output layer (weight tied to `word_embedding`, own bias).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from plmjax.convert.hf import CheckpointError, StateMapper, activation, linear, register
from plmjax.models.xlnet import XLNet, XLNetConfig


def xlnet_config_from_hf(c: dict, **overrides) -> dict:
  if c.get("attn_type", "bi") != "bi":
    raise CheckpointError(f"config.json: attn_type={c['attn_type']!r} is not supported (only 'bi')")
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
      pad_token_id=c.get("pad_token_id") or 0), **overrides}


@register("xlnet")
def convert_xlnet(c: dict, state: dict, *, dtype: str = "float32", **overrides):
  m = StateMapper(state, prefixes=("transformer.",))
  cfg = XLNetConfig(**xlnet_config_from_hf(c, dtype=dtype, **overrides))

  word = m.get("word_embedding.weight")
  m.put("token_embed/embedding", word)
  mask_emb = m.get("mask_emb")
  m.put("mask_emb", None if mask_emb is None else mask_emb.reshape(-1))
  layers = []
  for i in range(cfg.num_layers):
    p, L = f"layer.{i}.rel_attn", {}
    for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("pos", "r")):
      L[f"attention/{ours}/kernel"] = m.get(f"{p}.{theirs}")
    o = m.get(f"{p}.o")
    L["attention/out"] = None if o is None else o.transpose(1, 2, 0)
    for b in ("r_w_bias", "r_r_bias", "r_s_bias", "seg_embed"):
      L[f"attention/{b}"] = m.get(f"{p}.{b}")
    L["ln_attention/scale"], L["ln_attention/bias"] = m.get(f"{p}.layer_norm.weight"), m.get(f"{p}.layer_norm.bias")
    f = f"layer.{i}.ff"
    L["mlp/wi/kernel"], L["mlp/wi/bias"] = linear(m.get(f"{f}.layer_1.weight")), m.get(f"{f}.layer_1.bias")
    L["mlp/wo/kernel"], L["mlp/wo/bias"] = linear(m.get(f"{f}.layer_2.weight")), m.get(f"{f}.layer_2.bias")
    L["ln_mlp/scale"], L["ln_mlp/bias"] = m.get(f"{f}.layer_norm.weight"), m.get(f"{f}.layer_norm.bias")
    layers.append(L)
  m.stack(layers, "layers")
  if m.has("lm_loss.bias"):
    m.put("lm_bias", m.get("lm_loss.bias"))
    m.tied("lm_loss.weight", word)
  else:   # a bare XLNetModel: no output bias in the checkpoint
    m.put("lm_bias", np.zeros((cfg.vocab_size,), np.float32))

  module = XLNet(cfg)
  return module, m.finish(module, {"input_ids": jnp.zeros((2, 4), jnp.int32)}, "xlnet checkpoint")
