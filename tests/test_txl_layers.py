"""Relative-attention index arithmetic and the adaptive softmax, against direct definitions."""
import jax
import jax.numpy as jnp
import numpy as np

from plmjax.nn.adaptive import AdaptiveEmbedding, AdaptiveSoftmax
from plmjax.nn.relative import rel_gather, rel_shift, relative_distances


def test_rel_shift_indexes_distance_m_plus_i_minus_j():
  t, m = 3, 4
  s = m + t
  d = relative_distances(t, s)                                    # [R]
  x = jnp.broadcast_to(d, (1, 1, t, d.shape[0]))                  # score = the distance itself
  shifted = rel_shift(x, s)[0, 0]
  want = (m + jnp.arange(t))[:, None] - jnp.arange(s)[None, :]
  np.testing.assert_array_equal(shifted, want)
  gathered = rel_gather(x, jnp.arange(t)[None], t, s)[0, 0]
  np.testing.assert_array_equal(gathered, want)
  picked = rel_gather(x[:, :, :2], jnp.array([[2, 0]]), t, s)[0, 0]   # 2 queries, at 2 and 0
  np.testing.assert_array_equal(picked, want[jnp.array([2, 0])])


def test_adaptive_softmax_is_normalised_and_tied():
  kw = dict(vocab_size=50, embed_size=16, model_size=12, cutoffs=(10, 30), div_val=2)
  emb, sm = AdaptiveEmbedding(**kw), AdaptiveSoftmax(**kw)
  ids = jnp.arange(50)[None]
  ep = emb.init(jax.random.key(0), ids)
  h = jax.random.normal(jax.random.key(1), (3, 12))
  tables, projs = emb.apply(ep, method=AdaptiveEmbedding.weights)
  sp = sm.init(jax.random.key(2), h, tables, projs)
  lp = sm.apply(sp, h, tables, projs)
  np.testing.assert_allclose(jax.nn.logsumexp(lp, -1), 0.0, atol=1e-5)
  # the embedding of word w in cluster i is sqrt(d_model) * table_i[w - lo_i] @ proj_i
  e = emb.apply(ep, ids)[0]
  np.testing.assert_allclose(e[35], 12 ** 0.5 * tables[2][5] @ projs[2], rtol=1e-5)


def test_ffn_inner_dropout_as_the_references():
  """Transformer-XL / XLNet FFN: Linear -> ReLU -> Dropout -> Linear. With identity weights the MLP
  output is the inner activation itself: dropped units are 0, kept ones scaled by 1 / (1 - p); off
  at eval, and absent (BERT, GPT) when mlp_dropout is False."""
  from plmjax.models.transformer_xl import TransformerXLConfig
  from plmjax.models.xlnet import XLNetConfig
  from plmjax.nn.transformer import MLP, TransformerConfig
  assert TransformerXLConfig().mlp_dropout and XLNetConfig().mlp_dropout and not TransformerConfig().mlp_dropout
  d, p = 64, 0.5
  eye = {"kernel": jnp.eye(d), "bias": jnp.zeros(d)}
  params = {"params": {"wi": eye, "wo": eye}}
  x = jnp.abs(jax.random.normal(jax.random.PRNGKey(0), (4, 32, d))) + 0.1     # relu keeps it
  for flag in (True, False):
    cfg = TransformerConfig(hidden_size=d, num_heads=1, mlp_dim=d, activation="relu",
                            dropout_rate=p, mlp_dropout=flag)
    y = MLP(cfg).apply(params, x, True, rngs={"dropout": jax.random.PRNGKey(1)})
    np.testing.assert_allclose(MLP(cfg).apply(params, x, False), x, rtol=1e-6)
    if not flag:
      np.testing.assert_allclose(y, x, rtol=1e-6)
      continue
    kept = np.asarray(y) != 0
    assert abs(kept.mean() - (1 - p)) < 0.02                       # 8,192 units: 4.5 SE
    np.testing.assert_allclose(np.asarray(y)[kept], np.asarray(x)[kept] / (1 - p), rtol=1e-6)
