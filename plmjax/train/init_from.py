"""Weights from elsewhere: a new run's params from another plmjax run or a public (Hugging Face)
checkpoint, for continued pretraining (`train.init_from`) and fine-tuning (`model.init_from`).

    config = adopt_checkpoint_architecture(config)      # HF folder: architecture + tokenizer
    params, report = merge_params(fresh, loaded, source=..., key=..., resize=...)

Sources:
  * a plmjax workdir (its latest checkpoint) or WORKDIR/checkpoints/<step>: the params as saved;
  * a Hugging Face checkpoint folder (config.json + model.safetensors): `plmjax.convert.from_hf`.
    The model's architecture fields (sizes, vocabulary, normalisation, ...) come from the
    checkpoint, and so does the tokenizer (data.tokenizer := the folder). A field the config sets
    explicitly (to a value other than the registry model's default) that contradicts the
    checkpoint is an error naming both values; run-time fields (dropout, remat, scan, dtype, which
    heads exist) stay the config's.

A model whose registry entry has an `init_adapter` (ERNIE (THU): `family="Bert"`) also starts from
that family's checkpoints: the adapter maps the loaded params into the model's layout first
(`adapt_loaded`; ERNIE: BERT's first N layers -> the T-Encoder, the next M -> the K-Encoder's token
side) and names the architecture fields that stay the config's (ERNIE's num_layers is N).

Merging (`merge_params`) walks the fresh params of the new model:
  * a weight both sides have with the same shape is loaded;
  * a weight only the new model has (a head the checkpoint lacks: MiniLM has no MLM head, a task
    classifier) keeps its fresh initialisation and is listed in the report ("new");
  * a weight only the checkpoint has (BERT's NSP head in a model without one) is dropped and listed;
  * a shape change is applied only by a named rule (`resize`):
        "copy_rows"  a table with more rows than the checkpoint's (token types: UNILM's 6 from
                     BERT's 2; positions: a longer max_len) gets row i := checkpoint row i mod n,
                     its other dimensions equal;
    any other mismatch is ONE error listing every mismatching weight with both shapes.
  * non-finite values in the loaded weights are an error naming the weights.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional

import jax
import numpy as np

RESIZE_RULES = ("", "copy_rows")
# Fields of a model config that are the run's choice, not the checkpoint's architecture.
RUN_FIELDS = ("dropout_rate", "attention_dropout_rate", "init_std", "dtype", "param_dtype",
              "scan_layers", "remat_policy", "attention_impl", "pooler", "mlm_head", "nsp_head",
              "sbo_head", "sbo_max_offset", "lm_head", "classifier", "embed_dropout",
              "residual_dropout")
# Architecture fields that a resize rule may change (the config's explicit value then wins).
RESIZABLE = {"copy_rows": ("type_vocab_size", "max_len")}


def is_hf_folder(path: str) -> bool:
  """A Hugging Face checkpoint folder: config.json and no plmjax checkpoints/."""
  return bool(path) and os.path.isfile(os.path.join(path, "config.json")) and not os.path.isdir(
      os.path.join(path, "checkpoints"))


def adopt_checkpoint_architecture(config, key: str = "train.init_from"):
  """With `key` naming a Hugging Face folder: a copy of `config` whose model section takes the
  checkpoint's architecture fields and whose data.tokenizer is the folder (see the module doc)."""
  from plmjax.models import registry
  path = _get(config, key)
  if not is_hf_folder(path):
    return config
  module, _ = _from_hf(os.path.abspath(path), _mtime(path))
  ckpt_module_name, ckpt_cfg = type(module).__name__, module.config
  spec = registry.SURVEY[config.model.name]
  adapter = spec.init_adapter if spec.module.__name__ != ckpt_module_name else None
  if spec.module.__name__ != ckpt_module_name and not (adapter and adapter.family == ckpt_module_name):
    raise ValueError(f"{key}={path!r} is a {ckpt_module_name} checkpoint; model.name="
                     f"{config.model.name!r} builds {spec.module.__name__}")
  own = adapter.own_fields if adapter else ()
  defaults = spec.config()
  resize = config.train.get("init_resize", "")
  problems, config = [], config.copy_and_resolve_references()
  for f in dataclasses.fields(ckpt_cfg):
    name = f.name
    if name in RUN_FIELDS or name in own or name in ("vocab_size", "pad_token_id") or name not in config.model:
      continue
    want, have = getattr(ckpt_cfg, name), config.model[name]
    explicit = have != getattr(defaults, name, have)
    if have == want or not explicit:
      config.model[name] = want
    elif name not in RESIZABLE.get(resize, ()):
      problems.append(f"model.{name}={have!r} (the checkpoint has {want!r})")
  if problems:
    raise ValueError(f"{key}={path!r}: the config contradicts the checkpoint's architecture: "
                     + "; ".join(problems) + ". Drop these overrides (the architecture comes from "
                     "the checkpoint)" + ("" if resize else " or name a train.init_resize rule"))
  tok = config.data.get("tokenizer", "")
  if tok and os.path.abspath(tok) != os.path.abspath(path):
    raise ValueError(f"{key}={path!r} brings its own tokenizer; data.tokenizer={tok!r} contradicts it")
  config.data.tokenizer = path
  return config


@functools.lru_cache(maxsize=1)
def _from_hf(path: str, mtime: float):
  """from_hf, once per folder (the architecture and the weights are both read from it)."""
  del mtime    # part of the cache key: a rewritten checkpoint is read again
  from plmjax.convert import from_hf
  module, params = from_hf(path)
  return module, jax.device_get(params)


def _mtime(path: str) -> float:
  return max(os.path.getmtime(os.path.join(path, f)) for f in os.listdir(path))


def _get(config, key: str):
  node = config
  for part in key.split("."):
    node = node.get(part, "") if hasattr(node, "get") else ""
  return node or ""


def load_params(path: str, key: str):
  """-> (params as host arrays, a short source description) of a plmjax run or HF folder."""
  if is_hf_folder(path):
    return _from_hf(os.path.abspath(path), _mtime(path))[1], f"hf:{path}"
  from plmjax.train.checkpoint import restore_params
  return restore_params(path, key), f"plmjax:{path}"


def adapt_loaded(model_name: str, loaded, model_config):
  """A checkpoint of another family -> this model's layout, by the registry's `init_adapter` of
  `model_name` (ERNIE (THU) from BERT) -> (params, a log note or ""); others pass through."""
  from plmjax.models import registry
  spec = registry.SURVEY.get(model_name)
  if spec is None or spec.init_adapter is None:
    return loaded, ""
  return spec.init_adapter.params(loaded, model_config)


@dataclasses.dataclass
class MergeReport:
  loaded: list
  new: list          # in the model, not in the checkpoint: fresh initialisation
  dropped: list      # in the checkpoint, not in the model
  resized: list      # "name: (checkpoint shape) -> (model shape)"

  def summary(self, source: str) -> str:
    lines = [f"init from {source}: {len(self.loaded)} weights loaded"]
    for label, names in (("new (fresh init)", self.new), ("dropped (not in this model)", self.dropped),
                         ("resized (copy_rows)", self.resized)):
      if names:
        lines.append(f"  {label}: {len(names)}: " + ", ".join(names))
    return "\n".join(lines)


def _leaves(tree) -> dict:
  return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def _copy_rows(value: np.ndarray, shape: tuple) -> Optional[np.ndarray]:
  if value.ndim != len(shape) or value.shape[1:] != tuple(shape[1:]) or shape[0] <= value.shape[0]:
    return None
  return value[np.arange(shape[0]) % value.shape[0]]


def merge_params(fresh, loaded, *, source: str, key: str, resize: str = ""):
  """-> (params with `fresh`'s tree and dtypes, MergeReport). See the module docstring."""
  if resize not in RESIZE_RULES:
    raise ValueError(f"train.init_resize={resize!r}: expected one of {RESIZE_RULES}")
  want, got = _leaves(fresh), _leaves(loaded)
  report = MergeReport([], [], sorted(set(got) - set(want)), [])
  bad, nonfinite, out = [], [], {}
  for name, target in want.items():
    if name not in got:
      report.new.append(name)
      out[name] = target
      continue
    value = np.asarray(got[name])
    if value.shape != tuple(target.shape):
      fixed = _copy_rows(value, tuple(target.shape)) if resize == "copy_rows" else None
      if fixed is None:
        bad.append(f"{name}: checkpoint {value.shape} vs model {tuple(target.shape)}")
        continue
      report.resized.append(f"{name}: {value.shape} -> {tuple(target.shape)}")
      value = fixed
    if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
      nonfinite.append(f"{name} ({int((~np.isfinite(value)).sum())} values)")
    report.loaded.append(name)
    out[name] = value.astype(target.dtype)
  if bad:
    raise ValueError(f"{key}={source!r} does not fit this model ({len(bad)} shape mismatches"
                     + ("" if resize else "; no train.init_resize rule") + "): " + "; ".join(bad))
  if nonfinite:
    raise ValueError(f"{key}={source!r}: non-finite values in " + ", ".join(nonfinite))
  leaves = [out[jax.tree_util.keystr(k)] for k, _ in jax.tree_util.tree_leaves_with_path(fresh)]
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(fresh), leaves), report
