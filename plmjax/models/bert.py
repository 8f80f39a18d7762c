"""BERT (Devlin et al., 2019) and RoBERTa (Liu et al., 2019): a bidirectional post-LN Transformer
encoder.

    x = LN(tok[ids] + pos[positions] + seg[token_type_ids])          [B, T, E]
    x = L x post-LN Transformer blocks (padding-masked self-attention)
    pooled = tanh(W x[:, 0])                                          [B, E]      (pooler)
    logits = tok^T LN(act(W x[masked_positions])) + b                 [B, P, V]   (MLM head, tied)
    nsp_logits = W pooled                                             [B, 2]      (NSP head)

SpanBERT adds the span boundary head (`sbo_head=True`, plmjax.objectives.sbo): when the batch
carries the masked spans' boundaries (`span_left`, `span_right`, `span_offset` [B, P]) the output
also holds `sbo_logits` [B, P, V].

UNILM (Dong et al., 2019) is this network under per-example [B, T, T] self-attention masks; for
generation `decode=True` keeps a KV cache (plmjax.nn.attention): `attention_mask` is then the [B, S]
key padding over the cache, every query sees the cached keys up to its own slot, and the first
`cache_prefix` slots (a bidirectional source) are visible to all (plmjax.decode.PrefixLMDecoding).

RoBERTa is the same network with `padding_offset_positions` (positions count from pad_id + 1 and
skip padding), one token type and no NSP head; its differences are otherwise in the objective
(dynamic masking, no NSP, full-length packing) and the data.

ERNIE (Sun et al., 2019) is this network too; `task_type_vocab_size > 0` adds a task-type embedding
table (Hugging Face's `use_task_id`; ERNIE 2.0's task embedding) to the sum before `embed_ln`.

Batch keys: `input_ids` [B, T]; optional `attention_mask` ([B, T] key padding, or [B, T, T] a full
visibility matrix such as UNILM's), `token_type_ids` [B, T], `task_type_ids` [B, T], `positions` [B, T],
`masked_positions` [B, P] (logits only at those positions).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.nn.attention import padding_mask
from plmjax.nn.embeddings import default_positions, embed, padding_offset_positions, token_embed
from plmjax.nn.heads import ClassifierHead, MaskedLMHead, Pooler, gather_positions
from plmjax.nn.transformer import TransformerConfig, TransformerStack, layer_norm
from plmjax.objectives.sbo import SpanBoundaryHead, sbo_logits

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class BertConfig(TransformerConfig):
  type_vocab_size: int = 2
  pad_token_id: int = 0
  padding_offset_positions: bool = False   # RoBERTa
  pooler: bool = True
  mlm_head: bool = True
  nsp_head: bool = True
  sbo_head: bool = False                   # SpanBERT's span boundary objective head
  sbo_max_offset: int = 20                 # rows of its offset table (SpanBERT: max_pair_targets)
  task_type_vocab_size: int = 0            # > 0: ERNIE's task-type embedding (batch `task_type_ids`)


def bert_base(**kw) -> BertConfig:
  return BertConfig(**kw)


def bert_large(**kw) -> BertConfig:
  return BertConfig(**{**dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096), **kw})


def spanbert_base(**kw) -> BertConfig:
  """SpanBERT: BERT-base (cased in the paper) with the SBO head and no NSP head."""
  return BertConfig(**{**dict(nsp_head=False, sbo_head=True), **kw})


def unilm_base(**kw) -> BertConfig:
  """UNILM: BERT-large-sized in the paper (initialised from BERT-large); six token types, one per
  segment of each LM mode (plmjax.objectives.unilm), no NSP head."""
  return BertConfig(**{**dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096,
                              type_vocab_size=6, nsp_head=False), **kw})


def roberta_base(**kw) -> BertConfig:
  return BertConfig(**{**dict(vocab_size=50265, max_len=514, type_vocab_size=1, pad_token_id=1,
                              padding_offset_positions=True, ln_eps=1e-5, nsp_head=False), **kw})


def attention_visibility(attention_mask: Array | None) -> Array | None:
  """[B, T] key padding -> [B, 1, 1, T]; [B, T, T] visibility -> [B, 1, T, T]; None -> None."""
  if attention_mask is None:
    return None
  if attention_mask.ndim == 3:
    return attention_mask.astype(bool)[:, None]
  return padding_mask(attention_mask)


class Bert(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, batch: dict, *, train: bool = False, return_hidden_states: bool = False,
               decode: bool = False, cache_prefix: int = 0) -> dict:
    cfg = self.config
    ids = batch["input_ids"]                                                          # [B, T]
    if "positions" in batch:
      positions = batch["positions"]
    elif cfg.padding_offset_positions:
      positions = padding_offset_positions(ids, cfg.pad_token_id)
    else:
      positions = default_positions(ids)
    token_types = batch.get("token_type_ids", jnp.zeros_like(ids))

    kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype)
    tok = token_embed(cfg.vocab_size, cfg.hidden_size, cfg.init_std, name="token_embed", **kw)
    x = (tok(ids) + embed(cfg.max_len, cfg.hidden_size, cfg.init_std, name="position_embed", **kw)(positions)
         + embed(cfg.type_vocab_size, cfg.hidden_size, cfg.init_std, name="type_embed", **kw)(token_types))
    if cfg.task_type_vocab_size:                                                     # ERNIE
      task_types = batch.get("task_type_ids", jnp.zeros_like(ids))
      x = x + embed(cfg.task_type_vocab_size, cfg.hidden_size, cfg.init_std, name="task_embed", **kw)(task_types)
    x = layer_norm(cfg, "embed_ln")(x)
    x = nn.Dropout(cfg.dropout_rate, deterministic=not train)(x)                        # [B, T, E]

    mask = attention_visibility(batch.get("attention_mask"))
    h, layer_outputs = TransformerStack(cfg, name="encoder")(
        x, mask, train=train, collect=return_hidden_states, decode=decode,
        cache_prefix=cache_prefix)                                                   # [B, T, E]

    out = {"hidden": h}
    if return_hidden_states:
      out["hidden_states"] = jnp.concatenate([x[None], layer_outputs], axis=0)       # [L+1, B, T, E]
    if cfg.pooler:
      out["pooled"] = Pooler(cfg, name="pooler")(h)                                  # [B, E]
    if cfg.mlm_head:
      hm = gather_positions(h, batch["masked_positions"]) if "masked_positions" in batch else h
      out["logits"] = MaskedLMHead(cfg, name="mlm_head")(hm, tok.attend)             # [B, P|T, V]
    if cfg.nsp_head:
      if not cfg.pooler:
        raise ValueError("BertConfig: nsp_head=True needs pooler=True")
      out["nsp_logits"] = ClassifierHead(cfg, 2, name="nsp_head")(out["pooled"])     # [B, 2]
    if cfg.sbo_head and "span_left" in batch:
      head = SpanBoundaryHead(cfg, cfg.sbo_max_offset, name="sbo_head")
      out["sbo_logits"] = sbo_logits(h, batch, head, tok.attend)                     # [B, P, V]
    return out
