"""`plmjax bench`: train-step throughput and model-FLOPs utilisation (MFU) on this machine.

    peak   = measured: the best time of a large jnp.dot in the run's compute dtype, in this process
             (2 n^3 flops), so that MFU is relative to what this machine really sustains
    step   = the config's real train step (objective, optimizer, mesh, donation), on batches from
             the config's data pipeline, timed over `steps` calls after a warm-up call
    model flops per step (fwd + bwd, the usual 6N + attention accounting):
             6 * N_dense * B * T                 N_dense = params outside embedding tables
           + 12 * L * T * E * B * T              attention scores and values
           + 6 * E * V * B * P                   tied output projection at the P scored positions
                                                 (P = max_predictions for MLM, T for causal LM)
    MFU    = model flops per step / step time / peak

The step time is the fastest of `steps` timed calls and the peak the best of several matmuls
measured before and after them, so that other load on a shared machine disturbs the ratio as
little as possible. (XLA's `cost_analysis` is no substitute for the count above: it counts the
body of a scanned layer stack once.) The model's
vocabulary is the config's `data.vocab_size` (what a real run trains with), not the built-in
corpus' small one, so `experiments/bert.py:base` benchmarks the BERT-base shape.
"""
from __future__ import annotations

import time
import types
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from plmjax.data import build_dataset
from plmjax.objectives import build_objective
from plmjax.train import config as config_lib
from plmjax.train.mesh import make_mesh, shard_batch
from plmjax.train.optim import make_optimizer
from plmjax.train.state import count_params, create_train_state
from plmjax.train.step import make_train_step, model_inputs_shapes

EMBEDDING_TABLES = ("token_embed", "position_embed", "type_embed")


def measure_matmul_peak(dtype: str, n: Optional[int] = None, repeats: int = 5) -> float:
  """Best-of-`repeats` flop/s of an [n, n] @ [n, n] matmul on the default device."""
  n = n or (2048 if jax.default_backend() == "cpu" else 8192)
  ka, kb = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(ka, (n, n), dtype)
  b = jax.random.normal(kb, (n, n), dtype)
  matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=dtype))
  matmul(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best


def model_flops_per_step(params, model_cfg, batch: int, seq: int, scored: int) -> dict:
  """The module docstring's accounting; `scored` = positions per row that reach the vocabulary."""
  dense = sum(int(x.size) for path, x in jax.tree_util.tree_leaves_with_path(params)
              if not any(getattr(k, "key", None) in EMBEDDING_TABLES for k in path))
  E, L, V = model_cfg.hidden_size, model_cfg.num_layers, model_cfg.vocab_size
  parts = dict(dense=6 * dense * batch * seq, attention=12 * L * seq * E * batch * seq,
               vocab=6 * E * V * batch * scored)
  return {**parts, "total": sum(parts.values()), "dense_params": dense}


def _vocab_proxy(tokenizer, vocab_size: int):
  """The data's tokenizer with a larger vocab_size (special ids unchanged)."""
  attrs = {a: getattr(tokenizer, a) for a in ("pad_id", "cls_id", "sep_id", "mask_id", "bos_id",
                                              "eos_id", "unk_id", "special_ids") if hasattr(tokenizer, a)}
  return types.SimpleNamespace(**attrs, vocab_size=max(int(vocab_size), tokenizer.vocab_size))


def benchmark(config, batch_size: Optional[int] = None, steps: int = 5) -> dict:
  """Times the config's train step; returns a dict of the numbers (see format_result)."""
  t = config.train
  config_lib.apply_prng_impl(config)
  batch_size = batch_size or t.batch_size
  mesh = make_mesh(config.mesh)
  data = build_dataset(config.data, split="train", global_batch_size=batch_size,
                       seq_len=config.data.seq_len, seed=t.seed)
  vocab = _vocab_proxy(data.tokenizer, config.data.vocab_size)
  model, model_cfg = config_lib.build_model(config.model, vocab, config.dtype)
  objective = build_objective(config.objective, vocab)
  tx, schedule = make_optimizer(config.optimizer, t.steps, t.clip_norm)
  it = iter(data)
  host_batches = [next(it) for _ in range(2)]
  shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in host_batches[0].items()}
  inputs = model_inputs_shapes(objective, shapes)
  state, shardings = create_train_state(model, tx, inputs, mesh, t.seed)
  step = make_train_step(model, objective, tx, schedule, mesh, shardings, shapes,
                         grad_accum=t.grad_accum)
  batches = [shard_batch(b, mesh) for b in host_batches]
  peak = measure_matmul_peak(model_cfg.dtype)

  t0 = time.perf_counter()
  state, m = step(state, batches[0])
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  times = []
  for i in range(steps):
    t0 = time.perf_counter()
    state, m = step(state, batches[i % 2])
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - t0)
  step_s = min(times)

  seq = config.data.seq_len
  scored = inputs["masked_positions"].shape[1] if "masked_positions" in inputs else seq
  flops = model_flops_per_step(state.params, model_cfg, batch_size, seq, scored)
  peak = max(peak, measure_matmul_peak(model_cfg.dtype))
  return dict(
      model=config.model.name, params=count_params(state.params), batch_size=batch_size, seq_len=seq,
      vocab_size=model_cfg.vocab_size, dtype=model_cfg.dtype, device=str(jax.devices()[0].device_kind),
      num_devices=jax.device_count(), first_step_s=compile_s, step_s=step_s, step_times_s=times,
      tokens_per_sec=batch_size * seq / step_s, model_flops_per_step=flops["total"],
      flops_breakdown=flops, matmul_peak_flops=peak, mfu=flops["total"] / step_s / peak,
      final_loss=float(np.asarray(m["loss"])))


def format_result(r: dict) -> str:
  lines = [
      f"{r['model']}: {r['params'] / 1e6:.1f}M params, batch {r['batch_size']} x {r['seq_len']} tokens, "
      f"vocab {r['vocab_size']}, {r['dtype']} on {r['num_devices']} x {r['device']}",
      f"  step {r['step_s'] * 1e3:.1f} ms (first call {r['first_step_s']:.1f} s)   "
      f"{r['tokens_per_sec']:,.0f} tokens/s",
      f"  model flops/step {r['model_flops_per_step'] / 1e9:.1f} GFLOP   measured matmul peak "
      f"{r['matmul_peak_flops'] / 1e9:,.1f} GFLOP/s   MFU {100 * r['mfu']:.1f} %",
  ]
  return "\n".join(lines)
