"""`plmjax transe`: TransE over a triple file, with filtered link prediction on held-out triples.

    plmjax transe --config experiments/transe.py:synthetic --out DIR [--config.steps=5000 ...]

The config (experiments/transe.py) names `triples` (a HEAD<TAB>RELATION<TAB>TAIL file, or
"kg:synthetic" / "kg:PATH" for a knowledge source's facts), `held_out` (fraction of triples kept out
of training for the metrics) and the TransEConfig fields. DIR receives the ERNIE release's files
(entity2id.txt, relation2id.txt, entity2vec.vec, relation2vec.vec, train2id.txt, test2id.txt) and
metrics.json ({"test": filtered MR / MRR / Hits@1 / Hits@10, "random": the same for a random
ranking, "loss_curve"}).
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from plmjax.knowledge import formats, kg, transe


def load_triples(spec: str) -> list[tuple[str, str, str]]:
  if kg.is_spec(spec):
    return formats.read_triples_tsv(os.path.join(kg.open_knowledge(spec).folder, "triples.tsv"))
  return formats.read_triples_tsv(os.path.expanduser(spec))


def run(config_spec: str, out: str, overrides=()) -> dict:
  from plmjax.train import config as config_lib
  cfg = config_lib.load_config(config_spec, overrides)
  fields = {f.name for f in dataclasses.fields(transe.TransEConfig)}
  unknown = sorted(set(cfg.keys()) - fields - {"triples", "held_out"})
  if unknown:
    raise config_lib.ConfigError(f"transe config: unknown key {unknown[0]!r} (keys: triples, held_out, {sorted(fields)})")
  tcfg = transe.TransEConfig(**{k: cfg[k] for k in fields if k in cfg})
  named = load_triples(cfg.triples)
  entities = sorted({h for h, _, _ in named} | {t for _, _, t in named})
  relations = sorted({r for _, r, _ in named})
  facts = np.unique(formats.index_triples(named, entities, relations, cfg.triples), axis=0)
  train, test = transe.split_triples(facts, float(cfg.get("held_out", 0.1)), tcfg.seed)
  params, curve = transe.train(tcfg, train, len(entities), len(relations), log_every=max(tcfg.steps // 10, 1))
  metrics = {"test": transe.evaluate(params, test, facts, tcfg.norm) if len(test) else {},
             "random": transe.random_baseline(len(entities)), "loss_curve": curve,
             "num_entities": len(entities), "num_relations": len(relations),
             "num_train_triples": int(len(train)), "config": dataclasses.asdict(tcfg)}
  os.makedirs(out, exist_ok=True)
  formats.write_id_file(os.path.join(out, "entity2id.txt"), entities)
  formats.write_id_file(os.path.join(out, "relation2id.txt"), relations)
  formats.write_vectors(os.path.join(out, "entity2vec.vec"), params["entities"])
  formats.write_vectors(os.path.join(out, "relation2vec.vec"), params["relations"])
  formats.write_openke_triples(os.path.join(out, "train2id.txt"), train)
  formats.write_openke_triples(os.path.join(out, "test2id.txt"), test)
  with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  t, r = metrics["test"], metrics["random"]
  if t:
    print(f"TransE filtered link prediction on {t['num_triples']} held-out triples "
          f"({len(entities)} entities): MR {t['mr']:.1f} (random {r['mr']:.1f}), MRR {t['mrr']:.3f} "
          f"(random {r['mrr']:.3f}), Hits@1 {t['hits@1']:.3f}, Hits@10 {t['hits@10']:.3f} "
          f"(random {r['hits@10']:.3f})")
  print(f"wrote {out}/entity2vec.vec and the other files")
  return metrics
