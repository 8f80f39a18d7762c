"""XLNet (Yang et al., 2019): permutation language modelling with two-stream self-attention over a
Transformer-XL backbone.

For a factorisation order z (a permutation of the positions), XLNet maximises
log p(x_{z_t} | x_{z_<t}). Every layer keeps two streams over the same weights:

    content stream  h_i  attends to h_j for j at or before i in z (and to the memory): it sees x_i
    query stream    g_i  attends to h_j for j strictly before i in z: it knows the position i but
                         never the token x_i; it starts from a learned mask embedding w
    logits_i = E g_i^L + b                         (tied output embedding)

Attention is Transformer-XL's relative attention (plmjax.nn.relative) with bidirectional
distances (queries also see keys to their right) plus relative segment encodings: a learned
vector per "same segment / different segment", not per segment id.

Batch (transformers' conventions): `input_ids` [B, T]; optional `perm_mask` [B, T, T] (1 = i may
not attend to j; the content stream still sees itself), `target_mapping` [B, P, T] (one-hot rows:
target p sits at position j; zero rows are padding), `token_type_ids` [B, T], `attention_mask`
[B, T] (1 = real token), `mems` [L, B, M, E], `inputs_embeds` [B, T, E].
Outputs: `logits` [B, P, V] from the query stream when there is a target mapping, else [B, T, V]
from the content stream; `hidden` (the stream the logits come from); `mems` [L, B, M', E] when
`mem_len > 0`: the last mem_len of (mems ++ the first `reuse_len` inputs of this segment).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.nn.attention import dense_init
from plmjax.nn.embeddings import token_embed
from plmjax.nn.relative import RelativeAttention, relative_encoding
from plmjax.nn.transformer import MLP, TransformerConfig, layer_norm, layer_stack

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class XLNetConfig(TransformerConfig):
  vocab_size: int = 32000
  hidden_size: int = 1024
  num_layers: int = 24
  num_heads: int = 16
  mlp_dim: int = 4096
  activation: str = "gelu"
  ln_eps: float = 1e-12
  attention_dropout_rate: float = 0.1
  mlp_dropout: bool = True           # positionwise_ffn: dropout after the activation, as the reference
  mem_len: int = 0                   # memory kept for the next segment (0: none)
  reuse_len: int = 0                 # only the first reuse_len tokens enter the memory (0: all)
  bi_data: bool = False              # half the batch reads the sequence backwards (positions)
  clamp_len: int = -1
  attn_type: str = "bi"              # "bi": content visibility from perm_mask only; "uni": also
                                     # causal, position i sees the memory and content j <= i
  same_length: bool = False          # "uni" only: every query sees the same number of keys
  pad_token_id: int = 5


def xlnet_large(**kw) -> XLNetConfig:
  """XLNet-Large (24 layers, d=1024, 16 heads); pretraining: T=512, reuse 256, mem 384, K=6."""
  return XLNetConfig(**kw)


def xlnet_base(**kw) -> XLNetConfig:
  return XLNetConfig(**{**dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072), **kw})


def _masks(batch: dict, t: int, m: int, cfg: "XLNetConfig"):
  """Visibility for the query stream g and the content stream h: bool [B|1, 1, T, M + T] or None.
  g may see key j unless perm_mask[i, j], j is padding or (attn_type "uni") j is a later content
  position (with same_length, also a key more than M + ... positions back: transformers'
  create_mask); the memory is visible unless "uni" same_length hides it; h always sees itself."""
  if cfg.attn_type not in ("bi", "uni"):
    raise ValueError(f"attn_type={cfg.attn_type!r}: expected 'bi' or 'uni'")
  blocked = None
  if "perm_mask" in batch:
    blocked = batch["perm_mask"] > 0                                            # [B, T, T]
  if "attention_mask" in batch:
    pad = (batch["attention_mask"] == 0)[:, None, :]                            # [B, 1, T]
    blocked = pad if blocked is None else blocked | pad
  if blocked is None and cfg.attn_type == "bi":
    return None, None
  if blocked is None:
    blocked = jnp.zeros((1, t, t), bool)
  blocked = jnp.broadcast_to(blocked, (blocked.shape[0], t, t))
  blocked = jnp.concatenate([jnp.zeros(blocked.shape[:2] + (m,), bool), blocked], axis=-1)
  if cfg.attn_type == "uni":
    i, c = jnp.arange(t)[:, None], jnp.arange(m + t)[None, :]                   # key index c
    uni = c > m + i                                                             # later content
    if cfg.same_length:
      uni = uni | ((c < i) & (c < t))
    blocked = blocked | uni[None]
  g = ~blocked
  h = g | jnp.concatenate([jnp.zeros((t, m), bool), jnp.eye(t, dtype=bool)], axis=-1)
  return g[:, None], h[:, None]


class XLNetBlock(nn.Module):
  """One layer, both streams. Scanned: carry (h [B, T, E], g [B, P, E] or None); per-layer input
  mem [B, M, E] (or None); output: h's input (the next memory's source)."""
  cfg: XLNetConfig
  train: bool = False

  @nn.compact
  def __call__(self, carry, mem: Optional[Array], pos_emb: Array, masks, seg_diff, targets):
    cfg = self.cfg
    h, g = carry
    drop = nn.Dropout(cfg.dropout_rate, deterministic=not self.train)
    attn = RelativeAttention(cfg.num_heads, cfg.head_dim, cfg.hidden_size, dtype=cfg.jnp_dtype,
                             param_dtype=cfg.jnp_param_dtype,
                             dropout_rate=cfg.attention_dropout_rate, init_std=cfg.init_std,
                             segments=True, implementation=cfg.attention_impl,
                             name="attention")
    ln_a, ln_f, mlp = layer_norm(cfg, "ln_attention"), layer_norm(cfg, "ln_mlp"), MLP(cfg, name="mlp")
    mask_g, mask_h = masks
    context = h if mem is None else jnp.concatenate([mem.astype(h.dtype), h], axis=1)   # [B, M+T, E]
    k, v, kr = attn.keys(context, pos_emb)

    def post(x, a):   # residual + LN, then the position-wise feed-forward (both post-LN)
      x = ln_a(x + drop(a))
      return ln_f(x + drop(mlp(x, self.train)))

    new_h = post(h, attn.attend(h, k, v, kr, mask_h, train=self.train, seg_diff=seg_diff))
    if g is not None:
      q_pos, has_target = targets                                               # [B, P] each
      mg = None if mask_g is None else jnp.take_along_axis(
          jnp.broadcast_to(mask_g, (h.shape[0],) + mask_g.shape[1:]), q_pos[:, None, :, None], axis=2)
      sg = None if seg_diff is None else jnp.take_along_axis(seg_diff, q_pos[..., None], axis=1)
      a = attn.attend(g, k, v, kr, mg, train=self.train, seg_diff=sg, q_positions=q_pos)
      g = post(g, a * has_target[..., None].astype(a.dtype))
    return (new_h, g), h


class XLNet(nn.Module):
  config: XLNetConfig

  def init_mems(self, batch_size: int) -> Array:
    """Zero memory [L, B, mem_len, E], as the reference's first step: on "stream" data (row i
    continues row i of the previous batch) the engine carries the returned "mems" across steps."""
    cfg = self.config
    return jnp.zeros((cfg.num_layers, batch_size, cfg.mem_len, cfg.hidden_size), cfg.jnp_dtype)

  @nn.compact
  def __call__(self, batch: dict, *, train: bool = False) -> dict:
    cfg = self.config
    kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype)
    tok = token_embed(cfg.vocab_size, cfg.hidden_size, cfg.init_std, name="token_embed", **kw)
    if "inputs_embeds" in batch:
      x = batch["inputs_embeds"].astype(cfg.jnp_dtype)                          # [B, T, E]
    else:
      x = tok(batch["input_ids"])                                                # [B, T, E]
    b, t = x.shape[:2]
    mems = batch.get("mems")
    m = 0 if mems is None else mems.shape[2]
    if mems is not None and (mems.ndim != 4 or mems.shape[:2] != (cfg.num_layers, b)):
      raise ValueError(f"mems {mems.shape}: expected [num_layers={cfg.num_layers}, batch={b}, M, E]")
    drop = nn.Dropout(cfg.dropout_rate, deterministic=not train)

    # Query stream: one learned mask embedding per target (it knows where, never what).
    mask_emb = self.param("mask_emb", nn.with_logical_partitioning(
        dense_init(cfg.init_std), ("embed",)), (cfg.hidden_size,), cfg.jnp_param_dtype)
    targets, g = None, None
    if "target_mapping" in batch:
      tm = batch["target_mapping"]                                              # [B, P, T]
      targets = (jnp.argmax(tm, axis=-1).astype(jnp.int32), tm.sum(-1))         # [B, P] each
      g = drop(jnp.broadcast_to(mask_emb.astype(cfg.jnp_dtype), (b, tm.shape[1], cfg.hidden_size)))
    masks = _masks(batch, t, m, cfg)                                               # [B, 1, T, M+T]

    seg_diff = None
    if "token_type_ids" in batch:
      tt = batch["token_type_ids"]
      cat = jnp.concatenate([jnp.zeros((b, m), tt.dtype), tt], axis=1)          # memory: type 0
      seg_diff = tt[:, :, None] != cat[:, None, :]                              # [B, T, M+T]
    pos = drop(relative_encoding(t, m + t, cfg.hidden_size, cfg.clamp_len, cfg.bi_data, b))

    carry, inputs = layer_stack(cfg, XLNetBlock, (train,), (drop(x), g), per_layer=(mems,),
                                broadcast=(pos, masks, seg_diff, targets))      # inputs [L, B, T, E]
    h, g = carry

    out = {}
    if cfg.mem_len > 0:
      new = inputs[:, :, :cfg.reuse_len] if cfg.reuse_len > 0 else inputs
      new = new if mems is None else jnp.concatenate([mems.astype(new.dtype), new], axis=2)
      out["mems"] = jax.lax.stop_gradient(new[:, :, -cfg.mem_len:])           # [L, B, M', E]
    top = drop(h if g is None else g)                                          # [B, T|P, E]
    bias = self.param("lm_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                      (cfg.vocab_size,), cfg.jnp_param_dtype)
    out["hidden"] = top
    out["logits"] = nn.with_logical_constraint(tok.attend(top).astype(jnp.float32) + bias,
                                               ("batch", "length", "vocab"))   # [B, T|P, V]
    return out
