"""The training loop, one for every run: `train_and_evaluate(config, workdir)`, and `evaluate`.

Pretraining builds a `Run` (below); fine-tuning builds a `plmjax.finetune.run.FinetuneRun` (task
data, task model, task objective) and goes through the same loop, step, checkpointer and logs.
A run provides: state / shardings / mesh / checkpointer, `total_steps`, `train_iterator()` (a
checkpointable iterator), `train(host_batch)`, `should_evaluate(done)`, `evaluate()`, `eval_split`,
`init_params()` (train.init_from / model.init_from on a fresh start) and `finish(workdir)`.

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
                 save      (s+1) % checkpoint_every == 0 or last, at an evaluation when the run
                           keeps its best checkpoint (train.best_metric), or on SIGTERM (then exit)
    profile    train.profile = "START:STOP": a jax.profiler trace of those steps in WORKDIR/profile
               (TensorBoard / XProf / Perfetto), each step annotated

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

import dataclasses
import itertools
import json
import math
import os
import time
from typing import Optional

import jax
import numpy as np
import tqdm
from jax.sharding import NamedSharding, PartitionSpec as P

from plmjax.data import build_dataset
from plmjax.objectives import build_objective
from plmjax.train import config as config_lib
from plmjax.train import init_from as init_lib
from plmjax.train.checkpoint import Checkpointer
from plmjax.train.events import EventLog
from plmjax.train.guard import FiniteCheck, Preempted, RunGuard, bounded_write
from plmjax.train.workdir import WorkdirLock
from plmjax.train.mesh import BATCH_AXES, make_mesh, shard_batch
from plmjax.train.optim import make_optimizer
from plmjax.train.state import abstract_state, count_params, create_train_state
from plmjax.train.step import make_eval_step, make_train_step, model_inputs_shapes
from plmjax.train.summary import summary

LM_LOSS_KEYS = ("clm_loss", "mlm_loss")   # token-level losses that have a perplexity


# ---- metrics -----------------------------------------------------------------------------------------
class MetricsLog:
  """WORKDIR/metrics.jsonl (one JSON object per line) + TensorBoard events; process 0 writes.
  `writes(what)`: the context every write runs in (Checkpointer.write_guard: the run's io deadline,
  an OSError -> one WriteError naming the file and the last complete checkpoint)."""

  def __init__(self, workdir: str, resume_step: Optional[int] = None, writes=bounded_write):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.active, self.writes = jax.process_index() == 0, writes
    if not self.active:
      return
    if resume_step is not None:
      self._truncate(resume_step)
    elif os.path.exists(self.path):
      os.remove(self.path)      # a fresh run in a reused folder starts a fresh log
    with self.writes(f"writing {os.path.join(workdir, 'tensorboard')}"):
      self.tb = EventLog(os.path.join(workdir, "tensorboard"))

  def _truncate(self, step: int) -> None:
    """Keeps train lines of steps < `step` and evaluation lines (any split) of steps <= `step`."""
    if not os.path.exists(self.path):
      return
    keep = []
    with open(self.path) as f:
      for line in f:
        try:
          rec = json.loads(line)
        except json.JSONDecodeError:   # a line cut by a kill
          continue
        if rec["step"] < step or ("split" in rec and rec["step"] <= step):
          keep.append(line if line.endswith("\n") else line + "\n")
    with self.writes(f"writing {self.path}"):
      with open(self.path, "w") as f:
        f.writelines(keep)

  def write(self, step: int, metrics: dict, split: str = "train") -> dict:
    rec = {"step": int(step), **({"split": split} if split != "train" else {}),
           **{k: float(v) for k, v in metrics.items()}}
    if self.active:
      with self.writes(f"writing {self.path}"):
        with open(self.path, "a") as f:
          f.write(json.dumps(rec) + "\n")
      with self.writes(f"writing {self.tb.logdir}"):
        self.tb.scalars(step, metrics, prefix=f"{split}/")
    return rec

  def close(self) -> None:
    if self.active:
      with self.writes(f"writing {self.tb.logdir}"):
        self.tb.close()


def with_perplexity(metrics: dict) -> dict:
  for k in LM_LOSS_KEYS:
    if k in metrics:
      return {**metrics, "perplexity": math.exp(min(float(metrics[k]), 50.0))}
  return metrics


# ---- building a run ------------------------------------------------------------------------------------
class Run:
  """Everything a config builds before the first step."""

  eval_split = "eval"

  def __init__(self, config, workdir: str, create: bool = True):
    config = init_lib.adopt_checkpoint_architecture(config)      # HF train.init_from
    self.config, self.workdir = config, os.path.abspath(workdir)
    t = config.train
    self.total_steps = t.steps
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
    # Evaluation: the model with the `eval` section's memory fields (Transformer-XL: tgt_len,
    # mem_len, clamp_len, same_length; no parameter depends on them); a memory model on stream
    # data threads its memory from one eval batch to the next, as in training.
    overrides = config_lib.eval_model_overrides(config)
    self.eval_model = self.model.clone(config=dataclasses.replace(self.model_config, **overrides)) \
        if overrides else self.model
    self.eval_carry = self.model_state_init(config, t.batch_size, self.eval_model)
    self.eval_carry_shardings = {k: NamedSharding(self.mesh, spec)
                                 for k, spec in self.eval_carry["model_state_specs"].items()} \
        if self.eval_carry else None
    self.eval_step = make_eval_step(self.eval_model, self.objective, self.mesh, self.shardings,
                                    self.batch_shapes, carry_shardings=self.eval_carry_shardings)
    self.checkpointer = Checkpointer(os.path.join(self.workdir, "checkpoints"), t.keep_checkpoints,
                                     best_metric=t.get("best_metric", ""),
                                     best_mode=t.get("best_mode", "max"),
                                     io_timeout_s=t.get("io_timeout_s", 600), create=create)

  def train_iterator(self):
    return iter(self.train_data)

  def train(self, host_batch: dict) -> tuple[dict, int]:
    """One step on this process' rows -> (metrics on device, real tokens in the global batch)."""
    tokens = int(np.sum(host_batch["attention_mask"])) * jax.process_count()
    self.state, metrics = self.train_step(self.state, shard_batch(host_batch, self.mesh))
    return metrics, tokens

  def should_evaluate(self, done: int) -> bool:
    t = self.config.train
    return bool(t.eval_steps) and (done % t.eval_every == 0 or done == t.steps)

  def describe(self) -> str:
    return (f"model {self.config.model.name}: {count_params(self.state.params):,} params, vocab "
            f"{self.model_config.vocab_size}, dtype {self.model_config.dtype}, mesh {dict(self.mesh.shape)}")

  def finish(self) -> None:
    """After the last step (not after a SIGTERM exit): nothing more for pretraining."""

  def model_state_init(self, config, batch_size: int, model=None) -> dict:
    """Recurrent models on "stream" data (row i continues row i of the previous batch) carry their
    memory across steps, batch-sharded: Transformer-XL / XLNet {"mems": [L, B, M, E]}, RNN LMs
    {"rnn_state": per-layer {"h", "c"} [B, H]}. Everything else carries nothing."""
    model = model or self.model
    if config.data.mode != "stream":
      return {}
    if hasattr(model, "init_mems") and getattr(model.config, "mem_len", 0) > 0:
      return dict(init_model_state=lambda: {"mems": model.init_mems(batch_size)},
                  model_state_specs={"mems": P(None, BATCH_AXES)})
    if hasattr(model, "initial_state"):
      return dict(init_model_state=lambda: {"rnn_state": model.initial_state(batch_size)},
                  model_state_specs={"rnn_state": P(BATCH_AXES)})
    return {}

  def init_params(self) -> None:
    """`train.init_from` (a fresh run only): this run's params := another run's or a Hugging Face
    checkpoint's where both have them (plmjax.train.init_from), placed with this run's
    shardings; the optimizer state and step stay fresh."""
    path = self.config.train.get("init_from", "")
    if path:
      self.load_params_into(path, "train.init_from")

  def load_params_into(self, path: str, key: str, subtree: Optional[str] = None) -> None:
    """Loads `path`'s params into this run's state (at `subtree` of the params, or the root)."""
    loaded, source = init_lib.load_params(path, key)
    note = ""
    if subtree is None:                    # another family's checkpoint (ERNIE (THU) from BERT)
      loaded, note = init_lib.adapt_loaded(self.config.model.name, loaded, self.model_config)
    fresh = jax.device_get(self.state.params)
    target = fresh[subtree] if subtree else fresh
    merged, report = init_lib.merge_params(target, loaded, source=path, key=key,
                                           resize=self.config.train.get("init_resize", ""))
    params = {**fresh, subtree: merged} if subtree else merged
    self.state = self.state.replace(params=jax.device_put(params, self.shardings.params))
    self.init_report = report
    if jax.process_index() == 0:
      print((note + "\n" if note else "") + report.summary(source), flush=True)

  def restore_latest(self, data_iter, quarantine: bool = True) -> Optional[int]:
    """Resumes from the newest intact checkpoint (see Checkpointer.restore_valid); None if none."""
    target = abstract_state(self.state, self.shardings)
    step, state = self.checkpointer.restore_valid(target, data_iter, quarantine=quarantine)
    if step is None:
      return None
    self.state = state
    return int(self.state.step)

  def evaluate(self) -> dict:
    """Mean metrics over `train.eval_steps` batches of the eval split (-1: the whole split; fixed
    masking keys). Memory models start from zero memory and carry it from batch to batch."""
    cfg, t = self.config, self.config.train
    data = build_dataset(cfg.data, split=cfg.data.eval_split, global_batch_size=t.batch_size,
                         seq_len=config_lib.eval_seq_len(cfg), seed=t.seed, **self.process)
    carry = None
    if self.eval_carry:
      carry = jax.jit(self.eval_carry["init_model_state"], out_shardings=self.eval_carry_shardings)()
    totals, weight = {}, 0.0
    for i, batch in enumerate(itertools.islice(data, None if t.eval_steps < 0 else t.eval_steps)):
      key = jax.random.fold_in(jax.random.PRNGKey(t.seed + 1), i)
      if carry is None:
        m = self.eval_step(self.state.params, shard_batch(batch, self.mesh), key)
      else:
        m, carry = self.eval_step(self.state.params, shard_batch(batch, self.mesh), key, carry)
      m = jax.device_get(m)
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


class _Profiler:
  """train.profile = "START:STOP": jax.profiler trace of steps START .. STOP-1 in WORKDIR/profile
  (an XProf .xplane.pb for TensorBoard / XProf, and perfetto_trace.json.gz for ui.perfetto.dev),
  each step a "train" StepTraceAnnotation."""

  def __init__(self, spec: str, workdir: str):
    self.window = config_lib.parse_profile(spec)
    self.dir, self.active = os.path.join(workdir, "profile"), False

  def step(self, step: int):
    if self.window and step == self.window[0] and not self.active:
      jax.profiler.start_trace(self.dir, create_perfetto_trace=True)   # + perfetto_trace.json.gz
      self.active = True
    return jax.profiler.StepTraceAnnotation("train", step_num=step)

  def after(self, step: int, state) -> None:
    if self.active and step + 1 >= self.window[1]:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False
      print(f"profile of steps {self.window[0]}..{self.window[1] - 1} written to {self.dir}", flush=True)

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False


def build_run(config, workdir: str, create: bool = True):
  """The run a config describes: fine-tuning configs (a `task` key) build a FinetuneRun."""
  if "task" in config:
    from plmjax.finetune.run import FinetuneRun
    return FinetuneRun(config, workdir, create=create)
  return Run(config, workdir, create=create)


def train_and_evaluate(config, workdir: str, run=None) -> dict:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the last metrics
  (the last train line, or the last evaluation where the run evaluates at its end).
  Raises guard.Preempted after a SIGTERM / SIGINT save, WorkdirBusy if another run holds it."""
  os.makedirs(workdir, exist_ok=True)
  lock = WorkdirLock(workdir).acquire() if jax.process_index() == 0 else None
  try:
    return _train(config, workdir, run)
  finally:
    if lock:
      lock.release()


def _train(config, workdir: str, run=None) -> dict:
  config_lib.apply_prng_impl(config)
  run = run or build_run(config, workdir)
  config, t = run.config, run.config.train
  data_iter = run.train_iterator()
  start = run.restore_latest(data_iter) or 0
  if not start:
    run.init_params()
  log = MetricsLog(run.workdir, resume_step=start if start else None,
                   writes=run.checkpointer.write_guard)
  is_main = jax.process_index() == 0
  if is_main:
    with run.checkpointer.write_guard(f"writing {os.path.join(run.workdir, 'config.json')}"):
      with open(os.path.join(run.workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    print(run.describe() + (f"; resumed at step {start}" if start else ""), flush=True)
    info = getattr(getattr(run, "train_data", None), "info", None) or {}
    if "unigram_entropy_nats" in info:
      print(f"built-in corpus: unigram entropy {info['unigram_entropy_nats']:.3f} nats/token (no "
            f"context), entropy floor {info['entropy_floor_nats']['per_token']:.3f}", flush=True)

  preempt = RunGuard(t.get("stop_timeout_s", 60), describe=run.checkpointer.describe_last)
  run.checkpointer.guard = preempt
  finite = FiniteCheck(t.get("nonfinite", "stop"), lambda: run.checkpointer.describe_last(wait=True),
                       skipped=run.checkpointer.extra.get("skipped_steps", 0))
  profiler = _Profiler(t.get("profile", ""), run.workdir)
  total = run.total_steps
  bar = tqdm.tqdm(total=total, initial=start, disable=not is_main, dynamic_ncols=True)
  last, last_eval, tokens, t0 = {}, None, 0, time.perf_counter()
  preempt.__enter__()
  try:
    for step in range(start, total):
      host_batch = next(data_iter)
      with profiler.step(step):
        metrics, n_tokens = run.train(host_batch)
      profiler.after(step, run.state)
      metrics = finite.push(step, metrics)      # raises for step - 1 if it was not finite ("stop")
      run.checkpointer.raise_if_failed()        # a save that failed in the background
      tokens += n_tokens
      done = step + 1
      if step % t.log_every == 0 or done == total:
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
      evaluated = None
      if run.should_evaluate(done):
        t_eval = time.perf_counter()
        evaluated = run.evaluate()
        last_eval = log.write(done, evaluated, split=run.eval_split)
        bar.write(json.dumps(last_eval))
        t0 += time.perf_counter() - t_eval          # tokens/s counts training time only
      keep_best = evaluated is not None and run.checkpointer.best_metric
      if done % t.checkpoint_every == 0 or done == total or preempt.requested or keep_best:
        finite.flush()                          # never save a non-finite state
        run.checkpointer.extra = finite.log_fields()
        run.checkpointer.save(done, run.state, data_iter, config, force=bool(preempt.requested),
                              metrics=evaluated)
      if preempt.requested:
        run.checkpointer.wait()
        bar.write(f"{preempt.requested}: saved step {done} to {run.checkpointer.directory}; exiting")
        raise Preempted(f"{preempt.requested}: stopped at step {done} of {total} after saving "
                        f"{run.checkpointer.directory}/{done}; the same command resumes", done)
    run.checkpointer.wait()
    run.finish()
    if is_main:
      bar.close()
      print(summary(run, last, last_eval), flush=True)      # steps, losses vs floors, files, try it
  finally:
    profiler.close()
    bar.close()
    try:
      run.checkpointer.close()
      log.close()
    finally:
      preempt.__exit__(None, None, None)
  return last_eval if getattr(run, "returns_eval", False) and last_eval else last


def evaluate(config, workdir: str) -> dict:
  """`plmjax eval`: evaluates the newest intact checkpoint in `workdir` (fine-tuning runs also
  write the test set's predictions); a workdir without one is an error (FileNotFoundError), and
  nothing is created in it."""
  config_lib.apply_prng_impl(config)
  ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(ckpt_dir) or not any(d.isdigit() for d in os.listdir(ckpt_dir)):
    raise FileNotFoundError(f"plmjax eval: no checkpoint in {ckpt_dir} (is --workdir {workdir!r} "
                            "the workdir of a plmjax train run?)")
  run = build_run(config, workdir, create=False)
  step = run.restore_latest(run.train_iterator(), quarantine=False)
  # its writes (eval.jsonl, predictions/) under train.io_timeout_s, as in training; signals as usual
  with RunGuard(config.train.get("stop_timeout_s", 60), describe=run.checkpointer.describe_last,
                signals=()) as writes:
    run.checkpointer.guard = writes
    if hasattr(run, "write_test_predictions"):
      run.write_test_predictions()
    metrics = {"step": step, "split": run.eval_split, **run.evaluate()}
    run.checkpointer.close()
    if jax.process_index() == 0:
      path = os.path.join(run.workdir, "eval.jsonl")
      with run.checkpointer.write_guard(f"writing {path}"):
        with open(path, "a") as f:
          f.write(json.dumps(metrics) + "\n")
  return metrics
