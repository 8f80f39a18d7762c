"""Transformer-XL: validation perplexity against evaluation memory length (Dai et al., 2019: with
relative positions, evaluating with a longer memory than used in training still lowers perplexity).

One command trains a small Transformer-XL through the ordinary engine (`plmjax train` machinery:
stream data, memory carried across steps), then evaluates the same checkpoint on the validation
stream with evaluation memory M in {0, 16, 32, 64, 128} at the training segment length, each with
and without `clamp_len`:

    .venv/bin/python experiments/tables/txl_eval_memory.py             # synthetic corpus, CPU, minutes
    .venv/bin/python experiments/tables/txl_eval_memory.py --steps 300  # a quicker, weaker model
    .venv/bin/python experiments/tables/txl_eval_memory.py --data ../shared/data/wikitext-2  # not run yet
    # extra arguments are engine overrides: ... --config.optimizer.learning_rate=1e-3

Writes results/txl_eval_memory.md (and .png when matplotlib is installed) and prints the table.

Design (why longer memory might *not* help, and what this run does about each reason):
  - Unseen distances. Trained with segment T and memory M_tr, a query attends to distances
    0 .. M_tr + T - 1 only. Longer evaluation memory shows the relative-position terms distances
    they were never trained on. The encodings are sinusoidal (computed for any distance), but their
    effect on the logits is untrained there; `clamp_len = M_tr + T - 1` (the paper's remedy)
    maps every longer distance onto the farthest trained one. Both variants are reported.
  - Nothing to gain. The data must hold information beyond the training attention span. The
    built-in corpus does: a document (~100 tokens) introduces 1-3 entities (names of ~6 tokens) in
    its first sentence and every later sentence mentions one of them again; a name that is in
    context costs ~log k nats, one that is not costs ~log 120 + the rest of the name. With 2-3
    protagonists the other names are usually more than 32 tokens back.
  - A model that never learnt to use context. The model must learn to copy names from context
    (an induction-head mechanism, 2 layers), which needs enough training; the table also reports
    the loss on entity-name tokens separately (where context matters) and on all other tokens.
  - Memory start-up. Every stream's memory starts as zeros (the model's convention); to score every
    M on the same tokens each with a full memory, the first max(M) tokens of each stream are not
    scored.

Evaluation: the validation split as `--streams` contiguous streams (documents separated by
[EOS], as in training), each run as one jitted `lax.scan` over segments threading the memory
(`scan_segments`); the memory length and clamp_len are model-config fields that no parameter depends
on, so one checkpoint evaluates at any M.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "experiments", "transformer_xl.py")
MEMORIES = (0, 16, 32, 64, 128)


# ---- evaluation -----------------------------------------------------------------------------------------
def eval_model(cfg, mem_len: int, clamp_len: int):
  """The trained model's config with another memory length / clamp_len (no parameter depends on
  either); same_length stays as trained (a query sees its memory and the segment up to itself)."""
  from plmjax.models.transformer_xl import TransformerXL
  cfg = dataclasses.replace(cfg, mem_len=mem_len, clamp_len=clamp_len, segment_len=0,
                            dropout_rate=0.0, attention_dropout_rate=0.0)
  return TransformerXL(cfg)


def stream_nll(model, params, ids: np.ndarray, targets: np.ndarray, segment_len: int) -> np.ndarray:
  """-log p(targets) [B, N] for streams ids [B, N] (N a multiple of segment_len), run as segments
  of `segment_len` with the model's memory length, in one jitted scan from a zero memory."""
  from plmjax.models.transformer_xl import scan_segments

  @jax.jit
  def run(params, ids, targets):
    outs, _ = scan_segments(model, params, ids, segment_len, labels=targets)
    lp = outs["target_log_probs"]                                     # [K, B, T]
    return -jnp.moveaxis(lp, 0, 1).reshape(ids.shape)                 # [B, K·T]

  return np.asarray(run(params, jnp.asarray(ids), jnp.asarray(targets)))


def validation_streams(data_cfg, streams: int, segment_len: int) -> dict:
  """The validation split as `streams` contiguous streams: input_ids, target_ids, attention_mask,
  entity_ids [B, N], N padded to a multiple of segment_len (mask 0 there)."""
  from plmjax.data import build_dataset
  ds = build_dataset(data_cfg, split=data_cfg.eval_split, global_batch_size=streams,
                     seq_len=segment_len * 16, mode="stream")
  keys = ("input_ids", "target_ids", "attention_mask", "entity_ids")
  parts = {k: [] for k in keys}
  for batch in ds:
    for k in keys:
      parts[k].append(batch[k])
  out = {k: np.concatenate(v, axis=1) for k, v in parts.items()}
  out["pad_id"] = ds.tokenizer.pad_id
  if (out["entity_ids"] >= 0).any():
    out["categories"] = mention_categories(out["input_ids"], out["entity_ids"], ds.tokenizer.eos_id)
  return out


BUCKETS = ((0, 31, "<=31"), (32, 63, "32-63"), (64, 127, "64-127"), (128, 1 << 30, ">=128"))


def mention_categories(ids: np.ndarray, entity_ids: np.ndarray, eos_id: int) -> np.ndarray:
  """[B, N] str: the kind of the *target* at t (token t + 1). A name is a maximal run of entity
  tokens; within a document (documents end with [EOS]) it is "intro" the first time and "rep<=31",
  "rep32-63", ... when the same name occurred d tokens earlier (start to start). The name's first
  token gets ":first" (which protagonist: the part that context decides), the others ":rest".
  "" for targets outside names."""
  b, n = ids.shape
  cat = np.full((b, n), "", object)
  for r in range(b):
    t, seen = 0, {}
    while t < n:
      if ids[r, t] == eos_id:
        seen, t = {}, t + 1
        continue
      if entity_ids[r, t] < 0:
        t += 1
        continue
      s = t
      while t < n and entity_ids[r, t] >= 0:
        t += 1
      name = tuple(ids[r, s:t])
      kind = "intro"
      if name in seen:
        d = s - seen[name]
        kind = "rep" + next(tag for lo, hi, tag in BUCKETS if lo <= d <= hi)
      seen[name] = s
      if s >= 1:
        cat[r, s - 1] = kind + ":first"
      cat[r, s:t - 1] = kind + ":rest"
  return cat


def score(nll: np.ndarray, data: dict, skip: int) -> dict:
  """Mean nll over real targets at stream positions >= skip: all, entity-name tokens, the rest,
  and per `mention_categories` kind (when the data has entity annotations)."""
  w = (data["attention_mask"] > 0) & (data["target_ids"] != data["pad_id"])
  w[:, :skip] = False
  # the target at t is token t + 1: it is an entity-name token if position t + 1 is one
  ent = np.zeros_like(w)
  ent[:, :-1] = data["entity_ids"][:, 1:] >= 0
  res = {}
  groups = [("all", w), ("entity", w & ent), ("other", w & ~ent)]
  if "categories" in data:
    groups += [(k, w & (data["categories"] == k)) for k in sorted(set(data["categories"][w])) if k]
  for name, m in groups:
    res[name] = float(nll[m].sum() / max(m.sum(), 1))
    res[f"n_{name}"] = int(m.sum())
  return res


def paired_delta(rows, data: dict, skip: int, reference_mem: int, block: int = 128) -> None:
  """Adds "delta" (mean nll minus the reference memory's, same tokens) and "delta_se" (its standard
  error over blocks of `block` consecutive positions of a stream, which absorbs the correlation
  between neighbouring tokens) to every row; drops the per-token arrays."""
  w = (data["attention_mask"] > 0) & (data["target_ids"] != data["pad_id"])
  w[:, :skip] = False
  ref = next(r for r in rows if r["mem"] == reference_mem)["_nll"]
  n = int(w.sum())
  for r in rows:
    d = np.where(w, r["_nll"] - ref, 0.0)
    nb = d.shape[1] // block
    sums = d[:, :nb * block].reshape(d.shape[0], nb, block).sum(-1).ravel()
    if d.shape[1] % block:
      sums = np.concatenate([sums, d[:, nb * block:].sum(-1)])
    r["delta"] = float(d.sum() / n)
    r["delta_se"] = float(np.sqrt(len(sums) * sums.var()) / n)
  for r in rows:
    r.pop("_nll", None)


def evaluate_memories(model_cfg, params, data: dict, segment_len: int, memories, clamps) -> list:
  """[{mem, clamp, all, entity, other, ...}] for every (memory, clamp_len) pair."""
  skip = -(-max(memories) // segment_len) * segment_len
  rows = []
  for clamp in clamps:
    for m in memories:
      if clamp > 0 and m + segment_len - 1 <= clamp and (m, -1) in {(r["mem"], r["clamp"]) for r in rows}:
        prev = next(r for r in rows if r["mem"] == m and r["clamp"] == -1)
        rows.append({**prev, "clamp": clamp})               # no distance reaches the clamp
        continue
      t0 = time.perf_counter()
      nll = stream_nll(eval_model(model_cfg, m, clamp), params, data["input_ids"],
                       data["target_ids"], segment_len)
      r = {"mem": m, "clamp": clamp, **score(nll, data, skip), "seconds": time.perf_counter() - t0,
           "_nll": nll}
      rows.append(r)
      print(f"  eval mem {m:4d} clamp_len {clamp:4d}: ppl {math.exp(r['all']):.3f}  "
            f"entity nll {r['entity']:.3f}  other nll {r['other']:.3f}  ({r['seconds']:.1f}s)",
            flush=True)
  return rows


# ---- training -------------------------------------------------------------------------------------------
def build_config(args, overrides):
  from plmjax.train import config as config_lib
  o = [f"--config.model.hidden_size={args.hidden}", f"--config.model.num_layers={args.layers}",
       f"--config.model.num_heads={args.heads}", f"--config.model.mlp_dim={2 * args.hidden}",
       f"--config.model.segment_len={args.segment}", f"--config.model.mem_len={args.mem}",
       "--config.model.clamp_len=-1", "--config.model.same_length=False",
       f"--config.model.dropout_rate={args.dropout}",
       f"--config.data.seq_len={4 * args.segment}",
       f"--config.train.steps={args.steps}", f"--config.train.batch_size={args.batch}",
       f"--config.train.log_every={max(args.steps // 10, 1)}",
       f"--config.train.checkpoint_every={args.steps}", f"--config.train.eval_every={args.steps}",
       "--config.train.eval_steps=4",
       f"--config.optimizer.learning_rate={args.lr}",
       f"--config.optimizer.warmup_steps={max(args.steps // 20, 10)}"]
  if args.data:
    o.append(f"--config.data.path={args.data}")
  return config_lib.get_config(f"{CONFIG}:tiny", o + list(overrides))


def train(config, workdir: str, fresh: bool):
  """Trains (or reuses a finished run in `workdir`); returns (params, model config, seconds)."""
  from plmjax.train.loop import Run, train_and_evaluate
  if fresh and os.path.isdir(workdir):
    shutil.rmtree(workdir)
  reused = os.path.isdir(os.path.join(workdir, "checkpoints"))
  t0 = time.perf_counter()
  train_and_evaluate(config, workdir)             # a finished run resumes at its last step: no-op
  seconds = None if reused else time.perf_counter() - t0
  run = Run(config, workdir)
  step = run.restore_latest(iter(run.train_data))
  run.checkpointer.close()
  if step != config.train.steps:
    raise RuntimeError(f"{workdir}: checkpoint at step {step}, expected {config.train.steps}")
  return flax.linen.meta.unbox(run.state.params), run.model_config, seconds


# ---- report ---------------------------------------------------------------------------------------------
def _clamps(rows):
  return sorted({r["clamp"] for r in rows}, key=lambda c: (c > 0, c))


def _tag(c):
  return "no clamp" if c < 0 else f"clamp_len {c}"


def table(rows, args) -> str:
  """Perplexity (and entity / other nll) per evaluation memory, one column group per clamp_len."""
  by = {(r["mem"], r["clamp"]): r for r in rows}
  head = ["eval memory M", "attention span M+T"]
  for c in _clamps(rows):
    head += [f"ppl ({_tag(c)})", f"Δ nll vs M={args.mem} ± 2 SE ({_tag(c)})",
             f"entity-token nll ({_tag(c)})", f"other-token nll ({_tag(c)})"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for m in sorted({r["mem"] for r in rows}):
    cells = [str(m) + (" (= training)" if m == args.mem else ""), str(m + args.segment)]
    for c in _clamps(rows):
      r = by[(m, c)]
      delta = (f"{r['delta']:+.4f} ± {2 * r['delta_se']:.4f}" if "delta" in r else "")
      cells += [f"{math.exp(r['all']):.3f}", delta, f"{r['entity']:.3f}", f"{r['other']:.3f}"]
    lines.append("| " + " | ".join(cells) + " |")
  r0 = rows[0]
  return "\n".join(lines) + (
      f"\n\nScored targets per row: {r0['n_all']} ({r0['n_entity']} entity-name tokens, "
      f"{r0['n_other']} others), the same tokens for every row. Δ nll: mean per-token difference "
      f"in nats against the training memory on those tokens (negative = better), with twice its "
      f"standard error over 128-token blocks.")


def breakdown(rows) -> str:
  """nll (nats) of the first token of each name mention, by how far back the same name last
  occurred in the document; "" if the data has no entity annotations."""
  kinds = ["intro:first"] + [f"rep{tag}:first" for _, _, tag in BUCKETS]
  kinds = [k for k in kinds if rows[0].get("n_" + k, 0) >= 20]     # too few: noise
  if not kinds:
    return ""
  r0 = rows[0]
  label = lambda k: ("first mention (introduction)" if k.startswith("intro") else
                     f"repeat, previous mention {k[3:-6]} tokens back") + f", n={r0['n_' + k]}"
  head = ["M", "clamp_len"] + [label(k) for k in kinds] + ["all name tokens after the first"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for c in _clamps(rows):
    for r in sorted((r for r in rows if r["clamp"] == c), key=lambda r: r["mem"]):
      rest = [k for k in r if k.endswith(":rest") and not k.startswith("n_")]
      n = sum(r["n_" + k] for k in rest)
      rest_nll = sum(r[k] * r["n_" + k] for k in rest) / max(n, 1)
      lines.append("| " + " | ".join([str(r["mem"]), "-" if c < 0 else str(c)]
                                     + [f"{r[k]:.3f}" for k in kinds] + [f"{rest_nll:.3f}"]) + " |")
  return "\n".join(lines)


def write_report(rows, args, info, path: str) -> str:
  floor = info.get("floor")
  md = [f"# Transformer-XL: validation perplexity vs evaluation memory",
        "",
        "Command: `" + " ".join([".venv/bin/python experiments/tables/txl_eval_memory.py"]
                                + sys.argv[1:]) + "`",
        "",
        f"Model: Transformer-XL, {args.layers} layers, d={args.hidden}, {args.heads} heads, "
        f"{info['params']:,} params; trained {args.steps} steps x batch {args.batch} x "
        f"{4 * args.segment} tokens (segment T={args.segment}, training memory M={args.mem}, "
        f"memory carried across steps, no clamp_len) on {info['data']}"
        + (f" in {info['train_s']:.0f} s ({info['device']})" if info["train_s"] else " (reused run)")
        + f". Training attention reaches distances 0..{args.mem + args.segment - 1}.",
        "",
        f"Evaluation: the validation split as {args.streams} contiguous streams "
        f"({info['tokens']:,} tokens), segment length T={args.segment}, memory M, one jitted scan "
        f"per stream batch; the first {info['skip']} tokens of each stream are not scored (memory "
        "start-up), so every row scores the same tokens. Perplexity = exp(mean nll) over all "
        "scored targets; entity-token nll = mean nll (nats) on tokens of entity names (the "
        "long-range dependency of the synthetic corpus); other = the remaining tokens."
        + (f" Entropy floor of the corpus: {floor:.3f} nats/token (ppl {math.exp(floor):.3f})."
           if floor else ""),
        "",
        table(rows, args),
        ""]
  extra = breakdown(rows)
  if extra:
    md += ["Where the memory matters: nll (nats) of the *first* token of an entity-name mention (the "
           "token that says which protagonist; the rest of a name follows from its start), by how "
           "far back (start to start) the same name last occurred in the document. Evidence more "
           f"than {args.mem + args.segment - 1} tokens back is outside the training attention "
           "span; it reaches the model only through the memory.", "", extra, ""]
  text = "\n".join(md)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)
  return text


def plot(rows, path: str) -> bool:
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return False
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for c in sorted({r["clamp"] for r in rows}):
    rs = sorted((r for r in rows if r["clamp"] == c), key=lambda r: r["mem"])
    ax.plot([r["mem"] for r in rs], [math.exp(r["all"]) for r in rs], "o-",
            label="no clamp" if c < 0 else f"clamp_len {c}")
  ax.set_xlabel("evaluation memory M")
  ax.set_ylabel("validation perplexity")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return True


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--data", default="", help="data.path ('' = built-in synthetic corpus)")
  ap.add_argument("--steps", type=int, default=3000)
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--hidden", type=int, default=64)
  ap.add_argument("--layers", type=int, default=2)
  ap.add_argument("--heads", type=int, default=4)
  ap.add_argument("--segment", type=int, default=16)
  ap.add_argument("--mem", type=int, default=16, help="training memory length")
  ap.add_argument("--dropout", type=float, default=0.0)
  ap.add_argument("--lr", type=float, default=3e-3)
  ap.add_argument("--streams", type=int, default=8, help="validation streams (batch rows)")
  ap.add_argument("--memories", default=",".join(map(str, MEMORIES)))
  ap.add_argument("--workdir", default="/tmp/plmjax_txl_eval_memory")
  ap.add_argument("--reuse", action="store_true", help="reuse a finished run in --workdir")
  ap.add_argument("--out", default=os.path.join(ROOT, "results", "txl_eval_memory.md"))
  args, overrides = ap.parse_known_args(argv)

  config = build_config(args, overrides)
  params, model_cfg, train_s = train(config, args.workdir, fresh=not args.reuse)
  memories = [int(m) for m in args.memories.split(",")]
  data = validation_streams(config.data, args.streams, args.segment)
  clamp = args.mem + args.segment - 1                   # the farthest distance seen in training
  rows = evaluate_memories(model_cfg, params, data, args.segment, memories, (-1, clamp))
  skip = -(-max(memories) // args.segment) * args.segment
  if args.mem in memories:
    paired_delta(rows, data, skip, args.mem)
  for r in rows:
    r.pop("_nll", None)
  from plmjax.data import synthetic
  info = dict(params=sum(x.size for x in jax.tree.leaves(params)), train_s=train_s,
              device=f"{jax.devices()[0].platform}",
              data=args.data or "the built-in synthetic corpus", tokens=int(data["attention_mask"].sum()),
              skip=skip,
              floor=None if args.data else synthetic.entropy_floor_nats()["per_token"])
  text = write_report(rows, args, info, args.out)
  if plot(rows, os.path.splitext(args.out)[0] + ".png"):
    print(f"wrote {os.path.splitext(args.out)[0]}.png")
  print(text)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
