"""Model registry: every model of the survey, by name, with what it is built from.

`build(name, **overrides) -> (module, config)` instantiates an implemented model. `SURVEY` lists
all of the survey's models with their feature extractor, objective, masking and status; README's
model table is generated from it (`python -m plmjax.models.registry`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

from plmjax.models import bert, gpt, seq2seq
from plmjax.models import awd_lstm, elmo, ernie_thu, siatl
from plmjax.models import transformer_xl, xlnet


@dataclasses.dataclass(frozen=True)
class InitAdapter:
  """How a model starts from another family's checkpoint (`train.init_from` / `model.init_from`,
  plmjax.train.init_from): ERNIE (THU) from a BERT."""
  family: str                   # module class of the checkpoints it reads ("Bert")
  params: Callable              # (loaded params, model config) -> (params in the model's layout, log note)
  own_fields: tuple = ()        # architecture fields that stay the config's (ERNIE's num_layers is N, not L)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  name: str
  paper: str
  extractor: str
  objective: str
  masking: str
  config: Optional[Callable] = None      # **overrides -> config dataclass (None: not built yet)
  module: Optional[type] = None
  status: str = "planned"
  init_adapter: Optional[InitAdapter] = None


SURVEY: dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec("elmo", "Peters et al. 2018", "BiLSTM + char-CNN", "bidirectional LM (two directions)", "-",
              elmo.elmo_original, elmo.Elmo, "implemented"),
    ModelSpec("ulmfit", "Howard & Ruder 2018", "AWD-LSTM", "causal LM", "-",
              awd_lstm.awd_lstm, awd_lstm.AwdLstm, "implemented"),
    ModelSpec("siatl", "Chronopoulou et al. 2019", "LSTM", "causal LM + auxiliary LM loss", "-",
              siatl.siatl, siatl.Siatl, "implemented"),
    ModelSpec("gpt1", "Radford et al. 2018", "Transformer decoder (post-LN)", "causal LM", "-",
              gpt.gpt1, gpt.GPT, "implemented"),
    ModelSpec("gpt2", "Radford et al. 2019", "Transformer decoder (pre-LN)", "causal LM", "-",
              gpt.gpt2, gpt.GPT, "implemented"),
    ModelSpec("bert", "Devlin et al. 2019", "Transformer encoder (post-LN)", "MLM + NSP", "subword 15%, 80/10/10",
              bert.bert_base, bert.Bert, "implemented"),
    ModelSpec("bert_wwm", "Cui et al. 2019", "Transformer encoder (post-LN)", "MLM + NSP", "whole word",
              functools.partial(bert.bert_base, vocab_size=21128), bert.Bert, "implemented"),
    ModelSpec("roberta", "Liu et al. 2019", "Transformer encoder", "MLM (dynamic), no NSP", "subword, dynamic",
              bert.roberta_base, bert.Bert, "implemented"),
    ModelSpec("spanbert", "Joshi et al. 2020", "Transformer encoder (post-LN)", "MLM + span boundary objective, no NSP",
              "geometric span (whole words)", bert.spanbert_base, bert.Bert, "implemented"),
    ModelSpec("mass", "Song et al. 2019", "Transformer encoder-decoder", "masked seq2seq", "one contiguous fragment (50 %)",
              seq2seq.mass_base, seq2seq.Seq2Seq, "implemented"),
    ModelSpec("unilm", "Dong et al. 2019", "Transformer encoder (post-LN)", "bi / l2r / r2l / seq2seq masked LM",
              "subword 15%, per-row attention masks", bert.unilm_base, bert.Bert, "implemented"),
    ModelSpec("ernie1", "Sun et al. 2019a", "Transformer encoder (post-LN)", "MLM + NSP", "staged: subword -> phrase -> entity",
              functools.partial(bert.bert_base, vocab_size=18000), bert.Bert, "implemented"),
    ModelSpec("ernie_thu", "Zhang et al. 2019", "Transformer encoder + knowledge encoder", "MLM + NSP + dEA (entity alignment)",
              "subword 15%; entities 5% replaced / 15% masked", ernie_thu.ernie_thu_base, ernie_thu.ErnieThu, "implemented",
              InitAdapter("Bert", ernie_thu.adapt_checkpoint, ("num_layers",))),
    ModelSpec("mtdnn", "Liu et al. 2019", "Transformer encoder", "multi-task fine-tuning", "-",
              status="fine-tuning mode: experiments/mtdnn.py"),
    ModelSpec("ernie2", "Sun et al. 2020", "Transformer encoder", "continual multi-task pretraining", "subword, phrase, entity"),
    ModelSpec("transformer_xl", "Dai et al. 2019", "Transformer-XL (relative, memory)", "causal LM", "-",
              transformer_xl.TransformerXLConfig, transformer_xl.TransformerXL, "implemented"),
    ModelSpec("xlnet", "Yang et al. 2019", "Transformer-XL, two-stream", "permutation LM", "n-gram span targets",
              xlnet.XLNetConfig, xlnet.XLNet, "implemented"),
]}


def build(name: str, **overrides):
  """-> (flax module, config). Unknown names and unbuilt models are errors that say so."""
  if name not in SURVEY:
    raise KeyError(f"unknown model {name!r}; known: {sorted(SURVEY)}")
  spec = SURVEY[name]
  if spec.config is None:
    raise NotImplementedError(f"model {name!r} is listed in the survey but not implemented yet")
  fields = {f.name for f in dataclasses.fields(spec.config())}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise KeyError(f"model {name!r}: unknown config keys {unknown}; valid: {sorted(fields)}")
  cfg = spec.config(**overrides)
  return spec.module(cfg), cfg


def markdown_table() -> str:
  rows = ["| model | paper | feature extractor | objective | masking | status |",
          "|---|---|---|---|---|---|"]
  for s in SURVEY.values():
    rows.append(f"| {s.name} | {s.paper} | {s.extractor} | {s.objective} | {s.masking} | {s.status} |")
  return "\n".join(rows)


BEGIN, END = "<!-- model-table:begin -->", "<!-- model-table:end -->"


def update_readme(path: str) -> bool:
  """Rewrites the table between the model-table markers of README; True if it changed."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if BEGIN not in text or END not in text:
    raise ValueError(f"{path}: no {BEGIN} ... {END} markers")
  head, rest = text.split(BEGIN, 1)
  _, tail = rest.split(END, 1)
  new = f"{head}{BEGIN}\n{markdown_table()}\n{END}{tail}"
  if new != text:
    with open(path, "w", encoding="utf-8") as f:
      f.write(new)
  return new != text


if __name__ == "__main__":
  import sys
  if len(sys.argv) > 2 and sys.argv[1] == "--update-readme":
    print("updated" if update_readme(sys.argv[2]) else "up to date")
  else:
    print(markdown_table())
