"""A generated knowledge graph over the built-in corpus' entities, and text that states some of it.

The synthetic corpus (plmjax/data/synthetic.py) names 120 entities; this module, without changing
anything that corpus generates, gives them a knowledge graph and writes a second corpus of documents
about them (deterministic in `KGConfig`, like the corpus):

  types      every entity has one of `num_types` types (equal shares) and, within its type, one of
             `num_groups` latent groups;
  relations  `num_relations` typed relations, two per (head type, tail type) signature: the first
             links head group g to tail group g, the second head group g to tail group g + 1 (heads
             of the last group have none). Each such head has `tails_per_head` tails under r, drawn
             from the entities of r's tail type in the mapped group. (No wrap-around: translations
             cannot represent a cyclic map, so "g + 1 mod G" would be beyond TransE.)
  text       a fraction `stated_fraction` of the facts is *stated*: documents hold sentences
             "H <verb_r> T ." (one invented verb per relation) among filler sentences of the corpus'
             own grammar about the same entities. The other facts never appear in the text.

So which of a signature's two relations links H and T is decided by the groups, which the text never
names: a relation-classification example over an unstated fact ([HD] H [HD] ... [TL] T [TL], no
relation verb) needs knowledge that the text does not give, while the knowledge graph (hence TransE
over it) has it. `rc_examples` builds that task from the unstated facts; `typing_examples` the
entity-typing one ([ENT] marker, label = the type).
"""
from __future__ import annotations

import dataclasses
import functools
import random

import numpy as np

from plmjax.data import synthetic


@dataclasses.dataclass(frozen=True)
class KGConfig:
  num_types: int = 4
  num_groups: int = 3
  num_relations: int = 8          # 2 per signature (type a -> type a + 1 mod num_types)
  tails_per_head: int = 2
  stated_fraction: float = 0.5
  num_docs: int = 3000
  eval_docs: int = 150
  filler_sentences: tuple = (1, 3)
  seed: int = 0


@dataclasses.dataclass
class SyntheticKG:
  entities: list[str]                   # entity names (words joined by "_"), index = entity id
  types: np.ndarray                     # [E] type of each entity
  groups: np.ndarray                    # [E] latent group
  relations: list[str]                  # relation names
  verbs: list[str]                      # the word that states each relation in text
  facts: np.ndarray                     # [F, 3] (h, r, t)
  stated: np.ndarray                    # [F] bool: the fact appears in the text
  name_words: list[tuple[str, ...]]     # entity id -> its words in text


@functools.lru_cache(maxsize=4)
def build_kg(cfg: KGConfig = KGConfig()) -> SyntheticKG:
  g = synthetic.grammar()
  rng = np.random.RandomState(cfg.seed)
  n = len(g.entity_names)
  perm = rng.permutation(n)
  types = np.empty(n, np.int32)
  groups = np.empty(n, np.int32)
  per_type = n // cfg.num_types
  for rank, e in enumerate(perm):
    types[e] = min(rank // per_type, cfg.num_types - 1)
    groups[e] = (rank % per_type) % cfg.num_groups
  # relation words: new syllable words, distinct from every word of the grammar
  used = set(g.word_class)
  words_rng = random.Random(cfg.seed + 7)
  verbs: list[str] = []
  while len(verbs) < cfg.num_relations:
    w = "".join(words_rng.choice(synthetic.SYLLABLES) for _ in range(3))
    if w not in used:
      used.add(w)
      verbs.append(w)
  facts = []
  for r in range(cfg.num_relations):
    a = (r // 2) % cfg.num_types
    b = (a + 1) % cfg.num_types
    shift = r % 2
    for h in np.where((types == a) & (groups + shift < cfg.num_groups))[0]:
      pool = np.where((types == b) & (groups == groups[h] + shift))[0]
      for t in rng.choice(pool, size=min(cfg.tails_per_head, len(pool)), replace=False):
        facts.append((int(h), r, int(t)))
  facts = np.asarray(facts, np.int32)
  stated = rng.random_sample(len(facts)) < cfg.stated_fraction
  names = ["_".join(t) for t in g.entity_names]
  rels = [f"rel{r}_t{(r // 2) % cfg.num_types}_t{((r // 2) + 1) % cfg.num_types}" for r in range(cfg.num_relations)]
  return SyntheticKG(names, types, groups, rels, verbs, facts, stated, list(g.entity_names))


def _filler(g: synthetic.Grammar, rng: random.Random, ent_words: tuple) -> list[str]:
  """One sentence of the corpus' grammar with `ent_words` as its entity: E V D N ."""
  s = rng.randrange(g.cfg.num_states)
  pick = lambda d: d.items[d.sample(rng)]
  return list(ent_words) + [pick(g.verb[s]), pick(g.det), pick(g.noun[s]), synthetic.END]


def documents(split: str, cfg: KGConfig = KGConfig()) -> list[dict]:
  """Documents {"text", "entity_spans" [n, 2] word spans, "entity_kg" [n]} of a split. Each is
  about one entity: its stated facts (as head or tail) in random order, among filler sentences."""
  kg, g = build_kg(cfg), synthetic.grammar()
  offset = synthetic.SPLIT_SEED_OFFSET[split]
  rng = random.Random(cfg.seed * 1000003 + 17 + offset)
  stated = kg.facts[kg.stated]
  about: dict[int, list[int]] = {}
  for i, (h, _, t) in enumerate(stated.tolist()):
    about.setdefault(h, []).append(i)
    about.setdefault(t, []).append(i)
  subjects = sorted(about)
  out = []
  for _ in range(cfg.num_docs if split == "train" else cfg.eval_docs):
    e = rng.choice(subjects)
    sents: list[tuple[list[str], list[tuple[int, int, int]]]] = []   # words, (start, end, entity)
    chosen = rng.sample(about[e], min(len(about[e]), rng.randint(1, 3)))
    for i in chosen:
      h, r, t = stated[i].tolist()
      hw, tw = kg.name_words[h], kg.name_words[t]
      words = list(hw) + [kg.verbs[r]] + list(tw) + [synthetic.END]
      sents.append((words, [(0, len(hw), h), (len(hw) + 1, len(hw) + 1 + len(tw), t)]))
    for _ in range(rng.randint(*cfg.filler_sentences)):
      who = rng.choice([e] + [int(x) for i in chosen for x in stated[i][[0, 2]]])
      w = kg.name_words[who]
      sents.append((_filler(g, rng, w), [(0, len(w), who)]))
    rng.shuffle(sents)
    lines, spans, ents, base = [], [], [], 0
    for words, ms in sents:
      lines.append(" ".join(words))
      for a, b, ent in ms:
        spans.append((base + a, base + b))
        ents.append(ent)
      base += len(words)
    out.append({"text": "\n".join(lines), "entity_spans": np.asarray(spans, np.int32).reshape(-1, 2),
                "entity_kg": np.asarray(ents, np.int32)})
  return out


def rc_examples(cfg: KGConfig = KGConfig(), seed: int = 0, dev_fraction: float = 0.3):
  """Relation classification over the *unstated* facts: (train, dev) lists of
  {"words", "head" (start, end), "tail" (start, end), "head_kg", "tail_kg", "label"}. The sentence
  is "D N P H C T ." with the grammar's words, no relation verb; markers are added by
  `plmjax.knowledge.data.mark_relation`."""
  kg, g = build_kg(cfg), synthetic.grammar()
  rng = random.Random(seed + 99)
  facts = kg.facts[~kg.stated].tolist()
  rng.shuffle(facts)
  out = []
  for h, r, t in facts:
    s = rng.randrange(g.cfg.num_states)
    pick = lambda d: d.items[d.sample(rng)]
    pre = [pick(g.det), pick(g.noun[s]), pick(g.prep)]
    hw, tw = list(kg.name_words[h]), list(kg.name_words[t])
    words = pre + hw + [g.conj] + tw + [synthetic.END]
    hs = len(pre)
    ts = hs + len(hw) + 1
    out.append({"words": words, "head": (hs, hs + len(hw)), "tail": (ts, ts + len(tw)),
                "head_kg": h, "tail_kg": t, "label": r})
  n_dev = int(round(dev_fraction * len(out)))
  return out[n_dev:], out[:n_dev]


def typing_examples(cfg: KGConfig = KGConfig(), seed: int = 0, dev_fraction: float = 0.3):
  """Entity typing: one filler sentence per entity, label = its type; (train, dev)."""
  kg, g = build_kg(cfg), synthetic.grammar()
  rng = random.Random(seed + 123)
  out = []
  for e in range(len(kg.entities)):
    words = _filler(g, rng, kg.name_words[e])
    out.append({"words": words, "span": (0, len(kg.name_words[e])), "kg": e, "label": int(kg.types[e])})
  rng.shuffle(out)
  n_dev = int(round(dev_fraction * len(out)))
  return out[n_dev:], out[:n_dev]
