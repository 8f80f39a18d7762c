"""OpenAI GPT (OpenAIGPTModel / OpenAIGPTLMHeadModel) and GPT-2 (GPT2Model / GPT2LMHeadModel)
checkpoints -> plmjax `GPT`.

Both use Conv1D layers whose weights are already [in, out]; the attention's fused `c_attn`
[E, 3E] splits into query / key / value. GPT-1 is post-LN (`ln_1` after attention), GPT-2 pre-LN
with a final `ln_f`; in both `ln_1` belongs to the attention sub-block and `ln_2` to the MLP.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from plmjax.convert.hf import CheckpointError, StateMapper, activation, heads_in, heads_out, register
from plmjax.models.gpt import GPT, GPTConfig

IGNORED = [r"h\.\d+\.attn\.bias", r"h\.\d+\.attn\.masked_bias", r"position_ids"]


@register("openai-gpt", "gpt2")
def convert_gpt(c: dict, state: dict, *, dtype: str = "float32", **overrides):
  gpt2 = c["model_type"] == "gpt2"
  m = StateMapper(state, prefixes=("transformer.",), ignore=IGNORED)
  if gpt2 and c.get("scale_attn_by_inverse_layer_idx"):
    raise CheckpointError("config.json: scale_attn_by_inverse_layer_idx=True is not supported")
  e = c["n_embd"]
  # OpenAI GPT's "gelu" is the tanh approximation (gelu_new) in the reference implementation.
  act = c.get("activation_function", "gelu_new") if gpt2 else {"gelu": "gelu_new"}.get(
      c.get("afn", "gelu"), c.get("afn", "gelu"))
  cfg = GPTConfig(**{**dict(
      vocab_size=c["vocab_size"], hidden_size=e, num_layers=c["n_layer"], num_heads=c["n_head"],
      mlp_dim=c.get("n_inner") or 4 * e, max_len=c["n_positions"],
      activation=activation(act, "config.json activation"), ln_eps=c.get("layer_norm_epsilon", 1e-5),
      dropout_rate=c.get("resid_pdrop", 0.1), attention_dropout_rate=c.get("attn_pdrop", 0.1),
      init_std=c.get("initializer_range", 0.02), pre_ln=gpt2, final_ln=gpt2,
      lm_head=True, dtype=dtype), **overrides})
  n = cfg.num_heads

  word = m.get("wte.weight", "tokens_embed.weight")
  m.put("token_embed/embedding", word)
  m.put("position_embed/embedding", m.get("wpe.weight", "positions_embed.weight"))
  layers = []
  for i in range(cfg.num_layers):
    p, L = f"h.{i}", {}
    qkv_w, qkv_b = m.get(f"{p}.attn.c_attn.weight"), m.get(f"{p}.attn.c_attn.bias")
    for j, name in enumerate(("query", "key", "value")):
      L[f"attention/{name}/kernel"] = None if qkv_w is None else heads_in(qkv_w[:, j * e:(j + 1) * e], n)
      L[f"attention/{name}/bias"] = None if qkv_b is None else heads_in(qkv_b[j * e:(j + 1) * e], n)
    L["attention/out/kernel"] = heads_out(m.get(f"{p}.attn.c_proj.weight"), n)
    L["attention/out/bias"] = m.get(f"{p}.attn.c_proj.bias")
    L["ln_attention/scale"], L["ln_attention/bias"] = m.get(f"{p}.ln_1.weight"), m.get(f"{p}.ln_1.bias")
    L["mlp/wi/kernel"], L["mlp/wi/bias"] = m.get(f"{p}.mlp.c_fc.weight"), m.get(f"{p}.mlp.c_fc.bias")
    L["mlp/wo/kernel"], L["mlp/wo/bias"] = m.get(f"{p}.mlp.c_proj.weight"), m.get(f"{p}.mlp.c_proj.bias")
    L["ln_mlp/scale"], L["ln_mlp/bias"] = m.get(f"{p}.ln_2.weight"), m.get(f"{p}.ln_2.bias")
    layers.append(L)
  m.stack(layers, "decoder/layers")
  if gpt2:
    m.put("final_ln/scale", m.get("ln_f.weight"))
    m.put("final_ln/bias", m.get("ln_f.bias"))
  m.tied("lm_head.weight", word)

  module = GPT(cfg)
  return module, m.finish(module, {"input_ids": jnp.zeros((1, 4), jnp.int32)},
                          f"{c['model_type']} checkpoint")
