"""Reference timing: transformers' FlaxBertForMaskedLM train step at the shape `plmjax bench` uses.

    python experiments/bench_flax_bert.py --batch-size 8 --seq-len 128 --steps 3 [--json OUT]

compare with

    plmjax bench --config experiments/bert.py:base --batch-size 8 --steps 3

Same BERT-base shape (L=12, H=768, A=12, V=30522), float32, AdamW with global-norm clipping, one
jitted step with the state donated, timed the same way (fastest of `steps` calls; matmul peak
measured in the same process). Differences that stay: transformers' Flax BERT projects *every*
position to the vocabulary (logits [B, T, V]) and masks the loss afterwards, where plmjax gathers
the max_predictions = 20 masked positions first; MFU below uses plmjax's model-flops count (P = 20
scored positions), i.e. it measures useful work per second. Masking here is a fixed random 15 %
(no 80/10/10), which costs nothing on the step's scale.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from plmjax.train.bench import measure_matmul_peak


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--seq-len", type=int, default=128)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--json", default=None)
  args = p.parse_args()
  from transformers import BertConfig, FlaxBertForMaskedLM   # imported late: slow, and optional

  B, T, P = args.batch_size, args.seq_len, 20
  cfg = BertConfig()   # bert-base-uncased shape
  model = FlaxBertForMaskedLM(cfg, seed=0, dtype=jnp.float32)
  params = model.params
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, weight_decay=0.01))
  opt_state = tx.init(params)

  rng = np.random.default_rng(0)
  ids = rng.integers(1000, cfg.vocab_size, size=(B, T)).astype(np.int32)
  labels = np.where(rng.random((B, T)) < 0.15, ids, -100).astype(np.int32)
  batch = dict(input_ids=jnp.asarray(ids), attention_mask=jnp.ones((B, T), jnp.int32),
               token_type_ids=jnp.zeros((B, T), jnp.int32), labels=jnp.asarray(labels))

  def loss_fn(params, batch, key):
    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                   params=params, dropout_rng=key, train=True).logits              # [B, T, V]
    w = (batch["labels"] >= 0).astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(batch["labels"], 0))
    return (nll * w).sum() / jnp.maximum(w.sum(), 1.0)

  def step(params, opt_state, batch, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(step, donate_argnums=(0, 1))
  peak = measure_matmul_peak("float32")
  key = jax.random.PRNGKey(0)
  t0 = time.perf_counter()
  params, opt_state, loss = step(params, opt_state, batch, key)
  jax.block_until_ready(loss)
  first = time.perf_counter() - t0
  times = []
  for i in range(args.steps):
    t0 = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, batch, jax.random.fold_in(key, i))
    jax.block_until_ready((params, loss))
    times.append(time.perf_counter() - t0)
  peak = max(peak, measure_matmul_peak("float32"))

  n_params = sum(x.size for x in jax.tree.leaves(params))
  emb = params["bert"]["embeddings"]
  dense = n_params - sum(emb[k]["embedding"].size for k in
                         ("word_embeddings", "position_embeddings", "token_type_embeddings"))
  E, L, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
  flops = 6 * dense * B * T + 12 * L * T * E * B * T + 6 * E * V * B * P
  step_s = min(times)
  result = dict(model="transformers FlaxBertForMaskedLM", params=int(n_params), batch_size=B,
                seq_len=T, first_step_s=first, step_s=step_s, step_times_s=times,
                tokens_per_sec=B * T / step_s, model_flops_per_step=flops, matmul_peak_flops=peak,
                mfu=flops / step_s / peak, device=str(jax.devices()[0].device_kind),
                final_loss=float(loss))
  print(f"{result['model']}: {n_params / 1e6:.1f}M params, batch {B} x {T}\n"
        f"  step {step_s * 1e3:.1f} ms (first call {first:.1f} s)   {B * T / step_s:,.0f} tokens/s\n"
        f"  model flops/step {flops / 1e9:.1f} GFLOP   measured matmul peak {peak / 1e9:,.1f} GFLOP/s"
        f"   MFU {100 * result['mfu']:.1f} %")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
