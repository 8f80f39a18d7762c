"""Two local processes (jax.distributed on 127.0.0.1, gloo collectives) train one model together:
each feeds its own half of the global batch, process 0 logs and checkpoints."""
import json
import os
import socket
import subprocess
import sys

import numpy as np


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_together(tmp_path):
  workdir = tmp_path / "run"
  port = _free_port()
  overrides = ["--config.train.steps=4", "--config.train.log_every=1", "--config.train.eval_steps=0",
               "--config.train.checkpoint_every=4", "--config.train.batch_size=8",
               "--config.data.synthetic.num_docs=200"]
  env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  procs = [subprocess.Popen(
      [sys.executable, "-m", "plmjax.cli", "train", "--config", "experiments/gpt2.py:tiny",
       "--workdir", str(workdir), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
       "--process-id", str(i), *overrides],
      cwd=os.path.join(os.path.dirname(__file__), ".."), env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  train = [l for l in lines if l.get("split") != "eval"]
  assert [l["step"] for l in train] == [0, 1, 2, 3]
  assert np.all(np.isfinite([l["loss"] for l in train]))
  assert (workdir / "checkpoints").is_dir() and any((workdir / "checkpoints").iterdir())
