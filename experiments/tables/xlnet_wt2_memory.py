"""XLNet on WikiText-2 with and without memory across training steps (Yang et al., 2019, Table 6:
the "- memory" ablation of XLNet-Base, at a small scale here).

Both runs are experiments/xlnet.py:tiny on WikiText-2 "stream" rows (row i of a batch continues row
i of the previous batch), same data order, steps and seed; one carries its memory (model.mem_len)
across steps in the engine's train state, the other has none. Evaluation: permutation-LM loss over
the same validation batches (memory carried across eval batches for the memory run):

    .venv/bin/python experiments/tables/xlnet_wt2_memory.py [--steps 1500] [--mem-len 32] [--seeds 0,1]

Writes results/xlnet_wt2_memory.md and .png. Not built yet: the reference's reuse_len-overlapping
rows and bi_data batches (see experiments/xlnet.py), so "memory" here means the previous row.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "xlnet.py") + ":tiny"
DATA = os.path.join(ROOT, "..", "shared", "data", "wikitext-2")
PUBLISHED = "XLNet-Base (Table 6): RACE 66.05 / SQuAD2.0 F1 81.33 with memory vs 65.55 / 80.98 without"


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--steps", type=int, default=1500)
  ap.add_argument("--mem-len", type=int, default=32)
  ap.add_argument("--seeds", default="0,1")
  ap.add_argument("--workdir", default="/tmp/plmjax_xlnet_wt2_memory")
  ap.add_argument("--out", default=os.path.join(ROOT, "results"))
  ap.add_argument("--data", default=DATA)
  ap.add_argument("--render", action="store_true", help="rewrite the page from results/xlnet_wt2_memory.json")
  args = ap.parse_args(argv)
  if args.render:
    from plmjax.train.config import get_config
    saved = json.load(open(os.path.join(args.out, "xlnet_wt2_memory.json")))
    args.steps, args.mem_len, args.seeds = saved["steps"], saved["mem_len"], saved.get("seeds", args.seeds)
    write(args, get_config(CONFIG), saved["rows"], saved["wall_s"])
    return 0
  from plmjax.train.config import get_config
  from plmjax.train.loop import train_and_evaluate
  rows, t0 = [], time.time()
  for seed in [int(s) for s in args.seeds.split(",")]:
    for mem in (0, args.mem_len):
      work = os.path.join(args.workdir, f"mem{mem}_seed{seed}")
      shutil.rmtree(work, ignore_errors=True)
      cfg = get_config(CONFIG, [
          f"--config.data.path={os.path.abspath(args.data)}", "--config.data.mode=stream",
          f"--config.model.mem_len={mem}", f"--config.train.steps={args.steps}",
          f"--config.train.seed={seed}", f"--config.train.eval_every={args.steps}",
          f"--config.train.checkpoint_every={args.steps}", "--config.train.eval_steps=50",
          "--config.train.log_every=50"])
      t1 = time.time()
      train_and_evaluate(cfg, work)
      lines = [json.loads(ln) for ln in open(os.path.join(work, "metrics.jsonl"))]
      ev = [ln for ln in lines if ln.get("split") == "eval"][-1]
      tr = [ln for ln in lines if "split" not in ln]
      rows.append(dict(seed=seed, mem_len=mem, eval_loss=ev["loss"], eval_acc=ev.get("plm_accuracy"),
                       train_loss=sum(ln["loss"] for ln in tr[-4:]) / len(tr[-4:]),
                       curve=[(ln["step"], ln["loss"]) for ln in tr], wall_s=time.time() - t1))
      print(json.dumps({k: v for k, v in rows[-1].items() if k != "curve"}), flush=True)
  write(args, cfg, rows, time.time() - t0)
  return 0


def write(args, cfg, rows, wall_s) -> None:
  from results_page import line_plot, write_markdown   # experiments/tables/results_page.py
  lines = ["# XLNet on WikiText-2: memory across training steps vs none", "",
           f"Command: `.venv/bin/python experiments/tables/xlnet_wt2_memory.py --steps {args.steps} "
           f"--mem-len {args.mem_len} --seeds {args.seeds}` ({platform.machine()}, {os.cpu_count()} "
           f"CPUs, {time.strftime('%Y-%m-%d')}, wall {wall_s:.0f} s)", "",
           f"Model: experiments/xlnet.py:tiny ({cfg.model.num_layers} layers, d={cfg.model.hidden_size}), "
           f"rows of {cfg.data.seq_len} tokens, batch {cfg.train.batch_size}, {cfg.objective.num_predict} "
           f"targets per row, {args.steps} steps, WikiText-2 stream rows (sentencepiece "
           f"{cfg.data.vocab_size}). Eval: permutation-LM loss over 50 validation batches.", "",
           "| seed | memory (tokens) | train loss (last 4 log steps) | eval PLM loss | eval PLM accuracy | wall s |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['seed']} | {r['mem_len']} | {r['train_loss']:.4f} | {r['eval_loss']:.4f} | "
                 f"{r['eval_acc']:.4f} | {r['wall_s']:.0f} |")
  seeds = sorted({r["seed"] for r in rows})
  by = {(r["seed"], r["mem_len"]): r["eval_loss"] for r in rows}
  diffs = [by[(sd, 0)] - by[(sd, args.mem_len)] for sd in seeds]   # paired: same seed, same data order
  verdict = ("memory lowers the eval loss in every seed" if min(diffs) > 0 else
             "memory raises the eval loss in every seed" if max(diffs) < 0 else
             "no consistent effect across seeds")
  lines += ["", "Eval PLM loss without memory minus with, per seed (paired: same seed and data order): "
            + ", ".join(f"{d:+.4f}" for d in diffs) + f". Verdict: {verdict}"
            + (" (one seed)" if len(seeds) == 1 else "") + ".", "",
            f"Published: {PUBLISHED}.", ""]
  md = write_markdown(args.out, "xlnet_wt2_memory", lines)
  with open(os.path.join(args.out, "xlnet_wt2_memory.json"), "w") as f:
    json.dump({"steps": args.steps, "mem_len": args.mem_len, "seeds": args.seeds, "rows": rows,
               "wall_s": wall_s}, f, indent=1)
  line_plot(args.out, "xlnet_wt2_memory",
            {f"memory {r['mem_len']} (seed {r['seed']})": tuple(zip(*r["curve"])) for r in rows},
            xlabel="step", ylabel="train PLM loss", title="XLNet tiny, WikiText-2")
  print(f"wrote {md}")


if __name__ == "__main__":
  sys.exit(main())
