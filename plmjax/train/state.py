"""TrainState and its sharded creation.

    TrainState(step, params, opt_state, rng, model_state)

`model_state` is a dict for values a model carries from step to step (Transformer-XL / XLNet
memories); it is {} for BERT and GPT. `rng` is a raw uint32[2] key (checkpointable as a plain
array); the step derives its keys as fold_in(rng, step), so that a run's randomness depends only on
the seed and the step number, never on how many steps one process has run.

The state is *created* sharded, never gathered on one device:

    jax.eval_shape(model.init)          abstract params, boxed with logical axis names
    nn.get_partition_spec               logical PartitionSpecs
    nn.logical_to_mesh_sharding         NamedShardings on the mesh, via mesh.LOGICAL_RULES
    optax.tree_map_params               the same shardings for the optimizer's per-param moments
    jax.jit(init, out_shardings=...)    every device initialises only its own shard

Init is traced under the mesh and the logical rules (`mesh.activate`), so the params' logical
constraints and the models' activation constraints apply while every device builds its shard.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from plmjax.train.mesh import LOGICAL_RULES, activate


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 [], number of optimizer updates done
  params: Any              # fp32 param tree (unboxed)
  opt_state: Any           # optax state
  rng: jax.Array           # uint32 [2], fixed for the run
  model_state: dict        # carried model values (TXL mems); {} for most models


def zeros_like_spec(tree):
  """ShapeDtypeStructs (or arrays) -> zero arrays of the same shapes, for init inputs."""
  return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)


def default_init(model: nn.Module, rngs: dict, inputs: dict):
  return model.init(rngs, inputs, train=False)


def param_shardings(model: nn.Module, example_inputs: dict, mesh: Mesh, init_fn=default_init):
  """Abstract (boxed) init -> NamedSharding per param, through the logical-axis rules."""
  abstract = jax.eval_shape(
      lambda k: init_fn(model, {"params": k, "dropout": k}, zeros_like_spec(example_inputs)),
      jax.random.PRNGKey(0))
  specs = nn.get_partition_spec(abstract)["params"]
  return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_RULES)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, example_inputs: dict,
                       mesh: Mesh, seed: int,
                       init_model_state: Optional[Callable[[], dict]] = None,
                       model_state_specs: Optional[dict] = None, init_fn=default_init):
  """-> (state, state_shardings). `example_inputs` is a model batch (arrays or ShapeDtypeStructs)
  with the global shapes the step will see. `init_model_state` builds the initial model_state,
  placed by `model_state_specs` ({key: PartitionSpec}; replicated where not given).
  `init_fn(model, rngs, inputs) -> variables` (default: model.init(rngs, inputs, train=False);
  a multi-head task model initialises every head)."""
  replicated = NamedSharding(mesh, P())
  p_shard = param_shardings(model, example_inputs, mesh, init_fn)

  def init(rng):
    params_rng, run_rng = jax.random.split(rng)
    variables = init_fn(model, {"params": params_rng, "dropout": params_rng},
                        zeros_like_spec(example_inputs))
    params = nn.meta.unbox(variables["params"])
    model_state = init_model_state() if init_model_state else {}
    return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params),
                      rng=run_rng, model_state=model_state)

  rng = jax.random.PRNGKey(seed)
  abstract = jax.eval_shape(init, rng)
  masked = lambda x: isinstance(x, optax.MaskedNode)   # noqa: E731 - frozen params (multi_transform)
  opt_shard = optax.tree_map_params(
      tx, lambda p, s: p if masked(p) else s, abstract.opt_state, p_shard,
      transform_non_params=lambda _: replicated,
      is_leaf=lambda x: isinstance(x, NamedSharding) or masked(x))
  shardings = TrainState(step=replicated, params=p_shard, opt_state=opt_shard, rng=replicated,
                         model_state={k: NamedSharding(mesh, (model_state_specs or {}).get(k, P()))
                                      for k in abstract.model_state})
  with activate(mesh):
    state = jax.jit(init, out_shardings=shardings)(rng)
  return state, shardings


def abstract_state(state_or_shapes, shardings):
  """ShapeDtypeStructs with shardings (a restore target for orbax) from a state or eval_shape.
  `shardings` may be a prefix of the state (one sharding for a whole model_state entry, e.g. an
  RNN's per-layer {"h", "c"} state)."""
  return jax.tree.map(
      lambda s, sub: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), sub),
      shardings, state_or_shapes, is_leaf=lambda x: isinstance(x, NamedSharding))


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
