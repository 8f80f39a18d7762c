"""`train.init_from`: a new run starts from another run's params (fresh optimizer, step 0), e.g.
BERT's length-512 phase after the length-128 one; a model that does not fit is refused by name."""
import json
import os

import jax
import numpy as np
import pytest

from plmjax.train import config as config_lib
from plmjax.train.checkpoint import restore_params
from plmjax.train.loop import Run, train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT2 = f"{ROOT}/experiments/gpt2.py:tiny"
FAST = ["--config.train.batch_size=8", "--config.train.eval_every=1000", "--config.train.log_every=1"]


def train_losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [r["loss"] for r in rows if r.get("split", "train") == "train"]


def test_init_from_loads_the_params_and_starts_a_fresh_run(tmp_path):
  a, b, c = (str(tmp_path / n) for n in "abc")
  train_and_evaluate(config_lib.get_config(GPT2, FAST + ["--config.train.steps=30",
                                                         "--config.train.checkpoint_every=30"]), a)
  cfg = config_lib.get_config(GPT2, FAST + ["--config.train.steps=2", f"--config.train.init_from={a}"])
  run = Run(cfg, b)
  fresh = jax.device_get(run.state.params)
  run.init_params()
  got, saved = jax.device_get(run.state.params), restore_params(a, "train.init_from")
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(saved)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(fresh),
                                                      jax.tree_util.tree_leaves(got)))
  assert int(run.state.step) == 0 and all(not np.asarray(m).any() for m in
                                          jax.tree_util.tree_leaves(run.state.opt_state)
                                          if np.asarray(m).dtype == np.float32)   # Adam moments 0
  run.checkpointer.close()
  train_and_evaluate(cfg, b)                                         # through the loop
  train_and_evaluate(config_lib.get_config(GPT2, FAST + ["--config.train.steps=2"]), c)
  # b starts where a ended (30 steps: 5.01 -> 4.71), c from scratch
  assert abs(train_losses(b)[0] - train_losses(a)[-1]) < 0.05
  assert train_losses(b)[0] < train_losses(c)[0] - 0.2


def test_init_from_refuses_a_model_that_does_not_fit(tmp_path):
  a = str(tmp_path / "a")
  train_and_evaluate(config_lib.get_config(GPT2, FAST + ["--config.train.steps=1",
                                                         "--config.train.checkpoint_every=1"]), a)
  cfg = config_lib.get_config(GPT2, FAST + [f"--config.train.init_from={a}",
                                            "--config.model.hidden_size=48"])
  with pytest.raises(ValueError, match=r"train.init_from=.* does not fit this model .*48"):
    train_and_evaluate(cfg, str(tmp_path / "b"))
  with pytest.raises(FileNotFoundError, match="train.init_from="):
    train_and_evaluate(config_lib.get_config(GPT2, FAST + [f"--config.train.init_from={tmp_path}/nope"]),
                       str(tmp_path / "c"))
