"""A fine-tuning run for the one training loop (plmjax.train.loop.train_and_evaluate).

    run = FinetuneRun(cfg, workdir)          # what `plmjax finetune` builds
    train_and_evaluate(cfg, workdir, run)    # the same loop, step, checkpointer and logs as pretraining

builds, in order: each task's examples (plmjax.finetune.tasks) -> the tokenizer -> the encoder
(plmjax.finetune.encoder: a Hugging Face folder, a plmjax run, or a fresh registry model) -> task
features and padded, length-bucketed batches (plmjax.finetune.features) -> a TaskModel with one head
per task -> the TaskObjective (plmjax.finetune.model) -> the one optimizer builder with the transfer
links (plmjax.train.optim) -> a sharded TrainState (plmjax.train.state) -> the engine's jitted,
donated train step (plmjax.train.step), one compilation per (task, bucket length).

On a fresh start (`init_params`) the encoder's pretrained weights replace its fresh ones through
plmjax.train.init_from.merge_params (new weights, e.g. SiATL's task LSTM, keep their init and are
listed). Evaluation (`evaluate`, every train.eval_every steps and at the end) predicts the dev set of
every task on device and scores it on the host (accuracy / F1 / Matthews / span EM...), logged as
"split": "dev"; the checkpointer keeps the newest checkpoint and the best one by train.best_metric.
At the end (`finish`) the fine-tuned params are written to WORKDIR/params.safetensors ("/"-joined
names) and the final dev metrics to WORKDIR/eval.json. `plmjax eval` on the workdir restores the
latest checkpoint, writes the dev metrics and the test-set predictions in the GLUE submission layout
(WORKDIR/predictions/<TASK>.tsv: "index<TAB>prediction").

Multi-host: every process builds the same global batches and feeds its own rows
(rows [p B / P, (p + 1) B / P)); predictions come back replicated.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import jax
import numpy as np

from plmjax.finetune import config as fconfig
from plmjax.finetune.encoder import add_framing_tokens, check_vocab_fits, load_encoder, plmjax_tokenizer
from plmjax.finetune.features import Framing, eval_batches, pad_batch, train_stream
from plmjax.finetune.model import TaskModel, TaskObjective, aux_lm_schedule
from plmjax.finetune.taskdata import prepare_task, read_examples, texts_of
from plmjax.finetune.tasks import chinese_units, get_task, read_task, read_test
from plmjax.train.checkpoint import Checkpointer
from plmjax.train.init_from import is_hf_folder
from plmjax.train.loop import Run
from plmjax.train.mesh import make_mesh, shard_batch
from plmjax.train.optim import make_optimizer
from plmjax.train.state import count_params, create_train_state
from plmjax.train.step import make_eval_step, make_train_step

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
    prefix = os.path.join(workdir, "tokenizer")
    if os.path.isfile(prefix + ".model"):     # a resumed run keeps the vocabulary it trained
      return load_tokenizer(prefix + ".model")
    return train_sentencepiece(list(texts), prefix, int(cfg.data.vocab_size), model_type="word")
  if not spec:
    raise fconfig.FinetuneConfigError("config.data.tokenizer: empty and model.init_from is empty; "
                                      "name a tokenizer or 'build'")
  return load_tokenizer(spec)


def best_metric(cfg, tasks: dict) -> str:
  """train.best_metric; "auto": the first task's first metric ("<task>/<metric>" if multi-task)."""
  name = cfg.train.best_metric
  if name != "auto":
    return name
  first = next(iter(tasks.values()))
  metric = first.spec.metrics[0]
  return metric if len(tasks) == 1 else f"{first.name}/{metric}"


class FinetuneRun:
  eval_split = "dev"
  returns_eval = True

  def __init__(self, cfg, workdir: str, create: bool = True):
    fconfig.validate(cfg)
    self.config, self.workdir = cfg, os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    t = cfg.train
    examples = {}
    for name, task, d, n_train, n_eval in task_list(cfg):
      spec = get_task(task)
      examples[name] = (spec, read_examples(spec, d, n_train, n_eval, cfg.data.unit))
    texts = [x for _, (tr, _) in examples.values() for x in texts_of(tr)]
    self.tokenizer = tok = load_tokenizer_for(cfg, self.workdir, texts)
    enc = load_encoder(cfg, tok)
    if int(cfg.data.max_len) > int(enc.module.config.max_len):
      raise fconfig.FinetuneConfigError(
          f"config.data.max_len={cfg.data.max_len} exceeds the encoder's max_len="
          f"{enc.module.config.max_len} ({enc.source}): positions past it have no embedding")
    if cfg.head.input_transform == "gpt":
      enc, (start, delim, extract) = add_framing_tokens(enc, t.seed)
      self.framing = Framing.gpt(start, delim, extract, tok.pad_id)
    else:
      self.framing = Framing.bert(tok)
    self.encoder = enc
    self.tasks = {name: prepare_task(name, spec, ex, tok, self.framing, int(cfg.data.max_len))
                  for name, (spec, ex) in examples.items()}
    for td in self.tasks.values():
      check_vocab_fits(max(int(f["input_ids"].max()) for f in td.train + td.dev), enc)
    self.model = TaskModel(enc.module, tuple(td.head for td in self.tasks.values()),
                           pooling=cfg.head.pooling, features=cfg.head.features,
                           freeze_encoder=cfg.transfer.mode == "features",
                           dropout=float(cfg.head.dropout), lm_aux=float(cfg.head.lm_coef) > 0)

    self.mesh = make_mesh(cfg.mesh)
    self.buckets = fconfig.buckets(cfg)
    self.stream, spe = train_stream(self.tasks, int(t.batch_size), self.buckets, self.framing.pad,
                                    int(t.seed), bool(cfg.data.group_by_length))
    self.steps_per_epoch = spe
    self.total_steps = int(t.steps) if t.steps > 0 else int(t.epochs) * spe
    kinds = {name: td.head.kind for name, td in self.tasks.items()}
    decay_every = int(cfg.head.lm_decay_every) or spe
    self.objective = TaskObjective(kinds, aux_lm_schedule(float(cfg.head.lm_coef),
                                                          float(cfg.head.lm_coef_decay), decay_every))
    sample = self._device_rows(self._sample_batch())
    init_fn = lambda model, rngs, inputs: model.init(rngs, inputs, method=TaskModel.init_all)  # noqa: E731
    abstract = jax.eval_shape(lambda k: init_fn(self.model, {"params": k, "dropout": k}, sample),
                              jax.random.PRNGKey(0))
    from flax import linen as nn
    self.tx, self.schedule = make_optimizer(
        cfg.optimizer, self.total_steps, float(t.clip_norm), params=nn.meta.unbox(abstract["params"]),
        transfer=cfg.transfer, num_layers=enc.num_layers, steps_per_epoch=spe)
    self.state, self.shardings = create_train_state(self.model, self.tx, sample, self.mesh,
                                                    int(t.seed), init_fn=init_fn)
    self._train_steps, self._eval_steps = {}, {}
    self.checkpointer = Checkpointer(os.path.join(self.workdir, "checkpoints"), t.keep_checkpoints,
                                     best_metric=best_metric(cfg, self.tasks), best_mode=t.best_mode,
                                     io_timeout_s=t.get("io_timeout_s", 600), create=create)
    self.last_eval = None

  # ---- batches ---------------------------------------------------------------------------------------
  def _sample_batch(self) -> dict:
    first = next(iter(self.tasks.values()))
    return pad_batch(first.train[:1], int(self.config.train.batch_size), self.buckets[0],
                     self.framing.pad)

  def _device_rows(self, batch: dict) -> dict:
    """This process' rows of a global host batch, host-only keys dropped."""
    n, p = jax.process_count(), jax.process_index()
    rows = next(iter(batch.values())).shape[0] // n
    return {k: v[p * rows:(p + 1) * rows] for k, v in batch.items() if k not in HOST_ONLY}

  def _steps_for(self, cache: dict, batch: dict, make):
    key = tuple(sorted((k, v.ndim) for k, v in batch.items()))
    if key not in cache:
      shapes = {k: jax.ShapeDtypeStruct((v.shape[0] * jax.process_count(),) + v.shape[1:], v.dtype)
                for k, v in batch.items()}
      cache[key] = make(shapes)
    return cache[key]

  def train_iterator(self):
    return iter(self.stream)              # a grain DatasetIterator: checkpointed with the state

  def train(self, item) -> tuple[dict, int]:
    name, host = item
    local = self._device_rows(host)
    step = self._steps_for(self._train_steps, local, lambda shapes: make_train_step(
        self.model, self.objective, self.tx, self.schedule, self.mesh, self.shardings, shapes,
        grad_accum=int(self.config.train.grad_accum),
        nonfinite=self.config.train.get("nonfinite", "stop")))
    self.state, metrics = step(self.state, shard_batch(local, self.mesh), task=name)
    return metrics, int(np.sum(host["attention_mask"]))

  # ---- weights ---------------------------------------------------------------------------------------
  def init_params(self) -> None:
    """The pretrained encoder's weights into the fresh task model (model.init_from)."""
    if self.encoder.params is None:
      return
    from plmjax.train.init_from import merge_params
    fresh = jax.device_get(self.state.params)
    merged, report = merge_params(fresh["encoder"], jax.device_get(self.encoder.params),
                                  source=self.encoder.source, key="model.init_from")
    self.state = self.state.replace(params=jax.device_put({**fresh, "encoder": merged},
                                                          self.shardings.params))
    self.encoder.params = None          # loaded; the host copy is not needed any more
    if jax.process_index() == 0 and (report.new or report.dropped):
      print(report.summary(self.encoder.source), flush=True)

  restore_latest = Run.restore_latest      # the engine's resume: the newest intact checkpoint

  # ---- evaluation ------------------------------------------------------------------------------------
  def should_evaluate(self, done: int) -> bool:
    every = int(self.config.train.eval_every)
    return done == self.total_steps or (every > 0 and done % every == 0)

  def _predict(self, name: str, features: list) -> dict:
    """{feature index: per-row predictions} over `features` of task `name`."""
    rows = {}
    key = jax.random.PRNGKey(0)
    for b in eval_batches(features, int(self.config.train.eval_batch_size), self.buckets,
                          self.framing.pad):
      local = self._device_rows(b)
      step = self._steps_for(self._eval_steps, local, lambda shapes: make_eval_step(
          self.model, self.objective, self.mesh, self.shardings, shapes, predictions=True))
      pred = jax.device_get(step(self.state.params, shard_batch(local, self.mesh), key, task=name))
      for r in range(int(b["weights"].sum())):
        rows[int(b["index"][r])] = {k: np.asarray(v[r]) for k, v in pred.items()}
    return rows

  def evaluate(self) -> dict:
    out = {}
    for name, td in self.tasks.items():
      metrics = td.score(self._predict(name, td.dev))
      out.update(metrics if len(self.tasks) == 1 else {f"{name}/{k}": v for k, v in metrics.items()})
    self.last_eval = out
    return out

  def write_test_predictions(self) -> list[str]:
    """WORKDIR/predictions/<TASK>.tsv for every sentence task with a test file (GLUE layout)."""
    from plmjax.finetune.features import encode_sentences
    written = []
    for name, td in self.tasks.items():
      spec = td.spec
      if spec.kind not in ("classification", "regression"):
        continue
      d = self.config.data.dir if self.config.task != "multitask" else self.config.tasks[name].dir
      path = os.path.join(d, spec.test_file)
      if not os.path.isfile(path):
        continue
      ids, examples = read_test(spec, path)
      if spec.chinese:     # the training run's input units (word units: the train text's lexicon)
        raw = [e["text_a"] for e in read_task(spec, d)[0]]
        examples = chinese_units(examples, self.config.data.unit, raw)
      feats = encode_sentences(examples, self.tokenizer, self.framing, int(self.config.data.max_len),
                               regression=spec.kind == "regression")
      pred = self._predict(name, feats)
      out = os.path.join(self.workdir, "predictions", f"{spec.folder}.tsv")
      label = (lambda p: spec.labels[int(p)]) if spec.kind == "classification" else float
      rows = [f"{ident}\t{label(pred[i]['pred'])}\n" for i, ident in enumerate(ids)]
      self._write(out, ("index\tprediction\n" + "".join(rows)).encode("utf-8"))
      written.append(out)
      print(f"test predictions ({len(ids)} rows): {out}", flush=True)
    return written

  # ---- the end -------------------------------------------------------------------------------------
  def describe(self) -> str:
    enc = self.encoder
    return (f"finetune: {', '.join(self.tasks)} | encoder {enc.source} ({enc.num_layers} layers, "
            f"{count_params(self.state.params):,} params) | {self.total_steps} steps "
            f"({self.steps_per_epoch}/epoch) | buckets {self.buckets} | mesh {dict(self.mesh.shape)}")

  def _write(self, path: str, data: bytes) -> None:
    """Writes a whole output file, or nothing: PATH.tmp, then renamed into place, under the run's
    write guard (Checkpointer.write_guard: the io deadline; an OSError -> one WriteError naming
    PATH and the last complete checkpoint)."""
    with self.checkpointer.write_guard(f"writing {path}"):
      os.makedirs(os.path.dirname(path), exist_ok=True)
      try:
        with open(path + ".tmp", "wb") as f:
          f.write(data)
        os.replace(path + ".tmp", path)
      except OSError:
        if os.path.isfile(path + ".tmp"):
          os.remove(path + ".tmp")
        raise

  def finish(self) -> None:
    """The fine-tuned params (WORKDIR/params.safetensors) and final dev metrics (eval.json)."""
    from flax import traverse_util
    from safetensors.numpy import save
    result = self.last_eval if self.last_eval is not None else self.evaluate()
    if jax.process_index() != 0:
      return
    flat = traverse_util.flatten_dict(jax.device_get(self.state.params), sep="/")
    self._write(os.path.join(self.workdir, "params.safetensors"),
                save({k: np.ascontiguousarray(v) for k, v in flat.items()}))
    self._write(os.path.join(self.workdir, "eval.json"),
                json.dumps(result, indent=1, sort_keys=True).encode("utf-8"))
    print("dev: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()) +
          f" | params: {self.workdir}/params.safetensors", flush=True)
