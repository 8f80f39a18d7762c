"""Objectives: losses against hand computations, CLM shift, SBO head, config, static masking, and
one jitted step through the tiny BERT / GPT models."""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from plmjax.models.bert import Bert, BertConfig
from plmjax.models.gpt import GPT, GPTConfig
from plmjax.objectives import build_objective, default_objective_config
from plmjax.objectives.clm import shift_targets, token_cross_entropy
from plmjax.objectives.sbo import SpanBoundaryHead, sbo_logits


@dataclasses.dataclass
class Tok:
  vocab_size: int = 50
  pad_id: int = 0
  cls_id: int = 1
  sep_id: int = 2
  mask_id: int = 3
  special_ids: tuple = (0, 1, 2, 3, 4)


TOK = Tok()


def np_ce(logits, targets):
  logits = np.asarray(logits, np.float64)
  z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  return z - np.take_along_axis(logits, np.asarray(targets)[..., None], -1)[..., 0]


def make_pairs(B=4, T=24, seed=0):
  rng = np.random.RandomState(seed)
  ids = rng.randint(5, 50, (B, T)).astype(np.int32)
  ids[:, 0], ids[:, 10], ids[:, 19] = 1, 2, 2
  ids[:, 20:] = 0
  return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int32),
          "token_type_ids": (np.arange(T) > 10).astype(np.int32)[None].repeat(B, 0),
          "next_sentence_label": rng.randint(0, 2, B).astype(np.int32),
          "word_ids": np.where(np.isin(ids, (0, 1, 2)), -1, np.arange(T) // 2).astype(np.int32)}


def build(name, **kw):
  cfg = default_objective_config(name)
  cfg.update(kw)
  return build_objective(cfg, TOK)


def test_mlm_loss_is_the_hand_computed_cross_entropy():
  obj = build("mlm", max_predictions=3)
  logits = np.random.RandomState(0).randn(2, 3, 50).astype(np.float32) * 3
  ids = np.array([[7, 8, 9], [10, 11, 12]])
  weights = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
  logits[0, 1, 8] = 100.0                                     # one sure hit among the 3 real targets
  prepared = {"targets": {"masked_ids": ids, "masked_weights": weights}}
  loss, m = obj.loss({"logits": logits}, prepared)
  expected = (np_ce(logits, ids) * weights).sum() / 3
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(m["mlm_loss"], expected, rtol=1e-6)
  acc = ((logits.argmax(-1) == ids) * weights).sum() / 3
  assert acc >= 1 / 3 and np.isclose(m["mlm_accuracy"], acc) and m["num_targets"] == 3
  with pytest.raises(ValueError, match="masked_positions"):
    obj.loss({"logits": np.zeros((2, 24, 50))}, prepared)


def test_cross_entropy_is_float32_and_empty_safe():
  logits = jnp.full((2, 3, 50), 1.0, jnp.bfloat16)
  loss, acc, n = token_cross_entropy(logits, jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3)))
  assert loss.dtype == jnp.float32 and float(loss) == 0.0 and float(n) == 0.0


def test_clm_targets_are_shifted_left_and_skip_padding_and_last():
  ids = np.array([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]], np.int32)
  mask = (ids != 0).astype(np.int32)
  targets, weights = shift_targets(jnp.asarray(ids), jnp.asarray(mask))
  np.testing.assert_array_equal(targets, [[6, 7, 8, 9, 0], [6, 7, 0, 0, 0]])
  np.testing.assert_array_equal(weights, [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
  obj = build("clm")
  prep = obj.prepare({"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids}, None)
  assert "token_type_ids" not in prep["inputs"] and prep["inputs"]["input_ids"] is ids
  logits = np.random.RandomState(1).randn(2, 5, 50).astype(np.float32)
  loss, m = obj.loss({"logits": logits}, prep)
  w = np.asarray(weights)
  np.testing.assert_allclose(loss, (np_ce(logits, targets) * w).sum() / w.sum(), rtol=1e-6)
  assert m["num_targets"] == 6 and np.isclose(np.exp(m["clm_loss"]), np.exp(loss))


def test_nsp_adds_to_mlm_and_can_be_switched_off():
  batch = make_pairs()
  prepared = jax.jit(build("mlm_nsp", max_predictions=4).prepare)(batch, jax.random.key(0))
  rng = np.random.RandomState(2)
  outputs = {"logits": rng.randn(4, 4, 50).astype(np.float32), "nsp_logits": rng.randn(4, 2).astype(np.float32)}
  loss, m = build("mlm_nsp", max_predictions=4).loss(outputs, prepared)
  nsp = np_ce(outputs["nsp_logits"], batch["next_sentence_label"]).mean()
  np.testing.assert_allclose(m["nsp_loss"], nsp, rtol=1e-6)
  np.testing.assert_allclose(loss, m["mlm_loss"] + nsp, rtol=1e-6)
  off = build("mlm_nsp", max_predictions=4, nsp_weight=0.0)
  loss_off, m_off = off.loss({"logits": outputs["logits"]}, jax.jit(off.prepare)(batch, jax.random.key(0)))
  np.testing.assert_allclose(loss_off, m["mlm_loss"], rtol=1e-6)
  assert "nsp_loss" not in m_off
  with pytest.raises(ValueError, match="next_sentence_label"):
    build("mlm_nsp").prepare({k: v for k, v in batch.items() if k != "next_sentence_label"},
                             jax.random.key(0))


def tiny(cls, cfg_cls, **kw):
  return cls(cfg_cls(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, max_len=24,
                     dropout_rate=0.0, attention_dropout_rate=0.0, **kw))


def test_sbo_head_reads_only_the_boundaries_and_offset():
  cfg = BertConfig(vocab_size=50, hidden_size=16, num_heads=2)
  head = SpanBoundaryHead(cfg, max_offset=6)
  table = jax.random.normal(jax.random.key(0), (50, 16))
  attend = lambda h: h @ table.T
  prepared = {"inputs": {"span_left": jnp.array([[2, 2, 7]]), "span_right": jnp.array([[5, 5, 9]]),
                         "span_offset": jnp.array([[0, 1, 0]])}}
  hidden = jax.random.normal(jax.random.key(1), (1, 12, 16))
  fn = lambda p, h: head.apply(p, h, prepared, attend, method=lambda m, h, b, a: sbo_logits(h, b, m, a))
  params = jax.jit(lambda k: head.init(k, hidden[:, :3], hidden[:, :3], prepared["inputs"]["span_offset"],
                                       attend))(jax.random.key(2))
  out = fn(params, hidden)
  assert out.shape == (1, 3, 50) and out.dtype == jnp.float32
  others = jnp.ones((12,), bool).at[jnp.array([2, 5, 7, 9])].set(False)
  np.testing.assert_allclose(fn(params, jnp.where(others[None, :, None], 0.0, hidden)), out, rtol=1e-5)
  assert not np.allclose(out[0, 0], out[0, 1])                                 # offset matters
  names = jax.tree_util.tree_map(lambda b: b.names, params["params"],
                                 is_leaf=lambda x: hasattr(x, "names"))
  assert names["offset_embed"]["embedding"] == ("table", "embed")
  assert names["dense_0"]["kernel"] == ("embed", "mlp") and names["bias"] == ("vocab",)
  assert params["params"]["dense_0"]["kernel"].value.shape == (48, 16)


def test_span_mlm_sbo_sums_both_losses():
  obj = build("span_mlm_sbo", max_predictions=6, sbo_max_offset=2)
  batch = make_pairs(B=8)
  prep = jax.jit(obj.prepare)(batch, jax.random.key(3))
  for k in ("span_left", "span_right", "span_offset"):
    assert prep["inputs"][k].shape == (8, 6)
  sw = np.asarray(prep["targets"]["sbo_weights"])
  assert sw.sum() > 0 and (sw <= np.asarray(prep["targets"]["masked_weights"])).all()
  assert (np.asarray(prep["inputs"]["span_offset"])[sw > 0] < 2).all()
  rng = np.random.RandomState(4)
  out = {"logits": rng.randn(8, 6, 50).astype(np.float32), "sbo_logits": rng.randn(8, 6, 50).astype(np.float32)}
  loss, m = obj.loss(out, prep)
  ids = prep["targets"]["masked_ids"]
  np.testing.assert_allclose(m["sbo_loss"], (np_ce(out["sbo_logits"], ids) * sw).sum() / sw.sum(), rtol=1e-5)
  np.testing.assert_allclose(loss, m["mlm_loss"] + m["sbo_loss"], rtol=1e-6)


def masks_for(obj, batch, keys):
  prep = jax.jit(obj.prepare)
  return [np.asarray(prep(batch, jax.random.key(k))["inputs"]["input_ids"]) for k in keys]


def test_dynamic_masking_changes_every_step_static_does_not():
  batch = make_pairs(B=8)
  dyn = masks_for(build("mlm", max_predictions=4), batch, range(3))
  assert not np.array_equal(dyn[0], dyn[1])
  one = masks_for(build("mlm", max_predictions=4, static_masking=True, dupe_factor=1), batch, range(5))
  assert all(np.array_equal(one[0], x) for x in one)
  # by example id: the same id gives the same mask whatever the row's position in the batch
  by_id = {**batch, "example_id": np.arange(8, dtype=np.int32)}
  perm = np.arange(8)[::-1]
  swapped = {k: v[perm] for k, v in by_id.items()}
  obj = build("mlm", max_predictions=4, static_masking=True, dupe_factor=1)
  a, b = masks_for(obj, by_id, [0])[0], masks_for(obj, swapped, [1])[0]
  np.testing.assert_array_equal(a[perm], b)
  # identical rows without ids hash alike; dupe_factor = 3 gives 3 masks per example
  same = {k: np.repeat(v[:1], 8, 0) for k, v in batch.items()}
  row_masks = masks_for(build("mlm", max_predictions=4, static_masking=True, dupe_factor=3), same, range(12))
  distinct = {m[i].tobytes() for m in row_masks for i in range(8)}
  assert len(distinct) == 3


def test_config_defaults_and_errors():
  for name in ("mlm", "mlm_nsp", "span_mlm_sbo", "clm"):
    cfg = default_objective_config(name)
    assert cfg.name == name and build_objective(cfg, TOK) is not None
  assert default_objective_config("span_mlm_sbo").unit == "span"
  for name, cls in (("plm", "PermutationLM"), ("bilm", "BidirectionalLM"), ("rnn_lm", "RecurrentLM")):
    assert type(build_objective({"name": name}, TOK)).__name__ == cls
  assert set(default_objective_config("mlm_nsp")) - set(default_objective_config("mlm")) == {"nsp_weight"}
  with pytest.raises(ValueError, match="objective.mask_prb"):
    build_objective({"name": "mlm", "mask_prb": 0.2}, TOK)
  with pytest.raises(ValueError, match="objective.nsp_weight"):
    build_objective(ml_collections.ConfigDict({"name": "mlm", "nsp_weight": 1.0}), TOK)
  with pytest.raises(ValueError, match="objective.name"):
    build_objective({"name": "mlmm"}, TOK)
  with pytest.raises(ValueError, match="objective.name"):
    build_objective({"unit": "word"}, TOK)
  with pytest.raises(ValueError, match="objective.mask_prob"):
    build_objective({"name": "mlm", "mask_prob": 1.5}, TOK)
  with pytest.raises(TypeError, match="objective.unit"):
    build_objective({"name": "mlm", "unit": 3}, TOK)
  with pytest.raises(ValueError, match="objective.max_predictions"):
    build("mlm", max_predictions=30).prepare(make_pairs(), jax.random.key(0))


def test_one_jitted_bert_step():
  model, obj, batch = tiny(Bert, BertConfig), build("mlm_nsp", max_predictions=4, unit="word"), make_pairs()
  params = jax.jit(lambda b, k: model.init(k, obj.prepare(b, k)["inputs"]))(batch, jax.random.key(1))

  @jax.jit
  def step(params, batch, key):
    prepared = obj.prepare(batch, key)
    (loss, metrics), grads = jax.value_and_grad(
        lambda p: obj.loss(model.apply(p, prepared["inputs"]), prepared), has_aux=True)(params)
    return loss, metrics, grads

  loss, metrics, grads = step(params, batch, jax.random.key(2))
  assert abs(float(metrics["mlm_loss"]) - np.log(50)) < 1.0 and abs(float(metrics["nsp_loss"]) - np.log(2)) < 0.5
  assert np.isclose(loss, metrics["mlm_loss"] + metrics["nsp_loss"])
  assert 8 <= float(metrics["num_targets"]) <= 16                 # b = round(0.15 * 18) = 3 per row
  assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))


def test_one_jitted_gpt_step():
  model, obj = tiny(GPT, GPTConfig), build("clm")
  batch = make_pairs()
  prepared = obj.prepare(batch, None)
  params = model.init(jax.random.key(0), prepared["inputs"])
  loss, m = jax.jit(lambda p, b: obj.loss(model.apply(p, obj.prepare(b, None)["inputs"]),
                                          obj.prepare(b, None)))(params, batch)
  assert np.isfinite(loss) and float(m["num_targets"]) == 4 * 19
