"""ERNIE (THU)'s knowledge side: the release's file formats, TransE and its filtered metrics, the
generated knowledge graph, entity-aligned batches, the fine-tuning markers, `plmjax transe`, and the
ablation script's --quick run."""
import os
import subprocess
import sys

import numpy as np
import pytest

from plmjax.knowledge import data as kdata, formats, kg, synthetic_kg, transe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_formats_round_trip(tmp_path):
  names = ["Q1", "Valkyria Chronicles", "é"]
  formats.write_id_file(tmp_path / "entity2id.txt", names)
  assert formats.read_id_file(str(tmp_path / "entity2id.txt")) == names
  v = np.random.RandomState(0).randn(3, 7).astype(np.float32)
  formats.write_vectors(str(tmp_path / "entity2vec.vec"), v)
  assert formats.read_vectors(str(tmp_path / "entity2vec.vec"), 3).tobytes() == v.tobytes()   # bit-exact
  t = np.array([[0, 1, 2], [2, 0, 1]], np.int32)
  formats.write_openke_triples(str(tmp_path / "train2id.txt"), t)
  assert (tmp_path / "train2id.txt").read_text().splitlines()[1] == "0 2 1"       # OpenKE: head tail rel
  np.testing.assert_array_equal(formats.read_openke_triples(str(tmp_path / "train2id.txt")), t)
  named = [("a", "r", "b"), ("b", "s", "a")]
  formats.write_triples_tsv(str(tmp_path / "t.tsv"), named)
  assert formats.read_triples_tsv(str(tmp_path / "t.tsv")) == named
  anchors = [(0, 3, 5, "a"), (2, 0, 1, "Valkyria Chronicles")]
  formats.write_anchors(str(tmp_path / "anchors.tsv"), anchors)
  assert formats.read_anchors(str(tmp_path / "anchors.tsv")) == anchors


def test_malformed_files_name_file_and_line(tmp_path):
  p = tmp_path / "entity2id.txt"
  p.write_text("2\nQ1\t0\nQ2 1\n")
  with pytest.raises(formats.FormatError, match=r"entity2id.txt:3: expected NAME<TAB>ID"):
    formats.read_id_file(str(p))
  p = tmp_path / "entity2vec.vec"
  p.write_text("0.1\t0.2\n0.3\n")
  with pytest.raises(formats.FormatError, match=r"entity2vec.vec:2: 1 values"):
    formats.read_vectors(str(p))
  p = tmp_path / "t.tsv"
  p.write_text("a\tr\tb\na\tr\n")
  with pytest.raises(formats.FormatError, match=r"t.tsv:2: expected HEAD<TAB>RELATION<TAB>TAIL"):
    formats.read_triples_tsv(str(p))
  with pytest.raises(formats.FormatError, match="unknown entity 'zz'"):
    formats.index_triples([("a", "r", "zz")], ["a"], ["r"])


def test_filtered_ranks_remove_other_true_answers():
  scores = np.array([[0.5, 0.1, 0.2, 0.9]])       # lower is better; the true answer is entity 0
  assert transe._filtered_ranks(scores, np.array([0]), [set()])[0] == 3
  assert transe._filtered_ranks(scores, np.array([0]), [{0, 1}])[0] == 2   # entity 1 is also true
  r = transe.random_baseline(4)
  assert r["mr"] == 2.5 and abs(r["mrr"] - (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4) < 1e-12


def test_transe_beats_random_ranking_on_held_out_triples():
  """A structured KG (relation r maps group g to group g + r + 1): held-out facts are predictable."""
  rs = np.random.RandomState(0)
  group = np.repeat(np.arange(6), 5)                   # 30 entities in 6 groups
  facts = {(h, r, int(rs.choice(np.where(group == group[h] + r + 1)[0])))
           for h in range(30) for r in range(3) for _ in range(2) if group[h] + r + 1 < 6}
  facts = np.asarray(sorted(facts), np.int32)
  train, test = transe.split_triples(facts, 0.15, 0)
  cfg = transe.TransEConfig(dim=16, steps=400, batch_size=128, margin=2.0, negatives=8, learning_rate=0.01)
  params, curve = transe.train(cfg, train, 30, 3, log_every=100)
  assert curve[-1] < curve[0]
  m = transe.evaluate(params, test, facts, cfg.norm)
  rnd = transe.random_baseline(30)
  assert m["mrr"] > 2 * rnd["mrr"] and m["mr"] < rnd["mr"] / 2, (m, rnd)


def test_generated_kg_is_deterministic_and_keeps_unstated_facts_out_of_the_text():
  a, b = synthetic_kg.build_kg(), synthetic_kg.build_kg.__wrapped__(synthetic_kg.KGConfig())
  np.testing.assert_array_equal(a.facts, b.facts)
  np.testing.assert_array_equal(a.stated, b.stated)
  docs = synthetic_kg.documents("train")
  again = synthetic_kg.documents("train")
  assert [d["text"] for d in docs[:50]] == [d["text"] for d in again[:50]]
  text = "\n".join(d["text"] for d in docs)
  unstated = a.facts[~a.stated]
  for h, r, t in unstated[:60].tolist():
    assert " ".join(a.name_words[h] + (a.verbs[r],) + a.name_words[t]) not in text
  stated = a.facts[a.stated]
  said = sum(" ".join(a.name_words[h] + (a.verbs[r],) + a.name_words[t]) in text for h, r, t in stated.tolist())
  assert said > 0.9 * len(stated)
  train, dev = synthetic_kg.rc_examples()
  fact = lambda x: (x["head_kg"], x["label"], x["tail_kg"])
  assert not {fact(x) for x in train} & {fact(x) for x in dev}
  assert {fact(x) for x in train + dev} == {tuple(f) for f in unstated.tolist()}
  # the types leave two candidate relations per (head type, tail type) signature
  sigs = {}
  for h, r, t in a.facts.tolist():
    sigs.setdefault((a.types[h], a.types[t]), set()).add(r)
  assert all(len(v) == 2 for v in sigs.values())


def test_batches_align_entities_to_the_first_token_of_each_mention():
  from plmjax.data import build_dataset, default_data_config
  c = default_data_config()
  c.path, c.mode = "kg:synthetic", "pairs"
  ds = build_dataset(c, split="valid", global_batch_size=8, seq_len=64, seed=0)
  tok, ks = ds.tokenizer, kg.open_knowledge("kg:synthetic")
  g = synthetic_kg.build_kg()
  batch = next(iter(ds))
  assert batch["ent_ids"].shape == batch["input_ids"].shape and batch["input_ids"].max() < tok.vocab_size
  n = 0
  for row_ids, row_ent in zip(batch["input_ids"], batch["ent_ids"]):
    for p in np.nonzero(row_ent >= 0)[0]:
      name = " ".join(g.name_words[row_ent[p]])
      pieces = tok.encode(name)
      assert row_ids[p:p + len(pieces)].tolist() == pieces      # the mention starts here
      n += 1
  assert n > 8 and ks.num_entities == len(g.entities)


def test_fine_tuning_markers():
  tok = kdata._synthetic_tokenizer()
  train, _ = synthetic_kg.rc_examples()
  ex = train[0]
  row = kdata.mark_relation(ex, tok, 48)
  toks = [tok.id_to_token(int(i)) for i in row["input_ids"][row["attention_mask"] > 0]]
  assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
  assert toks.count("[HD]") == 2 and toks.count("[TL]") == 2
  ents = row["ent_ids"][row["attention_mask"] > 0]
  hd = toks.index("[HD]")
  tl = toks.index("[TL]")
  assert ents[hd + 1] == ex["head_kg"] and ents[tl + 1] == ex["tail_kg"] and (ents >= 0).sum() == 2
  ty_train, _ = synthetic_kg.typing_examples()
  row = kdata.mark_entity(ty_train[0], tok, 32)
  toks = [tok.id_to_token(int(i)) for i in row["input_ids"][row["attention_mask"] > 0]]
  assert toks[1] == "[ENT]" and toks.count("[ENT]") == 2 and row["ent_ids"][2] == ty_train[0]["kg"]
  assert all(tok.token_to_id(m) in tok.special_ids for m in kdata.MARKERS)
  # a public BERT vocabulary has no markers: its reserved [unused0/1/2] stand in
  from plmjax.data import synthetic
  from plmjax.data.tokenizer import wordpiece_tokenizer
  bert_like = wordpiece_tokenizer(synthetic.grammar().vocab() + ["[unused0]", "[unused1]", "[unused2]"])
  row = kdata.mark_relation(ex, bert_like, 48)
  toks = [bert_like.id_to_token(int(i)) for i in row["input_ids"][row["attention_mask"] > 0]]
  assert toks.count("[unused0]") == 2 and toks.count("[unused1]") == 2 and ents[hd + 1] == ex["head_kg"]
  assert row["ent_ids"][toks.index("[unused1]") + 1] == ex["tail_kg"]


def test_transe_cli_writes_the_release_files(tmp_path):
  from plmjax.cli import main
  tsv = tmp_path / "facts.tsv"
  formats.write_triples_tsv(str(tsv), [(f"e{i}", f"r{i % 2}", f"e{(i + 1) % 12}") for i in range(12)] +
                            [(f"e{i}", "r2", f"e{(i + 5) % 12}") for i in range(12)])
  out = tmp_path / "out"
  assert main(["transe", "--config", os.path.join(ROOT, "experiments", "transe.py") + ":synthetic",
               "--out", str(out), f"--config.triples={tsv}", "--config.steps=20", "--config.dim=8"]) == 0
  ents = formats.read_id_file(str(out / "entity2id.txt"))
  assert len(ents) == 12 and formats.read_vectors(str(out / "entity2vec.vec"), 12).shape == (12, 8)
  with pytest.raises(SystemExit, match="unknown config key"):
    main(["transe", "--config", os.path.join(ROOT, "experiments", "transe.py") + ":synthetic",
          "--out", str(out), "--config.stepz=3"])


def test_ablation_script_quick(tmp_path):
  """Every variant of both tasks runs end to end at toy size (one seed, 1 pre-training step, one
  fine-tuning epoch). Almost all of its time is XLA compilation, so the CPU backend compiles at
  optimisation level 0 here (the numbers of a toy run mean nothing)."""
  import json
  script = os.path.join(ROOT, "experiments", "tables", "ernie_thu_ablation.py")
  flags = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
  env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": flags.strip()}
  r = subprocess.run([sys.executable, script, "--quick", "--out", str(tmp_path), "--workdir", str(tmp_path / "w")],
                     env=env, capture_output=True, text=True, timeout=1500)
  assert r.returncode == 0, r.stderr[-2000:]
  md = (tmp_path / "ernie_thu_ablation.md").read_text()
  for v in ("ERNIE w/o entities", "ERNIE w/o dEA", "BERT", "88.32", "Entity typing", "TransE vectors only", "Verdict"):
    assert v in md
  out = json.loads((tmp_path / "ernie_thu_ablation.json").read_text())
  for task in ("relation", "typing"):
    for variant, runs in out["results"][task].items():
      assert len(runs) == 1 and 0 <= runs[0]["accuracy"] <= 1 and np.isfinite(runs[0]["final_train_loss"]), (task, variant)
  assert set(out["pretrain"]) == {"ernie seed 0", "ernie_nodea seed 0", "bert seed 0"}
  assert (tmp_path / "ernie_thu_ablation.png").stat().st_size > 1000
