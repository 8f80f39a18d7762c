"""Benchmark: Transformer-XL evaluation with cached memory vs a vanilla Transformer that recomputes
its whole window for every predicted token (Dai et al., 2019, Table 9: "up to 1,874 times faster
during evaluation").

The vanilla model (Al-Rfou et al., 2019, as evaluated in the paper) predicts one token per forward
pass over the A tokens before it: cost per token ~ one pass over A tokens. Transformer-XL predicts a
whole segment of S tokens per pass over S new tokens, reading the other A positions from memory:
cost per token ~ 1/S of a pass over S tokens with A keys. The ratio therefore grows about linearly
with A. Here both models have the same depth and width; vanilla is plmjax's GPT (absolute
positions, causal mask), Transformer-XL is plmjax's TransformerXL with mem_len = A.

Not a test. Run (CPU, small: about a minute):

    python experiments/bench_txl_memory.py
    python experiments/bench_txl_memory.py --lengths 800,1800,2800,3800 --layers 18 \
        --hidden 1024 --heads 16 --segment 128      # the paper's lengths, on an accelerator
"""
from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.models.gpt import GPT, GPTConfig
from plmjax.models.transformer_xl import TransformerXL, TransformerXLConfig

PAPER = {800: 363, 1800: 773, 2800: 1409, 3800: 1874}   # Table 9, slowdown of vanilla vs TXL


def _time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))                        # compile + warm up
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def bench(length: int, args) -> tuple[float, float]:
  """-> (vanilla seconds per predicted token, Transformer-XL seconds per predicted token)."""
  common = dict(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
                num_heads=args.heads, mlp_dim=4 * args.hidden, dropout_rate=0.0,
                attention_dropout_rate=0.0, dtype=args.dtype)
  key = jax.random.key(0)
  b = args.batch

  gpt = GPT(GPTConfig(max_len=length, **common))
  window = jnp.zeros((b, length), jnp.int32)
  gp = nn.meta.unbox(gpt.init(key, {"input_ids": window[:, :8]})["params"])
  vanilla = jax.jit(lambda p, ids: gpt.apply({"params": p}, {"input_ids": ids})["logits"][:, -1])
  t_vanilla = _time(vanilla, gp, window, repeats=args.repeats)          # one token per pass

  txl = TransformerXL(TransformerXLConfig(cutoffs=(), div_val=1, mem_len=length, clamp_len=-1,
                                          same_length=False, **common))
  seg = jnp.zeros((b, args.segment), jnp.int32)
  tp = nn.meta.unbox(txl.init(key, {"input_ids": seg})["params"])
  mems = txl.init_mems(b)

  @jax.jit
  def step(p, ids, mems):
    out = txl.apply({"params": p}, {"input_ids": ids, "mems": mems})
    return out["logits"], out["mems"]
  t_txl = _time(step, tp, seg, mems, repeats=args.repeats) / args.segment   # S tokens per pass
  return t_vanilla, t_txl


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--lengths", default="64,128,256,512")
  ap.add_argument("--layers", type=int, default=4)
  ap.add_argument("--hidden", type=int, default=128)
  ap.add_argument("--heads", type=int, default=4)
  ap.add_argument("--vocab", type=int, default=1000)
  ap.add_argument("--segment", type=int, default=64)
  ap.add_argument("--batch", type=int, default=1)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--dtype", default="float32")
  args = ap.parse_args()
  print(f"backend={jax.default_backend()} layers={args.layers} hidden={args.hidden} "
        f"segment={args.segment} batch={args.batch} dtype={args.dtype}")
  print(f"{'attn len':>8} | {'vanilla ms/tok':>14} | {'TXL ms/tok':>10} | {'speed-up':>8} | paper")
  for length in [int(x) for x in args.lengths.split(",")]:
    tv, tx = bench(length, args)
    paper = f"{PAPER[length]}x" if length in PAPER else "-"
    print(f"{length:>8} | {1e3 * tv:>14.3f} | {1e3 * tx:>10.4f} | {tv / tx:>7.1f}x | {paper}")


if __name__ == "__main__":
  main()
