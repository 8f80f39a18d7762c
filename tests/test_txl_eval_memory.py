"""The evaluation mechanics of experiments/tables/txl_eval_memory.py (not the learning result).

- With one layer, Transformer-XL with memory M is exactly a sliding window: the prediction for
  segment k equals a memory-less forward pass over the M + T tokens ending with that segment
  (the memory holds the layer's input, the embeddings). Checked for the script's `stream_nll`
  (one jitted scan, memory longer than the "training" one, with and without clamp_len).
- M = 0 equals evaluating every segment on its own.
- clamp_len at or beyond the farthest distance changes nothing; below it, it does.
- `score` skips the start-up positions and splits entity / other targets; `mention_categories`
  labels name mentions by the distance back to the same name in the document.
"""
import dataclasses
import importlib.util
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plmjax.models.transformer_xl import TransformerXL, TransformerXLConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "txl_eval_memory", os.path.join(ROOT, "experiments", "tables", "txl_eval_memory.py"))
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)

V, T, B, K = 30, 4, 2, 6


def _cfg(layers=1, **kw):
  return TransformerXLConfig(**{**dict(vocab_size=V, hidden_size=16, num_layers=layers, num_heads=2,
                                       mlp_dim=32, cutoffs=(), div_val=1, mem_len=T, clamp_len=-1,
                                       same_length=False, dropout_rate=0.0, init_std=0.3,
                                       scan_layers=False), **kw})


def _params(cfg):
  p = TransformerXL(cfg).init(jax.random.key(0), {"input_ids": jnp.zeros((1, T), jnp.int32)})
  return flax.linen.meta.unbox(p["params"])


def _data(seed=1):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, V, (B, K * T)).astype(np.int32)
  return ids, np.roll(ids, -1, axis=1)


def _window_nll(cfg, params, ids, targets, mem, clamp):
  """Naive: for each segment k >= mem / T, one memory-less pass over tokens [kT - mem, kT + T)
  (all windows in one batch)."""
  model = TransformerXL(dataclasses.replace(cfg, mem_len=0, clamp_len=clamp))
  ks = range(mem // T, K)
  win = lambda a: np.concatenate([a[:, k * T - mem:(k + 1) * T] for k in ks])    # [W·B, mem + T]
  run = jax.jit(lambda i, t: model.apply({"params": params}, {"input_ids": i, "labels": t}))
  lp = run(jnp.asarray(win(ids)), jnp.asarray(win(targets)))["target_log_probs"]
  lp = -np.asarray(lp)[:, -T:].reshape(len(ks), B, T)
  out = np.zeros(ids.shape, np.float32)
  for i, k in enumerate(ks):
    out[:, k * T:(k + 1) * T] = lp[i]
  return out


def test_memory_equals_sliding_window_one_layer():
  cfg = _cfg()
  params = _params(cfg)
  ids, targets = _data()
  for mem, clamp in ((2 * T, -1), (3 * T, T + 1)):   # memory longer than "training"; clamped
    got = script.stream_nll(script.eval_model(cfg, mem, clamp), params, ids, targets, T)
    want = _window_nll(cfg, params, ids, targets, mem, clamp)
    np.testing.assert_allclose(got[:, mem:], want[:, mem:], rtol=1e-5, atol=1e-5)  # real memory


def test_zero_memory_is_segments_alone():
  cfg = _cfg(layers=2)
  params = _params(cfg)
  ids, targets = _data(2)
  nll0 = script.stream_nll(script.eval_model(cfg, 0, -1), params, ids, targets, T)
  model = TransformerXL(dataclasses.replace(cfg, mem_len=0))
  run = jax.jit(lambda i, t: model.apply({"params": params}, {"input_ids": i, "labels": t}))
  alone = run(jnp.asarray(ids.reshape(B * K, T)), jnp.asarray(targets.reshape(B * K, T)))
  alone = alone["target_log_probs"]
  np.testing.assert_allclose(nll0, -np.asarray(alone).reshape(B, K * T), rtol=1e-5, atol=1e-5)


def test_mention_categories():
  eos = 9
  #        0  1  2  3  4  5  6  7  8  9 10 11 12 13
  ids = [[1, 2, 7, 3, 4, 5, 1, 2, 5, eos, 1, 2, 5, 5]]
  ent = [[0, 0, -1, 1, 1, -1, 2, 2, -1, -1, 0, 0, -1, -1]]
  cat = script.mention_categories(np.array(ids), np.array(ent), eos)
  assert list(cat[0]) == ["intro:rest", "", "intro:first", "intro:rest", "", "rep<=31:first",
                          "rep<=31:rest", "", "", "intro:first", "intro:rest", "", "", ""]


def test_score_skips_startup_and_splits_entities():
  nll = np.arange(12, dtype=np.float32).reshape(1, 12)
  data = {"attention_mask": np.array([[1] * 10 + [0] * 2]),
          "target_ids": np.array([[5] * 9 + [0] * 3]), "pad_id": 0,
          "entity_ids": np.array([[-1, -1, -1, -1, -1, 0, 0, -1, -1, -1, -1, -1]])}
  r = script.score(nll, data, skip=4)
  # scored t = 4..8; entity targets are t = 4, 5 (tokens 5, 6 are names)
  assert (r["n_all"], r["n_entity"], r["n_other"]) == (5, 2, 3)
  assert r["all"] == pytest.approx(6.0) and r["entity"] == pytest.approx(4.5)
  assert r["other"] == pytest.approx(7.0)


def test_paired_delta():
  data = {"attention_mask": np.ones((1, 8), int), "target_ids": np.ones((1, 8), int), "pad_id": 0}
  ref = np.zeros((1, 8))
  rows = [{"mem": 4, "_nll": ref}, {"mem": 8, "_nll": ref - np.array([[9, 9, 1, 2, 3, 4, 5, 6]])}]
  script.paired_delta(rows, data, skip=2, reference_mem=4, block=2)
  assert rows[0]["delta"] == 0 and rows[0]["delta_se"] == 0
  assert rows[1]["delta"] == pytest.approx(-3.5)                 # positions 2..7 only
  sums = np.array([0, -3, -7, -11])                              # blocks of 2 (first one skipped)
  assert rows[1]["delta_se"] == pytest.approx(np.sqrt(4 * sums.var()) / 6)
  assert "_nll" not in rows[0] and "_nll" not in rows[1]


def test_evaluate_memories_rows():
  cfg = _cfg(layers=2)
  params = _params(cfg)
  ids, targets = _data(3)
  data = {"input_ids": ids, "target_ids": targets, "attention_mask": np.ones_like(ids),
          "entity_ids": np.where(ids % 3 == 0, 0, -1), "pad_id": -100}
  rows = script.evaluate_memories(cfg, params, data, T, (T, 2 * T), (-1, 2 * T - 1))
  assert [(r["mem"], r["clamp"]) for r in rows] == [
      (T, -1), (2 * T, -1), (T, 2 * T - 1), (2 * T, 2 * T - 1)]
  by = {(r["mem"], r["clamp"]): r["all"] for r in rows}
  assert by[(T, -1)] == by[(T, 2 * T - 1)]          # no distance reaches the clamp
  assert by[(2 * T, -1)] != by[(2 * T, 2 * T - 1)]  # distances up to 3T - 1 are clamped
  assert by[(T, -1)] != by[(2 * T, -1)]             # the longer memory is used
  assert all(r["n_all"] == (K - 2) * T * B for r in rows)


def _engine_run(tmp_path, *overrides):
  from plmjax.train.config import get_config
  from plmjax.train.loop import Run
  cfg = get_config(os.path.join(ROOT, "experiments", "transformer_xl.py") + ":tiny", [
      "--config.train.eval_steps=3", "--config.train.batch_size=4", "--config.model.init_std=0.3",
      "--config.model.scan_layers=false", *overrides])
  return Run(cfg, str(tmp_path / "run"))


@pytest.mark.parametrize("mem_len", [24, 0])
def test_engine_evaluation_threads_memory_across_eval_batches(tmp_path, mem_len):
  """Run.evaluate (in-run eval and `plmjax eval`) carries Transformer-XL's memory from one eval
  batch to the next: its loss equals each batch scored with the memory a single scan over the
  whole stream so far leaves (eval.mem_len=24, longer than training's 16) — or with none
  (eval.mem_len=0: every segment alone); and the memory changes the loss."""
  from plmjax.data import build_dataset
  from plmjax.train.config import eval_seq_len
  from plmjax.train.step import prepare_inputs
  from plmjax.models.transformer_xl import scan_segments
  run = _engine_run(tmp_path, f"--config.eval.mem_len={mem_len}")
  got = run.evaluate()
  cfg, model, params = run.config, run.eval_model, run.state.params
  assert model.config.mem_len == mem_len and run.model.config.mem_len == 16
  data = build_dataset(cfg.data, split=cfg.data.eval_split, global_batch_size=4,
                       seq_len=eval_seq_len(cfg), seed=cfg.train.seed)
  mems = model.init_mems(4)
  apply = jax.jit(lambda p, inputs: model.apply({"params": p}, inputs))
  totals = {}
  for i, batch in zip(range(3), data):
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.train.seed + 1), i)
    prepared = prepare_inputs(run.objective, batch, key)
    outputs = apply(params, {**prepared["inputs"], "mems": mems})
    loss, m = run.objective.loss(outputs, prepared)
    n = float(m["num_targets"])
    totals["loss"] = totals.get("loss", 0.0) + float(loss) * n
    totals["n"] = totals.get("n", 0.0) + n
    alone = run.objective.loss(apply(params, prepared["inputs"]), prepared)[0]
    if i and mem_len:
      assert abs(float(alone) - float(loss)) > 1e-3               # the memory matters here
    _, mems = scan_segments(model, params, prepared["inputs"]["input_ids"],
                            model.config.segment_len, mems)        # the stream so far, one scan
  assert got["num_targets"] == totals["n"]
  np.testing.assert_allclose(got["loss"], totals["loss"] / totals["n"], rtol=1e-5)
  run.checkpointer.close()


def test_eval_section_checks_and_paper_settings(tmp_path):
  from plmjax.train.config import ConfigError, get_config, load_config
  path = os.path.join(ROOT, "experiments", "transformer_xl.py")
  large = load_config(f"{path}:wt103_large")
  assert dict(large.eval) == dict(tgt_len=128, mem_len=1600, clamp_len=1000, same_length=True)
  for bad, match in [("--config.eval.mem_len=-3", "eval.mem_len must be >= 0"),
                     ("--config.eval.tgt_len=0", "eval.tgt_len=0 must be >= 1"),
                     ("--config.eval.mem_lenn=3", "did you mean 'eval.mem_len'")]:
    with pytest.raises(ConfigError, match=match):
      get_config(f"{path}:tiny", [bad])
  run = _engine_run(tmp_path, "--config.eval.tgt_len=32", "--config.eval.same_length=true",
                    "--config.eval.clamp_len=20")
  c = run.eval_model.config
  assert (c.segment_len, c.same_length, c.clamp_len, c.mem_len) == (32, True, 20, 16)
  assert np.isfinite(run.evaluate()["loss"])
  run.checkpointer.close()
