"""Transfer modes: frozen parameters stay bit-identical, per-layer learning rates are the configured
ones, gradual unfreezing follows its schedule, slanted triangular LR has its shape."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plmjax.finetune.config import finetune_config
from plmjax.finetune.model import HeadSpec, TaskModel, task_loss
from plmjax.train.optim import layer_ids, layer_learning_rates, make_optimizer, path_str, stlr
from plmjax.models.registry import build

L = 3


@functools.lru_cache(maxsize=None)
def tiny(scan=True, features="last", freeze=False):
  enc, _ = build("bert", vocab_size=50, hidden_size=16, num_layers=L, num_heads=2, mlp_dim=32, max_len=16,
                 mlm_head=False, nsp_head=False, scan_layers=scan)
  model = TaskModel(enc, (HeadSpec("t", "classification", 3),), pooling="cls" if features != "last" else "pooler",
                    features=features, freeze_encoder=freeze)
  rng = np.random.default_rng(0)
  batch = {"input_ids": jnp.asarray(rng.integers(1, 50, (4, 8)), jnp.int32),
           "attention_mask": jnp.ones((4, 8), jnp.int32), "label": jnp.asarray([0, 1, 2, 1], jnp.int32),
           "weights": jnp.ones((4,), jnp.float32)}
  init = jax.jit(lambda k: model.init({"params": k}, batch, method=TaskModel.init_all)["params"])
  return model, nn.meta.unbox(init(jax.random.key(0))), batch


def run(model, params, batch, tx, steps):
  state = tx.init(params)

  @jax.jit
  def step(params, state, i):
    def loss(p):
      out = model.apply({"params": p}, batch, task="t", train=True, rngs={"dropout": jax.random.key(i)})
      return task_loss("classification", out, batch)[0]
    g = jax.grad(loss)(params)
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), state
  history = [params]
  for i in range(steps):
    params, state = step(params, state, i)
    history.append(params)
  return history


def leaves(tree):
  return {path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def cfg(**transfer):
  c = finetune_config("sst2", optimizer={"learning_rate": 1e-2, "warmup_steps": 0, "decay": "constant"})
  for k, v in transfer.items():
    c.transfer[k] = v
  return c


def test_layer_ids_scanned_unrolled_and_custom_rules():
  _, p, _ = tiny(scan=True)
  ids = leaves(layer_ids(p, L))
  assert ids["encoder/token_embed/embedding"] == 0 and ids["encoder/embed_ln/scale"] == 0
  assert list(ids["encoder/encoder/layers/mlp/wi/kernel"]) == [1, 2, 3]
  assert ids["head_t/Dense_0/kernel"] == L + 1 and ids["encoder/pooler/dense/kernel"] == L + 1
  _, p, _ = tiny(scan=False)
  ids = leaves(layer_ids(p, L))
  assert ids["encoder/encoder/layers_0/mlp/wi/kernel"] == 1 and ids["encoder/encoder/layers_2/mlp/wo/bias"] == 3
  # an RNN family's own rules: lstm_<i> -> i + 1, char CNN at the bottom
  rnn = {"char_cnn": {"w": np.zeros(2)}, "lstm_0": {"w": np.zeros(2)}, "lstm_1": {"w": np.zeros(2)},
         "decoder": {"w": np.zeros(2)}}
  rules = [(r"^lstm_(?P<layer>\d+)/", "match"), (r"^char_cnn/", 0), (r".*", "top")]
  assert leaves(layer_ids(rnn, 2, rules)) == {"char_cnn/w": 0, "lstm_0/w": 1, "lstm_1/w": 2, "decoder/w": 3}


def test_feature_extraction_freezes_encoder_bit_identical():
  model, p0, batch = tiny(features="scalar_mix", freeze=True)
  c = cfg(mode="features")
  tx, _ = make_optimizer(c.optimizer, 10, params=p0, transfer=c.transfer, num_layers=L, steps_per_epoch=10)
  hist = run(model, p0, batch, tx, 3)
  before, after = leaves(p0), leaves(hist[-1])
  enc = [k for k in before if k.startswith("encoder/")]
  assert enc and all(np.array_equal(before[k], after[k]) for k in enc)
  assert not np.array_equal(before["head_t/Dense_0/kernel"], after["head_t/Dense_0/kernel"])
  assert not np.array_equal(before["scalar_mix/weights"], after["scalar_mix/weights"])
  # frozen params carry no Adam moments
  n_state = sum(x.size for x in jax.tree.leaves(tx.init(p0)))
  n_head = sum(v.size for k, v in before.items() if not k.startswith("encoder/"))
  assert n_state < 3 * n_head + 10


@pytest.mark.parametrize("scan", [True, False])
def test_discriminative_learning_rates(scan):
  """SGD with unit gradients: every parameter moves by exactly -lr * decay ** (L + 1 - layer)."""
  _, p, _ = tiny(scan=scan)
  c = cfg(layer_decay=0.5)
  c.optimizer.name = "sgd"
  tx, schedule = make_optimizer(c.optimizer, 10, params=p, transfer=c.transfer, num_layers=L, steps_per_epoch=10)
  ones = jax.tree.map(jnp.ones_like, p)
  updates, _ = tx.update(ones, tx.init(p), p)
  ids = leaves(layer_ids(p, L))
  want = layer_learning_rates(schedule, L, 0.5, 0)
  np.testing.assert_allclose(want, 1e-2 * 0.5 ** (L + 1 - np.arange(L + 2)), rtol=1e-6)
  for k, u in leaves(updates).items():
    lr = want[ids[k]]
    lr = lr.reshape(lr.shape + (1,) * (u.ndim - lr.ndim))
    np.testing.assert_allclose(u, -np.broadcast_to(lr, u.shape), rtol=1e-6, err_msg=k)


def test_gradual_unfreezing_follows_schedule():
  """Unfreeze one layer every 2 steps from the top (L+1 = heads) down to the embeddings (0):
  layers below the schedule's lowest trainable one stay bit-identical, that one moves."""
  model, p0, batch = tiny(scan=True)
  c = cfg(gradual_unfreezing=True, unfreeze_every=2)
  tx, schedule = make_optimizer(c.optimizer, 20, params=p0, transfer=c.transfer, num_layers=L, steps_per_epoch=2)
  hist = run(model, p0, batch, tx, 2 * (L + 2))
  ids = leaves(layer_ids(p0, L))
  for t in range(1, len(hist)):
    before, after = leaves(hist[t - 1]), leaves(hist[t])
    lowest = L + 1 - (t - 1) // 2                 # lowest trainable layer during update t
    moved = set()
    for k in before:
      layer = np.atleast_1d(ids[k])               # [1] or [L] (scanned stack)
      same = (before[k].reshape(len(layer), -1) == after[k].reshape(len(layer), -1)).all(1)
      moved |= {int(l) for l in layer[~same]}
    assert min(moved) == lowest, (t, sorted(moved))
  lrs = layer_learning_rates(schedule, L, 1.0, 2, gradual_unfreezing=True, every=2)
  np.testing.assert_array_equal(lrs > 0, np.arange(L + 2) >= L)


def test_slanted_triangular_lr():
  s = stlr(0.01, 100, cut_frac=0.1, ratio=32)
  assert float(s(0)) == pytest.approx(0.01 / 32)
  assert float(s(10)) == pytest.approx(0.01)                       # peak at the cut
  assert float(s(5)) == pytest.approx(0.01 * (1 + 0.5 * 31) / 32)
  assert float(s(100)) == pytest.approx(0.01 / 32)                 # back to lr / ratio
  assert float(s(55)) == pytest.approx(0.01 * (1 + 0.5 * 31) / 32)  # half way down
