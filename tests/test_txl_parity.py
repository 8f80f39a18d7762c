"""Transformer-XL parity with transformers' (deprecated) TransfoXLLMHeadModel, fp32, random weights:
adaptive-softmax log-probabilities and memories over three consecutive segments within 1e-4.

transformers 4.44-4.57 crash in TransfoXLModel.forward on `torch.arange(...).type_as(dtype=...)`;
the fixture below rewrites that one expression to `.to(dtype=word_emb.dtype)` (its meaning in the
original code) for the duration of the test.
"""
import inspect
import re
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from tests.hf_reference import randomize, save, torch, transformers
from plmjax.convert import from_hf

TOL = 1e-4


@pytest.fixture
def txl_module(monkeypatch):
  from transformers.models.deprecated.transfo_xl import modeling_transfo_xl as M
  src = textwrap.dedent(inspect.getsource(M.TransfoXLModel.forward))
  src = src[src.index("def forward"):]   # without the docstring decorators
  fixed, count = re.subn(r"\.type_as\(\s*dtype=word_emb\.dtype\s*\)", ".to(dtype=word_emb.dtype)", src)
  if count:
    namespace = {}
    exec(compile(fixed, M.__file__, "exec"), M.__dict__, namespace)
    monkeypatch.setattr(M.TransfoXLModel, "forward", namespace["forward"])
  return M


CASES = {
    # adaptive softmax with div_val > 1, per-layer biases, same_length, clamping
    "adaptive_div2": dict(cutoffs=[10, 30], d_embed=32, div_val=2, untie_r=True, same_length=True,
                          clamp_len=7, pre_lnorm=False, mem_len=6),
    # one table (div_val 1) with an embedding projection, shared biases, pre-LN
    "div1_proj_preln": dict(cutoffs=[20], d_embed=16, div_val=1, untie_r=False, same_length=False,
                            clamp_len=-1, pre_lnorm=True, mem_len=4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_transfo_xl_three_segments(tmp_path, txl_module, case):
  kw = CASES[case]
  cfg = transformers.TransfoXLConfig(vocab_size=60, d_model=32, n_head=4, d_head=8, d_inner=64,
                                     n_layer=2, **kw)
  ref = randomize(txl_module.TransfoXLLMHeadModel(cfg), seed=1)
  # safetensors refuses the shared r_w_bias / r_r_bias tensors of untie_r=False: use a .bin
  path = save(ref, tmp_path, safe=kw["untie_r"])
  model, params = from_hf(path)

  rng = np.random.default_rng(0)
  ids = rng.integers(0, 60, size=(2, 15))
  mems_ref, mems = None, None
  worst = 0.0
  for s in range(3):
    seg = ids[:, 5 * s:5 * (s + 1)]
    with torch.no_grad():
      out_ref = ref(input_ids=torch.tensor(seg), mems=mems_ref)
    batch = {"input_ids": jnp.asarray(seg, jnp.int32)}
    if mems is not None:
      batch["mems"] = mems
    out = model.apply({"params": params}, batch, train=False)
    diff = np.abs(np.asarray(out["logits"]) - out_ref.prediction_scores.numpy()).max()
    mems_ref_np = np.stack([m.numpy().transpose(1, 0, 2) for m in out_ref.mems])   # [L, B, M, E]
    mem_diff = np.abs(np.asarray(out["mems"]) - mems_ref_np).max()
    assert diff <= TOL and mem_diff <= TOL, f"segment {s}: logits {diff:.3g}, mems {mem_diff:.3g}"
    worst = max(worst, diff, mem_diff)
    mems_ref, mems = out_ref.mems, out["mems"]
  print(f"{case}: max abs diff {worst:.3g}")
  # "labels" asks for the targets' log-probabilities only: the same numbers as the full softmax.
  picked = model.apply({"params": params}, {**batch, "labels": batch["input_ids"]})["target_log_probs"]
  full = np.take_along_axis(np.asarray(out["logits"]), seg[..., None], -1)[..., 0]
  np.testing.assert_allclose(picked, full, atol=1e-5)
