"""The scanned LSTM against a step-by-step NumPy reference; weight drop, locked and embedding dropout;
state carried across batches; which positions each direction of a stack can see."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plmjax.nn.recurrent import (LSTM, LSTMStack, LSTMStackConfig, activation_regularisers,
                                 embedding_dropout, locked_dropout)


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def reference_lstm(p, x, mask=None, forget_bias=0.0, cell_clip=0.0, proj_clip=0.0, reverse=False,
                   wh=None):
  """One time step at a time, in NumPy float64."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  wh = p["wh"] if wh is None else np.asarray(wh, np.float64)
  x = np.asarray(x, np.float64)
  B, T, _ = x.shape
  H = p["bias"].shape[0] // 4
  h, c = np.zeros((B, wh.shape[0])), np.zeros((B, H))
  out = np.zeros((B, T, wh.shape[0]))
  for t in (reversed(range(T)) if reverse else range(T)):
    z = x[:, t] @ p["wi"] + p["bias"] + h @ wh
    i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
    c2 = sigmoid(f + forget_bias) * c + sigmoid(i) * np.tanh(g)
    if cell_clip:
      c2 = np.clip(c2, -cell_clip, cell_clip)
    h2 = sigmoid(o) * np.tanh(c2)
    if "wp" in p:
      h2 = h2 @ p["wp"]
      if proj_clip:
        h2 = np.clip(h2, -proj_clip, proj_clip)
    if mask is not None:
      m = np.asarray(mask[:, t], bool)[:, None]
      h2, c2 = np.where(m, h2, h), np.where(m, c2, c)
    h, c = h2, c2
    out[:, t] = h
  return out, h, c


@pytest.mark.parametrize("proj,reverse", [(0, False), (3, False), (3, True)])
def test_scan_equals_step_by_step(proj, reverse):
  x = jax.random.normal(jax.random.key(0), (2, 7, 5)) * 2
  mask = np.ones((2, 7), bool)
  mask[1, 5:] = False                                                  # right padding
  layer = LSTM(6, proj_size=proj, forget_bias=1.0, cell_clip=0.5, proj_clip=0.3, reverse=reverse)
  params = jax.tree.map(lambda a: a * 3, layer.init(jax.random.key(1), x)["params"])
  params = jax.tree.map(lambda b: b.value if hasattr(b, "value") else b, params,
                        is_leaf=lambda b: hasattr(b, "value"))
  ys, final = layer.apply({"params": params}, x, mask=jnp.asarray(mask))
  ref, h, c = reference_lstm(params, x, mask, forget_bias=1.0, cell_clip=0.5, proj_clip=0.3,
                             reverse=reverse)
  np.testing.assert_allclose(ys[0], ref[0], atol=1e-5)
  np.testing.assert_allclose(ys[1, :5], ref[1, :5], atol=1e-5)
  np.testing.assert_allclose(final["h"], h, atol=1e-5)
  np.testing.assert_allclose(final["c"], c, atol=1e-5)
  if not reverse:   # padding leaves the forward final state where the last real token put it
    np.testing.assert_allclose(final["h"][1], ref[1, 4], atol=1e-5)


def test_weight_drop_mask_is_fixed_across_the_sequence():
  x = jax.random.normal(jax.random.key(0), (3, 12, 4))
  layer = LSTM(5, weight_drop=0.5)
  params = layer.init(jax.random.key(1), x)["params"]
  (ys, _), inter = layer.apply({"params": params}, x, train=True,
                               rngs={"dropout": jax.random.key(2)}, mutable=["intermediates"])
  keep = np.asarray(inter["intermediates"]["weight_drop_mask"][0])
  assert keep.shape == (5, 20) and 0.3 < keep.mean() < 0.7
  p = nn_unbox(params)
  # One masked W_h for every step of every sequence reproduces the output exactly ...
  ref, _, _ = reference_lstm(p, x, wh=np.where(keep, p["wh"] / 0.5, 0.0))
  np.testing.assert_allclose(ys, ref, atol=1e-5)
  # ... while the undropped matrix does not, and another key draws another mask.
  ref_full, _, _ = reference_lstm(p, x)
  assert np.abs(np.asarray(ys) - ref_full).max() > 1e-3
  _, inter2 = layer.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(3)},
                          mutable=["intermediates"])
  assert (np.asarray(inter2["intermediates"]["weight_drop_mask"][0]) != keep).any()
  # eval: no mask
  ys_eval, _ = layer.apply({"params": params}, x)
  np.testing.assert_allclose(ys_eval, ref_full, atol=1e-5)


def nn_unbox(params):
  import flax.linen as nn
  return nn.meta.unbox(params)


def test_state_carried_across_batches_equals_one_long_sequence():
  cfg = LSTMStackConfig(hidden_sizes=(6, 4), proj_size=0)
  x = jax.random.normal(jax.random.key(0), (2, 10, 3))
  stack = LSTMStack(cfg)
  params = stack.init(jax.random.key(1), x)
  whole, _ = stack.apply(params, x)
  first, state = stack.apply(params, x[:, :6])
  second, _ = stack.apply(params, x[:, 6:], state)
  np.testing.assert_allclose(jnp.concatenate([first[-1], second[-1]], 1), whole[-1], atol=1e-5)


def dependence(cfg, which_layer, t):
  """|d output[layer][0, t] / d x[0, s]| summed over features, for every s."""
  x = jax.random.normal(jax.random.key(0), (1, 8, 3))
  stack = LSTMStack(cfg)
  params = stack.init(jax.random.key(1), x)
  jac = jax.jacobian(lambda x: stack.apply(params, x)[0][which_layer][0, t])(x)   # [D, 1, T, 3]
  return np.abs(np.asarray(jac)).sum(axis=(1, 3))                                 # [D, T]


@pytest.mark.parametrize("mix", [False, True])
def test_directions_see_only_their_side_unless_mixed(mix):
  cfg = LSTMStackConfig(hidden_sizes=(4, 4), bidirectional=True, mix_directions=mix)
  dep = dependence(cfg, which_layer=1, t=3)                                        # [8, 8]
  fwd_future, bwd_past = dep[:4, 4:].max(), dep[4:, :3].max()
  if mix:      # a deep BiLSTM: the forward top state at t=3 depends on x_4.. (it sees the answer)
    assert fwd_future > 1e-4 and bwd_past > 1e-4
  else:        # ELMo's biLM: forward reads x_0..x_3 only, backward x_3..x_7 only
    assert fwd_future == 0.0 and bwd_past == 0.0
    assert dep[:4, :4].min() > 0 and dep[4:, 3:].min() > 0


def test_locked_and_embedding_dropout_masks():
  x = jnp.ones((4, 9, 16))
  y = locked_dropout(0.5, True).apply({}, x, rngs={"dropout": jax.random.key(0)})
  assert (y == y[:, :1]).all()                                 # one mask per sequence, over time
  assert 0 < (y == 0).mean() < 1
  table = jnp.ones((50, 8))
  t = embedding_dropout(table, 0.3, jax.random.key(0))
  rows = np.asarray((t == 0).all(1))
  assert rows.any() and ((t == 0).any(1) == rows).all()         # whole words dropped
  np.testing.assert_allclose(t[~rows], 1 / 0.7, rtol=1e-6)
  assert embedding_dropout(table, 0.3, None) is table


def test_activation_regularisers():
  top = jnp.arange(12.0).reshape(1, 4, 3)
  ar, tar = activation_regularisers(top, top, None, alpha=2.0, beta=1.0)
  np.testing.assert_allclose(ar, 2.0 * np.mean(np.arange(12.0) ** 2), rtol=1e-6)
  np.testing.assert_allclose(tar, 9.0, rtol=1e-6)             # every step moves by 3 per feature


def test_config_errors_name_the_cause():
  with pytest.raises(ValueError, match="mix_directions"):
    LSTMStackConfig(mix_directions=True)
  with pytest.raises(ValueError, match="weight_drop"):
    LSTMStackConfig(weight_drop=1.0)
