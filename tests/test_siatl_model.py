"""SiATL: the added task LSTM + self-attention, the decaying auxiliary LM weight, layer ids."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from plmjax.train.optim import DEFAULT_LAYER_RULES, layer_ids
from plmjax.models.siatl import Siatl, SiatlConfig, aux_lm_weight


def test_attention_pools_real_tokens_and_loss():
  model = Siatl(SiatlConfig(vocab_size=30, embed_size=8, hidden_size=12, num_layers=2, task_hidden=6))
  batch = {"input_ids": jnp.array([[3, 4, 5, 0], [6, 7, 8, 9]]),
           "attention_mask": jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]])}
  out, params = model.init_with_output(jax.random.key(0), batch)
  assert out["logits"].shape == (2, 4, 30) and out["pooled"].shape == (2, 6)
  np.testing.assert_allclose(out["attention"].sum(-1), 1.0, rtol=1e-5)
  assert float(out["attention"][0, 3]) == 0.0                    # padding gets no attention
  ids = layer_ids(nn.meta.unbox(params["params"]), 2, DEFAULT_LAYER_RULES)
  assert ids["lm"]["embed"] == 0 and ids["lm"]["rnn"]["layers_1"]["fwd"]["wi"] == 2
  assert ids["task_lstm"]["wi"] == 3 and ids["attention"]["proj"]["kernel"] == 3


def test_aux_weight_decays_exponentially():
  g = np.asarray([aux_lm_weight(n, 0.2, 0.5) for n in range(4)])
  np.testing.assert_allclose(g, [0.2, 0.1, 0.05, 0.025], rtol=1e-6)


def test_lm_only_for_pretraining():
  model = Siatl(SiatlConfig(vocab_size=30, embed_size=8, hidden_size=12, classifier=False))
  out, params = model.init_with_output(jax.random.key(0), {"input_ids": jnp.ones((1, 3), jnp.int32)})
  assert "pooled" not in out and set(params["params"]) == {"lm"}
