"""Hugging Face checkpoint import: reading a checkpoint folder and mapping its weights strictly.

A checkpoint folder holds `config.json` and `model.safetensors` (or a sharded
`model.safetensors.index.json`), read with numpy alone; a legacy `pytorch_model.bin` is read through
`torch.load(weights_only=True)` only when torch happens to be installed (plmjax never needs torch).

Each model family registers a converter `fn(hf_config, state) -> (module, params)` in `CONVERTERS`
(keyed by config.json's `model_type`). Converters pull weights through a `StateMapper`, which
records every HF key it consumed and every plmjax parameter it produced; `finish` compares both
sides with the module's own parameter shapes (from `jax.eval_shape(module.init)`) and raises ONE
error that lists every missing weight, unexpected weight and shape mismatch.
"""
from __future__ import annotations

import json
import os
import re
from typing import Callable, Iterable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

CONVERTERS: dict[str, Callable] = {}


def register(*model_types: str):
  def deco(fn):
    for t in model_types:
      CONVERTERS[t] = fn
    return fn
  return deco


class CheckpointError(ValueError):
  """A checkpoint that does not match the model it claims to be."""


# --------------------------------------------------------------------------------------------------
# Reading


def read_config(path: str) -> dict:
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise FileNotFoundError(f"{path}: no config.json (expected a Hugging Face checkpoint folder)")
  with open(cfg_path, encoding="utf-8") as f:
    return json.load(f)


def read_state(path: str) -> dict[str, np.ndarray]:
  """All weights of the checkpoint folder as float32/int numpy arrays, keyed by HF names."""
  from safetensors.numpy import load_file
  single = os.path.join(path, "model.safetensors")
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.isfile(single):
    return dict(load_file(single))
  if os.path.isfile(index):
    with open(index, encoding="utf-8") as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
    state = {}
    for name in files:
      state.update(load_file(os.path.join(path, name)))
    return state
  binary = os.path.join(path, "pytorch_model.bin")
  if os.path.isfile(binary):
    try:
      import torch
    except ImportError as e:
      raise CheckpointError(f"{binary}: reading a PyTorch .bin checkpoint needs torch; convert it to "
                            "safetensors or install torch") from e
    raw = torch.load(binary, map_location="cpu", weights_only=True)
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
            for k, v in raw.items()}
  raise FileNotFoundError(f"{path}: no model.safetensors, model.safetensors.index.json or "
                          "pytorch_model.bin")


# --------------------------------------------------------------------------------------------------
# Strict mapping


class StateMapper:
  """Consumes HF weights by name, producing a flat {"a/b/c": array} plmjax parameter dict."""

  def __init__(self, state: dict[str, np.ndarray], prefixes: Iterable[str] = (),
               ignore: Iterable[str] = ()):
    self.state = {}
    for k, v in state.items():
      for p in prefixes:
        if k.startswith(p):
          k = k[len(p):]
          break
      self.state[k] = np.asarray(v)
    self.ignore = [re.compile(p) for p in ignore]
    self.used: set[str] = set()
    self.missing: list[str] = []
    self.params: dict[str, np.ndarray] = {}
    self.layered: dict[str, list[np.ndarray]] = {}   # stacked on finish, after shape checks

  def has(self, key: str) -> bool:
    return key in self.state

  def get(self, key: str, *aliases: str) -> np.ndarray | None:
    """The array under `key` (or the first alias present), marked used; None if absent (recorded)."""
    for k in (key,) + aliases:
      if k in self.state:
        self.used.add(k)
        return self.state[k].astype(np.float32) if self.state[k].dtype != np.float32 else self.state[k]
    self.missing.append(key)
    return None

  def put(self, path: str, value: np.ndarray | None):
    if value is not None:
      self.params[path] = value

  def tied(self, key: str, reference: np.ndarray | None):
    """A weight that must equal an already-mapped one (tied output embedding): checked, consumed."""
    if key in self.state:
      self.used.add(key)
      if reference is not None and not np.array_equal(self.state[key], reference):
        raise CheckpointError(f"{key} is not tied to the input embedding; untied output heads are "
                              "not supported by this model")

  def stack(self, paths_by_layer: list[dict[str, np.ndarray | None]], prefix: str):
    """Per-layer {relative path: array} -> [L, ...] arrays under `prefix` (stacked in `finish`)."""
    for rel in paths_by_layer[0]:
      arrays = [layer[rel] for layer in paths_by_layer]
      if any(a is None for a in arrays):
        continue   # already recorded as missing
      self.layered[f"{prefix}/{rel}"] = arrays

  def finish(self, module: nn.Module, sample_batch: dict, name: str) -> dict:
    """Checks the produced parameters against the module's own shapes; returns the nested params."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), sample_batch))["params"]
    expected = {"/".join(k): v.shape for k, v in
                flax.traverse_util.flatten_dict(nn.meta.unbox(shapes)).items()}
    mismatched = []
    for k, arrays in self.layered.items():
      want = expected.get(k, (None,) + arrays[0].shape)[1:]
      bad = [f"{k} (layer {i}): checkpoint {a.shape} vs model {want}"
             for i, a in enumerate(arrays) if a.shape != want]
      if bad:
        mismatched += bad
      else:
        self.params[k] = np.stack(arrays)
    unexpected = sorted(k for k in self.state if k not in self.used
                        and not any(p.fullmatch(k) for p in self.ignore))
    missing = sorted(set(self.missing) | {f"(plmjax) {k}" for k in expected
                                          if k not in self.params and k not in self.layered
                                          and not self.missing})
    mismatched += sorted(f"{k}: checkpoint {self.params[k].shape} vs model {expected[k]}"
                        for k in expected if k in self.params and self.params[k].shape != expected[k])
    extra = sorted(k for k in self.params if k not in expected)
    problems = []
    for title, items in [("missing weights", missing), ("unexpected weights", unexpected),
                         ("shape mismatches", mismatched), ("unmapped plmjax parameters", extra)]:
      if items:
        problems.append(f"{title} ({len(items)}):\n  " + "\n  ".join(items))
    if problems:
      raise CheckpointError(f"{name}: checkpoint does not match the model:\n" + "\n".join(problems))
    nested = flax.traverse_util.unflatten_dict({tuple(k.split("/")): jnp.asarray(v)
                                                for k, v in self.params.items()})
    return nested


# --------------------------------------------------------------------------------------------------
# Shared weight transforms (PyTorch layouts -> plmjax layouts)


def linear(w: np.ndarray | None) -> np.ndarray | None:
  """torch.nn.Linear weight [out, in] -> Dense kernel [in, out]."""
  return None if w is None else w.T


def heads_in(kernel: np.ndarray | None, num_heads: int) -> np.ndarray | None:
  """[E, N*D] -> [E, N, D] (query/key/value kernels); bias [N*D] -> [N, D]."""
  if kernel is None:
    return None
  return kernel.reshape(kernel.shape[:-1] + (num_heads, kernel.shape[-1] // num_heads))


def heads_out(kernel: np.ndarray | None, num_heads: int) -> np.ndarray | None:
  """[N*D, E] -> [N, D, E] (attention output kernel)."""
  if kernel is None:
    return None
  return kernel.reshape((num_heads, kernel.shape[0] // num_heads) + kernel.shape[1:])


def activation(name: str, where: str) -> str:
  table = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
           "relu": "relu", "silu": "silu", "swish": "silu"}
  if name not in table:
    raise CheckpointError(f"{where}: activation {name!r} is not supported; known: {sorted(table)}")
  return table[name]


# --------------------------------------------------------------------------------------------------
# Entry point


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
