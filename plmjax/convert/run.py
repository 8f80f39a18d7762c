"""plmjax run folders <-> Hugging Face checkpoint folders (`plmjax convert SRC DST`).

    export_run(RUN, HF_DIR)     RUN = a plmjax workdir (its latest checkpoint) or RUN/checkpoints/<step>
                                -> HF_DIR/config.json, model.safetensors and the run's tokenizer
    import_run(HF_DIR, RUN)     -> RUN/config.json, RUN/config.py, RUN/tokenizer/, RUN/checkpoints/0

Export rebuilds the run's model from RUN/config.json (plmjax.train.config.build_model, the
tokenizer from the data section) and writes its params through plmjax.convert.hf.to_hf. The
tokenizer goes along as tokenizer.json + tokenizer_config.json, which transformers' AutoTokenizer
loads (a sentencepiece model also as spiece.model; plmjax.convert.tokenizer).

Import writes a complete run: the config is experiments/<model>.py:tiny with the checkpoint's
model section (plain MLM for a BERT without NSP head) and data.tokenizer = RUN/tokenizer, and
checkpoint 0 is what `plmjax train` itself saves (TrainState with a fresh optimizer state, data
iterator position), so `plmjax eval --config RUN/config.py --workdir RUN`, `plmjax train` (continued
pretraining from step 0), train.init_from / model.init_from = RUN all take it. The HF folder must
hold a tokenizer whose vocabulary size equals the model's (a plmjax run takes vocab_size from it).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np

from plmjax.convert.hf import REGISTRY_NAME, CheckpointError, from_hf, read_config, to_hf
from plmjax.convert.tokenizer import write_tokenizer

CONFIG_PY = '''"""Config of the plmjax run in this folder (converted from a Hugging Face checkpoint by
`plmjax convert`): this folder's config.json.

    plmjax eval  --config {run}/config.py --workdir {run} --config.data.path=...
    plmjax train --config {run}/config.py --workdir {run} --config.train.steps=...
"""
import json
import os

from ml_collections import ConfigDict


def get_config(arg: str = "") -> ConfigDict:
  with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.json")) as f:
    return ConfigDict(json.load(f))
'''


def is_run(path: str) -> bool:
  path = os.path.abspath(path)
  return os.path.isdir(os.path.join(path, "checkpoints")) or (
      os.path.basename(path).isdigit()
      and os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(path)), "config.json")))


def _run_config(workdir: str):
  import ml_collections
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


# --------------------------------------------------------------------------------------------------
# Tokenizers


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt")


def _copy_hf_tokenizer(hf_dir: str, dst: str) -> None:
  os.makedirs(dst, exist_ok=True)
  names = [f for f in os.listdir(hf_dir) if f in TOKENIZER_FILES or f.endswith(".model")]
  for name in names:
    shutil.copyfile(os.path.join(hf_dir, name), os.path.join(dst, name))


# --------------------------------------------------------------------------------------------------
# Run -> HF


def export_run(src: str, dst: str) -> dict:
  """A plmjax run (or one of its checkpoints) -> Hugging Face folder `dst`; returns the HF config."""
  import jax
  from plmjax.data.sources import corpus_tokenizer
  from plmjax.train.checkpoint import restore_params, run_checkpoint
  from plmjax.train.config import build_model
  workdir, step_dir = run_checkpoint(src, "plmjax convert SRC")
  cfg = _run_config(workdir)
  tokenizer = corpus_tokenizer(cfg.data)
  _, model_config = build_model(cfg.model, tokenizer, "float32")
  params = jax.tree.map(np.asarray, restore_params(step_dir, "plmjax convert SRC"))
  hf_config = to_hf(cfg.model.name, model_config, params, dst)
  files = write_tokenizer(tokenizer, dst)
  print(f"{step_dir} ({cfg.model.name}) -> {dst}: config.json, model.safetensors, {', '.join(files)}")
  return hf_config


# --------------------------------------------------------------------------------------------------
# HF -> run


def experiments_dir() -> str:
  import plmjax
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(plmjax.__file__))), "experiments")


def run_config_for(name: str, model_config, tokenizer_path: str):
  """experiments/<name>.py:tiny with `model_config`'s model section and data.tokenizer set."""
  from plmjax.objectives import default_objective_config
  from plmjax.train.config import MODEL_RUNTIME_FIELDS, load_config, model_section, validate
  spec = os.path.join(experiments_dir(), f"{name}.py")
  if not os.path.isfile(spec):
    raise FileNotFoundError(f"{spec}: the experiment config a converted {name} run starts from")
  cfg = load_config(spec + ":tiny")
  fields = {k: v for k, v in dataclasses.asdict(model_config).items() if k not in MODEL_RUNTIME_FIELDS}
  cfg.model = model_section(name, **fields)
  if getattr(model_config, "mlm_head", False) and not getattr(model_config, "nsp_head", True) \
      and cfg.objective.name == "mlm_nsp":
    cfg.objective = default_objective_config("mlm")
    cfg.data.mode = "packed"
  cfg.data.tokenizer = os.path.abspath(tokenizer_path)
  cfg.data.seq_len = min(int(cfg.data.seq_len), int(getattr(model_config, "max_len", cfg.data.seq_len)))
  validate(cfg)
  return cfg


def import_run(src: str, dst: str) -> str:
  """Hugging Face folder `src` -> plmjax run folder `dst` (see the module docstring)."""
  from plmjax.data.tokenizer import load_tokenizer
  hf_config = read_config(src)
  name = REGISTRY_NAME.get(hf_config.get("model_type"))
  if name is None:
    raise CheckpointError(f"{src}/config.json: model_type {hf_config.get('model_type')!r} is not "
                          f"supported; supported: {sorted(REGISTRY_NAME)}")
  if os.path.isdir(os.path.join(dst, "checkpoints")) and os.listdir(os.path.join(dst, "checkpoints")):
    raise FileExistsError(f"{dst}/checkpoints is not empty: import into a new folder")
  module, params = from_hf(src)
  tok_dir = os.path.join(os.path.abspath(dst), "tokenizer")
  _copy_hf_tokenizer(src, tok_dir)
  try:
    tokenizer = load_tokenizer(tok_dir)
  except FileNotFoundError:
    raise CheckpointError(f"{src}: no tokenizer (tokenizer.json, vocab.txt, vocab.json + merges.txt or "
                          "*.model); a plmjax run needs one (its vocabulary sets vocab_size)") from None
  mc = module.config
  if tokenizer.vocab_size != mc.vocab_size:
    raise CheckpointError(f"{src}: the tokenizer has {tokenizer.vocab_size} ids but the model's vocab_size "
                          f"is {mc.vocab_size}; a plmjax run takes vocab_size from its tokenizer")
  if hasattr(mc, "pad_token_id") and getattr(mc, "padding_offset_positions", False) \
      and tokenizer.pad_id != mc.pad_token_id:
    raise CheckpointError(f"{src}: the tokenizer's pad id {tokenizer.pad_id} != config.json pad_token_id "
                          f"{mc.pad_token_id} (RoBERTa positions count from it)")
  cfg = run_config_for(name, mc, tok_dir)
  with open(os.path.join(dst, "config.py"), "w", encoding="utf-8") as f:
    f.write(CONFIG_PY.format(run=dst))
  write_run(cfg, dst, params)
  print(f"{src} ({hf_config['model_type']}) -> {dst}: config.json, config.py, tokenizer/, checkpoints/0")
  return dst


def write_run(cfg, dst: str, params) -> None:
  """A plmjax run folder holding `params` at step 0: dst/config.json and the checkpoint that
  `plmjax train` saves (plmjax.train.loop.Run's TrainState with these params, a fresh optimizer
  state and the data iterator at its start)."""
  import jax
  from plmjax.train.init_from import merge_params
  from plmjax.train.loop import Run
  os.makedirs(dst, exist_ok=True)
  with open(os.path.join(dst, "config.json"), "w", encoding="utf-8") as f:
    f.write(cfg.to_json_best_effort(indent=2))
  run = Run(cfg, dst)
  try:
    ours, report = merge_params(jax.device_get(run.state.params), jax.tree.map(np.asarray, params),
                                source=dst, key="plmjax convert")
  except ValueError as e:
    raise CheckpointError(str(e)) from None
  if report.new or report.dropped:
    raise CheckpointError(f"params do not fit the run's {cfg.model.name} model: missing "
                          f"{report.new[:5]}, unexpected {report.dropped[:5]}")
  run.state = run.state.replace(params=jax.device_put(ours, run.shardings.params))
  run.checkpointer.save(0, run.state, iter(run.train_data), cfg, force=True)
  run.checkpointer.close()


def convert(src: str, dst: str) -> None:
  """`plmjax convert SRC DST`: the direction follows SRC (a plmjax run or a Hugging Face folder)."""
  if is_run(src):
    export_run(src, dst)
  elif os.path.isfile(os.path.join(src, "config.json")):
    import_run(src, dst)
  else:
    raise FileNotFoundError(f"plmjax convert: {src!r} is neither a plmjax run (config.json + "
                            "checkpoints/) nor a Hugging Face checkpoint folder (config.json)")
