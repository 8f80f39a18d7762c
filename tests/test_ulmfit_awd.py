"""AWD-LSTM / ULMFiT: shapes, carried state, regularisers in the loss, concat pooling, layer rules."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plmjax.train.optim import DEFAULT_LAYER_RULES, layer_ids
from plmjax.models.awd_lstm import AwdLstm, AwdLstmConfig, concat_pool
from plmjax.objectives.bilm import RecurrentLM

TINY = dict(vocab_size=20, embed_size=8, hidden_size=12, num_layers=3)


def test_lm_outputs_state_and_regularisers():
  model = AwdLstm(AwdLstmConfig(**TINY))
  ids = jnp.arange(14).reshape(2, 7) % 20
  params = model.init(jax.random.key(0), {"input_ids": ids})
  out = jax.jit(lambda p, b: model.apply(p, b, train=True, rngs={"dropout": jax.random.key(1)}))(
      params, {"input_ids": ids})
  assert out["logits"].shape == (2, 7, 20) and out["hidden"].shape == (2, 7, 8)
  assert [s["h"].shape[-1] for s in out["rnn_state"]] == [12, 12, 8]
  assert out["ar"] > 0 and out["tar"] > 0
  prepared = RecurrentLM().prepare({"input_ids": ids}, None)
  loss, m = RecurrentLM().loss(out, prepared)
  np.testing.assert_allclose(loss, m["lm_loss"] + out["ar"] + out["tar"], rtol=1e-6)


def test_carried_state_continues_the_stream():
  model = AwdLstm(AwdLstmConfig(**TINY))
  ids = (jnp.arange(24).reshape(2, 12) * 7) % 20
  params = model.init(jax.random.key(0), {"input_ids": ids})
  apply = jax.jit(model.apply)
  whole = apply(params, {"input_ids": ids})["logits"]
  first = apply(params, {"input_ids": ids[:, :5]})
  second = apply(params, {"input_ids": ids[:, 5:], "rnn_state": first["rnn_state"]})["logits"]
  np.testing.assert_allclose(jnp.concatenate([first["logits"], second], 1), whole, atol=1e-5)
  fresh = apply(params, {"input_ids": ids[:, 5:]})["logits"]
  assert np.abs(np.asarray(fresh - second)).max() > 1e-4       # the state matters


def test_stream_targets_use_target_ids():
  batch = {"input_ids": jnp.array([[1, 2, 3]]), "target_ids": jnp.array([[2, 3, 0]]),
           "attention_mask": jnp.array([[1, 1, 1]])}
  t = RecurrentLM(pad_id=0).prepare(batch, None)
  assert t["targets"]["ids"].tolist() == [[2, 3, 0]]
  assert t["targets"]["weights"].tolist() == [[1, 1, 0]]
  assert "target_ids" not in t["inputs"]


def test_concat_pool_ignores_padding():
  h = jnp.array([[[1.0], [5.0], [2.0], [99.0]]])
  pooled = concat_pool(h, jnp.array([[1, 1, 1, 0]]))
  np.testing.assert_allclose(pooled, [[2.0, 5.0, 8.0 / 3]], rtol=1e-6)
  empty = concat_pool(h, jnp.zeros((1, 4), jnp.int32))        # a padding row of a batch: finite
  assert np.isfinite(np.asarray(empty)).all() and float(empty[0, 1]) == 0.0


def test_classifier_pooled_and_layer_ids():
  model = AwdLstm(AwdLstmConfig(**TINY, classifier_hidden=5))
  ids = jnp.ones((2, 6), jnp.int32)
  out, params = model.init_with_output(jax.random.key(0), {"input_ids": ids,
                                                           "attention_mask": jnp.ones((2, 6))})
  assert out["pooled"].shape == (2, 5)
  import flax.linen as nn
  ids_tree = layer_ids(nn.meta.unbox(params["params"]), 3, DEFAULT_LAYER_RULES)
  assert ids_tree["embed"] == 0
  assert [ids_tree["rnn"][f"layers_{l}"]["fwd"]["wh"] for l in range(3)] == [1, 2, 3]
  assert ids_tree["pool_hidden"]["kernel"] == 4 and ids_tree["decoder_bias"] == 4


def test_hidden_states_need_equal_widths():
  model = AwdLstm(AwdLstmConfig(**TINY))
  with pytest.raises(ValueError, match="widths"):
    model.init(jax.random.key(0), {"input_ids": jnp.ones((1, 3), jnp.int32)}, return_hidden_states=True)
