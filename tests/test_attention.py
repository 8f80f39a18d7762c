"""Attention: masking semantics, fused vs einsum, KV cache, scan vs unrolled, remat gradients."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plmjax.models.bert import Bert, BertConfig
from plmjax.models.gpt import GPT, gpt2, init_cache
from plmjax.nn.attention import (causal_mask, combine_masks, dot_product_attention, einsum_attention,
                                 padding_mask)
from plmjax.nn.transformer import stack_layer_params, unstack_layer_params

B, T, N, D = 2, 7, 3, 8


def qkv(seed=0, t=T, s=T):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(k1, (B, t, N, D)), jax.random.normal(k2, (B, s, N, D)),
          jax.random.normal(k3, (B, s, N, D)))


def test_padded_keys_get_zero_weight():
  q, k, v = qkv()
  key_mask = jnp.array([[1] * T, [1] * 4 + [0] * (T - 4)])
  _, w = einsum_attention(q, k, v, padding_mask(key_mask), return_weights=True)
  assert float(jnp.abs(w[1, :, :, 4:]).max()) == 0.0
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
  # Changing padded values changes nothing.
  v2 = v.at[1, 4:].set(100.0)
  out1 = dot_product_attention(q, k, v, padding_mask(key_mask), implementation="xla")
  out2 = dot_product_attention(q, k, v2, padding_mask(key_mask), implementation="xla")
  np.testing.assert_allclose(out1, out2, atol=1e-6)


def test_causal_mask_blocks_the_future():
  q, k, v = qkv()
  _, w = einsum_attention(q, k, v, causal_mask(T), return_weights=True)
  assert float(jnp.abs(jnp.triu(w[0, 0], k=1)).max()) == 0.0
  # Output at position t is unchanged when keys/values after t change.
  t = 3
  k2, v2 = k.at[:, t + 1:].set(5.0), v.at[:, t + 1:].set(-5.0)
  a = dot_product_attention(q, k, v, causal_mask(T), implementation="xla")
  b = dot_product_attention(q, k2, v2, causal_mask(T), implementation="xla")
  np.testing.assert_allclose(a[:, :t + 1], b[:, :t + 1], atol=1e-6)
  assert float(jnp.abs(a[:, t + 1:] - b[:, t + 1:]).max()) > 1e-3


@pytest.mark.parametrize("cross", [False, True])
def test_fused_and_einsum_paths_agree(cross):
  q, k, v = qkv(1, t=T, s=T + 3 if cross else T)
  key_mask = jnp.array([[1] * k.shape[1], [1] * 5 + [0] * (k.shape[1] - 5)])
  mask = padding_mask(key_mask) if cross else combine_masks(padding_mask(key_mask), causal_mask(T))
  bias = jax.random.normal(jax.random.key(2), (B, N, T, k.shape[1]))
  ref = einsum_attention(q, k, v, mask, bias)
  fused = dot_product_attention(q, k, v, mask, bias, implementation="xla")
  auto = dot_product_attention(q, k, v, mask, bias)
  np.testing.assert_allclose(fused, ref, atol=1e-5)
  np.testing.assert_allclose(auto, ref, atol=1e-5)


def test_attention_dropout_only_in_training_and_unbiased():
  q, k, v = qkv(3)
  base = einsum_attention(q, k, v)
  drops = [einsum_attention(q, k, v, dropout_rate=0.5, dropout_rng=jax.random.key(i)) for i in range(400)]
  assert float(jnp.abs(drops[0] - base).max()) > 1e-3   # dropout does something
  mean = jnp.mean(jnp.stack(drops), 0)
  assert float(jnp.abs(mean - base).mean()) < 0.05 * float(jnp.abs(base).mean())


def tiny_gpt(**kw):
  return GPT(gpt2(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_len=32,
                  dropout_rate=0.0, attention_dropout_rate=0.0, **kw))


def test_kv_cache_decoding_equals_full_forward():
  model = tiny_gpt()
  ids = jax.random.randint(jax.random.key(0), (2, 10), 0, 50)
  params = model.init(jax.random.key(1), {"input_ids": ids})["params"]
  full = model.apply({"params": params}, {"input_ids": ids})["logits"]
  cache = init_cache(model, 2, 16)
  # Prefill 4 tokens at once, then one token at a time.
  steps = [(0, 4)] + [(t, t + 1) for t in range(4, 10)]
  got = []
  for a, b in steps:
    batch = {"input_ids": ids[:, a:b], "positions": jnp.broadcast_to(jnp.arange(a, b), (2, b - a))}
    out, mut = model.apply({"params": params, **cache}, batch, decode=True, mutable=["cache"])
    cache = {"cache": mut["cache"]}
    got.append(out["logits"])
  np.testing.assert_allclose(jnp.concatenate(got, 1), full, atol=1e-5)


def tiny_bert(**kw):
  return Bert(BertConfig(vocab_size=60, hidden_size=32, num_layers=3, num_heads=4, mlp_dim=64,
                         max_len=16, **kw))


def test_scan_and_unrolled_stacks_agree():
  ids = jax.random.randint(jax.random.key(0), (2, 9), 0, 60)
  batch = {"input_ids": ids, "attention_mask": jnp.ones_like(ids).at[1, 6:].set(0)}
  scanned = tiny_bert()
  params = flax.linen.meta.unbox(scanned.init(jax.random.key(1), batch)["params"])
  unrolled = tiny_bert(scan_layers=False)
  uparams = unstack_layer_params(params, 3)
  # The unrolled model's own init has exactly this structure.
  ref_struct = jax.tree_util.tree_structure(flax.linen.meta.unbox(unrolled.init(jax.random.key(1), batch)["params"]))
  assert jax.tree_util.tree_structure(uparams) == ref_struct
  a = scanned.apply({"params": params}, batch, return_hidden_states=True)
  b = unrolled.apply({"params": uparams}, batch, return_hidden_states=True)
  np.testing.assert_allclose(a["hidden_states"], b["hidden_states"], atol=1e-5)
  np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-5)
  restacked = stack_layer_params(uparams, 3)
  jax.tree_util.tree_map(np.testing.assert_array_equal, restacked, params)


@pytest.mark.parametrize("policy,scan", [("full", True), ("dots", False)])
def test_remat_gives_the_same_gradients(policy, scan):
  ids = jax.random.randint(jax.random.key(0), (2, 8), 0, 60)
  batch = {"input_ids": ids}
  plain, remat = tiny_bert(scan_layers=scan), tiny_bert(scan_layers=scan, remat_policy=policy)
  params = flax.linen.meta.unbox(plain.init(jax.random.key(1), batch)["params"])

  def grads(model):
    def loss(p):
      out = model.apply({"params": p}, batch, train=True, rngs={"dropout": jax.random.key(7)})
      return jnp.mean(jax.nn.log_softmax(out["logits"])[..., 3])
    return jax.jit(jax.grad(loss))(params)

  g1, g2 = grads(plain), grads(remat)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), g1, g2)
  assert float(jnp.abs(g1["token_embed"]["embedding"]).max()) > 0


def test_every_param_has_logical_axis_names():
  ids = jnp.zeros((1, 4), jnp.int32)
  for model in (tiny_bert(), tiny_gpt()):
    boxed = model.init(jax.random.key(0), {"input_ids": ids})["params"]
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, flax.linen.LogicallyPartitioned))
    for leaf in leaves:
      assert isinstance(leaf, flax.linen.LogicallyPartitioned), type(leaf)
      assert len(leaf.names) == leaf.value.ndim
