"""ULMFiT and SiATL on SST-2, each beside a no-pretraining baseline with the same classifier budget.

    python experiments/rnn_sst2.py --method both            # small CPU budget (defaults below)

1. General-domain LM: one AWD-LSTM LM trained on WikiText-2 (rows are contiguous streams; the LSTM
   state is carried from batch to batch, truncated BPTT), shared by both methods.
2. ULMFiT: the LM fine-tuned on SST-2's training sentences (discriminative LRs + STLR), then the
   classifier (concat pooling -> 50-unit ReLU -> dropout -> dense) with discriminative LRs (1/2.6
   per layer), slanted triangular LR and gradual unfreezing (one more layer every 1/(L+2) of the run).
   Baseline: the same classifier from random weights, STLR, every layer training from step 0.
3. SiATL: the pretrained LM + a new task LSTM with self-attention, L = L_task + gamma_n L_LM with
   gamma_n = 0.2 * 0.5^n (n = quarter of the run), sequential (gradual) unfreezing.
   Baseline: the same network from random weights, the same loss, no unfreezing.

Measured (2 shared CPU cores; defaults except --pretrain-steps 300 --lm-finetune-steps 60
--cls-steps 200: vocab 10k words, AWD-LSTM 128 / 256 / 256 / 128, batch 32, BPTT 50, classifier
Adam 5e-3 with STLR, max_len 64, all 67,349 SST-2 training sentences available, dev = 872):

    general-domain LM (WikiText-2, 300 steps, carried state)   loss 9.21 -> 5.66
    ULMFiT LM fine-tuning on SST-2 text (60 steps)             loss 6.82 -> 6.47
    SST-2 dev accuracy after 200 classifier steps:
      ULMFiT (layer decay 1/2.6, gradual unfreezing / 40 steps)   0.589
      ULMFiT, unfreezing every 10 steps                           0.573
      ULMFiT, pretrained weights, one LR, no unfreezing           0.638
      no pretraining (same classifier, one LR, no unfreezing)     0.716
      SiATL (aux LM 0.2 * 0.5^quarter, gradual unfreezing)        0.584
      SiATL network, no pretraining (same loss, no unfreezing)    0.509 (the majority class)

At this budget the pretrained LM is barely past unigram statistics, and ULMFiT's schedule (low
rates for lower layers, frozen layers early) slows adaptation more than the weights help: the
from-scratch AWD classifier wins. SiATL's deeper task network does not train from scratch in 200
steps, while the pretrained one does. The papers' gains need a converged LM (WikiText-103, days).

Pieces reused: `plmjax.finetune` (SST-2 reader, BERT-style framing and bucketed batches, TaskModel
heads and losses, transfer-mode optimizer: discriminative LRs, STLR, gradual unfreezing, metrics),
`plmjax.models` (AwdLstm, Siatl), `plmjax.objectives.bilm.RecurrentLM`. Words: lowercased
whitespace tokens (SST-2 is lowercased and tokenized), a shared word vocabulary of the most frequent
`--vocab` words of WikiText-2 + SST-2 train. Writes a JSON summary to --out.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pickle
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from plmjax.data.tokenizer import wordpiece_tokenizer
from plmjax.finetune import metrics
from plmjax.finetune.features import Framing, encode_sentences, eval_batches, task_batches
from plmjax.finetune.model import HeadSpec, TaskModel, lm_loss, task_loss
from plmjax.finetune.tasks import get_task, read_task
from plmjax.train.optim import make_optimizer
from plmjax.models.awd_lstm import AwdLstm, AwdLstmConfig
from plmjax.models.siatl import Siatl, SiatlConfig, aux_lm_weight
from plmjax.objectives.bilm import RecurrentLM

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<eol>"]


def word_vocab(wiki_lines, sst_texts, size):
  counts = collections.Counter(w for line in wiki_lines for w in line.lower().split())
  counts.update(w for t in sst_texts for w in t.split())
  words = [w for w, _ in counts.most_common() if w not in SPECIALS and w != "<unk>"]
  return wordpiece_tokenizer(SPECIALS + words[: size - len(SPECIALS)], "words")


def stream(tok, lines, batch, seq):
  """Text lines -> endless [B, T + 1] blocks; row i is a contiguous stream across blocks."""
  eol = tok.token_to_id("<eol>")
  ids = np.concatenate([np.asarray(i + [eol], np.int32) for i in tok.encode_batch(lines)])
  rows = ids[: len(ids) // batch * batch].reshape(batch, -1)
  while True:
    for s in range(0, rows.shape[1] - seq - 1, seq):
      yield rows[:, s:s + seq + 1]


def adam_cfg(lr, schedule="stlr", steps=1):
  return ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=lr, weight_decay=0.0, b1=0.7, b2=0.99, eps=1e-8, decay=schedule,
      warmup_frac=0.1, warmup_steps=-1, end_lr=0.0, stlr_cut_frac=0.1, stlr_ratio=32.0))


def transfer_cfg(layer_decay=1.0, unfreeze=False, every=0):
  return ml_collections.ConfigDict(dict(mode="full", layer_decay=layer_decay,
                                        gradual_unfreezing=unfreeze, unfreeze_every=every, frozen=()))


def train_lm(model, params, tx, blocks, steps, log):
  """Truncated BPTT: the state a batch ends in starts the next one."""
  objective = RecurrentLM(pad_id=-1)

  @jax.jit
  def step(params, opt_state, state, block, key):
    batch = {"input_ids": block[:, :-1], "target_ids": block[:, 1:], "rnn_state": state}
    prepared = objective.prepare(batch, key)

    def loss_fn(p):
      out = model.apply({"params": p}, prepared["inputs"], train=True, rngs={"dropout": key})
      return objective.loss(out, prepared)[0], out["rnn_state"]          # lm + AR + TAR
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, state, loss

  opt_state, state, curve = tx.init(params), None, []
  for i in range(steps):
    block = jnp.asarray(next(blocks))
    if state is None:
      state = model.initial_state(block.shape[0])
    params, opt_state, state, loss = step(params, opt_state, state, block, jax.random.key(i))
    if (i + 1) % max(steps // 6, 1) == 0 or i == 0:
      curve.append((i + 1, round(float(loss), 3)))
      log(f"    lm step {i + 1}: loss {float(loss):.3f}")
  return params, curve


def classify(name, encoder, pretrained, data, args, *, layer_decay, unfreeze, aux, log):
  """Fine-tunes TaskModel(encoder) on SST-2 for args.cls_steps; -> dev accuracy and curve."""
  train_f, dev_f, pad = data
  model = TaskModel(encoder, (HeadSpec("sst2", "classification", 2),), pooling="pooler",
                    dropout=0.1, lm_aux=aux)
  sample = eval_batches(train_f, args.batch, (args.max_len,), pad)[0]
  params = nn.meta.unbox(model.init({"params": jax.random.key(1), "dropout": jax.random.key(1)},
                                    sample, method=TaskModel.init_all)["params"])
  if pretrained is not None:       # pretrained LM weights in, new layers (pool, task LSTM, head) random
    merged = jax.tree_util.tree_map_with_path(
        lambda p, x: _lookup(pretrained, p, x), params["encoder"])
    params = {**params, "encoder": merged}
  num_layers = 3
  every = args.unfreeze_every or max(args.cls_steps // (num_layers + 2), 1)
  tx, _ = make_optimizer(adam_cfg(args.cls_lr), args.cls_steps, 0.25, params=params,
                         transfer=transfer_cfg(layer_decay, unfreeze, every), num_layers=num_layers,
                         steps_per_epoch=every)
  quarter = max(args.cls_steps // 4, 1)

  def loss_fn(p, batch, key, step):
    out = model.apply({"params": p}, batch, task="sst2", train=True, rngs={"dropout": key})
    loss, m = task_loss("classification", out, batch)
    if aux:
      gamma = aux_lm_weight(step // quarter, 0.2, 0.5)
      loss = loss + gamma * lm_loss(out["lm_logits"], batch)
    return loss, m

  @jax.jit
  def train_step(p, opt_state, batch, key, step):
    (loss, m), g = jax.value_and_grad(loss_fn, has_aux=True)(p, batch, key, step)
    updates, opt_state = tx.update(g, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss, m["accuracy"]

  predict = jax.jit(lambda p, b: model.apply({"params": p}, b, task="sst2")["logits"].argmax(-1))
  opt_state, step, curve, t0 = tx.init(params), 0, [], time.time()
  keys = ("input_ids", "attention_mask", "label", "weights")
  stream = task_batches(train_f, args.batch, (args.max_len,), pad, seed=0)   # reshuffled per epoch
  for step in range(1, args.cls_steps + 1):
    b = {k: jnp.asarray(v) for k, v in stream[step - 1].items() if k in keys}
    params, opt_state, loss, acc = train_step(params, opt_state, b, jax.random.key(step - 1), step - 1)
    if step % max(args.cls_steps // 6, 1) == 0:
      curve.append((step, round(float(loss), 3), round(float(acc), 3)))
      log(f"    {name} step {step}: loss {float(loss):.3f} acc {float(acc):.3f}")
  preds, gold = [], []
  for b in eval_batches(dev_f, 64, (args.max_len,), pad):
    n = int(b["weights"].sum())
    preds.append(np.asarray(predict(params, {k: jnp.asarray(b[k]) for k in keys}))[:n])
    gold.append(b["label"][:n])
  acc = metrics.accuracy(np.concatenate(preds), np.concatenate(gold))
  log(f"  {name}: dev accuracy {acc:.4f} ({time.time() - t0:.0f}s)")
  return {"dev_accuracy": acc, "curve": curve}


def _lookup(tree, path, default):
  """The pretrained leaf at `path` (encoder/lm/... for SiATL maps to the LM's own tree)."""
  keys = [getattr(k, "key", k) for k in path]
  if keys and keys[0] == "lm" and "lm" not in tree:
    keys = keys[1:]
  node = tree
  for k in keys:
    if not isinstance(node, dict) or k not in node:
      return default
    node = node[k]
  if np.shape(node) != np.shape(default):
    raise ValueError(f"pretrained {'/'.join(map(str, keys))} has shape {np.shape(node)}, "
                     f"the task model wants {np.shape(default)}")
  return jnp.asarray(node)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--method", choices=("ulmfit", "siatl", "both"), default="both")
  p.add_argument("--data", default=SHARED)
  p.add_argument("--vocab", type=int, default=10000)
  p.add_argument("--embed", type=int, default=128)
  p.add_argument("--hidden", type=int, default=256)
  p.add_argument("--pretrain-steps", dest="pretrain_steps", type=int, default=400)
  p.add_argument("--lm-finetune-steps", dest="lm_finetune_steps", type=int, default=100)
  p.add_argument("--cls-steps", dest="cls_steps", type=int, default=300)
  p.add_argument("--cls-lr", dest="cls_lr", type=float, default=5e-3)
  p.add_argument("--unfreeze-every", dest="unfreeze_every", type=int, default=0,
                 help="steps between unfreezing layers (0: cls_steps / (L + 2))")
  p.add_argument("--no-baseline", dest="baseline", action="store_false")
  p.add_argument("--layer-decay", dest="layer_decay", type=float, default=1 / 2.6,
                 help="ULMFiT classifier: per-layer LR factor (1: one LR for all layers)")
  p.add_argument("--no-unfreeze", dest="unfreeze", action="store_false",
                 help="ULMFiT classifier: every layer trains from step 0")
  p.add_argument("--lm-lr", dest="lm_lr", type=float, default=3e-3)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--bptt", type=int, default=50)
  p.add_argument("--max-len", dest="max_len", type=int, default=64)
  p.add_argument("--train-examples", dest="train_examples", type=int, default=-1)
  p.add_argument("--cache", default="/tmp/rnn_sst2_lm.pkl")
  p.add_argument("--out", default="/tmp/rnn_sst2.json")
  args = p.parse_args(argv)
  log = lambda s: print(s, flush=True)   # noqa: E731

  wiki = open(os.path.join(args.data, "wikitext-2", "train.txt"), encoding="utf-8").read().lower().split("\n")
  wiki = [line for line in wiki if line.strip()]
  train_ex, dev_ex = read_task(get_task("sst2"), os.path.join(args.data, "SST-2"), args.train_examples)
  sst_texts = [e["text_a"] for e in train_ex]
  tok = word_vocab(wiki, sst_texts, args.vocab)
  framing = Framing.bert(tok)
  data = (encode_sentences(train_ex, tok, framing, args.max_len),
          encode_sentences(dev_ex, tok, framing, args.max_len), tok.pad_id)
  log(f"SST-2: {len(train_ex)} train / {len(dev_ex)} dev; vocab {tok.vocab_size}")
  awd = AwdLstmConfig(vocab_size=tok.vocab_size, embed_size=args.embed, hidden_size=args.hidden,
                      num_layers=3, embed_dropout=0.02, input_dropout=0.2, hidden_dropout=0.15,
                      weight_drop=0.2, output_dropout=0.1)
  lm = AwdLstm(awd)
  results = {"args": vars(args)}

  key = f"{args.vocab}-{args.embed}-{args.hidden}-{args.pretrain_steps}-{args.bptt}-{args.batch}"
  if os.path.isfile(args.cache) and pickle.load(open(args.cache, "rb"))["key"] == key:
    cached = pickle.load(open(args.cache, "rb"))
    lm_params, results["pretrain_curve"] = cached["params"], cached["curve"]
    log("1. general-domain LM: cached")
  else:
    log(f"1. general-domain LM on WikiText-2 ({args.pretrain_steps} steps)")
    p0 = nn.meta.unbox(lm.init(jax.random.key(0), {"input_ids": jnp.zeros((1, 4), jnp.int32)})["params"])
    tx = optax.chain(optax.clip_by_global_norm(0.25), optax.adam(args.lm_lr, b1=0.7, b2=0.99))
    lm_params, results["pretrain_curve"] = train_lm(lm, p0, tx, stream(tok, wiki, args.batch, args.bptt),
                                                    args.pretrain_steps, log)
    pickle.dump({"key": key, "params": jax.device_get(lm_params), "curve": results["pretrain_curve"]},
                open(args.cache, "wb"))

  if args.method in ("ulmfit", "both"):
    log(f"2. ULMFiT: target-task LM fine-tuning ({args.lm_finetune_steps} steps)")
    tx, _ = make_optimizer(adam_cfg(args.lm_lr), args.lm_finetune_steps, 0.25, params=lm_params,
                           transfer=transfer_cfg(1 / 2.6), num_layers=3,
                           steps_per_epoch=args.lm_finetune_steps)
    ft_params, curve = train_lm(lm, lm_params, tx, stream(tok, sst_texts, args.batch, args.bptt),
                                args.lm_finetune_steps, log)
    cls = AwdLstm(awd.replace(classifier_hidden=50))
    results["ulmfit"] = {"lm_finetune_curve": curve, **classify(
        "ulmfit", cls, ft_params, data, args, layer_decay=args.layer_decay, unfreeze=args.unfreeze,
        aux=False, log=log)}
    if args.baseline:
      results["ulmfit_baseline"] = classify("ulmfit-baseline (no pretraining)", cls, None, data, args,
                                            layer_decay=1.0, unfreeze=False, aux=False, log=log)
  if args.method in ("siatl", "both"):
    log("3. SiATL: task LSTM + self-attention, decaying auxiliary LM loss, sequential unfreezing")
    sc = SiatlConfig(vocab_size=tok.vocab_size, embed_size=args.embed, hidden_size=args.hidden,
                     num_layers=3, embed_dropout=0.02, input_dropout=0.2, hidden_dropout=0.15,
                     weight_drop=0.2, output_dropout=0.1, task_hidden=128)
    results["siatl"] = classify("siatl", Siatl(sc), lm_params, data, args, layer_decay=1.0,
                                unfreeze=True, aux=True, log=log)
    if args.baseline:
      results["siatl_baseline"] = classify("siatl-baseline (no pretraining)", Siatl(sc), None, data,
                                           args, layer_decay=1.0, unfreeze=False, aux=True, log=log)
  log("\n| method | dev accuracy |\n|---|---|")
  for k in ("ulmfit", "ulmfit_baseline", "siatl", "siatl_baseline"):
    if k in results:
      log(f"| {k} | {results[k]['dev_accuracy']:.4f} |")
  with open(args.out, "w") as f:
    json.dump(results, f, indent=1)
  return results


if __name__ == "__main__":
  main()
