"""ERNIE (THU) (Zhang et al., 2019): BERT with a knowledge encoder that fuses entity vectors into tokens.

    x = LN(tok[ids] + pos[positions] + seg[token_type_ids])                  [B, T, E]
    w = T-Encoder(x): N post-LN BERT blocks (`encoder`, BERT's names)        [B, T, E]
    e_t = TransE[ent_ids_t] where a mention starts at token t, else 0        [B, T, De]  (frozen)
    (w, e) = K-Encoder(w, e): M aggregator layers (`knowledge_encoder`):
        w~ = LN(w + MH-ATT(w))                      tokens attend to tokens
        e~ = LN(e + MH-ATT_ent(e))                  aligned entities attend to aligned entities
        h  = GELU(W~_t w~ + W~_e e~ + b~)           tokens with an entity       [B, T, F]
        h  = GELU(W~_t w~ + b~)                     tokens without (the token-only path)
        w  = LN(w~ + GELU(W_t h + b_t))             e = LN(e~ + GELU(W_e h + b_e)) (entity tokens)
    pooled, MLM logits, NSP logits as BERT (on the K-Encoder's tokens)
    dea_logits[b, p, c] = LN(GELU(W h_{dea_positions[b, p]})) . TransE[dea_candidates[b, c]]

The paper's fusion (its eq. 4-5) is the GELU lines; the release (knowledge_bert/modeling.py) drops
the second GELU and adds BERT's residual + LayerNorm around the output projections. Here the paper's
GELU is kept (`fusion_output="paper"`, or "release" for the release's linear output) and the release's
residual + LayerNorm is used in both, as in every post-LN block of this codebase.

Entities: `entity_vectors` is "kg:synthetic" / "kg:PATH" (a knowledge source, plmjax.knowledge.kg) or
the path of an entity2vec.vec file. The table is a constant of the module, not a parameter, so it is
frozen by construction (as in the paper's pre-training) and is never in the optimizer state.
Batch: BERT's keys plus `ent_ids` [B, T] (entity id at a mention's first token, -1 elsewhere; absent
= no entities: every token takes the token-only path) and, for dEA, `dea_positions` [B, P] and
`dea_candidates` [B, C] (entity ids, -1 = empty slot; plmjax.objectives.dea).

Layout: the embeddings, `encoder` (the T-Encoder, `num_layers` = N), `pooler`, `mlm_head` and
`nsp_head` have plmjax Bert's names and shapes, so a Bert checkpoint of N layers loads into them;
the K-Encoder's token side (attention, ln_attention, mlp/wi, mlp/wo, ln_mlp) has a Bert block's
names too, so BERT-base's 12 layers split into N = 6 + M = 6 as the paper initialises
(`bert_to_ernie_params`).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from plmjax.models.bert import BertConfig, attention_visibility
from plmjax.nn.attention import MultiHeadAttention, dense_init, padding_mask
from plmjax.nn.embeddings import default_positions, embed, token_embed
from plmjax.nn.heads import ClassifierHead, MaskedLMHead, Pooler, gather_positions
from plmjax.nn.transformer import ACTIVATIONS, TransformerStack, dense, layer_norm

Array = jax.Array
FUSION_OUTPUTS = ("paper", "release")


@dataclasses.dataclass(frozen=True)
class ErnieThuConfig(BertConfig):
  num_layers: int = 6             # N, the T-Encoder (paper: 6)
  knowledge_layers: int = 6       # M, the K-Encoder's aggregators (paper: 6)
  entity_dim: int = 100           # TransE dimension (paper: 100)
  entity_heads: int = 4
  entity_vectors: str = ""        # "kg:synthetic" | "kg:PATH" | path/to/entity2vec.vec
  fusion_output: str = "paper"    # paper: GELU on the output projections; release: linear
  dea_head: bool = True

  def __post_init__(self):
    super().__post_init__()
    if self.entity_dim % self.entity_heads:
      raise ValueError(f"entity_dim={self.entity_dim} is not divisible by entity_heads={self.entity_heads}")
    if self.fusion_output not in FUSION_OUTPUTS:
      raise ValueError(f"fusion_output={self.fusion_output!r}: expected one of {FUSION_OUTPUTS}")
    if self.knowledge_layers < 1:
      raise ValueError(f"knowledge_layers={self.knowledge_layers}: ERNIE needs at least one aggregator")


def ernie_thu_base(**kw) -> ErnieThuConfig:
  return ErnieThuConfig(**kw)


def load_entity_table(spec: str) -> np.ndarray:
  """`entity_vectors` -> float32 [num_entities, entity_dim] (read-only; plmjax.knowledge.kg)."""
  from plmjax.knowledge import kg
  return kg.entity_vectors(spec)


def entity_table(cfg: ErnieThuConfig) -> np.ndarray:
  table = load_entity_table(cfg.entity_vectors)
  if table.shape[1] != cfg.entity_dim:
    raise ValueError(f"model.entity_vectors={cfg.entity_vectors!r} holds {table.shape[1]}-d vectors, "
                     f"model.entity_dim={cfg.entity_dim}")
  return table


def _entity_ln(cfg, name):
  return nn.LayerNorm(epsilon=cfg.ln_eps, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("table",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("table",)), name=name)


def _entity_dense(cfg, features: int, axes, name: str, use_bias: bool = True):
  return nn.Dense(features, use_bias=use_bias, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
                  kernel_init=nn.with_logical_partitioning(dense_init(cfg.init_std), axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]), name=name)


class Fusion(nn.Module):
  """The information fusion layer (paper eq. 4-5): w~ [B, T, E], e~ [B, T, De], has_entity [B, T, 1]
  -> (w' [B, T, E], e' [B, T, De]) before the residual. Tokens without an entity get h from w~ only."""
  cfg: ErnieThuConfig

  @nn.compact
  def __call__(self, w: Array, e: Array, has_entity: Array) -> tuple[Array, Array]:
    cfg = self.cfg
    act = ACTIVATIONS[cfg.activation]
    h = dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi")(w)                                # W~_t w~ + b~
    h = h + has_entity * _entity_dense(cfg, cfg.mlp_dim, ("table", "mlp"), "entity_in", use_bias=False)(e)
    h = nn.with_logical_constraint(act(h), ("batch", "length", "mlp"))                   # [B, T, F]
    w_out = dense(cfg, cfg.hidden_size, ("mlp", "embed"), "wo")(h)                        # [B, T, E]
    e_out = _entity_dense(cfg, cfg.entity_dim, ("mlp", "table"), "entity_out")(h)         # [B, T, De]
    if cfg.fusion_output == "paper":
      w_out, e_out = act(w_out), act(e_out)
    return w_out, e_out


class Aggregator(nn.Module):
  """One K-Encoder layer; the carry is (w, e). Same call signature as `Block` so that
  `TransformerStack` scans it: (x, mask, context, context_mask) = ((w, e), token mask, has_entity
  [B, T, 1], entity attention mask [B, 1, 1, T])."""
  cfg: ErnieThuConfig
  train: bool = False
  decode: bool = False
  collect: bool = False
  cross: bool = False

  @nn.compact
  def __call__(self, x, mask, has_entity, entity_mask):
    cfg = self.cfg
    w, e = x                                                                            # [B,T,E], [B,T,De]
    drop = nn.Dropout(cfg.dropout_rate, deterministic=not self.train)
    att = lambda n, d, name: MultiHeadAttention(
        num_heads=n, head_dim=d // n, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
        dropout_rate=cfg.attention_dropout_rate, init_std=cfg.init_std,
        implementation=cfg.attention_impl, name=name)
    w = layer_norm(cfg, "ln_attention")(w + drop(att(cfg.num_heads, cfg.hidden_size, "attention")(
        w, mask=mask, train=self.train)))                                                 # w~
    e = _entity_ln(cfg, "ln_entity_attention")(e + drop(att(cfg.entity_heads, cfg.entity_dim, "entity_attention")(
        e, mask=entity_mask, train=self.train)))                                          # e~
    w_out, e_out = Fusion(cfg, name="mlp")(w, e, has_entity)
    w = layer_norm(cfg, "ln_mlp")(w + drop(w_out))
    e = has_entity * _entity_ln(cfg, "ln_entity_mlp")(e + drop(e_out))                    # 0 off entities
    return (w, e), (w if self.collect else None)


class EntityPredictionHead(nn.Module):
  """dEA head: h [B, P, E] -> LN(GELU(W h)) [B, P, De], scored against candidate vectors [B, C, De]."""
  cfg: ErnieThuConfig

  @nn.compact
  def __call__(self, h: Array, candidates: Array, valid: Array) -> Array:
    cfg = self.cfg
    q = _entity_dense(cfg, cfg.entity_dim, ("embed", "table"), "transform")(h)
    q = _entity_ln(cfg, "ln")(ACTIVATIONS[cfg.activation](q))
    logits = jnp.einsum("bpd,bcd->bpc", q, candidates.astype(q.dtype)).astype(jnp.float32)
    return jnp.where(valid[:, None, :], logits, -1e9)                                    # [B, P, C]


class ErnieThu(nn.Module):
  config: ErnieThuConfig

  @nn.compact
  def __call__(self, batch: dict, *, train: bool = False, return_hidden_states: bool = False) -> dict:
    cfg = self.config
    ids = batch["input_ids"]                                                          # [B, T]
    if ids.shape[1] > cfg.max_len:
      raise ValueError(f"ErnieThu: input length {ids.shape[1]} exceeds model.max_len={cfg.max_len} "
                       f"(the learned position table)")
    positions = batch["positions"] if "positions" in batch else default_positions(ids)
    token_types = batch.get("token_type_ids", jnp.zeros_like(ids))
    kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype)
    tok = token_embed(cfg.vocab_size, cfg.hidden_size, cfg.init_std, name="token_embed", **kw)
    x = (tok(ids) + embed(cfg.max_len, cfg.hidden_size, cfg.init_std, name="position_embed", **kw)(positions)
         + embed(cfg.type_vocab_size, cfg.hidden_size, cfg.init_std, name="type_embed", **kw)(token_types))
    x = layer_norm(cfg, "embed_ln")(x)
    x = nn.Dropout(cfg.dropout_rate, deterministic=not train)(x)                        # [B, T, E]
    mask = attention_visibility(batch.get("attention_mask"))
    w, t_layers = TransformerStack(cfg, name="encoder")(x, mask, train=train,
                                                        collect=return_hidden_states)  # T-Encoder

    table = jnp.asarray(entity_table(cfg))                                             # [n, De] constant
    ent = batch.get("ent_ids", jnp.full(ids.shape, -1, jnp.int32))                     # [B, T]
    has = ent >= 0
    if "attention_mask" in batch and batch["attention_mask"].ndim == 2:
      has = has & batch["attention_mask"].astype(bool)
    e = jnp.where(has[..., None], table[jnp.clip(ent, 0, table.shape[0] - 1)], 0.0).astype(cfg.jnp_dtype)
    k_cfg = cfg.replace(num_layers=cfg.knowledge_layers)
    (w, e), k_layers = TransformerStack(k_cfg, block=Aggregator, name="knowledge_encoder")(
        (w, e), mask, has[..., None].astype(cfg.jnp_dtype), padding_mask(has), train=train,
        collect=return_hidden_states)                                                   # K-Encoder

    out = {"hidden": w, "entity_hidden": e}
    if return_hidden_states:
      out["hidden_states"] = jnp.concatenate([x[None], t_layers, k_layers], axis=0)    # [N+M+1, B, T, E]
    if cfg.pooler:
      out["pooled"] = Pooler(cfg, name="pooler")(w)
    if cfg.mlm_head:
      hm = gather_positions(w, batch["masked_positions"]) if "masked_positions" in batch else w
      out["logits"] = MaskedLMHead(cfg, name="mlm_head")(hm, tok.attend)              # [B, P|T, V]
    if cfg.nsp_head:
      out["nsp_logits"] = ClassifierHead(cfg, 2, name="nsp_head")(out["pooled"])      # [B, 2]
    if cfg.dea_head and "dea_positions" in batch:
      cand = batch["dea_candidates"]                                                   # [B, C]
      cand_vec = table[jnp.clip(cand, 0, table.shape[0] - 1)]                          # [B, C, De]
      out["dea_logits"] = EntityPredictionHead(cfg, name="dea_head")(
          gather_positions(w, batch["dea_positions"]), cand_vec, cand >= 0)            # [B, P, C]
    return out


TOKEN_SIDE = ("attention", "ln_attention", "ln_mlp")    # + mlp/wi, mlp/wo: a Bert block's names


def _layer_count(layers: dict) -> int:
  return int(jax.tree.leaves(layers)[0].shape[0])


def bert_to_ernie_params(bert_params: dict, num_layers: int, knowledge_layers: int) -> tuple[dict, str]:
  """The paper's initialisation from a plmjax Bert param tree of L layers (scanned or unrolled):
  embeddings, pooler, MLM and NSP heads as they are; the T-Encoder takes BERT's layers 0..N-1; when
  L >= N + M the K-Encoder's token side (attention, ln_attention, mlp/wi, mlp/wo, ln_mlp: a Bert
  block's names and shapes) takes layers N..N+M-1 (BERT-base's 12 = 6 + 6, as the paper does), else it
  starts fresh. -> (a partial ERNIE tree, scanned layout; the weights it lacks, e.g. the entity side,
  start fresh when `plmjax.train.init_from.merge_params` merges it; a one-line description)."""
  from plmjax.nn.transformer import stack_layer_params
  enc = bert_params["encoder"]
  if "layers" not in enc:                                     # unrolled: layers_0, layers_1, ...
    enc = stack_layer_params(enc, sum(k.startswith("layers_") for k in enc))
  layers = enc["layers"]
  total, n, m = _layer_count(layers), num_layers, knowledge_layers
  if total < n:
    raise ValueError(f"the BERT checkpoint has {total} layers; the T-Encoder needs model.num_layers = N = {n} "
                     f"(N <= BERT's layers)")
  out = {k: v for k, v in bert_params.items() if k not in ("encoder",)}
  out["encoder"] = {"layers": jax.tree.map(lambda a: a[:n], layers)}
  if total >= n + m:
    k_layers = {name: jax.tree.map(lambda a: a[n:n + m], layers[name]) for name in TOKEN_SIDE}
    k_layers["mlp"] = {name: jax.tree.map(lambda a: a[n:n + m], layers["mlp"][name]) for name in ("wi", "wo")}
    out["knowledge_encoder"] = {"layers": k_layers}
    note = f"T-Encoder <- BERT layers 0-{n - 1}, K-Encoder token side <- layers {n}-{n + m - 1}"
    unused = total - n - m
  else:
    note = f"T-Encoder <- BERT layers 0-{n - 1}, K-Encoder fresh (BERT has {total} < N + M = {n + m} layers)"
    unused = total - n
  if unused:
    note += f"; BERT's last {unused} layer(s) unused"
  return out, note


def adapt_checkpoint(loaded: dict, cfg: ErnieThuConfig) -> tuple[dict, str]:
  """`train.init_from` / `model.init_from` hook (registry `init_adapter`): a Bert checkpoint's params
  (no `knowledge_encoder`) -> ERNIE's layout by `bert_to_ernie_params`; an ERNIE checkpoint as is."""
  if "knowledge_encoder" in loaded or "encoder" not in loaded:
    return loaded, ""
  tree, note = bert_to_ernie_params(loaded, cfg.num_layers, cfg.knowledge_layers)
  if not cfg.scan_layers:
    from plmjax.nn.transformer import unstack_layer_params
    tree = {**tree, "encoder": unstack_layer_params(tree["encoder"], cfg.num_layers)}
    if "knowledge_encoder" in tree:
      tree["knowledge_encoder"] = unstack_layer_params(tree["knowledge_encoder"], cfg.knowledge_layers)
  return tree, "ERNIE from a BERT checkpoint: " + note
