"""Transformer blocks and layer stacks.

A block is post-LN (BERT, GPT-1: x = LN(x + f(x))) or pre-LN (GPT-2: x = x + f(LN(x))). A stack
applies `num_layers` blocks either with `nn.scan` (one compiled block, params stacked on a leading
'layers' axis; the default, so compile time does not grow with depth) or unrolled (`layers_0`,
`layers_1`, ...), optionally rematerialised. `stack_layer_params` / `unstack_layer_params` convert
between the two layouts.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.nn.attention import MultiHeadAttention, dense_init

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),   # exact erf GELU (BERT)
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),  # tanh approximation (GPT, gelu_new)
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}

REMAT_POLICIES = {
    "none": None,
    "full": "full",   # save nothing, recompute the whole block
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Fields every Transformer-stack model shares; model families extend this dataclass."""
  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  max_len: int = 512
  activation: str = "gelu"
  ln_eps: float = 1e-12
  pre_ln: bool = False
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  mlp_dropout: bool = False       # dropout inside the FFN, after the activation (Transformer-XL, XLNet)
  init_std: float = 0.02
  dtype: str = "float32"          # compute dtype; params are always param_dtype
  param_dtype: str = "float32"
  scan_layers: bool = True
  remat_policy: str = "none"      # one of REMAT_POLICIES
  attention_impl: Optional[str] = None   # None (auto) | "xla" | "cudnn" | "einsum"

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation={self.activation!r}: expected one of {sorted(ACTIVATIONS)}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy={self.remat_policy!r}: expected one of {sorted(REMAT_POLICIES)}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def jnp_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def jnp_param_dtype(self):
    return jnp.dtype(self.param_dtype)

  def replace(self, **kw):
    return dataclasses.replace(self, **kw)


def layer_norm(cfg: TransformerConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=cfg.ln_eps, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                      name=name)


def dense(cfg: TransformerConfig, features: int, axes: tuple[str, str], name: str) -> nn.Dense:
  return nn.Dense(features, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
                  kernel_init=nn.with_logical_partitioning(dense_init(cfg.init_std), axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]),
                  name=name)


class MLP(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    cfg = self.cfg
    h = dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi")(x)                       # [B, T, F]
    h = nn.with_logical_constraint(ACTIVATIONS[cfg.activation](h), ("batch", "length", "mlp"))
    if cfg.mlp_dropout:       # the references' inner dropout: Linear -> act -> Dropout -> Linear
      h = nn.Dropout(cfg.dropout_rate, deterministic=not train)(h)
    return dense(cfg, x.shape[-1], ("mlp", "embed"), "wo")(h)                     # [B, T, E]


class Block(nn.Module):
  """One Transformer layer. `__call__(x, mask, context, context_mask) -> (x, x or None)` so that
  `nn.scan` can stack it: the carry is the hidden state, the per-layer output is collected when
  `collect` is set. With `cross=True` (an encoder-decoder's decoder) a cross-attention sub-block
  over `context` [B, S, E] follows the self-attention. `cache_prefix` (decode only): the first cache
  slots every query sees (see MultiHeadAttention)."""
  cfg: TransformerConfig
  train: bool = False
  decode: bool = False
  collect: bool = False
  cross: bool = False
  cache_prefix: int = 0

  def _attention(self, name: str) -> MultiHeadAttention:
    cfg = self.cfg
    return MultiHeadAttention(num_heads=cfg.num_heads, head_dim=cfg.head_dim, dtype=cfg.jnp_dtype,
                              param_dtype=cfg.jnp_param_dtype,
                              dropout_rate=cfg.attention_dropout_rate, init_std=cfg.init_std,
                              implementation=cfg.attention_impl, name=name)

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array], context: Optional[Array] = None,
               context_mask: Optional[Array] = None):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout_rate, deterministic=not self.train)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    sublayers = [("attention", lambda h: self._attention("attention")(
        h, mask=mask, train=self.train, decode=self.decode, cache_prefix=self.cache_prefix))]
    if self.cross:
      sublayers.append(("cross_attention", lambda h: self._attention("cross_attention")(
          h, context, mask=context_mask, train=self.train)))
    sublayers.append(("mlp", lambda h: MLP(cfg, name="mlp")(h, self.train)))
    for name, f in sublayers:
      if cfg.pre_ln:
        x = x + drop(f(layer_norm(cfg, f"ln_{name}")(x)))
      else:
        x = layer_norm(cfg, f"ln_{name}")(x + drop(f(x)))
    return x, (x if self.collect else None)


def layer_stack(cfg: TransformerConfig, block, block_args: tuple, carry, per_layer: tuple = (),
                broadcast: tuple = (), name: str = "layers"):
  """The one layer stack of every Transformer family (BERT/GPT blocks, Transformer-XL, XLNet):
  `cfg.num_layers` instances of `block(cfg, *block_args)`, each applied as
  `carry, y = layer(carry, *per_layer[i], *broadcast)`, where `per_layer` arrays carry a leading
  [L] axis (Transformer-XL / XLNet memories; None passes through) and `broadcast` is the same for
  every layer. `cfg.scan_layers`: one `nn.scan` (params stacked on a leading 'layers' axis, one
  compiled layer whatever the depth); else unrolled `name_0 .. name_{L-1}`. `cfg.remat_policy`
  rematerialises each layer. Call it inside a compact module. -> (carry, ys [L, ...] or None)."""
  if cfg.remat_policy != "none":
    policy = REMAT_POLICIES[cfg.remat_policy]
    block = nn.remat(block, prevent_cse=not cfg.scan_layers, policy=None if policy == "full" else policy)
  if cfg.scan_layers:
    stack = nn.scan(block, variable_axes={"params": 0, "cache": 0},
                    split_rngs={"params": True, "dropout": True},
                    in_axes=(0,) * len(per_layer) + (nn.broadcast,) * len(broadcast),
                    length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
    return stack(cfg, *block_args, name=name)(carry, *per_layer, *broadcast)
  ys = []
  for i in range(cfg.num_layers):
    mine = tuple(None if a is None else a[i] for a in per_layer)
    carry, y = block(cfg, *block_args, name=f"{name}_{i}")(carry, *mine, *broadcast)
    ys.append(y)
  return carry, (None if ys[0] is None else jax.tree.map(lambda *a: jnp.stack(a), *ys))


class TransformerStack(nn.Module):
  """`num_layers` Blocks: x [B, T, E], mask [B|1, 1|N, T, S] -> (x, per-layer outputs [L, B, T, E]).
  With `cross=True` every block also attends to `context` [B, S, E] under `context_mask`."""
  cfg: TransformerConfig
  block: type = Block
  cross: bool = False

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array], context: Optional[Array] = None,
               context_mask: Optional[Array] = None, *, train: bool, decode: bool = False,
               collect: bool = False, cache_prefix: int = 0):
    extra = (cache_prefix,) if cache_prefix else ()        # custom blocks need not know the field
    return layer_stack(self.cfg, self.block, (train, decode, collect, self.cross, *extra), x,
                       broadcast=(mask, context, context_mask))


def unstack_layer_params(tree: dict, num_layers: int, key: str = "layers") -> dict:
  """Scanned layout {key: leaves [L, ...]} -> unrolled layout {key_0: ..., key_{L-1}: ...},
  recursively wherever `key` appears."""
  out = {}
  for k, v in tree.items():
    if k == key:
      for i in range(num_layers):
        out[f"{key}_{i}"] = jax.tree_util.tree_map(lambda a, i=i: a[i], v)
    elif isinstance(v, dict):
      out[k] = unstack_layer_params(v, num_layers, key)
    else:
      out[k] = v
  return out


def stack_layer_params(tree: dict, num_layers: int, key: str = "layers") -> dict:
  """Inverse of `unstack_layer_params`."""
  out = {}
  for k, v in tree.items():
    if k == f"{key}_0":
      layers = [tree[f"{key}_{i}"] for i in range(num_layers)]
      out[key] = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *layers)
    elif k.startswith(f"{key}_") and k[len(key) + 1:].isdigit():
      continue
    elif isinstance(v, dict):
      out[k] = stack_layer_params(v, num_layers, key)
    else:
      out[k] = v
  return out
