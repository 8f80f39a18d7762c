"""Train step, sharded state and optimizers on one CPU device, with an in-test fake objective.

`FakeCLM` (next-token cross entropy over a tiny GPT) stands in for plmjax.objectives so that the
engine is tested on its own; the real objectives are exercised by test_train_loop / test_configs.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from plmjax.models import registry
from plmjax.train import mesh as mesh_lib
from plmjax.train import optim, state as state_lib, step as step_lib

B, T, V = 8, 16, 64


class FakeCLM:
  """prepare: ids -> inputs; loss: mean next-token cross entropy (fp32)."""

  def prepare(self, batch, key):
    del key
    return {"inputs": {"input_ids": batch["input_ids"]}, "targets": {"ids": batch["input_ids"]}}

  def loss(self, outputs, prepared):
    logits = outputs["logits"][:, :-1].astype(jnp.float32)              # [B, T-1, V]
    labels = prepared["targets"]["ids"][:, 1:]                          # [B, T-1]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, {"accuracy": (logits.argmax(-1) == labels).mean()}


def tiny_gpt(**kw):
  kw = {**dict(vocab_size=V, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_len=T,
               dropout_rate=0.0, attention_dropout_rate=0.0), **kw}
  return registry.build("gpt2", **kw)[0]


def opt_config(name="adamw", **kw):
  return ConfigDict({**dict(name=name, learning_rate=3e-3, warmup_steps=2, decay="linear", end_lr=0.0,
                            b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01), **kw})


def fake_batches(n, seed=0):
  """Repeating-pattern sequences (learnable): row r is (r + 3 t) mod V."""
  rng = np.random.default_rng(seed)
  for _ in range(n):
    start = rng.integers(0, V, size=(B, 1))
    yield {"input_ids": ((start + 3 * np.arange(T)[None]) % V).astype(np.int32)}


def build(mesh, model, opt="adamw", grad_accum=1, steps=20, clip=1.0):
  obj = FakeCLM()
  lr = 1e-1 if opt == "lamb" else 3e-3     # LAMB's trust ratio scales steps by |w| (init std 0.02)
  tx, sched = optim.make_optimizer(opt_config(opt, learning_rate=lr), steps, clip)
  shapes = {"input_ids": jax.ShapeDtypeStruct((B, T), jnp.int32)}
  state, shard = state_lib.create_train_state(model, tx, step_lib.model_inputs_shapes(obj, shapes),
                                              mesh, seed=0)
  train_step = step_lib.make_train_step(model, obj, tx, sched, mesh, shard, shapes,
                                        grad_accum=grad_accum)
  return state, shard, train_step


def run_losses(grad_accum=1, opt="adamw", steps=10):
  mesh = mesh_lib.make_mesh(dict(data=-1, fsdp=1, tensor=1))
  state, _, train_step = build(mesh, tiny_gpt(), opt, grad_accum, steps)
  losses = []
  for batch in fake_batches(steps):
    state, m = train_step(state, mesh_lib.shard_batch(batch, mesh))
    losses.append(float(m["loss"]))
  return losses, state


@pytest.mark.parametrize("opt", ["adamw", "bert_adam", "lamb"])
def test_loss_falls(opt):
  steps = 25 if opt == "lamb" else 12     # LAMB starts slowly from small (std 0.02) weights
  losses, state = run_losses(opt=opt, steps=steps)
  assert int(state.step) == steps
  assert losses[-1] < losses[0] - 0.3, losses


def test_grad_accum_matches_full_batch():
  full, s1 = run_losses(grad_accum=1, steps=4)
  acc, s2 = run_losses(grad_accum=4, steps=4)
  np.testing.assert_allclose(full, acc, rtol=0, atol=2e-5)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_state_is_donated():
  mesh = mesh_lib.make_mesh(dict(data=-1, fsdp=1, tensor=1))
  state, _, train_step = build(mesh, tiny_gpt())
  old = jax.tree.leaves(state.params)[0]
  train_step(state, mesh_lib.shard_batch(next(fake_batches(1)), mesh))
  assert old.is_deleted()


def test_weight_decay_mask_skips_layernorm_and_bias():
  model = tiny_gpt()
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), {"input_ids": jnp.zeros((1, T), jnp.int32)})["params"])
  flat = {"/".join(str(getattr(k, "key", k)) for k in p): m for p, m in
          jax.tree_util.tree_leaves_with_path(optim.decay_mask(params))}
  assert not any(m for n, m in flat.items() if n.endswith(("bias", "scale")))
  assert flat["token_embed/embedding"] and any(m for n, m in flat.items() if n.endswith("kernel"))


def test_bert_adam_has_no_bias_correction():
  tx = optim.scale_by_adam_no_bias_correction(0.9, 0.999, 0.0)
  g = {"w": jnp.array([2.0])}
  upd, _ = tx.update(g, tx.init(g))
  # m = 0.1 g, v = 0.001 g^2  ->  m / sqrt(v) = 0.1 / sqrt(0.001) (Adam with correction gives 1)
  np.testing.assert_allclose(upd["w"], [0.1 / np.sqrt(0.001)], rtol=1e-5)


@pytest.mark.parametrize("decay", ["linear", "cosine", "inverse_sqrt", "constant"])
def test_schedules_warm_up_then_decay(decay):
  sched = optim.make_schedule(opt_config(decay=decay, warmup_steps=10, learning_rate=1.0), 100)
  assert float(sched(0)) == 0.0 and abs(float(sched(10)) - 1.0) < 1e-6
  assert float(sched(5)) == pytest.approx(0.5)
  late = float(sched(90))
  assert late == pytest.approx(1.0) if decay == "constant" else late < 0.9


def test_mesh_shape_errors_name_the_cause():
  assert mesh_lib.mesh_shape(dict(data=-1, fsdp=2, tensor=2), 8) == (2, 2, 2)
  with pytest.raises(ValueError, match="at most one"):
    mesh_lib.mesh_shape(dict(data=-1, fsdp=-1, tensor=1), 8)
  with pytest.raises(ValueError, match="needs 4 devices"):
    mesh_lib.mesh_shape(dict(data=2, fsdp=2, tensor=1), 8)


def test_bf16_compute_keeps_fp32_params():
  mesh = mesh_lib.make_mesh(dict(data=-1, fsdp=1, tensor=1))
  state, _, train_step = build(mesh, tiny_gpt(dtype="bfloat16"))
  state, m = train_step(state, mesh_lib.shard_batch(next(fake_batches(1)), mesh))
  assert np.isfinite(float(m["loss"]))
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype("float32")}
