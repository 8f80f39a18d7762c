"""The `plmjax` command: help text, config errors as one clear message, eval of a trained dir."""
import json
import os
import subprocess
import sys

import pytest

from plmjax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_help_lists_the_commands(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  for word in ("train", "eval", "bench", "tokenizer", "--config experiments/bert.py:tiny"):
    assert word in out


def test_console_script_runs():
  out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "plmjax"), "train", "--help"],
                       capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 0 and "--workdir" in out.stdout and "--config.KEY=VALUE" in out.stdout


def test_mistyped_key_is_one_clear_error():
  with pytest.raises(SystemExit) as e:
    cli.main(["train", "--config", f"{ROOT}/experiments/gpt2.py:tiny", "--workdir", "/tmp/x",
              "--config.train.batch_szie=4"])
  assert "unknown config key 'train.batch_szie'" in str(e.value)
  assert "did you mean 'train.batch_size'" in str(e.value)


def test_train_then_eval(tmp_path, capsys):
  cfg = f"{ROOT}/experiments/gpt2.py:tiny"
  args = ["--config.train.steps=3", "--config.train.eval_steps=1", "--config.train.batch_size=8"]
  cli.main(["train", "--config", cfg, "--workdir", str(tmp_path), *args])
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in lines if "split" not in r] == [0, 2]
  assert lines[-1]["split"] == "eval" and "perplexity" in lines[-1]
  assert os.listdir(tmp_path / "tensorboard") and (tmp_path / "checkpoints" / "3").is_dir()
  capsys.readouterr()
  cli.main(["eval", "--config", cfg, "--workdir", str(tmp_path), *args])
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result["step"] == 3 and result["loss"] == pytest.approx(lines[-1]["loss"], rel=1e-5)


def test_tokenizer_command(tmp_path):
  text = tmp_path / "corpus.txt"
  text.write_text("\n".join(f"the cat {i} sat on the mat number {i % 7}" for i in range(300)))
  cli.main(["tokenizer", "--input", str(text), "--out", str(tmp_path / "sp"), "--vocab-size", "60"])
  assert (tmp_path / "sp.model").exists()


def test_compile_cache_is_on_by_default_and_can_be_turned_off(tmp_path, monkeypatch):
  import jax
  from plmjax.cli import enable_compile_cache
  old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
  try:
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("PLMJAX_COMPILE_CACHE", str(tmp_path / "xla"))
    assert enable_compile_cache() == str(tmp_path / "xla") == jax.config.jax_compilation_cache_dir
    monkeypatch.setenv("PLMJAX_COMPILE_CACHE", "")
    jax.config.update("jax_compilation_cache_dir", None)
    assert enable_compile_cache() is None and jax.config.jax_compilation_cache_dir is None
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert enable_compile_cache() == str(tmp_path / "jax") and jax.config.jax_compilation_cache_dir is None
  finally:
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
