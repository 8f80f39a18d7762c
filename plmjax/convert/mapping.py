"""One weight mapping per model family, run in either direction.

A family's converter declares its mapping once, as rules `m.map(hf_key, plmjax_path, transform)`
(plus `m.tied(hf_key, same_as=other_hf_key)` for tied copies). The same declarations drive

  * import (`StateMapper.importing(hf_state)`): the HF tensor, transformed, becomes the plmjax
    parameter; `finish` checks every HF tensor was used (or ignorable), every plmjax parameter
    was produced, every shape fits the module, and raises ONE error listing all problems;
  * export (`StateMapper.exporting(params)`): the plmjax parameter, through the transform's
    inverse, becomes the HF tensor; `finish_export` checks every plmjax parameter was written
    (or is declared dropped) and returns the HF state dict with the model-class prefixes.

A `Transform` is a pair of array functions (forward: HF layout -> plmjax layout; inverse) that are
exact inverses (transposes, reshapes, splits: no arithmetic), so an HF -> plmjax -> HF round trip
reproduces every tensor bit for bit. Per-layer rules carry `layer=i`; the plmjax side stacks them
into the scanned [L, ...] layout.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Iterable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class CheckpointError(ValueError):
  """A checkpoint that does not match the model it claims to be."""


# --------------------------------------------------------------------------------------------------
# Transforms (HF layout <-> plmjax layout)


@dataclasses.dataclass(frozen=True)
class Transform:
  """forward: one HF array -> one plmjax array (or a list, for `split`); inverse: back."""
  forward: Callable
  inverse: Callable
  outputs: int = 1
  multi: bool = False        # forward gives a list of `outputs` arrays (a split), inverse takes one

  def then(self, other: "Transform") -> "Transform":
    if self.multi:
      raise ValueError("a split transform must come last")
    return Transform(lambda x: other.forward(self.forward(x)), lambda y: self.inverse(other.inverse(y)),
                     other.outputs, other.multi)


IDENTITY = Transform(lambda x: x, lambda y: y)
LINEAR = Transform(lambda w: w.T, lambda k: k.T)          # torch Linear [out, in] <-> Dense [in, out]


def heads_in(n: int) -> Transform:
  """[..., N*D] -> [..., N, D] (query/key/value kernels and biases)."""
  return Transform(lambda x: x.reshape(x.shape[:-1] + (n, x.shape[-1] // n)),
                   lambda y: y.reshape(y.shape[:-2] + (-1,)))


def heads_out(n: int) -> Transform:
  """[N*D, E] -> [N, D, E] (attention output kernel)."""
  return Transform(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]),
                   lambda y: y.reshape((-1,) + y.shape[2:]))


def permute(*perm: int) -> Transform:
  inv = tuple(np.argsort(perm))
  return Transform(lambda x: x.transpose(perm), lambda y: y.transpose(inv))


def reshape(hf_shape: Sequence[int], ours_shape: Sequence[int]) -> Transform:
  return Transform(lambda x: x.reshape(tuple(ours_shape)), lambda y: y.reshape(tuple(hf_shape)))


def split(sizes_or_count, axis: int = -1, each: Transform = IDENTITY) -> Transform:
  """One HF array -> k plmjax arrays along `axis` (equal parts, or at the given sizes); inverse
  concatenates. `each` is applied to every part."""
  if isinstance(sizes_or_count, int):
    k, cuts = sizes_or_count, None
  else:
    k, cuts = len(sizes_or_count), np.cumsum(sizes_or_count)[:-1]

  def forward(x):
    parts = np.split(x, k if cuts is None else cuts, axis=axis)
    return [each.forward(p) for p in parts]
  return Transform(forward, lambda ys: np.concatenate([each.inverse(y) for y in ys], axis=axis), k, True)


# --------------------------------------------------------------------------------------------------
# The mapper


def _flat(tree: dict) -> dict[str, np.ndarray]:
  return {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(tree).items()}


class StateMapper:
  """Runs a family's declared mapping in one direction (see the module docstring)."""

  def __init__(self, *, hf_state=None, params=None, prefixes: Iterable[str] = (),
               ignore: Iterable[str] = ()):
    self.exporting = params is not None
    self.ignore = [re.compile(p) for p in ignore]
    self.state: dict[str, np.ndarray] = {}
    if hf_state is not None:
      for k, v in hf_state.items():
        k = next((k[len(p):] for p in prefixes if k.startswith(p)), k)
        self.state[k] = np.asarray(v)
    self.used: set[str] = set()
    self.missing: list[str] = []
    self.params: dict[str, np.ndarray] = {}
    self.layered: dict[str, dict[int, np.ndarray]] = {}
    self.ties: list[tuple[str, str]] = []
    # export side
    self.source = {k: np.asarray(v) for k, v in _flat(params).items()} if params is not None else {}
    self.read: set[str] = set()
    self.out: dict[str, np.ndarray] = {}

  @classmethod
  def importing(cls, hf_state, prefixes=(), ignore=()):
    return cls(hf_state=hf_state, prefixes=prefixes, ignore=ignore)

  @classmethod
  def exporting_params(cls, params):
    return cls(params=params)

  # ---- declarations ----------------------------------------------------------------------------------
  def has(self, key: str) -> bool:
    """Import: whether the checkpoint holds `key`. Export: always True (the exporter decides)."""
    return self.exporting or key in self.state

  def map(self, hf: str, ours, t: Transform = IDENTITY, *, alias: Sequence[str] = (),
          layer: int | None = None, default: np.ndarray | None = None):
    """HF tensor `hf` (or an alias, on import) <-> plmjax parameter(s) `ours` ("a/b/c", or a tuple
    for a split transform); `layer=i`: slot i of the stacked [L, ...] parameter. `default`: the
    plmjax value when an import checkpoint lacks `hf` (e.g. a bare model's output bias)."""
    paths = (ours,) if isinstance(ours, str) else tuple(ours)
    if len(paths) != t.outputs:
      raise ValueError(f"{hf}: transform gives {t.outputs} arrays for {len(paths)} paths")
    if self.exporting:
      values = [self._read(p, layer) for p in paths]
      if all(v is not None for v in values):
        self.out[hf] = np.ascontiguousarray(t.inverse(values if t.multi else values[0]))
      return
    key = next((k for k in (hf,) + tuple(alias) if k in self.state), None)
    if key is None:
      if default is not None:
        values = [default]
      else:
        self.missing.append(hf)
        return
    else:
      self.used.add(key)
      x = self.state[key]
      x = x.astype(np.float32) if x.dtype != np.float32 else x
      values = t.forward(x)
      values = values if t.multi else [values]
    for p, v in zip(paths, values):
      if layer is None:
        self.params[p] = v
      else:
        self.layered.setdefault(p, {})[layer] = v

  def tied(self, hf: str, same_as: str):
    """HF tensor `hf` is a copy of HF tensor `same_as` (a tied output embedding, a shared bias):
    on import it is checked and consumed, on export it is written as that copy."""
    self.ties.append((hf, same_as))
    if self.exporting or hf not in self.state:
      return
    self.used.add(hf)
    ref = self.state.get(same_as)
    if ref is not None and not np.array_equal(self.state[hf], ref):
      raise CheckpointError(f"{hf} is not tied to {same_as}; untied weights are not supported by "
                            "this model")

  # ---- import ----------------------------------------------------------------------------------------
  def finish(self, module: nn.Module, sample_batch: dict, name: str) -> dict:
    """Checks the produced parameters against the module's own shapes; returns the nested params."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), sample_batch))["params"]
    expected = {k: v.shape for k, v in _flat(nn.meta.unbox(shapes)).items()}
    mismatched = []
    for k, by_layer in self.layered.items():
      n = expected.get(k, (len(by_layer),))[0]
      arrays = [by_layer.get(i) for i in range(max(n, len(by_layer)))]
      if any(a is None for a in arrays):
        continue   # a missing layer is already recorded as missing
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
    return flax.traverse_util.unflatten_dict({tuple(k.split("/")): jnp.asarray(v)
                                              for k, v in self.params.items()})

  # ---- export ----------------------------------------------------------------------------------------
  def _read(self, path: str, layer: int | None):
    if path not in self.source:
      self.missing.append(path)
      return None
    self.read.add(path if layer is None else f"{path}#{layer}")
    v = self.source[path]
    return v if layer is None else v[layer]

  def finish_export(self, name: str, *, prefix: str = "", heads: Sequence[str] = (),
                    dropped: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """-> the HF state dict (keys not starting with one of `heads` get `prefix`). Every plmjax
    parameter must have been written, except those under a `dropped` subtree."""
    for hf, same_as in self.ties:
      if same_as in self.out:
        self.out[hf] = self.out[same_as].copy()
    unread = []
    for k, v in self.source.items():
      if any(k == d or k.startswith(d + "/") for d in dropped):
        continue
      layers = [i for i in range(v.shape[0])] if v.ndim and f"{k}#0" in self.read else None
      if layers is not None:
        unread += [f"{k} (layer {i})" for i in layers if f"{k}#{i}" not in self.read]
      elif k not in self.read:
        unread.append(k)
    problems = []
    if self.missing:
      problems.append(f"parameters the mapping needs but the model lacks: {sorted(set(self.missing))}")
    if unread:
      problems.append(f"parameters with no Hugging Face counterpart: {sorted(unread)}")
    if problems:
      raise CheckpointError(f"{name}: cannot export: " + "; ".join(problems))
    return {(k if any(k.startswith(h) for h in heads) else prefix + k): v.astype(np.float32)
            for k, v in self.out.items()}
