"""XLNet parity with transformers' XLNetLMHeadModel, fp32, random weights, within 1e-4: a first
segment (content stream, memories out), then a second segment over those memories with a
permutation mask, a target mapping (one padding row), two token-type segments and padding."""
import json
import os

import jax.numpy as jnp
import numpy as np

from tests.hf_reference import randomize, save, torch, transformers
from plmjax.convert import from_hf

TOL = 1e-4
B, T1, T2, P, V = 2, 7, 10, 4, 80


def _perm_inputs(rng):
  """perm_mask from a random factorisation order; targets = the last P-1 positions in that order
  (plus one all-zero padding row in target_mapping)."""
  perm_mask = np.zeros((B, T2, T2), np.float32)
  target_mapping = np.zeros((B, P, T2), np.float32)
  for b in range(B):
    rank = rng.permutation(T2)
    perm_mask[b] = rank[None, :] >= rank[:, None]     # i may not see j unless j precedes i
    for p, pos in enumerate(np.argsort(rank)[-(P - 1):]):
      target_mapping[b, p, pos] = 1.0
  return perm_mask, target_mapping


def test_xlnet_lm_two_segments_with_mems(tmp_path):
  # bi_data: the first half of the batch reads positions forward (the bi_data=False path), the
  # second half backward, so one run covers both.
  cfg = transformers.XLNetConfig(vocab_size=V, d_model=32, n_layer=2, n_head=4, d_inner=64,
                                 mem_len=8, reuse_len=5, bi_data=True, clamp_len=6,
                                 ff_activation="gelu")
  ref = randomize(transformers.XLNetLMHeadModel(cfg), seed=3)
  path = save(ref, tmp_path)
  model, params = from_hf(path)
  rng = np.random.default_rng(0)
  ids1, ids2 = rng.integers(0, V, (B, T1)), rng.integers(0, V, (B, T2))
  tt = np.zeros((B, T2), np.int64)
  tt[:, 6:] = 1
  attn = np.ones((B, T2), np.int64)
  attn[1, -2:] = 0
  perm_mask, target_mapping = _perm_inputs(rng)

  with torch.no_grad():
    r1 = ref(input_ids=torch.tensor(ids1), use_mems=True)
    r2 = ref(input_ids=torch.tensor(ids2), mems=r1.mems, perm_mask=torch.tensor(perm_mask),
             target_mapping=torch.tensor(target_mapping), token_type_ids=torch.tensor(tt),
             attention_mask=torch.tensor(attn, dtype=torch.float32), use_mems=True)
  o1 = model.apply({"params": params}, {"input_ids": jnp.asarray(ids1, jnp.int32)})
  batch2 = {"input_ids": jnp.asarray(ids2, jnp.int32), "perm_mask": jnp.asarray(perm_mask),
            "target_mapping": jnp.asarray(target_mapping), "token_type_ids": jnp.asarray(tt, jnp.int32),
            "attention_mask": jnp.asarray(attn, jnp.int32)}
  o2 = model.apply({"params": params}, {**batch2, "mems": o1["mems"]})

  mems = lambda ms: np.stack([m.numpy().transpose(1, 0, 2) for m in ms])
  diffs = {
      "segment 1 logits": np.abs(np.asarray(o1["logits"]) - r1.logits.numpy()).max(),
      "segment 1 mems": np.abs(np.asarray(o1["mems"]) - mems(r1.mems)).max(),
      "segment 2 logits [B,P,V]": np.abs(np.asarray(o2["logits"]) - r2.logits.numpy()).max(),
      "segment 2 mems": np.abs(np.asarray(o2["mems"]) - mems(r2.mems)).max(),
  }
  assert o2["logits"].shape == (B, P, V)
  # The same checkpoint unrolled (layers_0, layers_1, ...) with explicit einsum attention.
  unrolled, up = from_hf(path, scan_layers=False, attention_impl="einsum")
  o3 = unrolled.apply({"params": up}, {**batch2, "mems": o1["mems"]})
  diffs["unrolled einsum vs scanned"] = np.abs(np.asarray(o3["logits"]) - np.asarray(o2["logits"])).max()
  print({k: f"{v:.3g}" for k, v in diffs.items()})
  assert max(diffs.values()) <= TOL, diffs


import pytest  # noqa: E402


@pytest.mark.parametrize("same_length", [False, True])
def test_xlnet_uni_attention(tmp_path, same_length):
  """attn_type="uni" (causal content visibility over the memory and earlier positions; with
  same_length every query sees mem_len + 1 keys): segment 1 plain, segment 2 over its memories
  with a permutation mask and targets — and the HF config round-trips through the export."""
  from plmjax.convert.xlnet import xlnet_config_from_hf
  cfg = transformers.XLNetConfig(vocab_size=V, d_model=32, n_layer=2, n_head=4, d_inner=64,
                                 mem_len=8, attn_type="uni", same_length=same_length,
                                 ff_activation="gelu")
  ref = randomize(transformers.XLNetLMHeadModel(cfg), seed=5)
  path = save(ref, tmp_path)
  model, params = from_hf(path)
  assert (model.config.attn_type, model.config.same_length) == ("uni", same_length)
  rng = np.random.default_rng(1)
  ids1, ids2 = rng.integers(0, V, (B, T1)), rng.integers(0, V, (B, T2))
  perm_mask, target_mapping = _perm_inputs(rng)
  with torch.no_grad():     # transformers' uni + data mask adds in place and needs batch 1: per row
    r1 = ref(input_ids=torch.tensor(ids1), use_mems=True)
    r2 = np.concatenate([ref(input_ids=torch.tensor(ids2[b:b + 1]), mems=[m[:, b:b + 1] for m in r1.mems],
                             perm_mask=torch.tensor(perm_mask[b:b + 1]),
                             target_mapping=torch.tensor(target_mapping[b:b + 1])).logits.numpy()
                         for b in range(B)])
  o1 = model.apply({"params": params}, {"input_ids": jnp.asarray(ids1, jnp.int32)})
  o2 = model.apply({"params": params}, {"input_ids": jnp.asarray(ids2, jnp.int32), "mems": o1["mems"],
                                        "perm_mask": jnp.asarray(perm_mask),
                                        "target_mapping": jnp.asarray(target_mapping)})
  d1 = np.abs(np.asarray(o1["logits"]) - r1.logits.numpy()).max()
  d2 = np.abs(np.asarray(o2["logits"]) - r2).max()
  assert max(d1, d2) <= TOL, (d1, d2)
  bi = from_hf(path, attn_type="bi")
  o_bi = bi[0].apply({"params": bi[1]}, {"input_ids": jnp.asarray(ids1, jnp.int32)})
  assert np.abs(np.asarray(o_bi["logits"]) - np.asarray(o1["logits"])).max() > 1e-3   # it matters
  from plmjax.convert import to_hf
  out = str(tmp_path / "exported")
  to_hf("xlnet", model.config, params, out)
  exported = json.load(open(os.path.join(out, "config.json")))
  assert (exported["attn_type"], exported["same_length"]) == ("uni", same_length)
  assert xlnet_config_from_hf(exported)["attn_type"] == "uni"
  back = transformers.XLNetLMHeadModel.from_pretrained(out).eval()
  with torch.no_grad():
    d3 = np.abs(back(input_ids=torch.tensor(ids1)).logits.numpy() - np.asarray(o1["logits"])).max()
  assert d3 <= TOL, d3
