"""OpenAI GPT (OpenAIGPTModel / OpenAIGPTLMHeadModel) and GPT-2 (GPT2Model / GPT2LMHeadModel)
checkpoints <-> plmjax `GPT` (registry names gpt1, gpt2).

Both use Conv1D layers whose weights are already [in, out]; the attention's fused `c_attn`
[E, 3E] splits into query / key / value. GPT-1 is post-LN (`ln_1` after attention), GPT-2 pre-LN
with a final `ln_f`; in both `ln_1` belongs to the attention sub-block and `ln_2` to the MLP. The
LM head `lm_head.weight` is tied to the token embedding.
"""
from __future__ import annotations

import jax.numpy as jnp

from plmjax.convert.hf import CheckpointError, activation, hf_activation, register, register_export
from plmjax.convert.mapping import StateMapper, heads_in, heads_out, split
from plmjax.models.gpt import GPT, GPTConfig

IGNORED = [r"h\.\d+\.attn\.bias", r"h\.\d+\.attn\.masked_bias", r"position_ids"]


def gpt_mapping(m: StateMapper, cfg: GPTConfig, gpt2: bool):
  n = cfg.num_heads
  m.map("wte.weight" if gpt2 else "tokens_embed.weight", "token_embed/embedding",
        alias=("tokens_embed.weight", "wte.weight"))
  m.map("wpe.weight" if gpt2 else "positions_embed.weight", "position_embed/embedding",
        alias=("positions_embed.weight", "wpe.weight"))
  L = "decoder/layers"
  qkv = tuple(f"{L}/attention/{name}" for name in ("query", "key", "value"))
  for i in range(cfg.num_layers):
    p = f"h.{i}"
    m.map(f"{p}.attn.c_attn.weight", tuple(q + "/kernel" for q in qkv), split(3, -1, heads_in(n)), layer=i)
    m.map(f"{p}.attn.c_attn.bias", tuple(q + "/bias" for q in qkv), split(3, -1, heads_in(n)), layer=i)
    m.map(f"{p}.attn.c_proj.weight", f"{L}/attention/out/kernel", heads_out(n), layer=i)
    m.map(f"{p}.attn.c_proj.bias", f"{L}/attention/out/bias", layer=i)
    for hf, ours in (("ln_1", "ln_attention"), ("ln_2", "ln_mlp")):
      m.map(f"{p}.{hf}.weight", f"{L}/{ours}/scale", layer=i)
      m.map(f"{p}.{hf}.bias", f"{L}/{ours}/bias", layer=i)
    for hf, ours in (("c_fc", "wi"), ("c_proj", "wo")):
      m.map(f"{p}.mlp.{hf}.weight", f"{L}/mlp/{ours}/kernel", layer=i)
      m.map(f"{p}.mlp.{hf}.bias", f"{L}/mlp/{ours}/bias", layer=i)
  if gpt2:
    m.map("ln_f.weight", "final_ln/scale")
    m.map("ln_f.bias", "final_ln/bias")
  if cfg.lm_head:
    m.tied("lm_head.weight", same_as="wte.weight" if gpt2 else "tokens_embed.weight")


@register("openai-gpt", "gpt2")
def convert_gpt(c: dict, state: dict, *, dtype: str = "float32", **overrides):
  gpt2 = c["model_type"] == "gpt2"
  m = StateMapper.importing(state, prefixes=("transformer.",), ignore=IGNORED)
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
  gpt_mapping(m, cfg, gpt2)
  module = GPT(cfg)
  return module, m.finish(module, {"input_ids": jnp.zeros((1, 4), jnp.int32)},
                          f"{c['model_type']} checkpoint")


def _exporter(gpt2: bool):
  name = "gpt2" if gpt2 else "openai-gpt"

  def export(cfg: GPTConfig, params: dict):
    if (cfg.pre_ln, cfg.final_ln) != (gpt2, gpt2):
      raise CheckpointError(f"{name} export: pre_ln={cfg.pre_ln}, final_ln={cfg.final_ln}; Hugging Face "
                            f"{name} has pre_ln = final_ln = {gpt2}")
    m = StateMapper.exporting_params(params)
    gpt_mapping(m, cfg, gpt2)
    state = m.finish_export(f"{name} export", prefix="transformer." if cfg.lm_head else "",
                            heads=("lm_head.",))
    act = hf_activation(cfg.activation, "model.activation")
    common = dict(model_type=name, vocab_size=cfg.vocab_size, n_embd=cfg.hidden_size,
                  n_layer=cfg.num_layers, n_head=cfg.num_heads, n_positions=cfg.max_len,
                  resid_pdrop=cfg.dropout_rate, embd_pdrop=cfg.dropout_rate,
                  attn_pdrop=cfg.attention_dropout_rate, initializer_range=cfg.init_std,
                  tie_word_embeddings=True)
    if gpt2:
      c = dict(common, architectures=["GPT2LMHeadModel" if cfg.lm_head else "GPT2Model"],
               n_inner=cfg.mlp_dim, activation_function=act, layer_norm_epsilon=cfg.ln_eps)
    else:
      if cfg.activation != "gelu_tanh" and act not in ("relu", "silu"):
        raise CheckpointError(f"openai-gpt export: activation {cfg.activation!r} has no OpenAI GPT name")
      if cfg.mlp_dim != 4 * cfg.hidden_size:
        raise CheckpointError(f"openai-gpt export: mlp_dim={cfg.mlp_dim} must be 4 * hidden_size "
                              "(Hugging Face OpenAI GPT has no n_inner)")
      c = dict(common, architectures=["OpenAIGPTLMHeadModel" if cfg.lm_head else "OpenAIGPTModel"],
               afn="gelu" if cfg.activation == "gelu_tanh" else act, layer_norm_epsilon=cfg.ln_eps)
    return c, state
  return export


register_export("gpt2")(_exporter(True))
register_export("gpt1")(_exporter(False))
