"""`plmjax predict`: try a trained model from the command line.

    plmjax predict SRC fill-mask TEXT... [--top-k 5]         masked LMs: top-k tokens per [MASK]
    plmjax predict SRC generate PROMPT... [--max-new-tokens N] [--sample [--temperature T]
                   [--top-k K] [--top-p P] [--seed S] | --beam K] [--mem-len M]
    plmjax predict SRC score FILE                             any LM: per-token log-probs, perplexity
    plmjax predict SRC classify SENTENCE... | --tsv FILE      a fine-tuned task run: its predictions
    (TEXT / PROMPT / SENTENCE may also come one per line from --file FILE; --json: JSON lines)

SRC is a plmjax run (WORKDIR with config.json and checkpoints/, or WORKDIR/checkpoints/<step>: the
run's own tokenizer, model section and newest checkpoint), a fine-tuning run (`plmjax finetune`'s
WORKDIR, rebuilt as plmjax.finetune.run.FinetuneRun with its framing and heads), or a Hugging Face
folder (plmjax.convert.from_hf and the folder's tokenizer).

- fill-mask (BERT, BERT-wwm, RoBERTa, SpanBERT, ERNIE 1.0, UNILM): the text is framed as the
  pretraining rows are ([CLS] text [SEP]); every [MASK] (the tokenizer's mask spelling) is one
  token; candidates exclude the special tokens.
- generate (GPT-1, GPT-2, Transformer-XL, UNILM seq2seq, MASS): plmjax.decode.sample (greedy, or
  --sample) or beam_search (--beam K) through the model's decoding adapter (CausalDecoding,
  MemoryDecoding carrying Transformer-XL's memory, PrefixLMDecoding, FragmentDecoding: MASS
  writes the fragment of a sentence's run of [MASK]s, one token per mask); each prompt is decoded on
  its own (no padding), starting as a document starts in training (after [EOS] / [BOS]), and the
  output stops at the first end-of-text token.
- score: the file is read as `plmjax eval` reads a corpus (documents split at blank lines or
  headings, one sentence per line), cut into the run's rows (plmjax.data.pipeline.document_rows:
  data.seq_len and data.special_tokens of the run); causal LMs score every next-token target of
  every row as the clm objective does, so the mean is `plmjax eval`'s clm loss on the same text;
  Transformer-XL scores one stream with its memory carried across rows; masked LMs give the
  pseudo-log-likelihood (each token masked in turn; Salazar et al., 2020).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

MASKED = ("bert", "bert_wwm", "roberta", "spanbert", "ernie1", "unilm")
CAUSAL = ("gpt1", "gpt2", "transformer_xl")
MASK_SPELLINGS = ("[MASK]", "<mask>")


class PredictError(ValueError):
  """A bad SRC or input: the message names the path or the value."""


@dataclasses.dataclass
class Loaded:
  name: str                     # registry name (bert, gpt2, transformer_xl, ...)
  module: Any
  params: Any
  tokenizer: Any
  source: str
  seq_len: int                  # rows of `score`
  mode: str                     # "packed" | "stream"
  special_tokens: str           # the data convention the model was trained with
  run: Any = None               # a FinetuneRun for fine-tuned task runs


# ---- loading ---------------------------------------------------------------------------------------
def load(src: str) -> Loaded:
  """A plmjax run, a fine-tuning run or a Hugging Face folder -> model, params, tokenizer."""
  from plmjax.train.init_from import is_hf_folder
  path = os.path.abspath(os.path.expanduser(src))
  if not os.path.isdir(path):
    raise PredictError(f"plmjax predict: {src!r} ({path}) is not a directory (a plmjax run "
                       "workdir or a Hugging Face checkpoint folder)")
  if is_hf_folder(path):
    return _load_hf(path)
  from plmjax.train.checkpoint import run_checkpoint
  try:
    workdir, step_dir = run_checkpoint(path, "plmjax predict SRC")
  except FileNotFoundError as e:
    raise PredictError(f"plmjax predict: {path} holds no checkpoint and no Hugging Face config.json "
                       f"({e})") from None
  cfg_file = os.path.join(workdir, "config.json")
  if not os.path.isfile(cfg_file):
    raise PredictError(f"plmjax predict: {cfg_file} is missing (a plmjax run writes it at its start)")
  import ml_collections
  with open(cfg_file, encoding="utf-8") as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  if "task" in cfg:
    return _load_finetune(cfg, workdir)
  from plmjax.data.sources import corpus_tokenizer
  from plmjax.train.checkpoint import restore_params
  from plmjax.train.config import build_model
  tok = corpus_tokenizer(cfg.data)
  tuples = lambda x: tuple(map(tuples, x)) if isinstance(x, (list, tuple)) else x    # noqa: E731
  model_cfg = ml_collections.ConfigDict({k: tuples(v) for k, v in cfg.model.items()})  # hashable
  module, _ = build_model(model_cfg, tok, "float32")
  params = jax.tree.map(jnp.asarray, restore_params(step_dir, "plmjax predict SRC"))
  return Loaded(cfg.model.name, module, params, tok, step_dir, int(cfg.data.seq_len),
                "stream" if cfg.data.mode == "stream" else "packed", cfg.data.special_tokens)


def _load_hf(path: str) -> Loaded:
  from plmjax.convert import from_hf
  from plmjax.convert.hf import REGISTRY_NAME, read_config
  from plmjax.data.tokenizer import load_tokenizer
  model_type = read_config(path).get("model_type")
  if model_type not in REGISTRY_NAME:
    raise PredictError(f"plmjax predict: {path}/config.json: model_type {model_type!r} is not "
                       f"supported; supported: {sorted(REGISTRY_NAME)}")
  try:
    tok = load_tokenizer(path)
  except FileNotFoundError as e:
    raise PredictError(f"plmjax predict: {path} has no tokenizer ({e})") from None
  module, params = from_hf(path)
  name = REGISTRY_NAME[model_type]
  cfg = module.config
  seq_len = int(getattr(cfg, "max_len", 0) or 512)
  if name == "transformer_xl":
    seq_len = int(cfg.segment_len or 128)
  special = "cls_sep" if name in MASKED else ("eos" if tok.eos_id is not None else "none")
  return Loaded(name, module, params, tok, path, min(seq_len, 512),
                "stream" if name == "transformer_xl" else "packed", special)


def _load_finetune(cfg, workdir: str) -> Loaded:
  from plmjax.finetune.run import FinetuneRun
  run = FinetuneRun(cfg, workdir, create=False)
  step = run.restore_latest(run.train_iterator(), quarantine=False)
  if step is None:
    raise PredictError(f"plmjax predict: no intact checkpoint in {workdir}/checkpoints")
  return Loaded(cfg.model.get("name", "finetune"), run.model, run.state.params, run.tokenizer,
                f"{workdir}/checkpoints/{step}", int(cfg.data.max_len), "packed", "cls_sep", run=run)


def _need(m: Loaded, task: str, names) -> None:
  if m.run is not None and task != "classify":
    raise PredictError(f"plmjax predict: {m.source} is a fine-tuned task run ({m.run.config.task}); "
                       "use `classify`")
  if m.run is None and task == "classify":
    raise PredictError(f"plmjax predict: classify needs a fine-tuning run; {m.source} is a "
                       f"{m.name} language model")
  if names and m.name not in names:
    raise PredictError(f"plmjax predict: {task} is for {', '.join(names)}; {m.source} is {m.name}")
  head = "mlm_head" if m.name in MASKED else "lm_head"
  if m.run is None and not getattr(m.module.config, head, True):
    raise PredictError(f"plmjax predict: {m.source} has no {head.replace('_', ' ')} (an encoder "
                       f"checkpoint): {task} needs one")


# ---- fill-mask -------------------------------------------------------------------------------------
def encode_masked(tok, text: str) -> list[int]:
  """Text with [MASK] (or the tokenizer's own mask spelling) -> ids, each mask one token."""
  if tok.mask_id is None:
    raise PredictError(f"plmjax predict: tokenizer {tok.name!r} has no mask token")
  spellings = set(MASK_SPELLINGS) | {tok.id_to_token(tok.mask_id)}
  parts, rest = [], text
  while True:
    hits = [(rest.find(s), s) for s in spellings if s in rest]
    if not hits:
      parts.append(rest)
      break
    i, s = min(hits)
    parts += [rest[:i], None]
    rest = rest[i + len(s):]
  ids = []
  for p in parts:
    ids += [tok.mask_id] if p is None else (tok.encode(p.strip()) if p.strip() else [])
  return ids


def frame(tok, ids: list[int], max_len: int, what: str) -> list[int]:
  """[CLS] ids [SEP] (when the tokenizer has them), checked against the model's max_len."""
  out = ([tok.cls_id] if tok.cls_id is not None else []) + ids + \
      ([tok.sep_id] if tok.sep_id is not None else [])
  if len(out) > max_len:
    raise PredictError(f"plmjax predict: {what} is {len(out)} tokens; the model's max_len is {max_len}")
  return out


def _mlm_logits(m: Loaded, ids: np.ndarray) -> np.ndarray:
  """ids [B, T] -> log-probs [B, T, V] of a masked LM (bidirectional; UNILM's bi mode types).
  Rows are padded to a multiple of 8 and T to a multiple of 32 (padding masked out), so that
  texts of different lengths share a few compilations."""
  b, t = ids.shape
  rows, length = -(-b // 8) * 8, min(-(-t // 32) * 32, max(int(m.module.config.max_len), t))
  x = np.full((rows, length), m.tokenizer.pad_id, np.int32)
  x[:b, :t] = ids
  mask = np.zeros((rows, length), np.int32)
  mask[:b, :t] = 1
  batch = {"input_ids": jnp.asarray(x), "attention_mask": jnp.asarray(mask),
           "token_type_ids": jnp.zeros(x.shape, jnp.int32)}
  out = _apply(m.module, m.params, batch)
  return np.array(jax.nn.log_softmax(out["logits"][:b, :t].astype(jnp.float32), -1))


@functools.lru_cache(maxsize=8)
def _forward(module):
  return jax.jit(lambda p, b: module.apply({"params": p}, b, train=False))


def _apply(module, params, batch):     # one compilation per module and shape
  return _forward(module)(params, batch)


def fill_mask(m: Loaded, texts: list[str], top_k: int = 5) -> list[dict]:
  """-> per text {"text", "tokens", "masks": [{"position", "candidates": [{"token", "prob"}]}]}."""
  _need(m, "fill-mask", MASKED)
  tok, out = m.tokenizer, []
  special = np.asarray(sorted(set(tok.special_ids) - {None}), np.int64)
  for text in texts:
    ids = frame(tok, encode_masked(tok, text), m.module.config.max_len, f"{text!r}")
    where = [i for i, t in enumerate(ids) if t == tok.mask_id]
    if not where:
      raise PredictError(f"plmjax predict: no [MASK] in {text!r}")
    logp = _mlm_logits(m, np.asarray([ids]))[0]                                      # [T, V]
    logp[:, special] = -np.inf
    masks = []
    for pos in where:
      best = np.argsort(-logp[pos])[:top_k]
      masks.append({"position": pos, "candidates": [
          {"token": tok.id_to_token(int(i)), "id": int(i), "prob": float(np.exp(logp[pos, i]))}
          for i in best]})
    out.append({"text": text, "tokens": [tok.id_to_token(i) for i in ids], "masks": masks})
  return out


# ---- generate --------------------------------------------------------------------------------------
def decoding_for(m: Loaded, mem_len: int = 0):
  from plmjax import decode
  if m.name == "transformer_xl":
    return decode.MemoryDecoding(m.module, mem_len)
  if m.name == "unilm":
    return decode.PrefixLMDecoding(m.module, m.tokenizer.mask_id)
  if m.name == "mass":
    return decode.FragmentDecoding(m.module, m.tokenizer.mask_id)
  if m.name == "xlnet":
    return decode.PermutationDecoding(m.module)
  return decode.CausalDecoding(m.module)


def _fragment(m: Loaded, prompt: str) -> tuple[list[int], list[int]]:
  """MASS: a sentence with one contiguous run of [MASK]s -> (ids, mask positions)."""
  ids = encode_masked(m.tokenizer, prompt)
  where = [i for i, t in enumerate(ids) if t == m.tokenizer.mask_id]
  if not where or where != list(range(where[0], where[-1] + 1)):
    raise PredictError(f"plmjax predict: MASS generates one masked fragment: give a sentence with "
                       f"one contiguous run of [MASK]s (one per token to write), not {prompt!r}")
  if len(ids) > m.module.config.max_len:
    raise PredictError(f"plmjax predict: {prompt!r} is {len(ids)} tokens; max_len is "
                       f"{m.module.config.max_len}")
  return ids, where


def prompt_ids(m: Loaded, prompt: str) -> list[int]:
  """A prompt as a document start looks in training: after the previous document's [EOS] ("eos"
  convention: GPT-2, Transformer-XL), after [BOS] ("bos_eos"); UNILM: [CLS] source [SEP]."""
  tok = m.tokenizer
  ids = tok.encode(prompt)
  if not ids:
    raise PredictError(f"plmjax predict: prompt {prompt!r} has no tokens")
  if m.name == "unilm":
    return frame(tok, ids, m.module.config.max_len, f"prompt {prompt!r}")
  start = {"eos": tok.eos_id, "bos_eos": tok.bos_id}.get(m.special_tokens)
  return ([start] if start is not None else []) + ids


def generate(m: Loaded, prompts: list[str], *, max_new_tokens: int = 20, sample: bool = False,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, beam: int = 0,
             seed: int = 0, mem_len: int = 0) -> list[dict]:
  """-> per prompt {"prompt", "ids", "text"} (generated tokens only, cut at end-of-text)."""
  from plmjax import decode
  _need(m, "generate", CAUSAL + ("unilm", "mass", "xlnet"))
  tok, dec, out = m.tokenizer, decoding_for(m, mem_len), []
  eos = tok.eos_id if tok.eos_id is not None else -1
  for i, prompt in enumerate(prompts):
    if m.name == "mass":                   # the fragment is as long as the run of masks
      ids, where = _fragment(m, prompt)
      max_new_tokens, eos = len(where), -1
    else:
      ids = prompt_ids(m, prompt)
    limit = getattr(m.module.config, "max_len", 0) if m.name not in ("transformer_xl", "mass", "xlnet") else 0
    if limit and len(ids) + max_new_tokens + (m.name == "unilm") > limit:
      raise PredictError(f"plmjax predict: prompt ({len(ids)} tokens) + --max-new-tokens "
                         f"{max_new_tokens} exceed the model's max_len {limit}")
    p = jnp.asarray([ids], jnp.int32)
    mask = jnp.ones_like(p)
    if beam:
      toks, _ = decode.beam_search(dec, m.params, p, mask, max_new_tokens=max_new_tokens,
                                   beam_size=beam, eos_id=eos)
    else:
      toks = decode.sample(dec, m.params, p, mask, jax.random.fold_in(jax.random.PRNGKey(seed), i),
                           max_new_tokens=max_new_tokens, greedy=not sample,
                           temperature=temperature, top_k=top_k, top_p=top_p)
    gen = [int(t) for t in np.asarray(toks[0])]
    if eos in gen:
      gen = gen[:gen.index(eos)]
    rec = {"prompt": prompt, "ids": gen, "text": tok.decode(gen)}
    if m.name == "mass":
      rec["filled"] = tok.decode(ids[:where[0]] + gen + ids[where[-1] + 1:])
    out.append(rec)
  return out


# ---- score -----------------------------------------------------------------------------------------
def read_text(path: str) -> list[str]:
  from plmjax.data.sources import read_documents
  if not os.path.isfile(path):
    raise PredictError(f"plmjax predict: score: {path!r} is not a file")
  docs = read_documents(path)
  if not docs:
    raise PredictError(f"plmjax predict: score: {path} holds no text")
  return docs


def _causal_rows(m: Loaded, rows: dict, batch_size: int = 8):
  """GPT rows [N, T] -> (token ids, per-token log-probs) of every weighted next-token target."""
  from plmjax.objectives.clm import shift_targets
  ids, mask = rows["input_ids"], rows["attention_mask"]
  n = len(ids)
  pad = (-n) % batch_size
  ids = np.concatenate([ids, np.full((pad, ids.shape[1]), m.tokenizer.pad_id, np.int32)])
  mask = np.concatenate([mask, np.zeros((pad, mask.shape[1]), np.int32)])
  toks, lps = [], []
  for s in range(0, len(ids), batch_size):
    b = {"input_ids": jnp.asarray(ids[s:s + batch_size]), "attention_mask": jnp.asarray(mask[s:s + batch_size])}
    logits = _apply(m.module, m.params, b)["logits"].astype(jnp.float32)             # [B, T, V]
    targets, weights = shift_targets(b["input_ids"], b["attention_mask"])
    logp = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0] - jax.nn.logsumexp(logits, -1)
    for r in range(logits.shape[0]):
      w = np.asarray(weights[r]) > 0
      toks.append(np.asarray(targets[r])[w])
      lps.append(np.asarray(logp[r])[w])
  return toks[:n], lps[:n]


def _txl_rows(m: Loaded, rows: dict):
  """One Transformer-XL stream [N, T] -> per-row (targets, log-probs), memory carried across rows."""
  ids = rows["input_ids"]
  stream = ids[rows["attention_mask"] > 0]
  mems = m.module.init_mems(1)
  step = jax.jit(lambda p, x, mm: m.module.apply({"params": p}, {"input_ids": x, "mems": mm}))
  toks, lps, seen = [], [], 0
  for r in range(len(ids)):
    out = step(m.params, jnp.asarray(ids[r:r + 1]), mems)
    mems = out["mems"]
    n = int(rows["attention_mask"][r].sum())
    k = min(n, len(stream) - 1 - seen)                        # positions with a next token
    logits = out["logits"][0, :k].astype(jnp.float32)
    tgt = jnp.asarray(stream[seen + 1:seen + 1 + k])
    lp = jnp.take_along_axis(logits, tgt[:, None], -1)[:, 0] - jax.nn.logsumexp(logits, -1)
    toks.append(np.asarray(tgt))
    lps.append(np.asarray(lp))
    seen += n
  return toks, lps


def _pll_rows(m: Loaded, rows: dict):
  """Masked LM pseudo-log-likelihood: each non-special token of each row masked in turn."""
  tok = m.tokenizer
  special = set(tok.special_ids)
  toks, lps = [], []
  for r in range(len(rows["input_ids"])):
    ids = rows["input_ids"][r][rows["attention_mask"][r] > 0]
    where = [i for i, t in enumerate(ids) if int(t) not in special]
    if not where:
      continue
    copies = np.repeat(ids[None], len(where), 0)
    copies[np.arange(len(where)), where] = tok.mask_id
    logp = _mlm_logits(m, copies)                                                    # [K, T, V]
    toks.append(ids[where])
    lps.append(logp[np.arange(len(where)), where, ids[where]])
  return toks, lps


def score(m: Loaded, path: str) -> dict:
  """-> {"rows": [{"tokens", "logprobs"}], "tokens", "nll" (mean nats/token), "perplexity",
  "method"}."""
  from plmjax.data.pipeline import document_rows
  _need(m, "score", None)
  if m.name not in MASKED + CAUSAL:
    raise PredictError(f"plmjax predict: score supports {', '.join(MASKED + CAUSAL)}; "
                       f"{m.source} is {m.name}")
  texts = read_text(path)
  mode = "stream" if m.name == "transformer_xl" else "packed"
  special = m.special_tokens if m.name not in MASKED else "cls_sep"
  rows = document_rows(texts, m.tokenizer, m.seq_len, mode, special)
  if m.name == "transformer_xl":
    toks, lps, method = *_txl_rows(m, rows), "next token, one stream, memory carried"
  elif m.name in CAUSAL:
    toks, lps, method = *_causal_rows(m, rows), "next token within each row (plmjax eval's clm loss)"
  else:
    toks, lps, method = *_pll_rows(m, rows), "pseudo-log-likelihood (each token masked in turn)"
  n = int(sum(len(t) for t in toks))
  if not n:
    raise PredictError(f"plmjax predict: score: {path} gives no targets")
  total = float(sum(np.sum(lp, dtype=np.float64) for lp in lps))
  tok = m.tokenizer
  return {"file": path, "method": method, "tokens": n, "nll": -total / n,
          "perplexity": math.exp(min(-total / n, 50.0)),
          "rows": [{"tokens": [tok.id_to_token(int(i)) for i in t], "logprobs": [float(x) for x in lp]}
                   for t, lp in zip(toks, lps)]}


# ---- fine-tuned task runs: plmjax/finetune/predict.py -------------------------------------------
def classify(m: Loaded, examples: list[dict], task: Optional[str] = None) -> list[dict]:
  """-> per example {"text_a", ("text_b"), "prediction"} (plmjax.finetune.predict)."""
  from plmjax.finetune import predict as fpredict
  _need(m, "classify", None)
  return fpredict.classify(m.run, examples, task)


def read_examples_tsv(path: str, spec) -> list[dict]:
  from plmjax.finetune import predict as fpredict
  return fpredict.read_examples_tsv(path, spec)


# ---- the command -----------------------------------------------------------------------------------
def _inputs(args) -> list[str]:
  items = list(args.inputs)
  if args.file:
    if not os.path.isfile(args.file):
      raise PredictError(f"plmjax predict: --file {args.file!r} is not a file")
    with open(args.file, encoding="utf-8") as f:
      items += [ln.rstrip("\n") for ln in f if ln.strip()]
  return items


def _text(task: str, rec: dict) -> str:      # noqa: C901 - one branch per task
  if task == "fill-mask":
    lines = [rec["text"]]
    for mk in rec["masks"]:
      cands = "  ".join(f"{c['token']} {c['prob']:.3f}" for c in mk["candidates"])
      lines.append(f"  [MASK] at {mk['position']}: {cands}")
    return "\n".join(lines)
  if task == "generate":
    return rec["filled"] if "filled" in rec else f"{rec['prompt']} >>> {rec['text']}"
  if task == "classify":
    return "\t".join([rec["text_a"]] + ([rec["text_b"]] if "text_b" in rec else []) +
                     [str(rec["prediction"])])
  rows = [" ".join(f"{t}:{lp:.2f}" for t, lp in zip(r["tokens"], r["logprobs"])) for r in rec["rows"]]
  return "\n".join(rows + [f"{rec['file']}: {rec['tokens']} tokens, mean nll {rec['nll']:.4f} "
                           f"nats/token, perplexity {rec['perplexity']:.3f} ({rec['method']})"])


def run_command(args) -> int:
  """`plmjax predict SRC TASK ...` (plmjax.cli adds the arguments)."""
  m = load(args.src)
  task = args.task
  if task == "score":
    if len(args.inputs) != 1 or args.file:
      raise PredictError("plmjax predict: score takes one text file: plmjax predict SRC score FILE")
    records = [score(m, args.inputs[0])]
  elif task == "classify":
    examples = [{"text_a": t, "text_b": None, "label": 0} for t in _inputs(args)]
    if args.tsv:
      spec = m.run.tasks[args.task_name or next(iter(m.run.tasks))].spec if m.run else None
      examples += read_examples_tsv(args.tsv, spec) if spec else []
    if not examples:
      raise PredictError("plmjax predict: classify: give sentences, --file or --tsv")
    records = classify(m, examples, args.task_name)
  else:
    items = _inputs(args)
    if not items:
      raise PredictError(f"plmjax predict: {task}: give the text on the command line or in --file")
    if task == "fill-mask":
      records = fill_mask(m, items, args.top_k or 5)
    else:
      records = generate(m, items, max_new_tokens=args.max_new_tokens, sample=args.sample,
                         temperature=args.temperature, top_k=args.top_k or 0, top_p=args.top_p,
                         beam=args.beam, seed=args.seed, mem_len=args.mem_len)
  for rec in records:
    print(json.dumps(rec) if args.json else _text(task, rec), flush=True)
  return 0
