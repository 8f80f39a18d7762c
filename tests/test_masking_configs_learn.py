"""The masking-family configs (issue 5) load, build, run their jitted step and learn in 80 steps on
the built-in synthetic corpus (pipeline + registry model + objective + an optax loop with the
config's optimizer settings). SpanBERT's step runs the SBO head end to end; ERNIE's passes through
all three masking stages.

What "learns" means here. MASS's loss falls by well over 10 % (measured: 4.94 -> 3.01, -39 %). The
masked-LM configs start at log V = 5.0 nats, only 7 % above the corpus' unigram entropy H1 = 4.64
nats (the best prediction without context); in 80 steps they go below H1, i.e. use context, but
their loss falls by 10-14 % only (measured, first/last 5 steps: bert_wwm 5.62 -> 4.86, ernie1 5.61 ->
4.84 (with NSP), unilm 4.95 -> 4.45, spanbert 9.87 -> 9.07 (MLM + SBO)). So for them the test
asserts the masked-LM loss ends below H1, measured on the same batches."""
import importlib.util
import os

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from plmjax.data.pipeline import build_dataset
from plmjax.objectives import build_objective, prepare_inputs
from plmjax.train.config import build_model

ROOT = os.path.join(os.path.dirname(__file__), "..")
STEPS = 80


def load(name: str, arg: str = "tiny"):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "experiments", f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def train_tiny(cfg, steps: int = STEPS) -> list[dict]:
  ds = build_dataset(cfg.data, split="train", global_batch_size=cfg.train.batch_size,
                     seq_len=cfg.data.seq_len, seed=0)
  model, _ = build_model(cfg.model, ds.tokenizer, "float32")
  objective = build_objective(cfg.objective, ds.tokenizer)
  it = iter(ds)
  batch0 = {k: np.asarray(v) for k, v in next(it).items()}
  first = prepare_inputs(objective, batch0, jax.random.key(0))["inputs"]
  params = nn.meta.unbox(model.init(jax.random.key(0), first)["params"])
  o = cfg.optimizer
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(optax.linear_schedule(0.0, o.learning_rate, o.warmup_steps),
                               b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))

  @jax.jit
  def step(params, opt_state, batch, key, i):
    k_prep, k_drop = jax.random.split(key)
    prepared = prepare_inputs(objective, batch, k_prep, i)

    def loss_fn(p):
      out = model.apply({"params": p}, prepared["inputs"], train=True, rngs={"dropout": k_drop})
      return objective.loss(out, prepared)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  tok = ds.tokenizer
  special = [i for i in (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id) if i is not None]
  counts = np.zeros(tok.vocab_size)
  opt_state, history, batch = tx.init(params), [], batch0
  for i in range(steps):
    params, opt_state, metrics = step(params, opt_state, batch, jax.random.key(i), i)
    history.append({k: float(v) for k, v in metrics.items()})
    real = batch["input_ids"][(batch["attention_mask"] > 0) & ~np.isin(batch["input_ids"], special)]
    counts += np.bincount(real, minlength=tok.vocab_size)
    batch = {k: np.asarray(v) for k, v in next(it).items()}
  p = counts[counts > 0] / counts.sum()
  return history, float(-(p * np.log(p)).sum())          # + unigram entropy H1 of the tokens seen


@pytest.mark.parametrize("name", ["bert_wwm", "spanbert", "ernie1", "mass", "unilm"])
def test_tiny_config_learns(name):
  history, h1 = train_tiny(load(name))
  losses = np.array([h["loss"] for h in history])
  start, end = losses[:5].mean(), losses[-5:].mean()
  last = lambda k: np.mean([h[k] for h in history[-5:]])
  print(f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f} (first/last 5 mean {start:.3f} -> {end:.3f}, "
        f"ratio {end / start:.3f}); H1 {h1:.3f}; " +
        ", ".join(f"{k} {last(k):.3f}" for k in history[0] if k.endswith("_loss")))
  assert np.isfinite(losses).all() and end < start
  if name == "mass":
    assert end < 0.85 * start, (name, start, end)
  else:
    assert last("mlm_loss") < h1, (name, last("mlm_loss"), h1)
  if name == "spanbert":                    # the SBO head is wired: it predicts from the boundaries
    assert last("sbo_loss") < h1, (last("sbo_loss"), h1)
  if name == "ernie1":                      # token -> phrase -> entity stages at steps 33 and 66
    assert [history[i]["stage"] for i in (0, 32, 33, 65, 66, 79)] == [0, 0, 1, 1, 2, 2]
