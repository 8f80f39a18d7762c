"""The training loop: `train_and_evaluate(config, workdir)`, and `evaluate(config, workdir)`.

    build      mesh, train data (its tokenizer sets the model's vocab_size), model, objective,
               optimizer, sharded TrainState, jitted train / eval steps; a model with
               `init_mems` (or an RNN's `initial_state`) on data.mode "stream" carries its memory
               across steps in model_state
    resume     if WORKDIR/checkpoints holds a checkpoint: state + data-iterator position; the
               metrics file is cut back to that step, so a restarted run writes exactly the lines
               an uninterrupted run would have
    loop       for step s = state.step .. train.steps - 1:
                 state, m = train_step(state, next batch)     (m: loss at params after s updates)
                 log       s % log_every == 0 or last:  WORKDIR/metrics.jsonl, TensorBoard, tqdm
                 evaluate  (s+1) % eval_every == 0 or last: eval_steps batches of data.eval_split
                           (eval_steps = 0: no evaluation),
                           line {"split": "eval", "step": s+1, loss, perplexity, ...}
                 save      (s+1) % checkpoint_every == 0 or last, or on SIGTERM (then exit)

Reliability (plmjax/train/guard.py, workdir.py, checkpoint.py, integrity.py): process 0 holds
WORKDIR/.plmjax.lock for the run (a second run is refused); resume takes the newest checkpoint
that passes its digest, restore and finiteness checks (skipped ones are reported and moved to
WORKDIR/damaged_checkpoints/); every step returns an on-device finite flag, read one step late:
train.nonfinite="stop" ends the run naming the step before anything non-finite is saved, "skip"
leaves that step's update out; SIGTERM / SIGINT save and raise guard.Preempted, within
train.stop_timeout_s; a failed or stuck write ends the run (guard.WriteError, train.io_timeout_s).
Train lines carry "step" = updates done before the measured step;
eval lines carry "step" = updates done when evaluated.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Optional

import jax
import numpy as np
import tqdm
from jax.sharding import PartitionSpec as P

from plmjax.data import build_dataset
from plmjax.objectives import build_objective
from plmjax.train import config as config_lib
from plmjax.train.checkpoint import Checkpointer, restore_params, tree_mismatches
from plmjax.train.events import EventLog
from plmjax.train.guard import FiniteCheck, Preempted, RunGuard, WriteError
from plmjax.train.workdir import WorkdirLock
from plmjax.train.mesh import BATCH_AXES, make_mesh, shard_batch
from plmjax.train.optim import make_optimizer
from plmjax.train.state import abstract_state, count_params, create_train_state
from plmjax.train.step import make_eval_step, make_train_step, model_inputs_shapes

LM_LOSS_KEYS = ("clm_loss", "mlm_loss")   # token-level losses that have a perplexity


# ---- metrics -----------------------------------------------------------------------------------------
class MetricsLog:
  """WORKDIR/metrics.jsonl (one JSON object per line) + TensorBoard events; process 0 writes."""

  def __init__(self, workdir: str, resume_step: Optional[int] = None):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.active = jax.process_index() == 0
    if not self.active:
      return
    if resume_step is not None:
      self._truncate(resume_step)
    elif os.path.exists(self.path):
      os.remove(self.path)      # a fresh run in a reused folder starts a fresh log
    with _write_errors(self.path):
      self.tb = EventLog(os.path.join(workdir, "tensorboard"))

  def _truncate(self, step: int) -> None:
    """Keeps train lines of steps < `step` and eval lines of steps <= `step`."""
    if not os.path.exists(self.path):
      return
    keep = []
    with open(self.path) as f:
      for line in f:
        try:
          rec = json.loads(line)
        except json.JSONDecodeError:   # a line cut by a kill
          continue
        if rec["step"] < step or (rec.get("split") == "eval" and rec["step"] <= step):
          keep.append(line if line.endswith("\n") else line + "\n")
    with _write_errors(self.path):
      with open(self.path, "w") as f:
        f.writelines(keep)

  def write(self, step: int, metrics: dict, split: str = "train") -> dict:
    rec = {"step": int(step), **({"split": split} if split != "train" else {}),
           **{k: float(v) for k, v in metrics.items()}}
    if self.active:
      with _write_errors(self.path):
        with open(self.path, "a") as f:
          f.write(json.dumps(rec) + "\n")
      with _write_errors(self.tb.logdir):
        self.tb.scalars(step, metrics, prefix=f"{split}/")
    return rec

  def close(self) -> None:
    if self.active:
      with _write_errors(self.tb.logdir):
        self.tb.close()


class _write_errors:
  """OSError inside -> WriteError naming `path` (the run ends; checkpoints are untouched)."""

  def __init__(self, path: str):
    self.path = path

  def __enter__(self):
    return self

  def __exit__(self, typ, e, tb):
    if isinstance(e, OSError) and not isinstance(e, WriteError):
      raise WriteError(f"writing {self.path} failed: {e.strerror or e}") from e
    return False


def with_perplexity(metrics: dict) -> dict:
  for k in LM_LOSS_KEYS:
    if k in metrics:
      return {**metrics, "perplexity": math.exp(min(float(metrics[k]), 50.0))}
  return metrics


# ---- building a run ------------------------------------------------------------------------------------
class Run:
  """Everything a config builds before the first step."""

  def __init__(self, config, workdir: str, create: bool = True):
    self.config, self.workdir = config, os.path.abspath(workdir)
    t = config.train
    self.mesh = make_mesh(config.mesh)
    self.process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    self.train_data = build_dataset(config.data, split="train", global_batch_size=t.batch_size,
                                    seq_len=config.data.seq_len, seed=t.seed, **self.process)
    self.tokenizer = self.train_data.tokenizer
    self.model, self.model_config = config_lib.build_model(config.model, self.tokenizer, config.dtype)
    self.objective = build_objective(config.objective, self.tokenizer)
    self.tx, self.schedule = make_optimizer(config.optimizer, t.steps, t.clip_norm)

    local = next(iter(self.train_data))          # shapes only; the real iterator starts fresh
    count = self.process["process_count"]
    self.batch_shapes = {k: jax.ShapeDtypeStruct((v.shape[0] * count,) + v.shape[1:], v.dtype)
                         for k, v in local.items()}
    inputs = model_inputs_shapes(self.objective, self.batch_shapes)
    self.state, self.shardings = create_train_state(self.model, self.tx, inputs, self.mesh, t.seed,
                                                    **self.model_state_init(config, t.batch_size))
    self.train_step = make_train_step(self.model, self.objective, self.tx, self.schedule, self.mesh,
                                      self.shardings, self.batch_shapes, grad_accum=t.grad_accum,
                                      nonfinite=t.get("nonfinite", "stop"))
    self.eval_step = make_eval_step(self.model, self.objective, self.mesh, self.shardings,
                                    self.batch_shapes)
    self.checkpointer = Checkpointer(os.path.join(self.workdir, "checkpoints"), t.keep_checkpoints,
                                     io_timeout_s=t.get("io_timeout_s", 600), create=create)

  def model_state_init(self, config, batch_size: int) -> dict:
    """Recurrent models on "stream" data (row i continues row i of the previous batch) carry their
    memory across steps, batch-sharded: Transformer-XL / XLNet {"mems": [L, B, M, E]}, RNN LMs
    {"rnn_state": per-layer {"h", "c"} [B, H]}. Everything else carries nothing."""
    if config.data.mode != "stream":
      return {}
    if hasattr(self.model, "init_mems"):
      return dict(init_model_state=lambda: {"mems": self.model.init_mems(batch_size)},
                  model_state_specs={"mems": P(None, BATCH_AXES)})
    if hasattr(self.model, "initial_state"):
      return dict(init_model_state=lambda: {"rnn_state": self.model.initial_state(batch_size)},
                  model_state_specs={"rnn_state": P(BATCH_AXES)})
    return {}

  def init_params_from(self, path: str) -> None:
    """`train.init_from`: this run's params := another run's (same names and shapes), placed with
    this run's shardings; the optimizer state and step stay fresh."""
    loaded = restore_params(path, "train.init_from")
    missing, unexpected, bad = tree_mismatches(self.state.params, loaded)
    problems = ([f"missing {k}" for k in missing] + [f"unexpected {k}" for k in unexpected]
                + [f"{k} (checkpoint vs here)" for k in bad])
    if problems:
      raise ValueError(f"train.init_from={path!r} does not fit this model ({len(problems)} problems): "
                       + "; ".join(problems[:5]))
    got = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(loaded)}
    leaves = [np.asarray(got[jax.tree_util.keystr(k)], v.dtype)
              for k, v in jax.tree_util.tree_leaves_with_path(self.state.params)]
    params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(self.state.params), leaves)
    self.state = self.state.replace(params=jax.device_put(params, self.shardings.params))

  def restore_latest(self, data_iter, quarantine: bool = True) -> Optional[int]:
    """Resumes from the newest intact checkpoint (see Checkpointer.restore_valid); None if none."""
    target = abstract_state(self.state, self.shardings)
    step, state = self.checkpointer.restore_valid(target, data_iter, quarantine=quarantine)
    if step is None:
      return None
    self.state = state
    return int(self.state.step)

  def evaluate(self) -> dict:
    """Mean metrics over `train.eval_steps` batches of the eval split (fixed masking keys)."""
    cfg, t = self.config, self.config.train
    data = build_dataset(cfg.data, split=cfg.data.eval_split, global_batch_size=t.batch_size,
                         seq_len=cfg.data.seq_len, seed=t.seed, **self.process)
    totals, weight = {}, 0.0
    for i, batch in zip(range(t.eval_steps), data):
      key = jax.random.fold_in(jax.random.PRNGKey(t.seed + 1), i)
      m = jax.device_get(self.eval_step(self.state.params, shard_batch(batch, self.mesh), key))
      w = float(m.get("num_targets", 1.0))
      for k, v in m.items():
        totals[k] = totals.get(k, 0.0) + float(v) * (1.0 if k == "num_targets" else w)
      weight += w
    if not weight:
      raise ValueError(f"evaluation found no targets in split {cfg.data.eval_split!r}")
    return with_perplexity({k: v if k == "num_targets" else v / weight for k, v in totals.items()})


# ---- the loop ------------------------------------------------------------------------------------------
def _check_finite(step: int, metrics: dict, workdir: str) -> None:
  loss = float(metrics["loss"])
  if not math.isfinite(loss):
    raise FloatingPointError(f"loss is {loss} at step {step}: stopping (checkpoints, if any, are in "
                             f"{workdir}/checkpoints; try a lower optimizer.learning_rate or "
                             f"train.clip_norm)")


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the last metrics.
  Raises guard.Preempted after a SIGTERM / SIGINT save, WorkdirBusy if another run holds it."""
  os.makedirs(workdir, exist_ok=True)
  lock = WorkdirLock(workdir).acquire() if jax.process_index() == 0 else None
  try:
    return _train(config, workdir)
  finally:
    if lock:
      lock.release()


def _train(config, workdir: str) -> dict:
  config_lib.apply_prng_impl(config)
  run = Run(config, workdir)
  t = config.train
  data_iter = iter(run.train_data)
  start = run.restore_latest(data_iter) or 0
  if not start and t.get("init_from"):
    run.init_params_from(t.init_from)
  log = MetricsLog(run.workdir, resume_step=start if start else None)
  is_main = jax.process_index() == 0
  if is_main:
    with _write_errors(os.path.join(run.workdir, "config.json")):
      with open(os.path.join(run.workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    print(f"model {config.model.name}: {count_params(run.state.params):,} params, vocab "
          f"{run.model_config.vocab_size}, dtype {run.model_config.dtype}, mesh {dict(run.mesh.shape)}"
          + (f"; resumed at step {start}" if start else ""), flush=True)
    floor = run.train_data.info.get("entropy_floor_nats")
    if floor:
      print(f"synthetic corpus entropy floor: {floor['per_token']:.3f} nats/token", flush=True)

  preempt = RunGuard(t.get("stop_timeout_s", 60), describe=run.checkpointer.describe_last)
  run.checkpointer.guard = preempt
  finite = FiniteCheck(t.get("nonfinite", "stop"), lambda: run.checkpointer.describe_last(wait=True),
                       skipped=run.checkpointer.extra.get("skipped_steps", 0))
  bar = tqdm.tqdm(total=t.steps, initial=start, disable=not is_main, dynamic_ncols=True)
  last, tokens, t0 = {}, 0, time.perf_counter()
  preempt.__enter__()
  try:
    for step in range(start, t.steps):
      host_batch = next(data_iter)
      tokens += int(np.sum(host_batch["attention_mask"])) * jax.process_count()
      run.state, metrics = run.train_step(run.state, shard_batch(host_batch, run.mesh))
      metrics = finite.push(step, metrics)      # raises for step - 1 if it was not finite ("stop")
      run.checkpointer.raise_if_failed()        # a save that failed in the background
      done = step + 1
      if step % t.log_every == 0 or done == t.steps:
        finite.flush()
        metrics = jax.device_get(metrics)
        if finite.mode == "stop":
          _check_finite(step, metrics, run.workdir)
        elapsed = time.perf_counter() - t0
        last = log.write(step, {**metrics, **finite.log_fields(),
                                "tokens_per_sec": tokens / max(elapsed, 1e-9)})
        bar.set_postfix(loss=f"{last['loss']:.4f}", tok_s=f"{last['tokens_per_sec']:.0f}")
        tokens, t0 = 0, time.perf_counter()
      bar.update(1)
      if t.eval_steps and (done % t.eval_every == 0 or done == t.steps):
        t_eval = time.perf_counter()
        rec = log.write(done, run.evaluate(), split="eval")
        bar.write(json.dumps(rec))
        t0 += time.perf_counter() - t_eval          # tokens/s counts training time only
      if done % t.checkpoint_every == 0 or done == t.steps or preempt.requested:
        finite.flush()                          # never save a non-finite state
        run.checkpointer.extra = finite.log_fields()
        run.checkpointer.save(done, run.state, data_iter, config, force=bool(preempt.requested))
      if preempt.requested:
        run.checkpointer.wait()
        bar.write(f"{preempt.requested}: saved step {done} to {run.checkpointer.directory}; exiting")
        raise Preempted(f"{preempt.requested}: stopped at step {done} of {t.steps} after saving "
                        f"{run.checkpointer.directory}/{done}; the same command resumes", done)
  finally:
    bar.close()
    try:
      run.checkpointer.close()
      log.close()
    finally:
      preempt.__exit__(None, None, None)
  return last


def evaluate(config, workdir: str) -> dict:
  """`plmjax eval`: evaluates the newest intact checkpoint in `workdir`; a workdir without one is
  an error (FileNotFoundError), and nothing is created in it."""
  config_lib.apply_prng_impl(config)
  ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(ckpt_dir) or not any(d.isdigit() for d in os.listdir(ckpt_dir)):
    raise FileNotFoundError(f"plmjax eval: no checkpoint in {ckpt_dir} (is --workdir {workdir!r} "
                            "the workdir of a plmjax train run?)")
  run = Run(config, workdir, create=False)
  step = run.restore_latest(iter(run.train_data), quarantine=False)
  metrics = {"step": step, "split": "eval", **run.evaluate()}
  run.checkpointer.close()
  if jax.process_index() == 0:
    with open(os.path.join(run.workdir, "eval.jsonl"), "a") as f:
      f.write(json.dumps(metrics) + "\n")
  return metrics
