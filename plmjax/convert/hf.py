"""Hugging Face checkpoint folders: reading (checked), writing, and the two entry points.

    module, params = from_hf(folder)                       # import
    to_hf(model_name, config, params, folder)              # export (config.json + model.safetensors)

A checkpoint folder holds `config.json` and `model.safetensors` (or a sharded
`model.safetensors.index.json`), read with numpy alone; a legacy `pytorch_model.bin` is read through
`torch.load(weights_only=True)` only when torch happens to be installed (plmjax never needs torch).
Reading is checked: a truncated or corrupted file is an error naming it, tensors with NaN / inf
values are an error naming each with its count, and an index naming absent shards (or tensors the
shards do not hold) is an error listing them.

Each model family registers an importer `fn(hf_config, state) -> (module, params)` in `CONVERTERS`
(keyed by config.json's `model_type`) and an exporter `fn(config, params) -> (hf_config, state)` in
`EXPORTERS` (keyed by the plmjax registry name). Both run the family's one declared mapping
(plmjax.convert.mapping.StateMapper), in opposite directions.
"""
from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np

from plmjax.convert.mapping import CheckpointError

CONVERTERS: dict[str, Callable] = {}
EXPORTERS: dict[str, Callable] = {}
# config.json model_type -> the plmjax registry model an import builds
REGISTRY_NAME = {"bert": "bert", "roberta": "roberta", "ernie": "ernie1", "openai-gpt": "gpt1",
                 "gpt2": "gpt2", "transfo-xl": "transformer_xl", "xlnet": "xlnet"}

__all__ = ["CONVERTERS", "EXPORTERS", "REGISTRY_NAME", "CheckpointError", "register", "register_export", "read_config",
           "read_state", "from_hf", "to_hf", "activation", "hf_activation"]


def register(*model_types: str):
  def deco(fn):
    for t in model_types:
      CONVERTERS[t] = fn
    return fn
  return deco


def register_export(*model_names: str):
  def deco(fn):
    for n in model_names:
      EXPORTERS[n] = fn
    return fn
  return deco


# --------------------------------------------------------------------------------------------------
# Reading


def read_config(path: str) -> dict:
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise FileNotFoundError(f"{path}: no config.json (expected a Hugging Face checkpoint folder)")
  with open(cfg_path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise CheckpointError(f"{cfg_path}: line {e.lineno}: invalid JSON ({e.msg})") from None


def check_finite(state: dict[str, np.ndarray], file: str) -> None:
  """One error naming every floating-point tensor of `file` that holds NaN or inf (with counts)."""
  bad = []
  for k, v in state.items():
    v = np.asarray(v)
    if np.issubdtype(v.dtype, np.floating):
      n = int(v.size - np.count_nonzero(np.isfinite(v)))
      if n:
        bad.append(f"{k} ({n} of {v.size} values)")
  if bad:
    raise CheckpointError(f"{file}: {len(bad)} tensor(s) hold NaN/inf values (a corrupted checkpoint): "
                          + ", ".join(sorted(bad)))


def _load_safetensors(file: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file
  try:
    state = dict(load_file(file))
  except Exception as e:   # SafetensorError, OSError: truncated / corrupted header or data
    raise CheckpointError(f"{file}: not a readable safetensors file ({type(e).__name__}: {e}); "
                          f"it is truncated or corrupted ({os.path.getsize(file)} bytes)") from None
  check_finite(state, file)
  return state


def _load_sharded(path: str, index: str) -> dict[str, np.ndarray]:
  with open(index, encoding="utf-8") as f:
    try:
      weight_map = json.load(f)["weight_map"]
    except json.JSONDecodeError as e:
      raise CheckpointError(f"{index}: line {e.lineno}: invalid JSON ({e.msg})") from None
    except KeyError:
      raise CheckpointError(f"{index}: no 'weight_map'") from None
  files = sorted(set(weight_map.values()))
  absent = [n for n in files if not os.path.isfile(os.path.join(path, n))]
  if absent:
    raise CheckpointError(f"{index}: {len(absent)} of {len(files)} shard files named there are "
                          f"missing from {path}: {absent}")
  state, where = {}, {}
  for name in files:
    for k, v in _load_safetensors(os.path.join(path, name)).items():
      state[k], where[k] = v, name
  lost = sorted(f"{k} (in {f})" for k, f in weight_map.items() if where.get(k) != f)
  if lost:
    raise CheckpointError(f"{index}: {len(lost)} tensors are not in the shard the index names: "
                          + ", ".join(lost[:20]) + (" ..." if len(lost) > 20 else ""))
  return state


def read_state(path: str) -> dict[str, np.ndarray]:
  """All weights of the checkpoint folder as numpy arrays, keyed by HF names (checked, see above)."""
  single = os.path.join(path, "model.safetensors")
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.isfile(single):
    return _load_safetensors(single)
  if os.path.isfile(index):
    return _load_sharded(path, index)
  binary = os.path.join(path, "pytorch_model.bin")
  if os.path.isfile(binary):
    try:
      import torch
    except ImportError as e:
      raise CheckpointError(f"{binary}: reading a PyTorch .bin checkpoint needs torch; convert it to "
                            "safetensors or install torch") from e
    try:
      raw = torch.load(binary, map_location="cpu", weights_only=True)
    except Exception as e:
      raise CheckpointError(f"{binary}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    state = {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
             for k, v in raw.items()}
    check_finite(state, binary)
    return state
  raise FileNotFoundError(f"{path}: no model.safetensors, model.safetensors.index.json or "
                          "pytorch_model.bin")


# --------------------------------------------------------------------------------------------------
# Activations (config.json names <-> plmjax names)

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "relu": "relu", "silu": "silu", "swish": "silu"}


def activation(name: str, where: str) -> str:
  if name not in _ACTIVATIONS:
    raise CheckpointError(f"{where}: activation {name!r} is not supported; known: {sorted(_ACTIVATIONS)}")
  return _ACTIVATIONS[name]


def hf_activation(ours: str, where: str) -> str:
  table = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}
  if ours not in table:
    raise CheckpointError(f"{where}: activation {ours!r} has no Hugging Face name; known: {sorted(table)}")
  return table[ours]


# --------------------------------------------------------------------------------------------------
# Entry points


def from_hf(path: str, *, dtype: str = "float32", scan_layers: bool = True, **overrides):
  """Imports a Hugging Face checkpoint folder -> (flax module, params).

  `overrides` replace fields of the model config (e.g. dropout rates, remat_policy).
  """
  hf_config = read_config(path)
  model_type = hf_config.get("model_type")
  if model_type not in CONVERTERS:
    raise CheckpointError(f"{path}/config.json: model_type {model_type!r} is not supported; "
                          f"supported: {sorted(CONVERTERS)}")
  state = read_state(path)
  module, params = CONVERTERS[model_type](hf_config, state, dtype=dtype, **overrides)
  if not scan_layers:
    from plmjax.nn.transformer import unstack_layer_params
    module = module.clone(config=module.config.replace(scan_layers=False))
    params = unstack_layer_params(params, module.config.num_layers)
  return module, params


def check_params(model_name: str, config, params: dict) -> None:
  """`params` must be exactly the parameters of the registry model built from `config`."""
  import flax
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from plmjax.models.registry import SURVEY
  module = SURVEY[model_name].module(config)
  sample = {"input_ids": jnp.zeros((2, 4), jnp.int32)}
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), sample))["params"]
  want = {"/".join(k): v.shape for k, v in flax.traverse_util.flatten_dict(nn.meta.unbox(shapes)).items()}
  got = {"/".join(k): np.shape(v) for k, v in flax.traverse_util.flatten_dict(params).items()}
  problems = ([f"missing {k}" for k in sorted(set(want) - set(got))]
              + [f"unexpected {k}" for k in sorted(set(got) - set(want))]
              + [f"{k}: {got[k]} vs model {want[k]}" for k in sorted(set(want) & set(got)) if got[k] != want[k]])
  if problems:
    raise CheckpointError(f"{model_name} export: the params do not fit the model config "
                          f"({len(problems)} problems): " + "; ".join(problems[:10]))


def to_hf(model_name: str, config, params: dict, path: str) -> dict:
  """Writes `params` of the plmjax registry model `model_name` (its config dataclass `config`) as
  a Hugging Face checkpoint folder: config.json + model.safetensors. Returns the HF config."""
  from safetensors.numpy import save_file
  if model_name not in EXPORTERS:
    raise CheckpointError(f"model {model_name!r} has no Hugging Face export; exportable: {sorted(EXPORTERS)}")
  check_params(model_name, config, params)
  if not getattr(config, "scan_layers", True):
    from plmjax.nn.transformer import stack_layer_params
    params = stack_layer_params(params, config.num_layers)
  hf_config, state = EXPORTERS[model_name](config, params)
  os.makedirs(path, exist_ok=True)
  save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf_config, f, indent=2, sort_keys=True)
  return hf_config
