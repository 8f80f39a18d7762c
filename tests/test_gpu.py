"""GPU-only checks of the fused cuDNN attention path; the whole module skips without a GPU.

Run on a GPU machine:  python -m pytest -q tests/test_gpu.py

1. cuDNN flash attention equals XLA's attention (forward and gradients, bfloat16) for every mask
   the models build: none, key padding, causal, UNILM's seq2seq, cross-attention with padding.
2. `implementation=None` resolves to cuDNN for those calls and to XLA where cuDNN cannot take them.
3. A BERT and a GPT-2 train step in bfloat16 compile to the cuDNN fused-attention custom call
   (`__cudnn$fmha...`) under the default "auto", and their logits agree with attention_impl="xla".
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plmjax.models import registry
from plmjax.nn import attention as attn

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")

B, N, D = 2, 4, 64


def qkv(t, s, seed=0, dtype=jnp.bfloat16):
  kq, kk, kv = jax.random.split(jax.random.PRNGKey(seed), 3)
  return (jax.random.normal(kq, (B, t, N, D), dtype), jax.random.normal(kk, (B, s, N, D), dtype),
          jax.random.normal(kv, (B, s, N, D), dtype))


def masks(t, s):
  lengths = jnp.array([s - 27, s])
  pad = attn.padding_mask(jnp.arange(s)[None] < lengths[:, None])               # [B, 1, 1, S]
  src = 48                                                                      # UNILM seq2seq: source
  s2s = (jnp.arange(s)[None] < src) | (jnp.arange(s)[None] <= jnp.arange(t)[:, None])   # [T, S]
  return {"none": None, "padding": pad, "causal": attn.causal_mask(t, s),
          "unilm_seq2seq": attn.combine_masks(s2s[None, None], pad)}


CASES = [(name, 128, 128) for name in ("none", "padding", "causal", "unilm_seq2seq")] + \
        [("padding", 64, 128)]                                                   # cross-attention


@pytest.mark.parametrize("name,t,s", CASES)
def test_cudnn_matches_xla(name, t, s):
  q, k, v = qkv(t, s)
  mask = masks(t, s)[name]
  assert attn.resolve_implementation(q, k, mask) == "cudnn"
  w = jax.random.normal(jax.random.PRNGKey(7), (B, t, N, D), jnp.float32)

  def loss(impl):
    def f(q, k, v):
      out = attn.dot_product_attention(q, k, v, mask, implementation=impl)
      return (out.astype(jnp.float32) * w).sum(), out
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(q, k, v)

  (_, out_c), g_c = loss("cudnn")
  (_, out_x), g_x = loss("xla")
  ref = attn.einsum_attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32),
                              mask)
  # bfloat16 has 8 mantissa bits: outputs are O(1), so 2^-6 absolute is a few ulps.
  np.testing.assert_allclose(np.asarray(out_c, np.float32), np.asarray(out_x, np.float32), atol=2e-2)
  np.testing.assert_allclose(np.asarray(out_c, np.float32), np.asarray(ref), atol=2e-2)
  for a, b in zip(g_c, g_x):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    scale = np.abs(b).max()
    assert np.abs(a - b).max() <= 2e-2 * scale, (name, np.abs(a - b).max(), scale)


def test_auto_falls_back_to_xla():
  q, k, _ = qkv(128, 128)
  assert attn.resolve_implementation(q.astype(jnp.float32), k) == "xla"             # fp32
  assert attn.resolve_implementation(q, k, bias=jnp.zeros((1, N, 128, 128))) == "xla"  # TXL bias
  q1, k1, _ = qkv(1, 128)                                                           # decode step
  assert attn.resolve_implementation(q1, k1, attn.causal_mask(1, 128)) == "xla"
  assert attn.resolve_implementation(q1, k1) == "cudnn"


def _step_hlo_and_logits(name, impl, t=128):
  kw = dict(vocab_size=512, hidden_size=256, num_layers=2, num_heads=4, mlp_dim=512, max_len=t,
            dropout_rate=0.0, attention_dropout_rate=0.0, dtype="bfloat16", attention_impl=impl)
  model, _ = registry.build(name, **kw)
  ids = jax.random.randint(jax.random.PRNGKey(0), (B, t), 5, 512)
  batch = {"input_ids": ids, "attention_mask": jnp.ones((B, t), jnp.int32).at[0, 100:].set(0)}
  if name == "gpt2":
    batch.pop("attention_mask")
  params = model.init(jax.random.PRNGKey(1), batch)["params"]

  def loss(p):
    logits = model.apply({"params": p}, batch)["logits"].astype(jnp.float32)
    return jax.nn.logsumexp(logits, -1).mean(), logits

  fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
  hlo = fn.lower(params).compile().as_text()
  (_, logits), _ = fn(params)
  return hlo, np.asarray(logits)


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_train_step_uses_cudnn_and_matches_xla(name):
  hlo_auto, logits_auto = _step_hlo_and_logits(name, None)
  hlo_xla, logits_xla = _step_hlo_and_logits(name, "xla")
  assert "__cudnn$fmha" in hlo_auto
  assert "__cudnn$fmha" not in hlo_xla
  # Two bf16 layers: logits of O(1) scale agree to bf16 rounding.
  np.testing.assert_allclose(logits_auto, logits_xla, atol=5e-2)
