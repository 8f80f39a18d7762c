"""A built-in, offline, generated corpus with a known entropy floor (demos and smoke tests).

Every `tiny` config trains on it with no data argument. Nothing is copied from anywhere: an invented
language is sampled from a small stochastic grammar, deterministically from a seed.

Language (the lexicon comes from `SyntheticConfig.lexicon_seed`, so all splits share it):
  - words are 1-3 consonant-vowel syllables ("kalomi"); the built-in WordPiece vocabulary holds the
    syllables ("ka", "##lo", "##mi"), so a content word is 2-3 tokens (whole-word masking has work);
  - word classes have disjoint word sets: determiners D, prepositions P, a conjunction C, and per
    topic state s: nouns N_s, verbs V_s, adjectives A_s (Zipf-distributed);
  - phrases PHR: fixed 2-3 word expressions (ERNIE phrase masking); entities E: 2-3 word names drawn
    from an inventory (ERNIE entity masking).
Document (one sentence per line, every sentence ends with the word "."):
  n ~ U{min..max sentences}, k ~ U{1..max_protagonists} entities drawn without replacement;
  sentence 0 introduces them:  E (C E)* V D N .          state s_0 ~ U{0..S-1}
  sentence i: s_i = s_{i-1} + 1 (mod S) with prob p_advance, else uniform;  a template from
    E V D N . | E V D A N P D N . | D A N V E PHR . | E V D N PHR . | D N P D N V E .
  every E in later sentences is one of the document's k protagonists: a long-range dependency (the
  name was introduced many tokens before; Transformer-XL's memory pays off) and the evolving state
  makes "is the next sentence" learnable (NSP).

Entropy floor. Word classes are disjoint, names and phrases are unique word tuples, and every
sentence holds a content word of its state, so the text determines every random choice: -log p(text)
equals the sum of -log p(choice) the generator recorded (`score_document` recomputes it from the
text alone). `entropy_floor_nats()` is the exact expectation per document, per word and per token
(tokenization is deterministic, so an oracle that sees the whole document reaches it; a model with a
finite context or that does not see document boundaries cannot go below it).
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import math
import random

import numpy as np

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
SYLLABLES = tuple(c + v for c in CONSONANTS for v in VOWELS)            # 70 two-letter pieces
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]")
END = "."
TEMPLATES = (("E", "V", "D", "N"), ("E", "V", "D", "A", "N", "P", "D", "N"),
             ("D", "A", "N", "V", "E", "PHR"), ("E", "V", "D", "N", "PHR"),
             ("D", "N", "P", "D", "N", "V", "E"))
TEMPLATE_PROBS = (0.3, 0.2, 0.15, 0.2, 0.15)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  num_states: int = 6
  nouns: int = 40            # per state
  verbs: int = 20            # per state
  adjectives: int = 15       # per state
  determiners: int = 4
  prepositions: int = 6
  num_entities: int = 120
  name_words: int = 50
  num_phrases: int = 50
  phrase_words: int = 40
  zipf: float = 1.1
  p_advance: float = 0.85
  min_sentences: int = 3
  max_sentences: int = 8
  max_protagonists: int = 3
  lexicon_seed: int = 0


@dataclasses.dataclass
class SyntheticDocument:
  sentences: list[list[str]]               # words of each sentence, "." included
  entity_spans: list[tuple[int, int]]      # [start, end) word spans, words counted over the document
  phrase_spans: list[tuple[int, int]]
  entities: list[int]                      # inventory index of each entity span
  nll: float                               # -log p(document) in nats, under the generating grammar

  @property
  def text(self) -> str:
    return "\n".join(" ".join(s) for s in self.sentences)


class _Categorical:
  """A fixed categorical over `items`, sampled with one uniform draw and bisect."""

  def __init__(self, items, probs):
    p = np.asarray(probs, np.float64)
    p = p / p.sum()
    self.items = list(items)
    self.logp = [float(x) for x in np.log(p)]
    self.cum = [float(x) for x in np.cumsum(p)]
    self.entropy = float(-(p * np.log(p)).sum())
    self.index = {w: i for i, w in enumerate(self.items)}

  def sample(self, rng: random.Random) -> int:
    return min(bisect.bisect_right(self.cum, rng.random() * self.cum[-1]), len(self.items) - 1)

  def mean(self, f) -> float:
    return float(sum(math.exp(lp) * f(x) for lp, x in zip(self.logp, self.items)))


class Grammar:
  """The lexicon and distributions of one `SyntheticConfig`; samples, scores and measures."""

  def __init__(self, cfg: SyntheticConfig):
    self.cfg = cfg
    rng = random.Random(cfg.lexicon_seed)
    used: set[str] = set()

    def words(n, lengths):
      out = []
      while len(out) < n:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice(lengths)))
        if w not in used:
          used.add(w)
          out.append(w)
      return out

    def zipf(items):
      items = list(items)
      rng.shuffle(items)                 # frequent words are not systematically the short ones
      return _Categorical(items, [1.0 / (i + 1) ** cfg.zipf for i in range(len(items))])

    used.add(END)
    self.conj = words(1, (1,))[0]
    self.det = zipf(words(cfg.determiners, (1,)))
    self.prep = zipf(words(cfg.prepositions, (1, 2)))
    self.noun = [zipf(words(cfg.nouns, (2, 3))) for _ in range(cfg.num_states)]
    self.verb = [zipf(words(cfg.verbs, (2, 3))) for _ in range(cfg.num_states)]
    self.adj = [zipf(words(cfg.adjectives, (2, 3))) for _ in range(cfg.num_states)]
    self.phrase = zipf(self._tuples(rng, words(cfg.phrase_words, (2,)), cfg.num_phrases))
    self.entity_names = self._tuples(rng, words(cfg.name_words, (2, 3)), cfg.num_entities)
    self.entity_index = {t: i for i, t in enumerate(self.entity_names)}
    self.template = _Categorical(range(len(TEMPLATES)), TEMPLATE_PROBS)
    # word -> (class, state): the parse table `score_document` reads the text with.
    self.word_class = {self.conj: ("C", -1), END: (END, -1)}
    for cls, dists in (("D", [self.det]), ("P", [self.prep]), ("N", self.noun), ("V", self.verb),
                       ("A", self.adj)):
      for s, d in enumerate(dists):
        self.word_class.update({w: (cls, s if len(dists) > 1 else -1) for w in d.items})
    self.word_class.update({w: ("PHR", -1) for t in self.phrase.items for w in t})
    self.word_class.update({w: ("E", -1) for t in self.entity_names for w in t})

  @staticmethod
  def _tuples(rng, pool, n):
    seen: set[tuple] = set()
    while len(seen) < n:
      seen.add(tuple(rng.choice(pool) for _ in range(rng.choice((2, 3)))))
    return sorted(seen)

  def transition_logp(self, prev: int, nxt: int) -> float:
    c = self.cfg
    p = (1 - c.p_advance) / c.num_states + (c.p_advance if nxt == (prev + 1) % c.num_states else 0.0)
    return math.log(p)

  # ---- sampling ------------------------------------------------------------------------------------
  def sample_document(self, rng: random.Random) -> SyntheticDocument:
    c = self.cfg
    n = rng.randint(c.min_sentences, c.max_sentences)
    k = rng.randint(1, c.max_protagonists)
    nll = math.log(c.max_sentences - c.min_sentences + 1) + math.log(c.max_protagonists)
    cast = rng.sample(range(c.num_entities), k)
    nll += sum(math.log(c.num_entities - i) for i in range(k))
    state = rng.randrange(c.num_states)
    nll += math.log(c.num_states)
    words: list[str] = []
    doc = SyntheticDocument([], [], [], [], 0.0)

    def put(ws, spans=None, ent=None):
      if spans is not None:
        spans.append((len(words), len(words) + len(ws)))
      if ent is not None:
        doc.entities.append(ent)
      words.extend(ws)

    def emit(dist):
      nonlocal nll
      i = dist.sample(rng)
      nll -= dist.logp[i]
      return dist.items[i]

    for si in range(n):
      start = len(words)
      if si == 0:
        slots = ["E"] + ["C", "E"] * (k - 1) + ["V", "D", "N"]
      else:
        nxt = (state + 1) % c.num_states if rng.random() < c.p_advance else rng.randrange(c.num_states)
        nll -= self.transition_logp(state, nxt)
        state = nxt
        slots = TEMPLATES[emit(self.template)]
      mention = 0
      for slot in slots:
        if slot == "E":
          if si == 0:
            ent = cast[mention]
            mention += 1
          else:
            ent = cast[rng.randrange(k)]
            nll += math.log(k)
          put(list(self.entity_names[ent]), doc.entity_spans, ent)
        elif slot == "PHR":
          put(list(emit(self.phrase)), doc.phrase_spans)
        elif slot == "C":
          put([self.conj])
        else:
          put([emit(self._dist(slot, state))])
      put([END])
      doc.sentences.append(words[start:])
    doc.nll = nll
    return doc

  def _dist(self, slot: str, state: int) -> _Categorical:
    return {"D": self.det, "P": self.prep, "N": self.noun[state], "V": self.verb[state],
            "A": self.adj[state]}[slot]

  # ---- scoring from text alone -----------------------------------------------------------------------
  def score_document(self, text: str) -> float:
    """-log p(text) in nats, read from the text alone (raises ValueError if the grammar cannot
    produce it). Equals the generator's recorded `nll`: the text determines every choice."""
    c = self.cfg
    lines = [ln.split() for ln in text.strip().split("\n")]
    if not c.min_sentences <= len(lines) <= c.max_sentences:
      raise ValueError(f"{len(lines)} sentences: outside [{c.min_sentences}, {c.max_sentences}]")
    nll = math.log(c.max_sentences - c.min_sentences + 1) + math.log(c.max_protagonists)
    cast: list[int] = []
    state = -1
    for li, line in enumerate(lines):
      units = self._chunk(line, li)
      if units[-1] != (END, END) or any(u[0] == END for u in units[:-1]):
        raise ValueError(f"sentence {li}: must end with the single word '{END}'")
      units = units[:-1]
      states = {self.word_class[u[1]][1] for u in units if u[0] in "NVA"}
      if len(states) != 1:
        raise ValueError(f"sentence {li}: content words from states {sorted(states)}")
      s = states.pop()
      if li == 0:
        classes = [u[0] for u in units]
        k = classes.count("E")
        if classes != ["E"] + ["C", "E"] * (k - 1) + ["V", "D", "N"] or k > c.max_protagonists:
          raise ValueError(f"sentence 0 is not an introduction: {classes}")
        cast = [self.entity_index[u[1]] for u in units if u[0] == "E"]
        if len(set(cast)) != k:
          raise ValueError("sentence 0 introduces the same entity twice")
        nll += sum(math.log(c.num_entities - i) for i in range(k)) + math.log(c.num_states)
      else:
        nll -= self.transition_logp(state, s)
        t = tuple(u[0] for u in units)
        if t not in TEMPLATES:
          raise ValueError(f"sentence {li}: no template {t}")
        nll -= self.template.logp[TEMPLATES.index(t)]
      state = s
      for cls, w in units:
        if cls == "E" and li > 0:
          if self.entity_index[w] not in cast:
            raise ValueError(f"sentence {li}: entity {w} was not introduced")
          nll += math.log(len(cast))
        elif cls == "PHR":
          nll -= self.phrase.logp[self.phrase.index[w]]
        elif cls in "DPNVA":
          d = self._dist(cls, s)
          nll -= d.logp[d.index[w]]
    return nll

  def _chunk(self, line: list[str], li: int) -> list[tuple[str, object]]:
    """Words -> units (class, word or name/phrase tuple); runs of name or phrase words group."""
    units: list[tuple[str, object]] = []
    for w in line:
      if w not in self.word_class:
        raise ValueError(f"sentence {li}: unknown word {w!r}")
      cls = self.word_class[w][0]
      if cls in ("E", "PHR") and units and units[-1][0] == cls:
        units[-1] = (cls, units[-1][1] + (w,))
      else:
        units.append((cls, (w,) if cls in ("E", "PHR") else w))
    for cls, t in units:
      if (cls == "E" and t not in self.entity_index) or (cls == "PHR" and t not in self.phrase.index):
        raise ValueError(f"sentence {li}: {' '.join(t)!r} is no {cls}")
    return units

  # ---- exact expectations ----------------------------------------------------------------------------
  def entropy_floor(self) -> dict[str, float]:
    c = self.cfg
    pieces = lambda w: 1 if w == END else len(w) // 2
    ent_words = sum(len(t) for t in self.entity_names) / c.num_entities
    ent_tokens = sum(pieces(w) for t in self.entity_names for w in t) / c.num_entities
    # per slot: (entropy, words, tokens). The state is uniform in every sentence (the first is
    # uniform, the transition doubly stochastic); the states' distributions have equal entropies
    # but their words have different lengths, so tokens are averaged over the states.
    slot = {k: (ds[0].entropy, 1.0, sum(d.mean(pieces) for d in ds) / len(ds)) for k, ds in
            (("D", [self.det]), ("P", [self.prep]), ("N", self.noun), ("V", self.verb),
             ("A", self.adj))}
    slot["PHR"] = (self.phrase.entropy, self.phrase.mean(len),
                   self.phrase.mean(lambda t: sum(pieces(w) for w in t)))
    slot["C"] = (0.0, 1.0, float(pieces(self.conj)))
    ks = range(1, c.max_protagonists + 1)
    n_mean = (c.min_sentences + c.max_sentences) / 2
    p_next = c.p_advance + (1 - c.p_advance) / c.num_states
    p_other = (1 - c.p_advance) / c.num_states
    h_trans = -(p_next * math.log(p_next) + (c.num_states - 1) * p_other * math.log(p_other))
    h = w = t = 0.0
    for k in ks:
      hk = sum(math.log(c.num_entities - i) for i in range(k)) + math.log(c.num_states)
      wk, tk = k * ent_words + 1, k * ent_tokens + 1                    # + the final "."
      for s in ["C"] * (k - 1) + ["V", "D", "N"]:
        hk, wk, tk = hk + slot[s][0], wk + slot[s][1], tk + slot[s][2]
      bh, bw, bt = h_trans + self.template.entropy, 1.0, 1.0
      for pt, tmpl in zip(TEMPLATE_PROBS, TEMPLATES):
        for s in tmpl:
          e = (math.log(k), ent_words, ent_tokens) if s == "E" else slot[s]
          bh, bw, bt = bh + pt * e[0], bw + pt * e[1], bt + pt * e[2]
      h += (hk + (n_mean - 1) * bh) / len(ks)
      w += (wk + (n_mean - 1) * bw) / len(ks)
      t += (tk + (n_mean - 1) * bt) / len(ks)
    h += math.log(c.max_sentences - c.min_sentences + 1) + math.log(c.max_protagonists)
    return {"per_document": h, "per_word": h / w, "per_token": h / t, "words_per_document": w,
            "tokens_per_document": t, "sentences_per_document": n_mean}

  def token_unigram(self) -> dict[str, float]:
    """Exact token frequencies of the corpus (built-in WordPiece pieces, no special tokens):
    E[count of each token per document] / E[tokens per document], the limit of the empirical
    unigram distribution. The topic state is uniform in every sentence (the first is uniform and
    the transition is doubly stochastic) and every entity mention is marginally uniform over the
    inventory, so each slot's token distribution is a fixed mixture."""
    c = self.cfg

    def pieces(w):
      return [END] if w == END else [("" if i == 0 else "##") + w[i:i + 2] for i in range(0, len(w), 2)]

    def words_of(dist_items, probs):            # expected token counts of one draw of a slot
      out: dict[str, float] = {}
      for item, p in zip(dist_items, probs):
        for w in (item if isinstance(item, tuple) else (item,)):
          for t in pieces(w):
            out[t] = out.get(t, 0.0) + p
      return out

    def of(dist):
      return words_of(dist.items, [math.exp(lp) for lp in dist.logp])

    def mix(dists):
      out: dict[str, float] = {}
      for d in dists:
        for t, v in of(d).items():
          out[t] = out.get(t, 0.0) + v / len(dists)
      return out

    slot = {"D": of(self.det), "P": of(self.prep), "N": mix(self.noun), "V": mix(self.verb),
            "A": mix(self.adj), "PHR": of(self.phrase), "C": words_of([self.conj], [1.0]),
            END: {END: 1.0},
            "E": words_of(self.entity_names, [1.0 / c.num_entities] * c.num_entities)}
    uses: dict[str, float] = {}                 # expected uses of each slot per document
    ks = range(1, c.max_protagonists + 1)
    body = (c.min_sentences + c.max_sentences) / 2 - 1
    for k in ks:
      for s, n in (("E", k), ("C", k - 1), ("V", 1), ("D", 1), ("N", 1), (END, 1)):
        uses[s] = uses.get(s, 0.0) + n / len(ks)
    for pt, tmpl in zip(TEMPLATE_PROBS, TEMPLATES):
      for s in tmpl + (END,):
        uses[s] = uses.get(s, 0.0) + body * pt
    counts: dict[str, float] = {}
    for s, n in uses.items():
      for t, v in slot[s].items():
        counts[t] = counts.get(t, 0.0) + n * v
    total = sum(counts.values())
    return {t: v / total for t, v in counts.items()}

  def unigram_entropy(self) -> float:
    """Entropy of `token_unigram` in nats: the loss of the best context-free token predictor."""
    return float(-sum(p * math.log(p) for p in self.token_unigram().values() if p > 0))

  def vocab(self) -> list[str]:
    """WordPiece vocabulary: specials, ".", syllables, "##" syllables (ids in this order)."""
    return list(SPECIAL_TOKENS) + [END] + list(SYLLABLES) + ["##" + s for s in SYLLABLES]


@functools.lru_cache(maxsize=8)
def grammar(cfg: SyntheticConfig = SyntheticConfig()) -> Grammar:
  return Grammar(cfg)


def generate(num_docs: int, seed: int, cfg: SyntheticConfig = SyntheticConfig()) -> list[SyntheticDocument]:
  """`num_docs` documents, a pure function of (num_docs, seed, cfg)."""
  g, rng = grammar(cfg), random.Random(seed)
  return [g.sample_document(rng) for _ in range(num_docs)]


SPLIT_SEED_OFFSET = {"train": 0, "valid": 1, "test": 2}


def split_documents(split: str, num_docs: int, seed: int = 0,
                    cfg: SyntheticConfig = SyntheticConfig()) -> list[SyntheticDocument]:
  """The documents of a split; splits draw from disjoint seed streams of one language."""
  if split not in SPLIT_SEED_OFFSET:
    raise ValueError(f"synthetic corpus has splits {list(SPLIT_SEED_OFFSET)}, not {split!r}")
  return generate(num_docs, seed * 1000003 + SPLIT_SEED_OFFSET[split], cfg)


def corpus_text(docs: list[SyntheticDocument]) -> str:
  """One document per blank-line-separated block, one sentence per line."""
  return "\n\n".join(d.text for d in docs) + "\n"


def score_document(text: str, cfg: SyntheticConfig = SyntheticConfig()) -> float:
  return grammar(cfg).score_document(text)


def entropy_floor_nats(cfg: SyntheticConfig = SyntheticConfig()) -> dict[str, float]:
  """Exact expected -log p: per_document, per_word, per_token (tokens of the built-in WordPiece
  vocabulary, no special tokens), plus expected words/tokens/sentences per document."""
  return grammar(cfg).entropy_floor()


def unigram_entropy_nats(cfg: SyntheticConfig = SyntheticConfig()) -> float:
  """Exact entropy of the corpus' token unigram distribution (Grammar.token_unigram), nats/token."""
  return grammar(cfg).unigram_entropy()
