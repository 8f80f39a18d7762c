"""Experiment configs: loading `experiments/<model>.py:<arg>`, command-line overrides, validation.

A config is an `ml_collections.ConfigDict` with the sections

    model      name (a plmjax.models.registry name) + every field of that model's config dataclass
               except vocab_size (taken from the data's tokenizer) and dtype / param_dtype
    objective  plmjax.objectives.default_objective_config(name) with overrides
    data       plmjax.data.default_data_config() with overrides (path "" = built-in synthetic corpus)
    optimizer  name, learning_rate, warmup_steps, warmup_frac, decay, end_lr, b1, b2, eps,
               weight_decay, stlr_cut_frac, stlr_ratio (plmjax.train.optim)
    transfer   optional: mode, layer_decay, gradual_unfreezing, unfreeze_every, frozen (the
               transfer links of the one optimizer builder, plmjax.train.optim)
    train      steps, batch_size (global), seed, log_every, checkpoint_every, eval_every,
               eval_steps, grad_accum, clip_norm, keep_checkpoints, prng_impl (threefry2x32 | rbg |
               unsafe_rbg), init_from (a plmjax workdir, WORKDIR/checkpoints/<step>, or a Hugging
               Face checkpoint folder: a new run in an empty workdir starts from its params, with a
               fresh optimizer and step 0; e.g. BERT's length-512 phase after the length-128 one,
               or continued pretraining from a public BERT), profile ("START:STOP": a jax.profiler
               trace of those steps in WORKDIR/profile), best_metric / best_mode (keep the best
               checkpoint by an eval metric beside the newest keep_checkpoints, nonfinite ("stop": a step with a
               non-finite loss / gradient / param ends the run, nothing non-finite is saved;
               "skip": that step's update is left out and counted as skipped_steps),
               io_timeout_s (the longest a checkpoint save or metrics write may block),
               stop_timeout_s (after SIGTERM / SIGINT: the longest the save-and-exit may take)
    mesh       data, fsdp, tensor (device counts; one may be -1 = the rest)
    eval       optional, memory models: tgt_len, mem_len, clamp_len, same_length at evaluation
               (None = as in training); evaluation then threads the memory across eval batches
Fine-tuning configs (plmjax.finetune.config) share the train, optimizer, transfer, mesh and dtype
sections and add task / head / their own model and data sections.
    dtype      compute dtype: "auto" (bfloat16 on GPU/TPU, float32 on CPU) | "float32" | "bfloat16"

Overrides are `--config.train.steps=10` (or `--config.train.steps 10`), parsed by
ml_collections.config_flags with the type of the key it replaces; a whole section may be given as a
dict literal. An unknown key is an error that names it and the closest valid key.
The config is locked after loading, so code cannot add keys by mistake either.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from typing import Sequence

import jax
import ml_collections
from ml_collections import config_dict

from plmjax.models import registry

# Set by the trainer, not the config: vocabulary and padding id from the tokenizer, dtypes from `dtype`.
MODEL_RUNTIME_FIELDS = ("vocab_size", "pad_token_id", "dtype", "param_dtype")
DTYPES = ("auto", "float32", "bfloat16", "float16")
TRAIN_KEYS = ("steps", "batch_size", "seed", "log_every", "checkpoint_every", "eval_every",
              "eval_steps", "grad_accum", "clip_norm", "keep_checkpoints")
# Models with a learned position table of model.max_len rows: longer rows would read past it.
LEARNED_POSITION_MODULES = ("Bert", "GPT", "Seq2Seq")
OPTIMIZER_KEYS = ("name", "learning_rate", "warmup_steps", "decay", "end_lr", "b1", "b2", "eps",
                  "weight_decay")


class ConfigError(ValueError):
  """A config that cannot run: unknown key, bad value, missing section."""


# ---- building sections (used by experiments/*.py) ----------------------------------------------------
def model_section(name: str, **overrides) -> ml_collections.ConfigDict:
  """`name` plus every field of the registry model's config dataclass, with `overrides` applied."""
  spec = registry.SURVEY.get(name)
  if spec is None or spec.config is None:
    raise ConfigError(f"model.name={name!r} is not an implemented registry model")
  defaults = spec.config()
  fields = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)
            if f.name not in MODEL_RUNTIME_FIELDS}
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ConfigError(f"model {name!r} has no field {unknown[0]!r}{_suggest(unknown[0], fields)}")
  fields.update(overrides)
  section = {k: (config_dict.placeholder(str) if v is None else v) for k, v in fields.items()}
  return ml_collections.ConfigDict({"name": name, **section})


def build_model(model_cfg, tokenizer, dtype: str):
  """-> (flax module, model config dataclass) from the `model` section and the data's tokenizer."""
  fields = {k: v for k, v in model_cfg.items() if k != "name"}
  fields.update(vocab_size=int(tokenizer.vocab_size), dtype=resolve_dtype(dtype))
  spec = registry.SURVEY[model_cfg.name]
  if any(f.name == "pad_token_id" for f in dataclasses.fields(spec.config())):
    fields["pad_token_id"] = int(tokenizer.pad_id)
  return registry.build(model_cfg.name, **fields)


def train_section(**overrides) -> ml_collections.ConfigDict:
  """The `train` section with its defaults."""
  return ml_collections.ConfigDict(_checked("train", TRAIN_DEFAULTS, overrides))


TRAIN_DEFAULTS = dict(steps=1000, batch_size=32, seed=0, log_every=10, checkpoint_every=500,
                      eval_every=500, eval_steps=10, grad_accum=1, clip_norm=1.0, keep_checkpoints=3,
                      prng_impl="threefry2x32", init_from="", init_resize="", profile="",
                      best_metric="", best_mode="max", nonfinite="stop",
                      io_timeout_s=600.0, stop_timeout_s=60.0)
OPTIMIZER_DEFAULTS = dict(name="adamw", learning_rate=1e-4, warmup_steps=100, warmup_frac=0.0,
                          decay="linear", end_lr=0.0, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01,
                          stlr_cut_frac=0.1, stlr_ratio=32.0)
TRANSFER_DEFAULTS = dict(mode="full", layer_decay=1.0, gradual_unfreezing=False, unfreeze_every=0,
                         frozen=("^encoder/",))


def transfer_section(**overrides) -> ml_collections.ConfigDict:
  """The `transfer` section (plmjax.train.optim): how pretrained weights train."""
  return ml_collections.ConfigDict(_checked("transfer", TRANSFER_DEFAULTS, overrides))


# `train.prng_impl`: the jax.random implementation behind every key of a run (dropout, masks,
# spans, permutations). threefry2x32 is JAX's default; "rbg" / "unsafe_rbg" use the accelerator's
# random-bit generator, much cheaper for dropout on GPU/TPU (see README "GPU"), with other streams.
PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
NONFINITE_MODES = ("stop", "skip")      # plmjax.train.step.NONFINITE_MODES


# Evaluation-time model fields of memory models (Transformer-XL): Dai et al. evaluate WikiText-103 with
# tgt_len 128, mem_len 1,600, clamp_len 1,000, same_length; none of them changes a parameter.
EVAL_MEMORY_KEYS = {"tgt_len": "segment_len", "mem_len": "mem_len", "clamp_len": "clamp_len",
                    "same_length": "same_length"}


def eval_section(**values) -> ml_collections.ConfigDict:
  """`eval`: tgt_len, mem_len, clamp_len, same_length for evaluation; None (the default) = as in
  training. eval.mem_len=0 scores every segment without memory."""
  c = ml_collections.ConfigDict({"tgt_len": config_dict.placeholder(int),
                                 "mem_len": config_dict.placeholder(int),
                                 "clamp_len": config_dict.placeholder(int),
                                 "same_length": config_dict.placeholder(bool)})
  _checked("eval", dict(c), values)
  c.update(values)
  return c


def eval_seq_len(cfg) -> int:
  """Evaluation row length: data.seq_len, cut to a multiple of eval.tgt_len when that is set (the
  stream continues row to row, so no token is skipped)."""
  tgt = (cfg.get("eval") or {}).get("tgt_len")
  seq = int(cfg.data.seq_len)
  return max(seq // tgt, 1) * tgt if tgt else seq


def eval_model_overrides(cfg) -> dict:
  """The model-config fields the `eval` section sets ({} when it sets none), checked."""
  section = cfg.get("eval") or {}
  out = {EVAL_MEMORY_KEYS[k]: v for k, v in section.items() if v is not None}
  if not out:
    return out
  missing = [k for k, f in EVAL_MEMORY_KEYS.items() if f in out and f not in cfg.model]
  if missing:
    raise ConfigError(f"eval.{missing[0]}: model {cfg.model.name!r} has no "
                      f"{EVAL_MEMORY_KEYS[missing[0]]} field (eval memory overrides are for "
                      "Transformer-XL)")
  if out.get("segment_len", 1) < 1:
    raise ConfigError(f"eval.tgt_len={out['segment_len']} must be >= 1")
  if out.get("mem_len", 0) < 0 or out.get("clamp_len", -1) < -1:
    raise ConfigError(f"eval.mem_len must be >= 0 and eval.clamp_len >= -1 (-1: no clamping), got "
                      f"{dict(section)}")
  return out


def apply_prng_impl(cfg) -> None:
  """Sets `jax_default_prng_impl` from train.prng_impl; call before the run makes any key."""
  jax.config.update("jax_default_prng_impl", cfg.train.get("prng_impl", "threefry2x32"))


def optimizer_section(**overrides) -> ml_collections.ConfigDict:
  """The `optimizer` section (see plmjax.train.optim) with its defaults."""
  return ml_collections.ConfigDict(_checked("optimizer", OPTIMIZER_DEFAULTS, overrides))


def mesh_section(**overrides) -> ml_collections.ConfigDict:
  """Device mesh sizes; the default is pure data parallelism over every device."""
  return ml_collections.ConfigDict(_checked("mesh", dict(data=-1, fsdp=1, tensor=1), overrides))


def _checked(section: str, defaults: dict, overrides: dict) -> dict:
  for k in overrides:
    if k not in defaults:
      raise ConfigError(f"{section} has no key {k!r}{_suggest(k, defaults)}")
  return {**defaults, **overrides}


def resolve_dtype(dtype: str) -> str:
  """"auto" -> bfloat16 on accelerators, float32 on CPU."""
  if dtype == "auto":
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"
  return dtype


# ---- loading and overriding --------------------------------------------------------------------------
# ml_collections.config_flags does the work: `--config FILE.py:ARG` runs FILE's get_config(ARG), and
# every `--config.a.b=v` (or `--config.a.b v`; a bare `--config.flag` sets a bool) is parsed with the
# type of the value it replaces (int, float, bool, str, tuple; a section from a dict literal). What is
# added here is one ConfigError for every way a command line can be wrong, naming the argument.
def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """"path/to/file.py[:arg]" + ["--config.x=y", ...] -> get_config(arg) of that file, overridden,
  unlocked (callers validate and lock)."""
  from absl import flags
  from ml_collections import config_flags
  path = spec.partition(":")[0]
  if not os.path.isfile(path):     # config_flags defers a missing file to the first attribute read
    raise ConfigError(f"config file {path!r} does not exist (from --config {spec!r})")
  with open(path, encoding="utf-8") as f:
    if "def get_config" not in f.read():
      raise ConfigError(f"config file {path!r} has no get_config(arg) function")
  argv = ["plmjax", f"--config={spec}", *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "experiment config", flag_values=values,
                                  lock_config=False, sys_argv=argv)
  try:
    rest = values(argv)[1:]
  except Exception as e:       # noqa: BLE001 - absl / config_flags / get_config errors
    raise _diagnose(spec, overrides, e) from None
  if rest:
    raise ConfigError(f"unexpected argument {rest[0]!r}: overrides look like --config.train.steps=10")
  return values.config


def _diagnose(spec: str, overrides: Sequence[str], error: Exception) -> ConfigError:
  """The ConfigError for a failed parse: an unknown key names the closest valid one; a section
  given a value lists its keys; anything else keeps config_flags' message (the flag and its value)."""
  from ml_collections.config_flags import config_flags as cf
  if isinstance(error, (KeyError, AttributeError)) or "Error whilst parsing config file" not in str(error):
    try:
      cfg = cf.ConfigFileFlagParser("config", lock_config=False).parse(spec)
    except Exception:        # noqa: BLE001 - the file itself fails: report that below
      cfg = None
    if isinstance(cfg, ml_collections.ConfigDict):
      keys = all_keys(cfg)
      sections = {k.rsplit(".", i)[0] for k in keys for i in range(1, k.count(".") + 1)}
      for arg in overrides:
        if not arg.startswith("--config."):
          continue
        key, _, text = arg[len("--config."):].partition("=")
        if key not in keys and key not in sections:
          return ConfigError(f"unknown config key {key!r}{_suggest(key, keys)}")
        if key in sections and text and not text.lstrip().startswith("{"):
          node = cfg
          for part in key.split("."):
            node = node[part]
          return ConfigError(f"config key {key!r} is a section, not a value; its keys: "
                             f"{sorted(node.keys())} (or give the whole section as a dict literal)")
  message = str(error)
  if "Error whilst parsing config file" in message:     # get_config(arg) raised: its own message
    last = message.strip().splitlines()[-1]
    return ConfigError(f"--config {spec!r}: {last.split(': ', 1)[-1]}")
  message = message.replace("flag --config.", "--config.")
  return ConfigError(message if message.strip() else f"{type(error).__name__} in --config {spec!r}")


def _suggest(key: str, candidates) -> str:
  close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.5)
  return f" (did you mean {close[0]!r}?)" if close else ""


def all_keys(cfg, prefix: str = "") -> list[str]:
  """Every leaf key, dotted."""
  out = []
  for k, v in cfg.items():
    if isinstance(v, ml_collections.ConfigDict):
      out += all_keys(v, f"{prefix}{k}.")
    else:
      out.append(prefix + k)
  return out


def get_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads `spec`, applies the `--config.x=y` overrides, validates and locks the result."""
  cfg = load_config(spec, overrides)
  validate(cfg)
  cfg.lock()
  return cfg


def validate(cfg: ml_collections.ConfigDict) -> None:
  """One clear error for the first problem found."""
  for section in ("model", "objective", "data"):
    if section not in cfg:
      raise ConfigError(f"config has no {section!r} section")
  validate_engine_sections(cfg)
  eval_model_overrides(cfg)
  _validate_model_sizes(cfg.model)
  module = getattr(registry.SURVEY.get(cfg.model.name), "module", None)
  if (getattr(module, "__name__", "") in LEARNED_POSITION_MODULES
      and cfg.data.seq_len > cfg.model.get("max_len", cfg.data.seq_len)):
    raise ConfigError(f"data.seq_len={cfg.data.seq_len} exceeds model.max_len={cfg.model.max_len} "
                      f"(the size of {cfg.model.name}'s learned position table)")


def parse_profile(spec: str) -> tuple[int, int] | None:
  """train.profile "START:STOP" -> (START, STOP) (steps START .. STOP-1 are traced); "" -> None."""
  if not spec:
    return None
  start, sep, stop = str(spec).partition(":")
  try:
    a, b = int(start), int(stop)
  except ValueError:
    a = b = -1
  if not sep or a < 0 or b <= a:
    raise ConfigError(f"train.profile={spec!r}: expected START:STOP with 0 <= START < STOP, e.g. 10:13")
  return a, b


def validate_engine_sections(cfg, steps_required: bool = True) -> None:
  """The sections every run shares (train, optimizer, transfer, mesh, dtype): pretraining and
  fine-tuning configs alike."""
  from plmjax.train.optim import DECAYS, OPTIMIZERS
  for section in ("optimizer", "train", "mesh"):
    if section not in cfg:
      raise ConfigError(f"config has no {section!r} section")
  for k in TRAIN_KEYS:
    if k not in cfg.train:
      raise ConfigError(f"config has no train.{k}")
  for k in OPTIMIZER_KEYS:
    if k not in cfg.optimizer:
      raise ConfigError(f"config has no optimizer.{k}")
  for k in ("data", "fsdp", "tensor"):
    if k not in cfg.mesh:
      raise ConfigError(f"config has no mesh.{k}")
  if cfg.get("dtype", "auto") not in DTYPES:
    raise ConfigError(f"dtype={cfg.get('dtype')!r}: expected one of {DTYPES}")
  t, o = cfg.train, cfg.optimizer
  positive = ["batch_size", "log_every", "checkpoint_every", "grad_accum", "keep_checkpoints"]
  for k in (["steps", "eval_every"] if steps_required else []) + positive:
    if t[k] < 1:
      raise ConfigError(f"train.{k}={t[k]} must be >= 1")
  if t.get("prng_impl", "threefry2x32") not in PRNG_IMPLS:
    raise ConfigError(f"train.prng_impl={t.prng_impl!r}: expected one of {PRNG_IMPLS}")
  if t.get("nonfinite", "stop") not in NONFINITE_MODES:
    raise ConfigError(f"train.nonfinite={t.nonfinite!r}: expected one of {NONFINITE_MODES}")
  for k in ("io_timeout_s", "stop_timeout_s"):
    if k in t and not t[k] > 0:
      raise ConfigError(f"train.{k}={t[k]} must be > 0 (seconds)")
  if t.batch_size % t.grad_accum:
    raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}")
  parse_profile(t.get("profile", ""))
  if t.get("best_mode", "max") not in ("max", "min"):
    raise ConfigError(f"train.best_mode={t.best_mode!r}: expected 'max' or 'min'")
  if o.name not in OPTIMIZERS:
    raise ConfigError(f"optimizer.name={o.name!r}: expected one of {OPTIMIZERS}")
  if o.decay not in DECAYS:
    raise ConfigError(f"optimizer.decay={o.decay!r}: expected one of {DECAYS}")
  if "transfer" in cfg:
    tr = cfg.transfer
    for k in TRANSFER_DEFAULTS:
      if k not in tr:
        raise ConfigError(f"config has no transfer.{k}")
    if tr.mode not in ("full", "features"):
      raise ConfigError(f"transfer.mode={tr.mode!r}: expected 'full' or 'features'")
    if not 0 < tr.layer_decay <= 1:
      raise ConfigError(f"transfer.layer_decay={tr.layer_decay} must be in (0, 1]")


# Model sizes that must be positive integers (where a model has them), and the attention split.
POSITIVE_MODEL_KEYS = ("hidden_size", "num_layers", "num_heads", "mlp_dim", "max_len",
                       "num_decoder_layers", "max_chars", "char_dim", "proj_size", "type_vocab_size")


def _validate_model_sizes(model) -> None:
  for k in POSITIVE_MODEL_KEYS:
    v = model.get(k)
    if isinstance(v, int) and not isinstance(v, bool) and v < 1:
      raise ConfigError(f"model.{k}={v} must be >= 1")
  heads, width = model.get("num_heads"), model.get("hidden_size")
  if isinstance(heads, int) and isinstance(width, int) and not model.get("head_size") and width % heads:
    raise ConfigError(f"model.hidden_size={width} is not divisible by model.num_heads={heads} "
                      "(each head gets hidden_size / num_heads dimensions)")
