"""Device mesh, the logical-axis rules table, and batch sharding.

Every run lays its devices out on one 3-D mesh with axes

    data    pure data parallelism (params replicated)
    fsdp    data parallelism with params / optimizer state sharded over it (ZeRO-3 style)
    tensor  tensor (model) parallelism: heads, MLP and vocabulary dimensions split

Sizes come from the config's `mesh` section; one size may be -1 ("the rest of the devices"). The
default (data=-1, fsdp=1, tensor=1) is pure data parallelism.

Params and activations carry *logical* axis names (see `plmjax.nn`); `LOGICAL_RULES` below is the
one table that maps them to mesh axes. The batch is split over (data, fsdp) jointly, so each
device sees global_batch / (data * fsdp) rows.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical name -> mesh axis (or axes, or None = replicated). Every name used by plmjax.nn is listed.
LOGICAL_RULES: tuple[tuple[str, object], ...] = (
    ("batch", BATCH_AXES),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("table", None),
    ("classes", None),
    ("layers", None),
)


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
  """Resolves the config's (data, fsdp, tensor) sizes, with at most one -1, against the devices."""
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh: sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"mesh: {num_devices} devices are not divisible by the fixed axes "
                       f"{dict(zip(MESH_AXES, sizes))}")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh: {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"but {num_devices} are available")
  return tuple(sizes)


def make_mesh(mesh_cfg, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A Mesh over `devices` (default: all of jax.devices()) with axes (data, fsdp, tensor)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  try:   # topology-aware placement on TPU / GPU; plain reshape elsewhere
    grid = mesh_utils.create_device_mesh(shape, devices)
  except Exception:   # noqa: BLE001 - CPU and odd topologies
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


# Activation constraints (`nn.with_logical_constraint` inside the models) need the mesh to be
# current while the step is traced; `activate` makes it so (switch off to let XLA propagate the
# param and batch shardings alone, e.g. when debugging a sharding error).
ACTIVATION_CONSTRAINTS = True


@contextlib.contextmanager
def activate(mesh: Mesh):
  """Context for tracing sharded code: the logical rules are set and, when
  ACTIVATION_CONSTRAINTS, the mesh is current so that activation constraints take effect."""
  with contextlib.ExitStack() as stack:
    if ACTIVATION_CONSTRAINTS:
      stack.enter_context(jax.set_mesh(mesh))
    stack.enter_context(nn.logical_axis_rules(LOGICAL_RULES))
    yield


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Leading axis split over (data, fsdp), the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def batch_divisor(mesh: Mesh) -> int:
  """How many ways the global batch is split."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch (this process's rows) -> global jax.Arrays sharded over the batch axes.

  Each process passes its own rows [B / process_count, ...]; the global array is
  [B, ...], assembled without a host-to-host copy.
  """
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    global_shape = (v.shape[0] * jax.process_count(),) + v.shape[1:]
    if global_shape[0] % batch_divisor(mesh):
      raise ValueError(f"batch[{k!r}] has {global_shape[0]} rows, not divisible by the "
                       f"data*fsdp = {batch_divisor(mesh)} batch shards")
    out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v, global_shape)
  return out
