"""GPT-1 (Radford et al., 2018) and GPT-2 (Radford et al., 2019): causal Transformer decoders.

    x = tok[ids] + pos[positions] (+ tok[token_type_ids], as in the reference implementations)
    GPT-1: L x post-LN blocks                      x = LN(x + f(x))
    GPT-2: L x pre-LN blocks, then a final LN      x = x + f(LN(x)); x = LN_f(x)
    logits = x tok^T                                [B, T, V]  (tied, no bias)

Causal self-attention, combined with key padding when `attention_mask` is given. With
`decode=True` the attention layers keep a KV cache (see `plmjax.nn.attention`): initialise it with
`init_cache`, then feed tokens with explicit `positions`.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.nn.attention import causal_mask, combine_masks
from plmjax.nn.embeddings import default_positions, embed, token_embed
from plmjax.nn.transformer import TransformerConfig, TransformerStack, layer_norm
from plmjax.models.bert import attention_visibility

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class GPTConfig(TransformerConfig):
  final_ln: bool = False
  lm_head: bool = True


def gpt1(**kw) -> GPTConfig:
  return GPTConfig(**{**dict(vocab_size=40478, max_len=512, activation="gelu_tanh", ln_eps=1e-5,
                             pre_ln=False, final_ln=False), **kw})


def gpt2(**kw) -> GPTConfig:
  return GPTConfig(**{**dict(vocab_size=50257, max_len=1024, activation="gelu_tanh", ln_eps=1e-5,
                             pre_ln=True, final_ln=True), **kw})


class GPT(nn.Module):
  config: GPTConfig

  @nn.compact
  def __call__(self, batch: dict, *, train: bool = False, decode: bool = False,
               return_hidden_states: bool = False) -> dict:
    cfg = self.config
    ids = batch["input_ids"]                                                          # [B, T]
    positions = batch["positions"] if "positions" in batch else default_positions(ids)
    kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype)
    tok = token_embed(cfg.vocab_size, cfg.hidden_size, cfg.init_std, name="token_embed", **kw)
    x = tok(ids) + embed(cfg.max_len, cfg.hidden_size, cfg.init_std, name="position_embed", **kw)(positions)
    if "token_type_ids" in batch:
      x = x + tok(batch["token_type_ids"])
    x = nn.Dropout(cfg.dropout_rate, deterministic=not train)(x)                        # [B, T, E]

    keys = attention_visibility(batch.get("attention_mask"))
    # In decode mode the cache applies the causal mask over cached keys itself.
    mask = keys if decode else combine_masks(keys, causal_mask(ids.shape[1]))
    h, layer_outputs = TransformerStack(cfg, name="decoder")(
        x, mask, train=train, decode=decode, collect=return_hidden_states)
    if cfg.final_ln:
      h = layer_norm(cfg, "final_ln")(h)

    out = {"hidden": h}
    if return_hidden_states:
      out["hidden_states"] = jnp.concatenate([x[None], layer_outputs], axis=0)       # [L+1, B, T, E]
    if cfg.lm_head:
      out["logits"] = nn.with_logical_constraint(
          tok.attend(h).astype(jnp.float32), ("batch", "length", "vocab"))          # [B, T, V]
    return out


def init_cache(model: GPT, batch_size: int, max_length: int) -> dict:
  """Zeroed KV cache for `max_length` tokens: {'cache': ...} to pass with `mutable=['cache']`."""
  ids = jnp.zeros((batch_size, max_length), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), {"input_ids": ids}, decode=True))
  return {"cache": jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])}
