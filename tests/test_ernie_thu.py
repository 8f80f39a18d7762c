"""ERNIE (THU): the fusion layer and K-Encoder, dEA corruption and targets, the frozen entity table,
and experiments/ernie_thu.py:tiny through the engine."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plmjax.knowledge import formats
from plmjax.models import ernie_thu
from plmjax.models.bert import Bert, BertConfig
from plmjax.nn.transformer import ACTIVATIONS
from plmjax.objectives import build_objective, default_objective_config
from plmjax.objectives.dea import KEPT, MASKED, REPLACED, corrupt_entities, dea_targets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def vec_file(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("kg") / "entity2vec.vec")
  formats.write_vectors(path, np.random.RandomState(0).randn(30, 8).astype(np.float32))
  return path


def tiny_cfg(vec_file, **kw):
  return ernie_thu.ErnieThuConfig(**{**dict(vocab_size=50, hidden_size=16, num_layers=1, knowledge_layers=1,
                                            num_heads=2, mlp_dim=32, max_len=16, entity_dim=8, entity_heads=2,
                                            entity_vectors=vec_file, dropout_rate=0.0,
                                            attention_dropout_rate=0.0), **kw})


def test_fusion_shapes_and_token_only_path(vec_file):
  cfg = tiny_cfg(vec_file)
  fusion = ernie_thu.Fusion(cfg)
  k = jax.random.split(jax.random.key(0), 4)
  w = jax.random.normal(k[0], (2, 5, 16))
  e1, e2 = jax.random.normal(k[1], (2, 5, 8)), jax.random.normal(k[2], (2, 5, 8))
  has = jnp.asarray([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0]], jnp.float32)[..., None]
  params = fusion.init(k[3], w, e1, has)["params"]
  (w1, o1), (w2, o2) = (fusion.apply({"params": params}, w, e, has) for e in (e1, e2))
  assert w1.shape == (2, 5, 16) and o1.shape == (2, 5, 8)
  off = ~has[..., 0].astype(bool)
  # token-only path: where no entity is aligned, the entity input has no effect, and the output is
  # GELU(W_t' GELU(W_t w + b) + b') computed by hand
  np.testing.assert_array_equal(np.asarray(w1)[np.asarray(off)], np.asarray(w2)[np.asarray(off)])
  assert not np.allclose(np.asarray(w1)[np.asarray(~off)], np.asarray(w2)[np.asarray(~off)])
  p = nn.meta.unbox(params)
  gelu = ACTIVATIONS["gelu"]
  h = gelu(w @ p["wi"]["kernel"] + p["wi"]["bias"])
  ref = gelu(h @ p["wo"]["kernel"] + p["wo"]["bias"])
  np.testing.assert_allclose(np.asarray(w1)[np.asarray(off)], np.asarray(ref)[np.asarray(off)], atol=1e-5)
  h_ent = gelu(w @ p["wi"]["kernel"] + p["wi"]["bias"] + e1 @ p["entity_in"]["kernel"])
  ref_ent = gelu(h_ent @ p["wo"]["kernel"] + p["wo"]["bias"])
  np.testing.assert_allclose(np.asarray(w1)[np.asarray(~off)], np.asarray(ref_ent)[np.asarray(~off)], atol=1e-5)


def _batch(B=2, T=12):
  ids = np.random.RandomState(1).randint(5, 50, (B, T)).astype(np.int32)
  mask = np.ones((B, T), np.int32)
  mask[1, 9:] = 0
  ent = np.full((B, T), -1, np.int32)
  ent[0, [1, 4, 7]] = [3, 11, 3]
  ent[1, [2]] = [29]
  return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids), "ent_ids": ent}


def test_model_outputs_and_row_without_entities(vec_file):
  cfg = tiny_cfg(vec_file)
  model = ernie_thu.ErnieThu(cfg)
  apply = jax.jit(model.apply)
  b = _batch()
  dea = dea_targets(jnp.asarray(b["ent_ids"]), jnp.asarray(b["attention_mask"]), 4)
  b = {**b, "dea_positions": dea["dea_positions"], "dea_candidates": dea["dea_candidates"]}
  params = model.init(jax.random.key(0), b)["params"]
  out = apply({"params": params}, b)
  assert out["hidden"].shape == (2, 12, 16) and out["entity_hidden"].shape == (2, 12, 8)
  assert out["dea_logits"].shape == (2, 4, 4) and out["nsp_logits"].shape == (2, 2)
  assert np.isfinite(np.asarray(out["hidden"])).all() and np.isfinite(np.asarray(out["dea_logits"])).all()
  # entity states are zero off the aligned tokens
  assert np.all(np.asarray(out["entity_hidden"])[b["ent_ids"] < 0] == 0)
  # a row whose entities are all removed equals the same row run with no ent_ids at all (the
  # token-only path everywhere); entities change the rows that have them
  h_none = apply({"params": params}, {k: v for k, v in b.items() if k != "ent_ids"})["hidden"]
  drop_row1 = {**b, "ent_ids": np.where(np.arange(2)[:, None] == 1, -1, b["ent_ids"])}
  h_row1_none = apply({"params": params}, drop_row1)["hidden"]
  np.testing.assert_array_equal(np.asarray(h_row1_none)[1], np.asarray(h_none)[1])
  np.testing.assert_array_equal(np.asarray(h_row1_none)[0], np.asarray(out["hidden"])[0])
  assert not np.allclose(np.asarray(out["hidden"])[0], np.asarray(h_none)[0])
  # the frozen table is a constant of the module, not a parameter
  assert not any(x.shape[-2:] == (30, 8) for x in jax.tree.leaves(nn.meta.unbox(params)))


def test_entity_dim_mismatch_names_the_file(vec_file):
  cfg = tiny_cfg(vec_file, entity_dim=4)
  with pytest.raises(ValueError, match="entity2vec.vec.*4"):
    ernie_thu.ErnieThu(cfg).init(jax.random.key(0), _batch())


def test_dea_corruption_statistics():
  """5 % replaced / 15 % masked / 80 % kept, per aligned token, within sampling error."""
  rs = np.random.RandomState(0)
  ent = np.where(rs.rand(64, 128) < 0.3, rs.randint(0, 500, (64, 128)), -1).astype(np.int32)
  counts = np.zeros(3)
  n = 0
  f = jax.jit(lambda e, k: corrupt_entities(e, k, 500, 0.05, 0.15))
  for seed in range(40):
    out, act = map(np.asarray, f(jnp.asarray(ent), jax.random.PRNGKey(seed)))
    al = ent >= 0
    assert np.all(act[~al] == -1) and np.all(out[~al] == -1)
    counts += [np.sum(act[al] == a) for a in (REPLACED, MASKED, KEPT)]
    n += al.sum()
    rep = act == REPLACED
    assert np.all(out[rep] != ent[rep]) and np.all((out[rep] >= 0) & (out[rep] < 500))
    assert np.all(out[act == MASKED] == -1) and np.all(out[act == KEPT] == ent[act == KEPT])
  for frac, p in zip(counts / n, (0.05, 0.15, 0.80)):
    assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / n), (counts / n)


def test_dea_targets_only_aligned_tokens():
  b = _batch()
  t = jax.tree.map(np.asarray, dea_targets(jnp.asarray(b["ent_ids"]), jnp.asarray(b["attention_mask"]), 4))
  ent = b["ent_ids"]
  for r in range(2):
    w = t["dea_weights"][r] > 0
    pos = t["dea_positions"][r][w]
    assert np.all(ent[r, pos] >= 0)                                  # targets sit on aligned tokens
    assert sorted(pos.tolist()) == np.nonzero(ent[r] >= 0)[0].tolist()   # and all of them
    cand = t["dea_candidates"][r]
    assert len(set(cand[cand >= 0].tolist())) == (cand >= 0).sum()   # distinct candidates
    assert set(cand[cand >= 0].tolist()) == set(ent[r][ent[r] >= 0].tolist())
    np.testing.assert_array_equal(cand[t["dea_labels"][r][w]], ent[r, pos])   # labels point at them
  assert t["dea_weights"][1].sum() == 1 and t["dea_weights"][0].sum() == 3


def test_objective_masks_padding_entities_and_scores(vec_file):
  cfg = default_objective_config("ernie_dea")
  cfg.num_entities = 30
  cfg.max_predictions = 4
  cfg.max_entities = 4

  class V:
    vocab_size, pad_id, cls_id, sep_id, mask_id, special_ids = 50, 0, 2, 3, 4, (0, 1, 2, 3, 4)
  obj = build_objective(cfg, V())
  b = {**_batch(), "next_sentence_label": np.zeros(2, np.int32)}
  prep = obj.prepare(jax.tree.map(jnp.asarray, b), jax.random.PRNGKey(0))
  model = ernie_thu.ErnieThu(tiny_cfg(vec_file))
  params = model.init(jax.random.key(0), prep["inputs"])["params"]
  loss, m = obj.loss(jax.jit(model.apply)({"params": params}, prep["inputs"]), prep)
  assert np.isfinite(float(loss)) and float(m["num_entity_targets"]) == 4
  with pytest.raises(ValueError, match="objective.knowledge is empty"):
    build_objective({**dict(cfg.items()), "num_entities": 0}, V())
  assert build_objective({**dict(cfg.items()), "num_entities": 0, "knowledge": vec_file}, V()).num_entities == 30


def test_bert_to_ernie_params_splits_the_layers(vec_file):
  from plmjax.train.init_from import merge_params
  cfg = tiny_cfg(vec_file)
  b = _batch()
  ernie = ernie_thu.ErnieThu(cfg)
  e_params = nn.meta.unbox(jax.jit(ernie.init)(jax.random.key(0), b)["params"])
  bert = Bert(BertConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32, max_len=16))
  b_params = nn.meta.unbox(jax.jit(bert.init)(jax.random.key(1), b)["params"])
  mapped, note = ernie_thu.bert_to_ernie_params(b_params, num_layers=1, knowledge_layers=1)
  merged, report = merge_params(e_params, mapped, source="bert", key="test")
  assert jax.tree.structure(merged) == jax.tree.structure(e_params)
  L = b_params["encoder"]["layers"]
  np.testing.assert_array_equal(merged["encoder"]["layers"]["attention"]["query"]["kernel"], L["attention"]["query"]["kernel"][:1])
  np.testing.assert_array_equal(merged["knowledge_encoder"]["layers"]["mlp"]["wi"]["kernel"], L["mlp"]["wi"]["kernel"][1:])
  np.testing.assert_array_equal(merged["knowledge_encoder"]["layers"]["mlp"]["entity_in"]["kernel"],
                                e_params["knowledge_encoder"]["layers"]["mlp"]["entity_in"]["kernel"])
  assert jax.tree.map(np.shape, merged) == jax.tree.map(np.shape, e_params)
  assert any("entity_in" in n for n in report.new) and not any("['wi']" in n for n in report.new)
  assert note == "T-Encoder <- BERT layers 0-0, K-Encoder token side <- layers 1-1"
  # fewer layers than N + M: the K-Encoder starts fresh; fewer than N: refused by name
  mapped, note = ernie_thu.bert_to_ernie_params(b_params, num_layers=2, knowledge_layers=1)
  assert "knowledge_encoder" not in mapped and note.startswith("T-Encoder <- BERT layers 0-1, K-Encoder fresh")
  with pytest.raises(ValueError, match=r"BERT checkpoint has 2 layers; the T-Encoder needs model.num_layers = N = 3"):
    ernie_thu.bert_to_ernie_params(b_params, 3, 1)
  # unrolled trees on either side give the same weights; an ERNIE tree passes as is
  from plmjax.nn.transformer import unstack_layer_params
  unrolled, _ = ernie_thu.adapt_checkpoint({**b_params, "encoder": unstack_layer_params(b_params["encoder"], 2)},
                                           cfg.replace(scan_layers=False))
  assert sorted(unrolled["encoder"]) == ["layers_0"] and sorted(unrolled["knowledge_encoder"]) == ["layers_0"]
  np.testing.assert_array_equal(unrolled["knowledge_encoder"]["layers_0"]["mlp"]["wo"]["kernel"],
                                L["mlp"]["wo"]["kernel"][1])
  assert ernie_thu.adapt_checkpoint(e_params, cfg)[0] is e_params


def test_tiny_config_trains_and_the_entity_table_stays_frozen(tmp_path):
  from plmjax.knowledge import kg
  from plmjax.train.checkpoint import restore_params
  from plmjax.train.config import get_config
  from plmjax.train.loop import train_and_evaluate
  cfg = get_config(os.path.join(ROOT, "experiments", "ernie_thu.py") + ":tiny",
                   ["--config.train.steps=3", "--config.train.eval_steps=0", "--config.train.log_every=1"])
  ks = kg.open_knowledge("kg:synthetic")
  on_disk = formats.read_vectors(os.path.join(ks.folder, "entity2vec.vec"))
  last = train_and_evaluate(cfg, str(tmp_path))
  assert np.isfinite(last["loss"]) and "dea_loss" in last
  table = ernie_thu.load_entity_table("kg:synthetic")
  assert table.tobytes() == on_disk.tobytes() and not table.flags.writeable
  params = restore_params(str(tmp_path), "test")
  assert not any(np.shape(x)[-2:] == on_disk.shape for x in jax.tree.leaves(params))
  from plmjax.knowledge.data import knowledge_tokenizer
  obj = build_objective(cfg.objective, knowledge_tokenizer(cfg.data))
  assert obj.num_entities == on_disk.shape[0] == ks.num_entities
