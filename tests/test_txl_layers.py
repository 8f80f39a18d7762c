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
