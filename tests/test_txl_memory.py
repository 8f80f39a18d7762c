"""Transformer-XL's segment-level recurrence.

- The dependency claim (Dai et al., 2019, §3.2): with N layers and memory length M = segment
  length L, the last output of a segment depends on exactly the N·L tokens before its segment
  (and the segment itself), not one further: checked on the Jacobian with gradients allowed to
  cross segment boundaries, and by perturbing tokens in the ordinary stop-gradient forward pass.
- One `lax.scan` over segments equals calling the model segment by segment.
- The unrolled and rematerialised stacks, and the explicit einsum attention (the dropout path),
  give the scanned, fused-attention output.
"""
import flax
import jax
import jax.numpy as jnp
import numpy as np

from plmjax.models.transformer_xl import TransformerXL, TransformerXLConfig, scan_segments

N, L, K, V = 2, 4, 5, 30
CFG = TransformerXLConfig(vocab_size=V, hidden_size=16, num_layers=N, num_heads=2, mlp_dim=32,
                          cutoffs=(10,), div_val=2, mem_len=L, clamp_len=-1, same_length=False,
                          dropout_rate=0.0, init_std=0.3)


def _init(cfg=CFG):
  model = TransformerXL(cfg)
  params = model.init(jax.random.key(0), {"input_ids": jnp.zeros((1, L), jnp.int32)})["params"]
  return model, flax.linen.meta.unbox(params)


def test_jacobian_reaches_back_exactly_n_segments():
  model, params = _init()
  x = jax.random.normal(jax.random.key(1), (1, K * L, CFG.hidden_size))

  def last_output(x):
    outs, _ = scan_segments(model, params, None, L, embeds=x, stop_gradient=False)
    return outs["hidden"][-1, 0, -1].sum()

  g = np.abs(np.asarray(jax.jit(jax.grad(last_output))(x))[0]).sum(-1)          # [K·L]
  first = (K - 1) * L - N * L                     # N segments before the last one
  assert np.all(g[first:] > 0), g
  assert np.all(g[:first] == 0), g
  print(f"last output depends on tokens {first}..{K * L - 1} ({N}·{L} before its segment)")


def test_stop_gradient_forward_has_the_same_reach():
  model, params = _init()
  ids = jnp.asarray(np.random.default_rng(1).integers(0, V, (1, K * L)), jnp.int32)
  run = jax.jit(lambda i: scan_segments(model, params, i, L)[0]["hidden"][-1, 0, -1])
  base = run(ids)
  first = (K - 1) * L - N * L
  changed = [bool(jnp.any(run(ids.at[0, p].set((ids[0, p] + 1) % V)) != base)) for p in range(K * L)]
  assert all(changed[first:]) and not any(changed[:first]), changed


def test_scan_equals_segment_loop_and_remat_and_unrolled():
  model, params = _init()
  ids = jnp.asarray(np.random.default_rng(2).integers(0, V, (2, 3 * L)), jnp.int32)
  outs, mems = jax.jit(lambda i: scan_segments(model, params, i, L))(ids)
  m = None
  for s in range(3):
    batch = {"input_ids": ids[:, s * L:(s + 1) * L]}
    if m is not None:
      batch["mems"] = m
    o = model.apply({"params": params}, batch)
    np.testing.assert_allclose(outs["logits"][s], o["logits"], atol=1e-5)
    m = o["mems"]
  np.testing.assert_allclose(mems, m, atol=1e-5)

  batch = {"input_ids": ids[:, :L], "mems": m}
  ref = model.apply({"params": params}, batch)["logits"]
  remat = TransformerXL(CFG.replace(remat_policy="full")).apply({"params": params}, batch)["logits"]
  np.testing.assert_allclose(remat, ref, atol=1e-6)
  from plmjax.nn.transformer import unstack_layer_params
  unrolled = TransformerXL(CFG.replace(scan_layers=False)).apply(
      {"params": unstack_layer_params(params, N)}, batch)["logits"]
  np.testing.assert_allclose(unrolled, ref, atol=1e-5)
  einsum = TransformerXL(CFG.replace(attention_impl="einsum")).apply({"params": params}, batch)["logits"]
  np.testing.assert_allclose(einsum, ref, atol=1e-5)


def test_one_layer_stack():
  """Transformer-XL, XLNet and the BERT/GPT stack run their layers through nn.transformer.layer_stack;
  no model file scans or remats layers itself (Transformer-XL's own nn.scan is over segments)."""
  import inspect
  import re
  from plmjax.models import transformer_xl, xlnet
  from plmjax.nn import transformer
  for mod in (transformer_xl, xlnet):
    src = inspect.getsource(mod)
    assert "layer_stack(" in src and "nn.remat(" not in src and "REMAT_POLICIES" not in src
    assert all("variable_broadcast=\"params\"" in line          # the segment scan shares params
               for line in src.splitlines() if re.search(r"nn\.scan\(", line))
  assert "layer_stack(" in inspect.getsource(transformer.TransformerStack)
