"""Encoder-decoder Transformer (Vaswani et al., 2017), the extractor of MASS (Song et al., 2019).

    e = Encoder(tok[input_ids] + pos[positions])                         [B, S, E]
    d = Decoder(tok[decoder_input_ids] + pos[decoder_positions], e)      [B, T, E]
        (causal self-attention, then cross-attention over the unpadded encoder states)
    logits = d tok^T                                                     [B, T, V]  (tied, shared)

Token and position tables are shared between encoder and decoder, as in MASS. Decoder positions
are explicit so that MASS's decoder can predict a fragment at its original sentence positions.
Batch keys: `input_ids`, `attention_mask` [B, S]; `decoder_input_ids`, optional
`decoder_positions`, `decoder_attention_mask` [B, T]. With `decode=True` the decoder's
self-attention keeps a KV cache (cross-attention is recomputed from the encoder output).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.models.bert import attention_visibility
from plmjax.nn.attention import causal_mask, combine_masks
from plmjax.nn.embeddings import default_positions, embed, token_embed
from plmjax.nn.transformer import TransformerConfig, TransformerStack, layer_norm

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig(TransformerConfig):
  num_decoder_layers: int = 6
  pad_token_id: int = 0


def mass_base(**kw) -> Seq2SeqConfig:
  """MASS's English pretraining model: 6 + 6 layers, 1024 hidden, 16 heads (the XLM setting)."""
  return Seq2SeqConfig(**{**dict(vocab_size=60000, hidden_size=1024, num_layers=6, num_decoder_layers=6,
                                 num_heads=16, mlp_dim=4096, max_len=512, ln_eps=1e-12), **kw})


class Seq2Seq(nn.Module):
  config: Seq2SeqConfig

  def setup(self):
    cfg = self.config
    kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype)
    self.token_embed = token_embed(cfg.vocab_size, cfg.hidden_size, cfg.init_std, **kw)
    self.position_embed = embed(cfg.max_len, cfg.hidden_size, cfg.init_std, **kw)
    self.encoder_ln = layer_norm(cfg, "encoder_ln")
    self.decoder_ln = layer_norm(cfg, "decoder_ln")
    self.encoder = TransformerStack(cfg)
    self.decoder = TransformerStack(cfg.replace(num_layers=cfg.num_decoder_layers), cross=True)
    self.dropout = nn.Dropout(cfg.dropout_rate)

  def _embed(self, ids, positions, ln, train):
    x = ln(self.token_embed(ids) + self.position_embed(positions))
    return self.dropout(x, deterministic=not train)

  def encode(self, batch: dict, *, train: bool = False) -> Array:
    ids = batch["input_ids"]                                                            # [B, S]
    x = self._embed(ids, batch.get("positions", default_positions(ids)), self.encoder_ln, train)
    h, _ = self.encoder(x, attention_visibility(batch.get("attention_mask")), train=train)
    return h                                                                            # [B, S, E]

  def decode_step(self, batch: dict, encoded: Array, *, train: bool = False, decode: bool = False):
    ids = batch["decoder_input_ids"]                                                    # [B, T]
    positions = batch.get("decoder_positions", default_positions(ids))
    y = self._embed(ids, positions, self.decoder_ln, train)
    keys = attention_visibility(batch.get("decoder_attention_mask"))
    self_mask = keys if decode else combine_masks(keys, causal_mask(ids.shape[1]))
    context_mask = attention_visibility(batch.get("attention_mask"))
    d, _ = self.decoder(y, self_mask, encoded, context_mask, train=train, decode=decode)
    logits = self.token_embed.attend(d).astype(jnp.float32)                              # [B, T, V]
    return d, nn.with_logical_constraint(logits, ("batch", "length", "vocab"))

  def __call__(self, batch: dict, *, train: bool = False, decode: bool = False) -> dict:
    encoded = self.encode(batch, train=train)
    d, logits = self.decode_step(batch, encoded, train=train, decode=decode)
    return {"hidden": encoded, "decoder_hidden": d, "logits": logits}
