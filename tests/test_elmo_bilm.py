"""ELMo: characters, the biLM's separated directions, and the label-leakage claim on small data."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plmjax.models.elmo import Elmo, ElmoConfig
from plmjax.nn.char_cnn import BOW, BYTE_OFFSET, EOW, char_ids_for_tokens
from plmjax.objectives.bilm import BidirectionalLM

TINY = dict(vocab_size=16, token_encoder="embed", proj_size=16, hidden_size=32, num_layers=2,
            dropout_rate=0.0, cell_clip=3.0, proj_clip=3.0)


def test_char_ids():
  c = char_ids_for_tokens(["ab", "", "héllo"], max_chars=5)
  assert c.tolist()[0] == [BOW, BYTE_OFFSET + 97, BYTE_OFFSET + 98, EOW, 0]
  assert c.tolist()[1] == [BOW, EOW, 0, 0, 0]
  assert c[2, -1] == EOW and c.shape == (3, 5)        # truncated, still closed


def test_char_cnn_elmo_runs_from_char_vocab_and_errors_without():
  vocab = tuple(f"w{i}" for i in range(10))
  cfg = ElmoConfig(vocab_size=10, char_vocab=vocab, max_chars=8, char_dim=4,
                   filters=((1, 4), (2, 4), (3, 8)), proj_size=8, hidden_size=16)
  ids = jnp.array([[1, 2, 3, 0]])
  out, params = Elmo(cfg).init_with_output(jax.random.key(0), {"input_ids": ids},
                                           return_hidden_states=True)
  assert out["logits_fwd"].shape == (1, 4, 10) and out["hidden_states"].shape == (3, 1, 4, 16)
  with pytest.raises(ValueError, match="char_vocab"):
    Elmo(cfg.__class__(**{**cfg.__dict__, "char_vocab": ()})).init(jax.random.key(0), {"input_ids": ids})


@pytest.mark.parametrize("mix", [False, True])
def test_predictions_see_only_their_context(mix):
  model = Elmo(ElmoConfig(**TINY, mix_directions=mix))
  ids = jnp.array([[1, 2, 3, 4, 5, 6, 7, 8]])
  params = model.init(jax.random.key(0), {"input_ids": ids})
  apply = jax.jit(model.apply)
  a = apply(params, {"input_ids": ids})
  b = apply(params, {"input_ids": ids.at[0, 4].set(9)})            # change x_4
  fwd_changed = np.abs(a["logits_fwd"] - b["logits_fwd"]).max(-1)[0] > 1e-6   # [T]
  bwd_changed = np.abs(a["logits_bwd"] - b["logits_bwd"]).max(-1)[0] > 1e-6
  if mix:   # the forward prediction of x_4 (at t=3) has read x_4: leakage
    assert fwd_changed[3] and bwd_changed[5]
  else:     # forward at t < 4 never read x_4; backward at t > 4 never read it
    assert fwd_changed.tolist() == [False] * 4 + [True] * 4
    assert bwd_changed.tolist() == [True] * 5 + [False] * 3


def train_on_random_tokens(mix: bool, steps: int = 80) -> list[float]:
  """Fresh i.i.d. uniform tokens every step: no model can beat log V without seeing the answer."""
  model, objective = Elmo(ElmoConfig(**TINY, mix_directions=mix)), BidirectionalLM()
  ids0 = jnp.zeros((32, 12), jnp.int32)
  params = model.init(jax.random.key(0), {"input_ids": ids0})["params"]
  tx = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state, key):
    ids = jax.random.randint(key, ids0.shape, 0, TINY["vocab_size"])
    prepared = objective.prepare({"input_ids": ids}, key)

    def loss_fn(p):
      return objective.loss(model.apply({"params": p}, prepared["inputs"]), prepared)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state, losses = tx.init(params), []
  for i in range(steps):
    params, opt_state, loss = step(params, opt_state, jax.random.key(100 + i))
    losses.append(float(loss))
  return losses


def test_label_leakage_mixed_directions_drive_the_loss_to_zero():
  log_v = np.log(TINY["vocab_size"])
  separated = np.mean(train_on_random_tokens(False)[-10:])
  mixed = np.mean(train_on_random_tokens(True)[-10:])
  assert separated > 0.95 * log_v, (separated, log_v)        # cannot beat chance: no leak
  assert mixed < 0.3 * log_v, (mixed, log_v)                 # copies the answer it has seen


def test_bilm_targets():
  prepared = BidirectionalLM().prepare(
      {"input_ids": jnp.array([[5, 6, 7, 0]]), "attention_mask": jnp.array([[1, 1, 1, 0]])}, None)
  t = prepared["targets"]
  assert t["fwd"].tolist() == [[6, 7, 0, 0]] and t["fwd_weights"].tolist() == [[1, 1, 0, 0]]
  assert t["bwd"].tolist() == [[0, 5, 6, 7]] and t["bwd_weights"].tolist() == [[0, 1, 1, 0]]
  with pytest.raises(ValueError, match="logits_fwd"):
    BidirectionalLM().loss({"logits": jnp.zeros((1, 4, 8))}, prepared)
