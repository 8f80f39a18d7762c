"""The training loop end to end through the `plmjax` command (subprocesses, real data pipeline,
objective and model, tiny BERT, fp32 CPU):

- 100 steps of experiments/bert.py:tiny: the loss falls clearly;
- SIGKILL after a checkpoint, then the same command again: metrics.jsonl is identical, line for
  line, to the uninterrupted run's (timing fields aside);
- 8 fake CPU devices on a data=2, fsdp=2, tensor=2 mesh: the loss curve matches one device within
  1e-4, and the params are really sharded over fsdp / tensor.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from tests.reliability_common import checkpoint_steps, kill_after_first_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("tokens_per_sec",)


def train_cmd(workdir, *overrides, config="experiments/bert.py:tiny"):
  return [sys.executable, "-m", "plmjax.cli", "train", "--config", config, "--workdir", str(workdir),
          *overrides]


def run(cmd, env=None, timeout=600):
  out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                       text=True, timeout=timeout)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    recs = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k not in TIMING} for r in recs]


def test_sigkill_resume_logs_the_uninterrupted_curve_and_loss_falls(tmp_path):
  args = ["--config.train.log_every=1", "--config.train.checkpoint_every=50"]
  ref, killed = tmp_path / "ref", tmp_path / "killed"
  run(train_cmd(ref, *args))
  curve = [r["loss"] for r in read_metrics(ref) if "split" not in r]
  assert len(curve) == 100
  assert np.mean(curve[-10:]) < curve[0] - 0.5, (curve[0], curve[-10:])   # falls clearly

  kill_after_first_checkpoint(train_cmd(killed, *args), killed)
  partial = read_metrics(killed)
  assert 0 < len(partial) < len(read_metrics(ref))
  run(train_cmd(killed, *args))
  assert read_metrics(killed) == read_metrics(ref)


EIGHT_DEVICES = """
import json, sys
import jax
from plmjax.train.config import get_config
from plmjax.train.loop import Run, train_and_evaluate
assert jax.device_count() == 8, jax.devices()
cfg = get_config(sys.argv[1], sys.argv[3:])
run = Run(cfg, sys.argv[2] + "_probe")
layers = run.state.params["encoder"]["layers"]
specs = {"query": layers["attention"]["query"]["kernel"], "wi": layers["mlp"]["wi"]["kernel"],
         "token_embed": run.state.params["token_embed"]["embedding"],
         "mu_wi": run.state.opt_state[1][0].mu["encoder"]["layers"]["mlp"]["wi"]["kernel"]}
print("SPECS", json.dumps({k: [str(s) for s in v.sharding.spec] +
                  [str(v.addressable_shards[0].data.shape), str(v.shape)] for k, v in specs.items()}))
run.checkpointer.close()
train_and_evaluate(cfg, sys.argv[2])
"""


def test_eight_devices_match_one_device(tmp_path):
  args = ["--config.train.steps=6", "--config.train.log_every=1", "--config.train.eval_steps=0"]
  mesh = ["--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]
  out = run([sys.executable, "-c", EIGHT_DEVICES, "experiments/bert.py:tiny", str(tmp_path / "d8"),
             *args, *mesh], env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  specs = json.loads(next(l for l in out.stdout.splitlines() if l.startswith("SPECS "))[6:])
  # kernels [L, E, N, D] / [L, E, F]: embed over fsdp, heads / mlp over tensor; vocab over tensor
  assert specs["query"][:3] == ["None", "fsdp", "tensor"]
  assert specs["wi"][:3] == ["None", "fsdp", "tensor"]
  assert specs["token_embed"][:2] == ["tensor", "fsdp"]
  assert specs["mu_wi"][:3] == ["None", "fsdp", "tensor"]        # Adam moments sharded alike
  assert specs["wi"][-2] == "(2, 16, 32)" and specs["wi"][-1] == "(2, 32, 64)"   # a quarter each
  run(train_cmd(tmp_path / "d1", *args))
  eight = [r["loss"] for r in read_metrics(tmp_path / "d8")]
  one = [r["loss"] for r in read_metrics(tmp_path / "d1")]
  assert len(one) == 6
  np.testing.assert_allclose(eight, one, rtol=0, atol=1e-4)


def test_sigterm_saves_and_exits_with_the_preempted_status(tmp_path):
  args = ["--config.train.log_every=1", "--config.train.checkpoint_every=1000",
          "--config.train.steps=100000", "--config.train.eval_steps=0"]
  proc = subprocess.Popen(train_cmd(tmp_path, *args, config="experiments/gpt2.py:tiny"), cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics, deadline = tmp_path / "metrics.jsonl", time.time() + 300
  while (not metrics.exists() or len(metrics.read_text().splitlines()) < 3) and time.time() < deadline:
    time.sleep(0.1)
  os.kill(proc.pid, signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 75, err[-2000:]        # plmjax.train.guard.EXIT_PREEMPTED
  assert "SIGTERM: saved step" in out
  saved = checkpoint_steps(tmp_path)
  assert len(saved) == 1 and saved[0] >= 3
