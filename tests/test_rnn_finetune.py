"""ULMFiT and SiATL through `plmjax finetune` (experiments/rnn_finetune.py): a tiny ULMFiT LM trained
by `plmjax train` on the built-in corpus is loaded into the classifier (as is, and inside SiATL);
SiATL's decaying auxiliary LM weight in the jitted step; config errors that name the key."""
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from plmjax.finetune.main import finetune, run_cli
from plmjax.finetune.run import FinetuneRun
from plmjax.finetune.model import aux_lm_schedule
from plmjax.models.siatl import aux_lm_weight
from plmjax.train.config import load_config

ROOT = os.path.join(os.path.dirname(__file__), "..")
DATA = os.path.join(ROOT, "..", "shared", "data")
RNN_FT = os.path.join(ROOT, "experiments", "rnn_finetune.py")
needs_data = pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "SST-2")),
                                reason="../shared/data/SST-2 not present")


@pytest.fixture(scope="module")
def ulmfit_lm(tmp_path_factory):
  """`plmjax train --config experiments/ulmfit.py:tiny`, 2 steps on the synthetic corpus."""
  from plmjax.train.loop import train_and_evaluate
  workdir = str(tmp_path_factory.mktemp("ulmfit_lm"))
  cfg = load_config(os.path.join(ROOT, "experiments", "ulmfit.py") + ":tiny")
  cfg.update_from_flattened_dict({"train.steps": 2, "train.checkpoint_every": 2, "train.eval_every": 2,
               "train.eval_steps": 1, "train.batch_size": 4, "data.seq_len": 16})
  train_and_evaluate(cfg, workdir)
  return workdir


def config(method: str, lm: str, **overrides):
  cfg = load_config(f"{RNN_FT}:{method}")
  base = {"train.steps": 3, "train.batch_size": 4, "train.eval_batch_size": 8, "train.log_every": 1,
          "data.max_train_examples": 12, "data.max_eval_examples": 8, "data.max_len": 16,
          "data.buckets": (16,), "model.init_from": "" if method.endswith("baseline") else lm}
  if method.endswith("baseline"):
    base["data.tokenizer"] = lm
  for k, v in {**base, **overrides}.items():
    *path, last = k.split(".")
    node = cfg
    for p in path:
      node = node[p]
    node[last] = v
  return cfg


def initial_params(cfg, workdir):
  run = FinetuneRun(cfg, workdir)
  run.init_params()
  params = jax.device_get(run.state.params["encoder"])
  run.checkpointer.close()
  return params


def checkpoint_params(lm):
  step = max(int(d) for d in os.listdir(os.path.join(lm, "checkpoints")) if d.isdigit())
  restored = ocp.StandardCheckpointer().restore(os.path.join(lm, "checkpoints", str(step), "state"))
  return jax.device_get(restored["params"])


def assert_tree_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@needs_data
def test_init_from_a_ulmfit_run_loads_the_lstm(tmp_path, ulmfit_lm):
  ckpt = checkpoint_params(ulmfit_lm)
  assert "rnn" in ckpt and "pool_hidden" not in ckpt
  # ULMFiT: the LM's params as they were trained; the 50-unit layer (model.arch) is new
  enc = initial_params(config("ulmfit", ulmfit_lm), str(tmp_path / "u"))
  assert enc["pool_hidden"]["kernel"].shape[-1] == 50
  assert_tree_equal({k: v for k, v in enc.items() if k != "pool_hidden"}, ckpt)
  # SiATL around the same LM (model.wrap="siatl"): encoder/lm is the checkpoint, task layers new
  enc = initial_params(config("siatl", ulmfit_lm), str(tmp_path / "s"))
  assert set(enc) == {"lm", "task_lstm", "attention"}
  assert_tree_equal(enc["lm"], ckpt)
  # the baseline (same network, random init) does not start from the checkpoint
  enc = initial_params(config("ulmfit_baseline", ulmfit_lm, **{"model.arch.embed_size": 32,
                                                              "model.arch.hidden_size": 64}),
                       str(tmp_path / "b"))
  assert jax.tree.structure(enc["rnn"]) == jax.tree.structure(ckpt["rnn"])
  assert not np.array_equal(enc["rnn"]["layers_0"]["fwd"]["wh"], ckpt["rnn"]["layers_0"]["fwd"]["wh"])


def test_aux_lm_schedule_is_siatl_decay_in_jit():
  fn = aux_lm_schedule(0.2, 0.5, every=3)
  steps = np.array([0, 1, 2, 3, 5, 6, 11, 40])
  got = np.asarray(jax.jit(jax.vmap(fn))(steps))
  np.testing.assert_allclose(got, [aux_lm_weight(s // 3, 0.2, 0.5) for s in steps], rtol=1e-6)
  assert got[0] == pytest.approx(0.2) and got[3] == pytest.approx(0.1) and got[6] == pytest.approx(0.025)
  assert aux_lm_schedule(0.0, 0.5, 3) is None
  np.testing.assert_allclose(jax.jit(aux_lm_schedule(0.5))(7), 0.5)      # GPT-1: constant


@needs_data
def test_siatl_step_uses_the_decaying_weight(tmp_path, ulmfit_lm):
  every = 2
  cfg = config("siatl", ulmfit_lm, **{"train.steps": 5, "head.lm_decay_every": every})
  r = finetune(cfg, str(tmp_path))
  assert set(r) == {"accuracy"}
  with open(tmp_path / "metrics.jsonl") as f:
    train = [r for r in map(json.loads, f) if "split" not in r]
  assert [ln["step"] for ln in train] == [0, 1, 2, 3, 4]
  for ln in train:                 # the line of step s: the loss before update s, weight of step s
    want = float(aux_lm_weight(ln["step"] // every, 0.2, 0.5))
    assert ln["lm_coef"] == pytest.approx(want, rel=1e-6)
    assert ln["loss"] == pytest.approx(ln["task_loss"] + want * ln["lm_loss"], rel=1e-5)


@needs_data
def test_bad_keys_and_values_name_the_key(tmp_path, ulmfit_lm):
  spec = f"{RNN_FT}:siatl"
  for arg, key in [("--config.head.lm_coef_decay=1.5", "head.lm_coef_decay"),
                   ("--config.head.lm_coef_decay=0", "head.lm_coef_decay"),
                   ("--config.head.lm_decay_every=-1", "head.lm_decay_every"),
                   ("--config.head.lm_coef=-0.1", "head.lm_coef"),
                   ("--config.model.wrap=elmo", "model.wrap"),
                   ("--config.head.lm_decay=0.5", "head.lm_decay")]:
    with pytest.raises(SystemExit, match=key.replace(".", r"\.")):
      run_cli(spec, str(tmp_path), [arg, f"--config.model.init_from={ulmfit_lm}"])
  with pytest.raises(SystemExit, match=r"head\.lm_coef_decay.*lm_coef is 0"):
    run_cli(f"{RNN_FT}:ulmfit", str(tmp_path), ["--config.head.lm_coef_decay=0.5"])
  with pytest.raises(SystemExit, match=r"model\.wrap"):
    run_cli(spec, str(tmp_path), ["--config.model.init_from="])
  with pytest.raises(ValueError, match=r"model\.arch\.task_hiden"):
    initial_params(config("siatl", ulmfit_lm, **{"model.arch": {"task_hiden": 8}}), str(tmp_path))
  with pytest.raises(ValueError, match="experiments/rnn_finetune.py"):
    load_config(f"{RNN_FT}:siatl_baseline_x")
