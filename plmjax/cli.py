"""The `plmjax` command.

    plmjax train     --config experiments/bert.py:tiny --workdir DIR [--config.KEY=VALUE ...]
    plmjax eval      --config experiments/bert.py:tiny --workdir DIR [--config.KEY=VALUE ...]
    plmjax finetune  --config experiments/finetune.py:sst2 --workdir DIR [--config.KEY=VALUE ...]
    plmjax bench     --config experiments/bert.py:base [--batch-size B] [--steps N] [--config...]
    plmjax tokenizer --input FILE [FILE ...] --out PREFIX [--vocab-size N] [--type unigram|bpe|...]
    plmjax convert   SRC DST     (a plmjax run -> a Hugging Face folder, or a Hugging Face folder -> a run)
    plmjax transe    --config experiments/transe.py:synthetic --out DIR [--config.KEY=VALUE ...]
    plmjax predict   SRC fill-mask|generate|score|classify [TEXT ...] [--file F] [--json] ...

`--config FILE.py:ARG` loads `get_config(ARG)` from FILE.py (ARG picks the size: tiny, base, ...);
each `--config.section.key=value` then overrides one key (an unknown key is an error that names the
closest valid one). `train` on a DIR that holds checkpoints resumes from the latest one.
Outputs of `train`: DIR/metrics.jsonl, DIR/tensorboard/, DIR/checkpoints/, DIR/config.json.

Exit status of `train` (plmjax/train/guard.py):
    0   finished
    1   an error (bad config, non-finite step, no resumable checkpoint, workdir in use, ...)
    74  a write failed (disk full, read-only, permission) or hung past train.io_timeout_s;
        the last complete checkpoint is intact
    75  preempted: SIGTERM / SIGINT, a checkpoint was saved; rerun the same command to resume
    76  stopped by SIGTERM / SIGINT without a new checkpoint (the save did not finish within
        train.stop_timeout_s, or a second signal); rerun resumes from the last complete one
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

EPILOG = """examples:
  plmjax train --config experiments/bert.py:tiny --workdir /tmp/bert_tiny
  plmjax train --config experiments/gpt2.py:tiny --workdir /tmp/gpt2 --config.train.steps=200 \\
      --config.data.path=../shared/data/wikitext-2
  plmjax eval  --config experiments/gpt2.py:tiny --workdir /tmp/gpt2
  plmjax bench --config experiments/bert.py:base --batch-size 8 --steps 5
  plmjax tokenizer --input corpus.txt --out /tmp/sp --vocab-size 8000
  plmjax predict runs/bert_demo fill-mask "veleko sage vama li ravaso [MASK]" --top-k 3
  plmjax predict /tmp/gpt2 generate "vubi reko" --max-new-tokens 20 --beam 4
  plmjax predict /tmp/gpt2 score valid.txt --json
"""


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="plmjax", description=__doc__.split("\n\n")[0],
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

  def with_config(name: str, help: str) -> argparse.ArgumentParser:
    s = sub.add_parser(name, help=help, description=help + "\nMore arguments: --config.KEY=VALUE "
                       "overrides, e.g. --config.train.steps=10.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--config", required=True, metavar="FILE.py:ARG",
                   help="experiment config, e.g. experiments/bert.py:tiny")
    return s

  def multihost_args(s):
    s.add_argument("--multihost", action="store_true",
                   help="initialise the multi-process runtime (jax.distributed) before training; on "
                   "TPU pods and SLURM/GKE clusters the coordinator is found automatically")
    s.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                   help="explicit coordinator address (implies --multihost); with --num-processes "
                   "and --process-id")
    s.add_argument("--num-processes", type=int, default=None)
    s.add_argument("--process-id", type=int, default=None)

  s = with_config("train", "Train (or resume) a model; writes DIR/metrics.jsonl, tensorboard/, checkpoints/.")
  s.add_argument("--workdir", required=True, metavar="DIR")
  multihost_args(s)
  s = with_config("eval", "Evaluate the latest checkpoint in DIR: data.eval_split (pretraining) or "
                  "the dev set, plus test-set predictions in DIR/predictions/ (fine-tuning).")
  s.add_argument("--workdir", required=True, metavar="DIR")
  s = with_config("finetune", "Fine-tune (or resume) on a downstream task (experiments/finetune.py:"
                  "<task>) through the training loop; writes DIR/metrics.jsonl, tensorboard/, "
                  "checkpoints/ (newest + best by the dev metric), params.safetensors, eval.json.")
  s.add_argument("--workdir", required=True, metavar="DIR")
  multihost_args(s)
  s = with_config("bench", "Time the train step: tokens/s and model-FLOPs utilisation against the "
                  "measured matmul peak of this machine.")
  s.add_argument("--batch-size", type=int, default=None, help="global batch (default: train.batch_size)")
  s.add_argument("--steps", type=int, default=5, help="timed steps after warm-up")
  s.add_argument("--json", metavar="FILE", default=None, help="also write the result as JSON")

  s = sub.add_parser("tokenizer", help="Train a sentencepiece tokenizer on text files.")
  s.add_argument("--input", nargs="+", required=True, metavar="FILE")
  s.add_argument("--out", required=True, metavar="PREFIX", help="writes PREFIX.model / PREFIX.vocab")
  s.add_argument("--vocab-size", type=int, default=8000)
  s.add_argument("--type", default="unigram", choices=("unigram", "bpe", "word", "char"))

  s = sub.add_parser("convert", help="Convert a plmjax run (or RUN/checkpoints/<step>) to a Hugging Face "
                     "folder, or a Hugging Face folder to a plmjax run (direction from SRC).")
  s.add_argument("src", metavar="SRC")
  s.add_argument("dst", metavar="DST")
  s = with_config("transe", "Train TransE entity vectors on a triple file (ERNIE THU's knowledge); "
                  "writes DIR/entity2vec.vec etc. and DIR/metrics.json (filtered link prediction).")
  s.add_argument("--out", required=True, metavar="DIR")

  s = sub.add_parser("predict", help="Try a model: fill-mask, generate, score a text file, or a "
                     "fine-tuned run's predictions (plmjax/predict.py).",
                     description="SRC: a plmjax run workdir (or WORKDIR/checkpoints/<step>), a "
                     "fine-tuning run, or a Hugging Face folder.")
  s.add_argument("src", metavar="SRC")
  s.add_argument("task", choices=("fill-mask", "generate", "score", "classify"))
  s.add_argument("inputs", nargs="*", metavar="TEXT", help="texts / prompts / sentences (score: FILE)")
  s.add_argument("--file", default=None, help="more inputs, one per line")
  s.add_argument("--tsv", default=None, help="classify: sentences (pairs: two tab-separated columns)")
  s.add_argument("--task-name", default=None, help="classify: the task of a multi-task run")
  s.add_argument("--json", action="store_true", help="JSON lines instead of text")
  s.add_argument("--top-k", type=int, default=None, help="fill-mask: candidates per [MASK] (5); "
                 "generate --sample: keep the k most likely tokens (0 = all)")
  s.add_argument("--max-new-tokens", type=int, default=20)
  s.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
  s.add_argument("--temperature", type=float, default=1.0)
  s.add_argument("--top-p", type=float, default=1.0)
  s.add_argument("--beam", type=int, default=0, help="beam search with this many beams")
  s.add_argument("--seed", type=int, default=0)
  s.add_argument("--mem-len", type=int, default=0, help="Transformer-XL: memory length (0: the model's)")
  return p


def _init_distributed(args) -> None:
  """jax.distributed.initialize: explicit coordinator (e.g. local multi-process runs on CPU, which
  use gloo collectives) or auto-detected (TPU pods, SLURM, GKE)."""
  import jax
  if args.coordinator:
    if args.num_processes is None or args.process_id is None:
      raise SystemExit("plmjax train: --coordinator needs --num-processes and --process-id")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id)
  else:
    jax.distributed.initialize()


def is_finetune_config(spec: str) -> bool:
  """A fine-tuning config (a `task` key): `plmjax eval` evaluates its workdir as a fine-tuning run."""
  from plmjax.train.config import load_config
  try:
    return "task" in load_config(spec)
  except Exception:       # noqa: BLE001 - get_config reports the real problem
    return False


def get_finetune_config(spec: str, rest):
  from plmjax.finetune.main import load
  return load(spec, rest)


def _run(args, config) -> int:
  """`train` / `eval`; the errors a user can act on end with one line and their exit status."""
  from plmjax.train import guard
  from plmjax.train.checkpoint import CheckpointError
  from plmjax.train.loop import evaluate, train_and_evaluate
  from plmjax.train.workdir import WorkdirBusy
  try:
    if args.command in ("train", "finetune"):     # finetune: a FinetuneRun through the same loop
      train_and_evaluate(config, args.workdir)
    else:
      print(json.dumps(evaluate(config, args.workdir)))
  except guard.Preempted as e:
    print(f"plmjax {args.command}: {e}", file=sys.stderr)
    return guard.EXIT_PREEMPTED
  except guard.WriteError as e:
    print(f"plmjax {args.command}: {e}", file=sys.stderr)
    return guard.EXIT_IO
  except (guard.NonFiniteError, CheckpointError, WorkdirBusy, FileNotFoundError) as e:
    print(f"plmjax {args.command}: {e}", file=sys.stderr)
    return guard.EXIT_ERROR
  except KeyboardInterrupt:      # SIGINT outside the loop's guard (e.g. while compiling)
    print(f"plmjax {args.command}: interrupted", file=sys.stderr)
    return guard.EXIT_STOPPED
  return guard.EXIT_OK


def enable_compile_cache() -> Optional[str]:
  """XLA's persistent compilation cache, on by default for every command that compiles: a run whose
  step shapes an earlier run already compiled (each run of a fine-tuning sweep, a resume, `plmjax
  eval` after `train`) loads them instead of compiling again. Directory: $JAX_COMPILATION_CACHE_DIR
  if set (JAX's own variable, untouched), else $PLMJAX_COMPILE_CACHE, else ~/.cache/plmjax/xla;
  PLMJAX_COMPILE_CACHE="" turns it off. JAX keys entries by program, backend, versions and flags."""
  import jax
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  path = os.environ.get("PLMJAX_COMPILE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "plmjax", "xla"))
  if not path:
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path


def main(argv: Optional[Sequence[str]] = None) -> int:
  args, rest = _parser().parse_known_args(argv)
  if args.command not in ("tokenizer", "convert"):
    enable_compile_cache()
  if args.command == "tokenizer":
    if rest:
      raise SystemExit(f"plmjax tokenizer: unexpected arguments {rest}")
    from plmjax.data import train_tokenizer_cli
    train_tokenizer_cli(args.input, args.out, args.vocab_size, args.type)
    return 0
  if args.command == "transe":
    from plmjax.knowledge.cli import run
    from plmjax.train.config import ConfigError
    try:
      run(args.config, args.out, rest)
    except ConfigError as e:
      raise SystemExit(f"plmjax transe: {e}") from None
    return 0
  if args.command == "convert":
    if rest:
      raise SystemExit(f"plmjax convert: unexpected arguments {rest}")
    from plmjax.convert import CheckpointError
    from plmjax.convert.run import convert
    try:
      convert(args.src, args.dst)
    except (CheckpointError, FileNotFoundError, FileExistsError) as e:
      raise SystemExit(f"plmjax convert: {e}") from None
    return 0
  if args.command == "predict":
    if rest:
      raise SystemExit(f"plmjax predict: unexpected arguments {rest}")
    from plmjax.predict import PredictError, run_command
    try:
      return run_command(args)
    except (PredictError, FileNotFoundError) as e:
      raise SystemExit(str(e) if str(e).startswith("plmjax predict") else f"plmjax predict: {e}") from None
  if getattr(args, "multihost", False) or getattr(args, "coordinator", None):
    _init_distributed(args)
  if args.command == "finetune":
    return _run(args, get_finetune_config(args.config, rest))

  from plmjax.train.config import ConfigError, get_config
  try:
    config = get_finetune_config(args.config, rest) if is_finetune_config(args.config) else \
        get_config(args.config, rest)
  except ConfigError as e:
    raise SystemExit(f"plmjax {args.command}: {e}") from None

  if args.command in ("train", "eval"):
    return _run(args, config)
  elif args.command == "bench":
    from plmjax.train.bench import benchmark, format_result
    result = benchmark(config, batch_size=args.batch_size, steps=args.steps)
    print(format_result(result))
    if args.json:
      with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
