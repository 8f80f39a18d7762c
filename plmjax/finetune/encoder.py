"""Where the fine-tuned encoder comes from: a Hugging Face checkpoint, a plmjax run, or nothing.

    enc = load_encoder(cfg, tokenizer)      # Encoder(module, params or None, num_layers)

`model.init_from`:
  * a folder with config.json: a Hugging Face checkpoint, imported by `plmjax.convert.from_hf`;
  * a plmjax workdir (DIR/config.json + DIR/checkpoints/<step>/state, as `plmjax train` writes
    them; the latest step) or one checkpoint DIR/checkpoints/<step>: the run's config rebuilds the
    model (plmjax.train.config.build_model) and its tokenizer (plmjax.data.sources.corpus_tokenizer),
    orbax restores the params;
  * "": `model.name` built from the registry with `model.arch` overrides, randomly initialised
    (training from scratch: the baseline that pretraining must beat).

With a plmjax run, `model.arch` overrides fields of the run's model config (they must still fit the
checkpoint), and layers the checkpoint does not have are added, randomly initialised (listed when
the run loads them): a SiATL LM run gets its classifier (task LSTM + self-attention),
`model.wrap = "siatl"` puts a ULMFiT (AWD-LSTM) LM inside SiATL, `model.arch.classifier_hidden=50`
adds ULMFiT's 50-unit layer.

Pretraining heads are dropped (BERT's MLM / NSP heads: they would cost a [B, T, V] projection per
step for nothing), except a causal LM head when GPT-1's auxiliary LM loss is on.

GPT-1 input transformations (Radford et al. 2018, sec. 3.3) need three new tokens, start / delimiter
/ extract: `add_framing_tokens` appends three rows to the token embedding (normal(0, 0.02)) and
returns their ids.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp

from plmjax.train.checkpoint import restore_params, run_checkpoint
from plmjax.train.init_from import is_hf_folder


@dataclasses.dataclass
class Encoder:
  module: Any
  params: Optional[dict]        # None: random init (the task model's init provides them)
  num_layers: int
  source: str


def _model_type(module) -> str:
  return type(module).__name__.lower()


RNN_LMS = ("awdlstm", "siatl")      # always compute their tied LM logits (XLA drops them when unused)


def _strip_heads(module, params, keep_lm: bool):
  cfg = module.config
  kw, drop = {}, []
  for field, sub in (("mlm_head", "mlm_head"), ("nsp_head", "nsp_head")):
    if getattr(cfg, field, False):
      kw[field] = False
      drop.append(sub)
  if hasattr(cfg, "lm_head"):
    kw["lm_head"] = keep_lm
  elif keep_lm and _model_type(module) not in RNN_LMS:
    raise ValueError(f"head.lm_coef > 0 needs a causal LM encoder; {type(module).__name__} has none")
  module = module.clone(config=cfg.replace(**kw))
  if params is not None:
    params = {k: v for k, v in params.items() if k not in drop}
  return module, params


def plmjax_run(path: str) -> tuple[str, str]:
  """-> (workdir, checkpoint step directory) of a plmjax workdir or one of its checkpoints."""
  return run_checkpoint(path, "model.init_from")


def plmjax_run_config(path: str):
  import json

  import ml_collections
  workdir, _ = plmjax_run(path)
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def plmjax_tokenizer(path: str):
  """The tokenizer a plmjax pretraining run used (its data section)."""
  from plmjax.data.sources import corpus_tokenizer
  return corpus_tokenizer(plmjax_run_config(path).data)


def load_plmjax(path: str, tokenizer):
  """(module, params) of a plmjax pretraining run's checkpoint."""
  from plmjax.train.config import build_model
  run_cfg = plmjax_run_config(path)
  module, _ = build_model(run_cfg.model, tokenizer, "float32")
  params = restore_params(path, "model.init_from")
  return module, jax.tree.map(jnp.asarray, params)


def load_encoder(cfg, tokenizer) -> Encoder:
  m = cfg.model
  path = m.init_from
  keep_lm = float(cfg.head.lm_coef) > 0
  if m.wrap and is_hf_folder(path):        # (fconfig.validate checks the value and init_from)
    raise ValueError(f"model.wrap={m.wrap!r} needs model.init_from = a plmjax LM run (a ulmfit workdir)")
  overrides = {}
  if m.dropout_rate >= 0:
    overrides = dict(dropout_rate=float(m.dropout_rate), attention_dropout_rate=float(m.dropout_rate))
  if path and is_hf_folder(path):
    from plmjax.convert import from_hf
    module, params = from_hf(path, scan_layers=bool(m.scan_layers), **overrides)
    source = f"hf:{path}"
  elif path:
    if not os.path.exists(path):
      raise FileNotFoundError(f"model.init_from={path!r} does not exist")
    module, params = load_plmjax(path, tokenizer)
    if overrides:
      module = module.clone(config=module.config.replace(**overrides))
    module, params = adapt_pretrained(module, params, m)
    source = f"plmjax:{path}" + (f" in {m.wrap}" if m.wrap else "")
  else:
    from plmjax.train.config import build_model, model_section
    arch = dict(m.arch)
    if not m.scan_layers:
      arch["scan_layers"] = False
    module, _ = build_model(model_section(m.name, **{**arch, **overrides}), tokenizer, "float32")
    params, source = None, f"scratch:{m.name}"
  if params is not None and int(module.config.vocab_size) < int(tokenizer.vocab_size):
    raise ValueError(f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} ids but the model's "
                     f"vocabulary has {module.config.vocab_size} (data.tokenizer does not fit model.init_from)")
  module, params = _strip_heads(module, params, keep_lm)
  return Encoder(module, params, int(module.config.num_layers), source)


def add_framing_tokens(enc: Encoder, seed: int = 0) -> tuple[Encoder, tuple[int, int, int]]:
  """Three new token ids (start, delimiter, extract) appended to the vocabulary."""
  cfg = enc.module.config
  v = int(cfg.vocab_size)
  module = enc.module.clone(config=cfg.replace(vocab_size=v + 3))
  params = enc.params
  if params is not None:
    table = params["token_embed"]["embedding"]                                         # [V, E]
    new = 0.02 * jax.random.normal(jax.random.key(seed), (3, table.shape[1]), table.dtype)
    params = {**params, "token_embed": {**params["token_embed"],
                                        "embedding": jnp.concatenate([table, new], axis=0)}}
  return dataclasses.replace(enc, module=module, params=params), (v, v + 1, v + 2)


def check_vocab_fits(ids_max: int, enc: Encoder):
  if ids_max >= int(enc.module.config.vocab_size):
    raise ValueError(f"token id {ids_max} is outside the model's vocabulary "
                     f"({enc.module.config.vocab_size}); data.tokenizer does not fit the model")


def adapt_pretrained(module, params: dict, model_cfg):
  """A plmjax run's (module, params) -> the fine-tuning encoder (module, params): the `model.wrap`
  model around it, SiATL's classifier switched on, `model.arch` overrides applied. Layers the
  checkpoint lacks start fresh when the run loads it (plmjax.train.init_from.merge_params)."""
  from plmjax.models.siatl import Siatl, from_awd_lstm
  arch = dict(model_cfg.arch)
  if model_cfg.wrap == "siatl":
    if _model_type(module) != "awdlstm":
      raise ValueError(f"model.wrap='siatl' needs an AWD-LSTM LM (a ulmfit run); model.init_from "
                       f"is a {type(module).__name__} run")
    task = {k: arch.pop(k) for k in ("task_hidden", "task_dropout") if k in arch}
    module, params = Siatl(from_awd_lstm(module.config, **task)), {"lm": params}
  if _model_type(module) == "siatl" and not module.config.classifier:
    module = module.clone(config=module.config.replace(classifier=True))
  if arch:
    fields = set(dataclasses.asdict(module.config))
    bad = sorted(set(arch) - fields)
    if bad:
      raise ValueError(f"model.arch.{bad[0]}: {type(module.config).__name__} has no such field")
    module = module.clone(config=module.config.replace(**arch))
  return module, params
