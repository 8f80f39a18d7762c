"""Transformer-XL on WikiText-2: validation perplexity with evaluation memory 0, the training memory,
and 4x the training memory (Dai et al., 2019, Sec. 3.3 / Table 9: the recurrence lets evaluation use
a longer memory than training; "mem_len 0" scores each segment without context).

One command, through the ordinary engine: `plmjax train` of experiments/transformer_xl.py:tiny on
WikiText-2 (memory carried across steps), then `plmjax eval` of that checkpoint over the whole
validation stream (train.eval_steps=-1), memory carried across eval batches, at eval.mem_len
M in {0, M_train, 4 M_train}, without and with clamp_len = the farthest trained distance:

    .venv/bin/python experiments/tables/txl_wt2_eval_memory.py [--steps 1500] [--workdir DIR]

Writes results/txl_wt2_eval_memory.md and .png (measured; the paper reports WikiText-103 at far
larger scale, so only the direction is comparable).
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
CONFIG = os.path.join(ROOT, "experiments", "transformer_xl.py") + ":tiny"
DATA = os.path.join(ROOT, "..", "shared", "data", "wikitext-2")


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--steps", type=int, default=1500)
  ap.add_argument("--workdir", default="/tmp/plmjax_txl_wt2_eval_memory")
  ap.add_argument("--out", default=os.path.join(ROOT, "results"))
  ap.add_argument("--data", default=DATA)
  args = ap.parse_args(argv)
  from plmjax.train.config import get_config
  from plmjax.train.loop import evaluate, train_and_evaluate
  base = [f"--config.data.path={os.path.abspath(args.data)}", f"--config.train.steps={args.steps}",
          f"--config.train.eval_every={args.steps}", f"--config.train.checkpoint_every={args.steps}",
          "--config.train.log_every=100"]
  shutil.rmtree(args.workdir, ignore_errors=True)
  t0 = time.time()
  cfg = get_config(CONFIG, base)
  train_and_evaluate(cfg, args.workdir)
  train_s = time.time() - t0
  m_train, seg = int(cfg.model.mem_len), int(cfg.model.segment_len)
  clamp = m_train + seg - 1
  rows = []
  for m in (0, m_train, 4 * m_train):
    for c in ((-1,) if m <= m_train else (-1, clamp)):
      t1 = time.time()
      r = evaluate(get_config(CONFIG, base + ["--config.train.eval_steps=-1", f"--config.eval.mem_len={m}",
                                             f"--config.eval.clamp_len={c}"]), args.workdir)
      rows.append(dict(mem_len=m, clamp_len=c, ppl=r["perplexity"], loss=r["loss"],
                       targets=int(r["num_targets"]), eval_s=time.time() - t1))
      print(json.dumps(rows[-1]), flush=True)
  write(args, cfg, rows, train_s, time.time() - t0)
  return 0


def write(args, cfg, rows, train_s, wall_s) -> None:
  from results_page import line_plot, write_markdown   # experiments/tables/results_page.py
  m_train = int(cfg.model.mem_len)
  ref = next(r for r in rows if r["mem_len"] == m_train)
  lines = [
      "# Transformer-XL on WikiText-2: validation perplexity vs evaluation memory", "",
      f"Command: `.venv/bin/python experiments/tables/txl_wt2_eval_memory.py --steps {args.steps}` "
      f"({platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}, wall {wall_s:.0f} s, "
      f"training {train_s:.0f} s)", "",
      f"Model: experiments/transformer_xl.py:tiny ({cfg.model.num_layers} layers, d={cfg.model.hidden_size}), "
      f"segment {cfg.model.segment_len}, training memory {m_train}, trained {args.steps} steps x batch "
      f"{cfg.train.batch_size} x {cfg.data.seq_len} tokens on WikiText-2 train (sentencepiece "
      f"{cfg.data.vocab_size}). Evaluation: `plmjax eval` over the whole validation stream, memory "
      "carried across eval batches (zero at the start of each stream row).", "",
      "| eval memory M | clamp_len | perplexity | nll (nats) | Δ nll vs M = training | eval s |",
      "|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['mem_len']}{' (= training)' if r['mem_len'] == m_train else ''} | "
                 f"{'none' if r['clamp_len'] < 0 else r['clamp_len']} | {r['ppl']:.2f} | {r['loss']:.4f} | "
                 f"{r['loss'] - ref['loss']:+.4f} | {r['eval_s']:.0f} |")
  zero = next(r for r in rows if r["mem_len"] == 0)
  longer = min((r for r in rows if r["mem_len"] > m_train), key=lambda r: r["loss"])
  verdict = ("reproduced" if zero["loss"] > ref["loss"] > longer["loss"] else
             "trend only: memory helps, a longer evaluation memory than training's does not"
             if zero["loss"] > ref["loss"] else "not reproduced")
  lines += ["", f"Scored targets (every table row): {rows[0]['targets']:,}, the same tokens.", "",
            f"Verdict: {verdict} (memory {m_train} vs none: {ref['loss'] - zero['loss']:+.4f} nats; "
            f"best longer memory vs {m_train}: {longer['loss'] - ref['loss']:+.4f} nats).", "",
            "Published (WikiText-103, Transformer-XL large): evaluation with mem_len 1,600 > the training "
            "memory 384 (clamp_len 1,000) is the setting of the paper's 18.3 test perplexity; Table 9 "
            "measures the speed of cached memory, `experiments/bench_txl_memory.py`.", ""]
  md = write_markdown(args.out, "txl_wt2_eval_memory", lines)
  with open(os.path.join(args.out, "txl_wt2_eval_memory.json"), "w") as f:
    json.dump({"steps": args.steps, "rows": rows, "train_s": train_s, "wall_s": wall_s}, f, indent=1)
  series = {}
  for c in sorted({r["clamp_len"] for r in rows}):
    pts = [r for r in rows if r["clamp_len"] == c or (c >= 0 and r["mem_len"] <= m_train)]
    series["no clamp" if c < 0 else f"clamp_len {c}"] = ([r["mem_len"] for r in pts], [r["ppl"] for r in pts])
  line_plot(args.out, "txl_wt2_eval_memory", series, xlabel="evaluation memory M (tokens)",
            ylabel="validation perplexity", title="Transformer-XL tiny, WikiText-2",
            vline=(m_train, "training memory"))
  print(f"wrote {md}")


if __name__ == "__main__":
  sys.exit(main())
