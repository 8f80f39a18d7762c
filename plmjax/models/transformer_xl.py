"""Transformer-XL (Dai et al., 2019): a causal Transformer LM with segment-level recurrence and
relative positions.

A long text is cut into segments of T tokens. Each layer n keeps a memory of the last M hidden
states it received as input (from earlier segments, no gradient) and lets the current segment
attend over memory ++ segment:

    h~^{n-1} = [SG(m^{n-1}) ; h^{n-1}]                       [B, M + T, E]
    q, k, v  = h^{n-1} W_q, h~^{n-1} W_k, h~^{n-1} W_v
    a^n      = RelativeAttention(q, k, v, distances)           (see plmjax.nn.relative)
    o^n      = LN(h^{n-1} + a^n);  h^n = LN(o^n + FF(o^n))      (post-LN; pre-LN optional)
    m'^{n-1} = last M of [m^{n-1} ; h^{n-1}]

so the dependency length grows by M per layer: the last output of a segment depends on the N·M
tokens before the segment (tests/test_txl_memory.py checks exactly that). Input is an adaptive
embedding and output an adaptive log-softmax tied to it (plmjax.nn.adaptive).

    out = model.apply(vars, {"input_ids": seg [B, T], "mems": mems [L, B, M, E]}, train=...)
    out["logits"]  [B, T, V]  log-probabilities (adaptive softmax)
    out["mems"]    [L, B, M, E]   the memory for the next segment (stop-gradient)

Without "mems" in the batch the memory starts as zeros (the reference implementations' convention).
With "labels" [B, T] the model returns "target_log_probs" [B, T] instead of the full "logits".
`scan_segments` runs a long sequence [B, K·T] as K segments in one `lax.scan` threading mems
(evaluation of a long document in one jitted call); with `segment_len` set in the config the model
does the same inside `apply`, so a training row of K·T tokens trains the recurrence.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.nn.adaptive import AdaptiveEmbedding, AdaptiveSoftmax
from plmjax.nn.attention import dense_init
from plmjax.nn.relative import RelativeAttention, relative_encoding
from plmjax.nn.transformer import MLP, TransformerConfig, layer_norm, layer_stack

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TransformerXLConfig(TransformerConfig):
  vocab_size: int = 267735
  hidden_size: int = 1024            # d_model
  num_layers: int = 18
  num_heads: int = 16
  head_size: int = 0                 # d_head; 0 = hidden_size // num_heads
  mlp_dim: int = 4096                # d_inner
  activation: str = "relu"
  ln_eps: float = 1e-5
  embed_size: int = 0                # d_embed; 0 = hidden_size
  cutoffs: tuple = (20000, 40000, 200000)
  div_val: int = 4
  tie_projs: tuple = ()              # per cluster; () = all but the first tied
  proj_init_std: float = 0.01
  mem_len: int = 1600
  clamp_len: int = 1000
  same_length: bool = True           # every query sees the same number of keys
  untie_r: bool = True               # per-layer r_w_bias / r_r_bias
  attention_dropout_rate: float = 0.0
  mlp_dropout: bool = True           # PositionwiseFF: Linear, ReLU, Dropout, Linear, Dropout
  segment_len: int = 0               # > 0: a longer row runs as segments of this length in one
                                     # lax.scan threading the memory (training over long rows)

  def __post_init__(self):
    if self.head_size == 0:
      super().__post_init__()
    if self.mem_len < 0:
      raise ValueError(f"mem_len={self.mem_len} must be >= 0")
    if self.same_length and self.mem_len == 0:
      raise ValueError("same_length=True needs mem_len > 0 (each query would see no key)")

  @property
  def head_dim(self) -> int:
    return self.head_size or self.hidden_size // self.num_heads

  @property
  def d_embed(self) -> int:
    return self.embed_size or self.hidden_size


def wt103_large(**kw) -> TransformerXLConfig:
  """The released WikiText-103 model (Table 1: 18 layers, d=1024, 257M params)."""
  return TransformerXLConfig(**kw)


def wt103_base(**kw) -> TransformerXLConfig:
  """WikiText-103 base (16 layers, d=410, 10 heads, d_inner 2100, M = T = 150 in training)."""
  return TransformerXLConfig(**{**dict(hidden_size=410, num_layers=16, num_heads=10, head_size=41,
                                       mlp_dim=2100, mem_len=150, clamp_len=-1, dropout_rate=0.1), **kw})


def enwik8_base(**kw) -> TransformerXLConfig:
  """enwik8 12-layer (d=512, 8 heads, d_inner 2048, T = M = 512), byte vocabulary, plain softmax."""
  return TransformerXLConfig(**{**dict(vocab_size=204, hidden_size=512, num_layers=12, num_heads=8,
                                       mlp_dim=2048, cutoffs=(), div_val=1, mem_len=512,
                                       clamp_len=-1, same_length=False), **kw})


def attention_visibility(q_len: int, m_len: int, mem_len: int, same_length: bool) -> Array:
  """[1, 1, T, M + T] bool: query i sees memory and keys up to itself; with `same_length`, also
  no key more than `mem_len` steps back (every query sees the same number of keys)."""
  k_len = m_len + q_len
  i = jnp.arange(q_len)[:, None]
  j = jnp.arange(k_len)[None, :]
  visible = j <= i + m_len
  if same_length:
    over = k_len - mem_len
    shift = q_len - over if over > 0 else q_len
    visible &= j > i - shift
  return visible[None, None]


class TXLBlock(nn.Module):
  """One layer. Scanned: carry h [B, T, E]; per-layer input mem [B, M, E]; output h's input copy
  (the next memory's source)."""
  cfg: TransformerXLConfig
  train: bool = False
  mem_grad: bool = False     # True: gradients flow into the memory (dependency analysis only)

  @nn.compact
  def __call__(self, h: Array, mem: Array, pos_emb: Array, mask: Array,
               biases: Optional[tuple[Array, Array]]):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout_rate, deterministic=not self.train)
    attn = RelativeAttention(cfg.num_heads, cfg.head_dim, cfg.hidden_size, dtype=cfg.jnp_dtype,
                             param_dtype=cfg.jnp_param_dtype,
                             dropout_rate=cfg.attention_dropout_rate, init_std=cfg.init_std,
                             shared_biases=not cfg.untie_r, implementation=cfg.attention_impl,
                             name="attention")
    ln_a, ln_f = layer_norm(cfg, "ln_attention"), layer_norm(cfg, "ln_mlp")
    mem = mem if self.mem_grad else jax.lax.stop_gradient(mem)
    context = jnp.concatenate([mem.astype(h.dtype), h], axis=1)  # [B, M+T, E]
    if cfg.pre_ln:
      ctx_n = ln_a(context)
      k, v, kr = attn.keys(ctx_n, pos_emb)
      x = h + drop(attn.attend(ctx_n[:, -h.shape[1]:], k, v, kr, mask, train=self.train,
                               biases=biases))
      x = x + drop(MLP(cfg, name="mlp")(ln_f(x), self.train))
    else:
      k, v, kr = attn.keys(context, pos_emb)
      x = ln_a(h + drop(attn.attend(h, k, v, kr, mask, train=self.train, biases=biases)))
      x = ln_f(x + drop(MLP(cfg, name="mlp")(x, self.train)))
    return x, h


class TransformerXL(nn.Module):
  config: TransformerXLConfig

  def init_mems(self, batch_size: int) -> Array:
    """Zero memory [L, B, M, E] (what the model uses when the batch has no "mems")."""
    cfg = self.config
    return jnp.zeros((cfg.num_layers, batch_size, cfg.mem_len, cfg.hidden_size), cfg.jnp_dtype)

  def __call__(self, batch: dict, *, train: bool = False, mem_grad: bool = False) -> dict:
    src = batch["inputs_embeds"] if "inputs_embeds" in batch else batch["input_ids"]
    s = self.config.segment_len
    if s and src.shape[1] > s:
      return self._over_segments(batch, train, mem_grad)
    return self._segment(batch, train, mem_grad)

  def _over_segments(self, batch: dict, train: bool, mem_grad: bool) -> dict:
    """A row of K·S tokens as K segments of S, memory threaded by one (lifted) lax.scan."""
    s = self.config.segment_len
    long_keys = [k for k in ("input_ids", "inputs_embeds", "labels") if k in batch]
    b, t = batch[long_keys[0]].shape[:2]
    if t % s:
      raise ValueError(f"TransformerXL: length {t} is not a multiple of segment_len={s}")
    split = lambda a: jnp.moveaxis(a.reshape((b, t // s, s) + a.shape[2:]), 1, 0)   # [K, B, S, ...]
    xs = {k: split(batch[k]) for k in long_keys}
    mems = batch.get("mems")
    mems = self.init_mems(b) if mems is None else mems

    def body(mdl, mems, seg):
      out = mdl._segment({**seg, "mems": mems}, train, mem_grad)
      return out.pop("mems"), out

    scan = nn.scan(body, variable_broadcast="params", split_rngs={"params": False, "dropout": True},
                   in_axes=0, out_axes=0)
    mems, outs = scan(self, mems, xs)
    merge = lambda a: jnp.moveaxis(a, 0, 1).reshape((b, t) + a.shape[3:])          # [B, K·S, ...]
    return {**{k: merge(v) for k, v in outs.items()}, "mems": mems}

  @nn.compact
  def _segment(self, batch: dict, train: bool, mem_grad: bool) -> dict:
    cfg = self.config
    kw = dict(vocab_size=cfg.vocab_size, embed_size=cfg.d_embed, model_size=cfg.hidden_size,
              cutoffs=tuple(cfg.cutoffs), div_val=cfg.div_val, init_std=cfg.init_std,
              proj_init_std=cfg.proj_init_std, param_dtype=cfg.jnp_param_dtype)
    embed = AdaptiveEmbedding(dtype=cfg.jnp_dtype, name="embed", **kw)
    if "inputs_embeds" in batch:
      x = batch["inputs_embeds"].astype(cfg.jnp_dtype)                            # [B, T, E]
    else:
      x = embed(batch["input_ids"])                                                # [B, T, E]
    b, t = x.shape[:2]
    mems = batch.get("mems")
    if mems is None:
      mems = self.init_mems(b)                                                     # [L, B, M, E]
    if mems.ndim != 4 or mems.shape[:2] != (cfg.num_layers, b) or mems.shape[3] != cfg.hidden_size:
      raise ValueError(f"mems {mems.shape}: expected [num_layers={cfg.num_layers}, batch={b}, "
                       f"M, hidden={cfg.hidden_size}]")
    m = mems.shape[2]
    mask = attention_visibility(t, m, cfg.mem_len, cfg.same_length)               # [1, 1, T, M+T]
    pos = relative_encoding(t, m + t, cfg.hidden_size, cfg.clamp_len)             # [R, E]
    drop = nn.Dropout(cfg.dropout_rate, deterministic=not train)
    h, pos = drop(x), drop(pos)
    biases = None
    if not cfg.untie_r:
      init = nn.with_logical_partitioning(dense_init(cfg.init_std), ("heads", "kv"))
      shape = (cfg.num_heads, cfg.head_dim)
      biases = (self.param("r_w_bias", init, shape, cfg.jnp_param_dtype),
                self.param("r_r_bias", init, shape, cfg.jnp_param_dtype))

    h, inputs = layer_stack(cfg, TXLBlock, (train, mem_grad), h, per_layer=(mems,),
                            broadcast=(pos, mask, biases))                     # inputs [L, B, T, E]
    h = drop(h)
    if cfg.mem_len > 0:
      new_mems = jnp.concatenate([mems, inputs.astype(mems.dtype)], axis=2)[:, :, -cfg.mem_len:]
    else:
      new_mems = mems
    out = {"hidden": h, "mems": new_mems if mem_grad else jax.lax.stop_gradient(new_mems)}

    tables, projs = embed.weights()
    softmax = AdaptiveSoftmax(tie_projs=tuple(cfg.tie_projs), name="softmax", **kw)
    if "labels" in batch:
      out["target_log_probs"] = softmax.target_log_prob(h, batch["labels"], tables, projs)  # [B, T]
    else:
      out["logits"] = nn.with_logical_constraint(softmax(h, tables, projs),
                                                 ("batch", "length", "vocab"))          # [B, T, V]
    return out


def scan_segments(model: TransformerXL, params, ids: Optional[Array], segment_len: int,
                  mems: Optional[Array] = None, *, labels: Optional[Array] = None,
                  embeds: Optional[Array] = None, train: bool = False,
                  rngs: Optional[dict] = None, stop_gradient: bool = True):
  """Runs ids [B, K·T] (or embeds [B, K·T, E]) as K segments of T in one `lax.scan`, threading
  the memory. Returns (outputs of every segment stacked on a leading K axis, final mems).
  `stop_gradient=False` lets gradients cross segment boundaries (dependency analysis only)."""
  src = ids if embeds is None else embeds
  b, total = src.shape[:2]
  if total % segment_len:
    raise ValueError(f"sequence length {total} is not a multiple of segment_len={segment_len}")
  k = total // segment_len
  split = lambda a: jnp.moveaxis(a.reshape((b, k, segment_len) + a.shape[2:]), 1, 0)
  xs = {("input_ids" if embeds is None else "inputs_embeds"): split(src)}
  if labels is not None:
    xs["labels"] = split(labels)
  if mems is None:
    cfg = model.config
    mems = jnp.zeros((cfg.num_layers, b, cfg.mem_len, cfg.hidden_size), cfg.jnp_dtype)
  keys = jax.random.split(rngs["dropout"], k) if rngs else jnp.zeros((k, 2), jnp.uint32)

  def step(mems, x):
    seg, key = x
    out = model.apply({"params": params}, {**seg, "mems": mems}, train=train,
                      mem_grad=not stop_gradient, rngs={"dropout": key} if rngs else None)
    return out.pop("mems"), out

  mems, outs = jax.lax.scan(step, mems, (xs, keys))
  return outs, mems
