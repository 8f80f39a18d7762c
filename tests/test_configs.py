"""Every experiment config parses at every size; overrides are typed and checked; one train step
of every tiny config runs (real data pipeline, objective and model) and gives a finite loss."""
import glob
import importlib.util
import os

import jax
import numpy as np
import pytest

from plmjax.train import config as config_lib
from plmjax.train.loop import Run
from plmjax.train.mesh import shard_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Pretraining configs: files with get_config and SIZES (fine-tuning recipes are tested with finetune).
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
                 if "def get_config" in open(p).read() and "\nSIZES" in open(p).read())


def sizes(path):
  """The file's SIZES that are pretraining configs (have an objective section)."""
  spec = importlib.util.spec_from_file_location("cfg_sizes", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return [s for s in mod.SIZES if "objective" in mod.get_config(s)]


def test_the_four_pretraining_configs_exist():
  names = {os.path.basename(p) for p in CONFIGS}
  assert {"bert.py", "roberta.py", "gpt1.py", "gpt2.py"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_size_parses_and_validates(path):
  for size in sizes(path):
    cfg = config_lib.get_config(f"{path}:{size}")
    assert cfg.model.name and cfg.objective.name and cfg.train.steps > 0
    assert "train.log_every" in config_lib.all_keys(cfg)
  assert "plmjax train --config experiments/" in open(path).read()   # the run command


def test_overrides_are_typed():
  cfg = config_lib.get_config(f"{ROOT}/experiments/bert.py:tiny",
                              ["--config.train.steps=7", "--config.optimizer.learning_rate", "1e-3",
                               "--config.model.scan_layers=false", "--config.data.path=/x",
                               "--config.model.attention_impl=xla"])
  assert (cfg.train.steps, cfg.optimizer.learning_rate, cfg.model.scan_layers) == (7, 1e-3, False)
  assert (cfg.data.path, cfg.model.attention_impl) == ("/x", "xla")


@pytest.mark.parametrize("arg,match", [
    ("--config.train.stpes=3", "unknown config key 'train.stpes' .*did you mean 'train.steps'"),
    ("--config.optimzer.name=lamb", "did you mean 'optimizer.name'"),
    ("--config.train.steps=ten", "train.steps=ten: invalid literal for int"),
    ("--config.train=3", "is a section"),
    ("--config.train.batch_size=30", "not divisible by|batch_size"),
    ("train.steps=3", "unexpected argument"),
    ("--config.train.prng_impl=philox", "train.prng_impl='philox'"),
])
def test_bad_overrides_name_the_cause(arg, match):
  args = [arg] + (["--config.train.grad_accum=4"] if "batch_size" in arg else [])
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.get_config(f"{ROOT}/experiments/bert.py:tiny", args)


def test_bad_config_file_and_section_errors():
  with pytest.raises(config_lib.ConfigError, match="does not exist"):
    config_lib.get_config("experiments/nope.py:tiny")
  with pytest.raises(config_lib.ConfigError, match="has no field 'hiden_size'.*hidden_size"):
    config_lib.model_section("bert", hiden_size=3)


@pytest.mark.parametrize("name", ["bert", "roberta", "gpt1", "gpt2"])
def test_one_step_smoke(name, tmp_path):
  cfg = config_lib.get_config(f"{ROOT}/experiments/{name}.py:tiny", ["--config.train.batch_size=8"])
  run = Run(cfg, str(tmp_path))
  batch = next(iter(run.train_data))
  state, m = run.train_step(run.state, shard_batch(batch, run.mesh))
  assert int(state.step) == 1 and np.isfinite(float(m["loss"]))
  assert run.model_config.vocab_size == run.tokenizer.vocab_size
  run.checkpointer.close()


def test_prng_impl_sets_the_key_implementation_for_the_run(tmp_path):
  cfg = config_lib.get_config(f"{ROOT}/experiments/bert.py:tiny", ["--config.train.prng_impl=rbg"])
  try:
    config_lib.apply_prng_impl(cfg)
    assert jax.random.PRNGKey(0).shape == (4,)          # rbg keys are 4 words, threefry's 2
    run = Run(cfg, str(tmp_path))
    batch = shard_batch(next(iter(run.train_data)), run.mesh)
    _, metrics = run.train_step(run.state, batch)
    assert np.isfinite(float(metrics["loss"]))
    run.checkpointer.close()
  finally:
    jax.config.update("jax_default_prng_impl", "threefry2x32")
  assert jax.random.PRNGKey(0).shape == (2,)


@pytest.mark.parametrize("name", ["bert", "spanbert", "unilm", "mass", "gpt2"])
def test_rows_longer_than_the_position_table_are_refused(name):
  with pytest.raises(config_lib.ConfigError, match="exceeds model.max_len"):
    config_lib.get_config(f"{ROOT}/experiments/{name}.py:tiny", ["--config.data.seq_len=4096"])
