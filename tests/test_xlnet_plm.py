"""XLNet's permutation LM: the exact equivalences and the on-device sampler's statistics.

- identity order + every token a target == causal LM: the masks are exactly the causal masks, and
  the log-likelihood of one parallel pass equals left-to-right decoding one token at a time with
  memory (each token predicted from the memory of the tokens before it, never from itself);
- the query stream never sees its own token, nor any later target in the order (gradients);
- targets: exactly num_predict per row, never padding or special tokens; span lengths follow
  P(n) ∝ 1/n on 1..5; spans cover about 1/(K + 1) of the row;
- perm_mask / target_mapping follow transformers' conventions.
"""
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np

from plmjax.models.xlnet import XLNet, XLNetConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from plmjax.nn.attention import causal_mask
from plmjax.objectives.plm import (PermutationLM, permutation_masks, sample_spans,
                                   span_length_probs)

T, V = 5, 40
# A large init scale so that log-probabilities vary well beyond float32 rounding.
CFG = XLNetConfig(vocab_size=V, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32, init_std=0.5,
                  dropout_rate=0.0, attention_dropout_rate=0.0, mem_len=T)


def _init(cfg=CFG, b=2):
  model = XLNet(cfg)
  params = model.init(jax.random.key(0), {"input_ids": jnp.zeros((b, T), jnp.int32),
                                          "target_mapping": jnp.zeros((b, 1, T))})["params"]
  return model, flax.linen.meta.unbox(params)


def test_identity_order_masks_are_causal():
  pm = permutation_masks(jnp.arange(T), jnp.ones(T, bool))
  query_sees = ~pm
  content_sees = query_sees | jnp.eye(T, dtype=bool)
  np.testing.assert_array_equal(content_sees, causal_mask(T)[0, 0])
  np.testing.assert_array_equal(query_sees, causal_mask(T)[0, 0] & ~jnp.eye(T, dtype=bool))


def test_identity_order_log_likelihood_equals_causal_decoding():
  model, params = _init()
  ids = jnp.asarray(np.random.default_rng(0).integers(0, V, (2, T)), jnp.int32)
  perm = permutation_masks(jnp.arange(T), jnp.ones(T, bool)).astype(jnp.float32)
  apply = jax.jit(lambda batch: model.apply({"params": params}, batch))
  parallel = apply({
      "input_ids": ids, "perm_mask": jnp.broadcast_to(perm, (2, T, T)),
      "target_mapping": jnp.broadcast_to(jnp.eye(T), (2, T, T))})["logits"]       # [B, T, V]
  ll_parallel = jnp.take_along_axis(jax.nn.log_softmax(parallel), ids[..., None], -1)[..., 0]

  mems, steps = None, []
  for i in range(T):   # one token at a time: its query sees only the memory of x_<i
    batch = {"input_ids": ids[:, i:i + 1], "perm_mask": jnp.ones((2, 1, 1)),
             "target_mapping": jnp.ones((2, 1, 1))}
    if mems is not None:
      batch["mems"] = mems
    out = apply(batch)
    steps.append(jax.nn.log_softmax(out["logits"][:, 0])[jnp.arange(2), ids[:, i]])
    mems = out["mems"]
  ll_causal = jnp.stack(steps, axis=1)
  diff = float(jnp.abs(ll_parallel - ll_causal).max())
  print(f"identity-order vs causal decoding: max |Δ log p| = {diff:.3g}")
  assert float(ll_parallel.std()) > 0.1, "log-probabilities too uniform to compare"
  assert diff < 1e-5


def test_query_stream_never_sees_its_own_token():
  model, params = _init(b=2)
  t = 12
  cfg_ids = jnp.asarray(np.random.default_rng(1).integers(0, V, (2, t)), jnp.int32)
  objective = PermutationLM(num_predict=5, perm_size=6)
  prep = objective.prepare({"input_ids": cfg_ids}, jax.random.key(3))
  inputs, tg = prep["inputs"], prep["targets"]
  emb = params["token_embed"]["embedding"][cfg_ids]                                 # [B, T, E]
  w = jax.random.normal(jax.random.key(4), (V,))

  def score(e, b, p):
    batch = {**{k: v for k, v in inputs.items() if k != "input_ids"}, "inputs_embeds": e}
    return model.apply({"params": params}, batch)["logits"][b, p] @ w

  rank, is_target = np.asarray(tg["rank"]), np.asarray(tg["is_target"])
  positions = np.asarray(jnp.argmax(inputs["target_mapping"], -1))
  grads = jax.jit(jax.vmap(jax.vmap(jax.grad(score), (None, None, 0)), (None, 0, None)))(
      emb, jnp.arange(2), jnp.arange(5))                                            # [2, 5, B, T, E]
  for b in range(2):
    for p in range(5):
      g = np.abs(np.asarray(grads[b, p, b])).sum(-1)                               # [T]
      i = positions[b, p]
      later = is_target[b] & (rank[b] >= rank[b, i])                               # incl. itself
      assert g[i] == 0.0, f"row {b} target {i} depends on its own token"
      assert np.all(g[later] == 0.0), f"row {b} target {i} sees a later target"
      assert np.all(g[~later] > 0.0), f"row {b} target {i} misses its context"


def test_sampler_targets_and_masks():
  t, k = 64, 10
  ids = jnp.asarray(np.random.default_rng(2).integers(3, V, (256, t)), jnp.int32)
  ids = ids.at[:, 0].set(1)                                                         # a CLS token
  attn = jnp.ones_like(ids).at[:128, -8:].set(0)                                    # padding
  obj = PermutationLM(num_predict=k, perm_size=16, special_ids=(1,))
  prep = jax.jit(obj.prepare)({"input_ids": ids, "attention_mask": attn}, jax.random.key(0))
  tg, inp = prep["targets"], prep["inputs"]
  is_target = np.asarray(tg["is_target"])
  assert (is_target.sum(1) == k).all(), "num_predict targets per row"
  assert not is_target[:, 0].any() and not is_target[:128, -8:].any(), "special/padding targeted"
  tm = np.asarray(inp["target_mapping"])
  assert tm.shape == (256, k, t) and (tm.sum(-1) == 1).all()
  np.testing.assert_array_equal(np.take_along_axis(np.asarray(ids), tm.argmax(-1), 1), tg["labels"])
  pm, rank = np.asarray(inp["perm_mask"]) > 0, np.asarray(tg["rank"])
  assert not pm[:, :, ~is_target[0]][0].any(), "non-targets are visible to everyone"
  assert all(pm[b, i, i] for b in range(4) for i in np.flatnonzero(is_target[b]))
  assert (rank // 16 == np.arange(t) // 16).all(), "permutation stays within perm_size blocks"


def test_span_lengths_follow_inverse_n():
  t, alpha = 4096, 6
  beg, end, n = jax.vmap(lambda key: sample_spans(key, t, 5, alpha))(
      jax.random.split(jax.random.key(0), 64))
  inside = np.asarray(end) <= t
  lengths = np.asarray(n)[inside]
  freq = np.bincount(lengths, minlength=6)[1:] / lengths.size
  np.testing.assert_allclose(freq, span_length_probs(5), atol=0.01)
  covered = np.asarray(jnp.clip(end - beg, 0)).sum(1) / t
  np.testing.assert_allclose(covered.mean(), 1 / (alpha + 1), atol=0.01)


def test_xlnet_memory_is_carried_across_steps_and_stop_gradiented(tmp_path):
  """On stream data (row i continues row i of the previous batch) the engine carries XLNet's memory
  [L, B, mem_len, E] in the train state (zeros at step 0, the previous step's hidden states after),
  and no gradient flows through it into the step that produced it."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from plmjax.train.config import get_config
  from plmjax.train.loop import Run
  cfg = get_config(os.path.join(ROOT, "experiments", "xlnet.py") + ":tiny",
                   ["--config.data.mode=stream", "--config.model.mem_len=16",
                    "--config.train.batch_size=4"])
  run = Run(cfg, str(tmp_path / "run"))
  assert not np.asarray(run.state.model_state["mems"]).any()
  assert run.state.model_state["mems"].shape == (2, 4, 16, 32)
  it = run.train_iterator()
  run.train(next(it))
  m1 = np.asarray(run.state.model_state["mems"])
  run.train(next(it))
  m2 = np.asarray(run.state.model_state["mems"])
  assert np.isfinite(m1).all() and np.abs(m1).max() > 0 and np.abs(m2 - m1).max() > 0
  run.checkpointer.close()

  model, params = run.model, jax.device_get(run.state.params)
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 100, (2, 2, 12)), jnp.int32)
  mems = model.apply({"params": params}, {"input_ids": ids[0]})["mems"]

  def through(p):        # the memory recomputed from p: its gradient is stopped
    m = model.apply({"params": p}, {"input_ids": ids[0]})["mems"]
    return model.apply({"params": p}, {"input_ids": ids[1], "mems": m})["logits"].sum()

  def constant(p):
    return model.apply({"params": p}, {"input_ids": ids[1], "mems": mems})["logits"].sum()

  g1, g2 = jax.grad(through)(params), jax.grad(constant)(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g1, g2)
