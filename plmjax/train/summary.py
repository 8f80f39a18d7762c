"""What `plmjax train` / `plmjax finetune` print when a run ends: steps, the final train and eval
losses beside the corpus' floors where they are known, where the run's files are, and the
`plmjax predict` command that tries the model.

Floors of the built-in synthetic corpus (plmjax/data/synthetic.py, both exact):
  unigram entropy   the loss of the best prediction without context (the token frequencies): a
                    token-level loss (MLM, causal LM) below it means the model uses context;
  entropy floor     -log p(text) per token under the generating grammar: no model goes below it
                    (an oracle that sees the whole document reaches it).
"""
from __future__ import annotations

import os
import shlex
from typing import Optional

TOKEN_LOSSES = ("mlm_loss", "clm_loss")


def _fmt(metrics: Optional[dict], keys=("loss",) + TOKEN_LOSSES) -> str:
  if not metrics:
    return "-"
  return ", ".join(f"{k} {float(metrics[k]):.3f}" for k in keys if k in metrics)


def _floors(run) -> Optional[tuple[float, float]]:
  data = getattr(run, "train_data", None)
  info = getattr(data, "info", None) or {}
  if "unigram_entropy_nats" not in info:
    return None
  return info["unigram_entropy_nats"], info["entropy_floor_nats"]["per_token"]


def example_command(run) -> str:
  """The `plmjax predict` command to try this run (a sentence of the eval split, for the
  built-in corpus)."""
  from plmjax.predict import CAUSAL, MASKED      # the families each predict command takes
  workdir = shlex.quote(run.workdir)
  if "task" in run.config:
    return f"plmjax predict {workdir} classify 'a sentence to label'"
  name = run.config.model.name
  synthetic = not run.config.data.get("path", "")
  words = None
  if synthetic:
    from plmjax.data import synthetic as syn
    doc = syn.split_documents("valid", 1, int(run.config.data.synthetic.seed))[0]
    words = doc.sentences[1] if len(doc.sentences) > 1 else doc.sentences[0]
  if name in MASKED:
    if words:
      pieces = run.tokenizer.encode(" ".join(words))
      toks = [run.tokenizer.id_to_token(i) for i in pieces]
      cont = next((i for i, t in enumerate(toks) if t.startswith("##")), len(toks) - 1)
      toks[cont] = "[MASK]"                    # a word piece its neighbours determine
      text = " ".join(toks).replace(" ##", "")
      return f"plmjax predict {workdir} fill-mask {shlex.quote(text)}"
    return f"plmjax predict {workdir} fill-mask 'The capital of France is [MASK] .'"
  if name == "mass" and words:
    toks = [run.tokenizer.id_to_token(i) for i in run.tokenizer.encode(" ".join(words))]
    toks[1:4] = ["[MASK]"] * len(toks[1:4])    # the decoder writes the masked fragment
    return f"plmjax predict {workdir} generate {shlex.quote(' '.join(toks))}"
  if name in CAUSAL:
    prompt = " ".join(words[:3]) if words else "Once upon a time"
    return f"plmjax predict {workdir} generate {shlex.quote(prompt)} --max-new-tokens 20"
  return f"plmjax predict {workdir} score FILE.txt"


def summary(run, last_train: dict, last_eval: Optional[dict]) -> str:
  """The lines printed at the end of a run that finished (not after a preemption)."""
  split = getattr(run, "eval_split", "eval")
  what = (f"fine-tuning ({run.config.task})" if "task" in run.config
          else run.config.model.get("name", "?"))
  lines = [f"done: {run.total_steps} steps of {what} in {run.workdir}"]
  lines.append(f"  final train: {_fmt(last_train)}")
  if last_eval:
    if split == "dev":     # fine-tuning: the task's metrics
      shown = {k: v for k, v in last_eval.items() if k not in ("step", "split", "num_targets")}
      lines.append("  final dev: " + ", ".join(f"{k} {float(v):.4f}" for k, v in shown.items()))
    else:
      lines.append(f"  final {split} (step {last_eval.get('step')}): {_fmt(last_eval)}")
  floors = _floors(run)
  if floors:
    uni, floor = floors
    key = next((k for k in TOKEN_LOSSES if k in (last_eval or last_train or {})), None)
    got = (last_eval or last_train or {}).get(key) if key else None
    verdict = ""
    if got is not None:
      verdict = (f"; {key} {float(got):.3f} is {uni - float(got):.3f} below the unigram entropy: "
                 "the model uses context" if float(got) < uni else
                 f"; {key} {float(got):.3f} is not below the unigram entropy: word frequencies only")
    lines.append(f"  built-in corpus floors (nats/token): unigram entropy {uni:.3f} (no context), "
                 f"entropy floor {floor:.3f} (whole document){verdict}")
  w = run.workdir
  lines.append(f"  metrics: {os.path.join(w, 'metrics.jsonl')}   TensorBoard: tensorboard --logdir "
               f"{os.path.join(w, 'tensorboard')}")
  ckpt = run.checkpointer.directory
  steps = sorted(int(d) for d in os.listdir(ckpt) if d.isdigit()) if os.path.isdir(ckpt) else []
  lines.append(f"  checkpoints: {ckpt} (steps {', '.join(map(str, steps)) or 'none'})")
  if "task" in run.config:
    lines.append(f"  fine-tuned params: {os.path.join(w, 'params.safetensors')}   dev metrics: "
                 f"{os.path.join(w, 'eval.json')}")
  lines.append(f"  try it: {example_command(run)}")
  return "\n".join(lines)
