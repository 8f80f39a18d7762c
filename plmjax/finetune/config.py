"""The fine-tuning config: defaults, per-task settings, validation.

    cfg = finetune_config("mrpc", data={"max_len": 128})   # ml_collections.ConfigDict
    plmjax finetune --config experiments/finetune.py:mrpc --workdir DIR --config.train.epochs=1

Sections and keys (an unknown key on the command line is an error naming it):

    task                 a plmjax.finetune.tasks.TASKS name, or "multitask" (then `tasks`)
    tasks                multi-task only: {name: {task, dir, max_train_examples, max_eval_examples}}
    model.init_from      Hugging Face checkpoint folder (through plmjax.convert.from_hf), a plmjax
                         workdir / checkpoint, or "" (random init of model.name: from scratch)
    model.name           registry name for "" (random init); model.arch: its size overrides (with
                         a plmjax run: overrides of the run's model config, e.g. SiATL's task_hidden)
    model.wrap           "" | "siatl": a ULMFiT (AWD-LSTM) LM run inside SiATL's task LSTM +
                         self-attention (new layers random; plmjax.finetune.encoder)
    model.dropout_rate   encoder dropout (-1: keep the checkpoint's)
    head.pooling         pooler | cls | mean | extract          head.dropout
    head.features        last | scalar_mix (ELMo)               head.input_transform  bert | gpt
    head.lm_coef         weight of the auxiliary LM loss (GPT-1: 0.5; SiATL: gamma_0 = 0.2; 0 = off)
    head.lm_coef_decay   SiATL's exponential decay of that weight: lm_coef * lm_coef_decay ** n,
                         n = step // head.lm_decay_every (0 = one epoch), computed in the jitted
                         step (plmjax.models.siatl.aux_lm_weight); 1 = constant (GPT-1)
    data.dir             the task's folder (default ../shared/data/<folder>)
    data.tokenizer       tokenizer spec (plmjax.data.tokenizer.load_tokenizer) or a plmjax workdir
                         (its vocabulary: a scratch baseline beside a pretrained run); "" = model.init_from;
                         "build" = a whitespace-unit sentencepiece vocabulary trained on the task's
                         training text into the workdir (data.vocab_size units)
    data.max_len, data.buckets (() = quarters of max_len), data.group_by_length
    data.max_train_examples, data.max_eval_examples   (-1 = all; the first N rows)
    data.unit            chnsenticorp input units: char | word
    train.*              the engine's train section (plmjax.train.config.train_section: seed,
                         log_every, checkpoint_every, keep_checkpoints, grad_accum, clip_norm,
                         prng_impl, profile, best_metric, ...) plus epochs | steps (> 0 wins) and
                         eval_batch_size; eval_every <= 0: evaluate at the end only; best_metric
                         "auto" = the (first) task's first metric
    optimizer.*          the engine's optimizer section (plmjax.train.optim: name, learning_rate,
                         warmup_steps | warmup_frac (warmup_steps < 0), decay linear | stlr |
                         constant | cosine, ...)
    transfer.*           mode (full | features), layer_decay, gradual_unfreezing, unfreeze_every,
                         frozen (regexes; the transfer links of plmjax.train.optim)
    mesh.*, dtype        as for pretraining (plmjax.train.mesh)

A fine-tuning run goes through the same loop as pretraining (plmjax.train.loop; the run is
plmjax.finetune.run.FinetuneRun): checkpoints, resume, SIGTERM, TensorBoard, metrics.jsonl.
"""
from __future__ import annotations

import os

import ml_collections

from plmjax.finetune.tasks import TASKS
from plmjax.train.config import (ConfigError, mesh_section, optimizer_section, train_section,
                                 transfer_section, validate_engine_sections)

DATA_ROOT = os.environ.get("PLMJAX_DATA", os.path.join("..", "shared", "data"))


class FinetuneConfigError(ConfigError):
  """A fine-tuning config that cannot run; the message names the key."""


def _section(d: dict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(d)


def finetune_config(task: str, **sections) -> ml_collections.ConfigDict:
  """Defaults for `task`, with `sections` = {section: {key: value}} applied on top."""
  if task != "multitask" and task not in TASKS:
    raise FinetuneConfigError(f"task={task!r}: unknown; known: {sorted(TASKS)} or 'multitask'")
  folder = TASKS[task].folder if task in TASKS else ""
  cfg = ml_collections.ConfigDict({
      "task": task,
      "tasks": {},
      "model": {"init_from": "", "name": "bert", "arch": {}, "dropout_rate": -1.0,
                "scan_layers": True, "wrap": ""},
      "head": {"pooling": "pooler", "dropout": 0.1, "features": "last", "input_transform": "bert",
               "lm_coef": 0.0, "lm_coef_decay": 1.0, "lm_decay_every": 0},
      "data": {"dir": os.path.join(DATA_ROOT, folder) if folder else "", "tokenizer": "",
               "vocab_size": 8000, "max_len": 128, "buckets": (), "group_by_length": True,
               "max_train_examples": -1, "max_eval_examples": -1, "unit": "char"},
      "train": {**train_section(steps=-1, log_every=10, checkpoint_every=1000, eval_every=-1,
                                eval_steps=-1, keep_checkpoints=1, clip_norm=1.0,
                                best_metric="auto"),
                "epochs": 3, "eval_batch_size": 64},
      "optimizer": optimizer_section(learning_rate=2e-5, weight_decay=0.01, eps=1e-8, decay="linear",
                                     warmup_frac=0.1, warmup_steps=-1),
      "transfer": transfer_section(),
      "mesh": mesh_section(),
      "dtype": "float32",
  })
  for name, values in sections.items():
    if name not in cfg:
      raise FinetuneConfigError(f"finetune_config: no section {name!r}; sections: {sorted(cfg.keys())}")
    if not isinstance(values, dict):
      cfg[name] = values
      continue
    for k, v in values.items():
      if k not in cfg[name] and name not in ("tasks", "model"):
        raise FinetuneConfigError(f"finetune_config: no key {name}.{k}")
      cfg[name][k] = v
  return cfg


def task_entry(task: str, dir: str = "", max_train_examples: int = -1,
               max_eval_examples: int = -1) -> dict:
  """One `tasks` entry of a multi-task config."""
  return {"task": task, "dir": dir or os.path.join(DATA_ROOT, TASKS[task].folder),
          "max_train_examples": max_train_examples, "max_eval_examples": max_eval_examples}


def validate(cfg) -> None:
  def need(ok, key, msg):
    if not ok:
      raise FinetuneConfigError(f"config.{key}: {msg}")
  for section in ("task", "tasks", "model", "head", "data", "train", "optimizer", "transfer", "mesh"):
    need(section in cfg, section, "missing section")
  need(cfg.task == "multitask" or cfg.task in TASKS, "task", f"{cfg.task!r} is not one of {sorted(TASKS)}")
  if cfg.task == "multitask":
    need(len(cfg.tasks) >= 1, "tasks", "a multitask config needs at least one task")
    for name, t in cfg.tasks.items():
      need(t.task in TASKS, f"tasks.{name}.task", f"{t.task!r} is not one of {sorted(TASKS)}")
  else:
    need(bool(cfg.data.dir), "data.dir", "no task folder given")
  need(cfg.train.epochs > 0 or cfg.train.steps > 0, "train.epochs", "set train.epochs or train.steps > 0")
  need(not cfg.train.init_from, "train.init_from", "fine-tuning starts from model.init_from")
  try:
    validate_engine_sections(cfg, steps_required=False)
  except ConfigError as e:
    raise FinetuneConfigError(f"config.{e}") from None
  need(cfg.data.max_len >= 8, "data.max_len", "must be >= 8")
  b = tuple(cfg.data.buckets)
  need(not b or (list(b) == sorted(b) and b[-1] == cfg.data.max_len), "data.buckets",
       f"{b} must be increasing and end at data.max_len={cfg.data.max_len}")
  need(cfg.head.input_transform in ("bert", "gpt"), "head.input_transform", "expected bert or gpt")
  need(cfg.data.unit in ("char", "word"), "data.unit", "expected char or word")
  need(cfg.head.lm_coef >= 0, "head.lm_coef", f"{cfg.head.lm_coef} must be >= 0 (0 = off)")
  need(0 < cfg.head.lm_coef_decay <= 1, "head.lm_coef_decay",
       f"{cfg.head.lm_coef_decay} must be in (0, 1] (1 = a constant weight)")
  need(cfg.head.lm_coef_decay == 1 or cfg.head.lm_coef > 0, "head.lm_coef_decay",
       f"{cfg.head.lm_coef_decay} decays nothing: head.lm_coef is 0 (the auxiliary LM loss is off)")
  need(int(cfg.head.lm_decay_every) == cfg.head.lm_decay_every and cfg.head.lm_decay_every >= 0,
       "head.lm_decay_every", f"{cfg.head.lm_decay_every} must be an integer >= 0 (0 = one epoch)")

  need(cfg.model.get("wrap", "") in ("", "siatl"), "model.wrap", f"{cfg.model.get('wrap')!r}: expected '' or 'siatl'")
  need(not cfg.model.get("wrap") or bool(cfg.model.init_from), "model.wrap",
       "wraps a pretrained LM: set model.init_from to a ulmfit run")



def buckets(cfg) -> tuple[int, ...]:
  if cfg.data.buckets:
    return tuple(int(b) for b in cfg.data.buckets)
  m = int(cfg.data.max_len)
  return tuple(sorted({max(8, m * k // 4) for k in (1, 2, 3, 4)}))
