"""TransE (Bordes et al., 2013): entity and relation vectors with  h + r ~ t  for every fact (h, r, t).

ERNIE (THU) feeds TransE vectors of its entities (100-d, trained with OpenKE on Wikidata) to its
knowledge encoder and keeps them frozen during pre-training. This is a small JAX trainer for it:

    d(h, r, t) = || e_h + w_r - e_t ||_p                          p = 1 or 2
    loss       = mean over a batch of facts and their corruptions of
                 max(0, margin + d(h, r, t) - d(h', r, t'))
    corruption (h', t'): the head or the tail (a fair coin per fact) replaced by a uniform random
                 entity, drawn on device inside the jitted step (`negatives` per fact)
    after every step entity vectors are renormalised to unit L2 norm (the paper's constraint)

Link prediction (`evaluate`): for each held-out fact, every entity is tried as the tail (and as the
head); the rank of the true one among them by d, *filtered* (other known true facts, from any split,
are removed from the candidates before ranking, Bordes et al.'s "filt." setting). Metrics over both
directions: MR (mean rank), MRR, Hits@1, Hits@10. A random ranking has expected MRR
(1/n) sum_{k=1..n} 1/k and MR (n + 1) / 2 with n candidates (`random_baseline`).

CLI: `plmjax transe --triples FACTS.tsv --out DIR` (plmjax/knowledge/cli.py) writes the ERNIE release's
files (formats.py) and DIR/metrics.json.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TransEConfig:
  dim: int = 100
  norm: int = 1                 # p of the distance
  margin: float = 1.0
  negatives: int = 4            # corruptions per fact
  batch_size: int = 256         # facts per step
  steps: int = 2000
  learning_rate: float = 0.01
  seed: int = 0

  def __post_init__(self):
    if self.norm not in (1, 2):
      raise ValueError(f"transe norm={self.norm}: expected 1 or 2")
    if self.dim < 1 or self.negatives < 1 or self.batch_size < 1 or self.steps < 0:
      raise ValueError(f"transe: dim, negatives, batch_size must be >= 1 and steps >= 0 ({self})")


def distance(ent: Array, rel: Array, h: Array, r: Array, t: Array, norm: int) -> Array:
  """||e_h + w_r - e_t||_p for index arrays of one shape."""
  diff = ent[h] + rel[r] - ent[t]
  return jnp.abs(diff).sum(-1) if norm == 1 else jnp.sqrt((diff * diff).sum(-1) + 1e-12)


def _normalise(x: Array) -> Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def init_params(key: Array, num_entities: int, num_relations: int, dim: int) -> dict:
  """Bordes et al.'s init: uniform(-6/sqrt(d), 6/sqrt(d)), relations normalised once, entities
  normalised (then after every step)."""
  bound = 6.0 / np.sqrt(dim)
  ke, kr = jax.random.split(key)
  ent = jax.random.uniform(ke, (num_entities, dim), jnp.float32, -bound, bound)
  rel = jax.random.uniform(kr, (num_relations, dim), jnp.float32, -bound, bound)
  return {"entities": _normalise(ent), "relations": _normalise(rel)}


def make_step(cfg: TransEConfig, num_entities: int, tx: optax.GradientTransformation):
  """-> jitted step(params, opt_state, triples [N, 3] int32, key) -> (params, opt_state, loss)."""

  def loss_fn(params, batch, key):
    h, r, t = batch[:, 0], batch[:, 1], batch[:, 2]                                  # [B]
    k_side, k_ent = jax.random.split(key)
    shape = (batch.shape[0], cfg.negatives)
    corrupt_head = jax.random.bernoulli(k_side, 0.5, shape)                          # [B, K]
    rand = jax.random.randint(k_ent, shape, 0, num_entities)
    hn = jnp.where(corrupt_head, rand, h[:, None])
    tn = jnp.where(corrupt_head, t[:, None], rand)
    ent, rel = params["entities"], params["relations"]
    pos = distance(ent, rel, h, r, t, cfg.norm)[:, None]                             # [B, 1]
    neg = distance(ent, rel, hn, jnp.broadcast_to(r[:, None], shape), tn, cfg.norm)  # [B, K]
    return jnp.maximum(0.0, cfg.margin + pos - neg).mean()

  @jax.jit
  def step(params, opt_state, triples, key):
    k_batch, k_loss = jax.random.split(key)
    idx = jax.random.randint(k_batch, (cfg.batch_size,), 0, triples.shape[0])
    loss, grads = jax.value_and_grad(loss_fn)(params, triples[idx], k_loss)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    params = {**params, "entities": _normalise(params["entities"])}
    return params, opt_state, loss

  return step


def train(cfg: TransEConfig, triples: np.ndarray, num_entities: int, num_relations: int,
          log_every: int = 0) -> tuple[dict, list[float]]:
  """triples [N, 3] (h, r, t) ids -> (params {"entities" [n, d], "relations" [m, d]} as numpy,
  loss curve (one value per `log_every` steps; the last step always))."""
  triples = np.asarray(triples, np.int32)
  if triples.ndim != 2 or triples.shape[1] != 3 or not len(triples):
    raise ValueError(f"transe: triples must be a non-empty [N, 3] array, got {triples.shape}")
  if triples[:, [0, 2]].max() >= num_entities or triples[:, 1].max() >= num_relations or triples.min() < 0:
    raise ValueError(f"transe: triple ids outside {num_entities} entities / {num_relations} relations")
  key = jax.random.PRNGKey(cfg.seed)
  key, k_init = jax.random.split(key)
  params = init_params(k_init, num_entities, num_relations, cfg.dim)
  tx = optax.adam(cfg.learning_rate)
  opt_state = tx.init(params)
  step = make_step(cfg, num_entities, tx)
  dev_triples = jnp.asarray(triples)
  curve = []
  for s in range(cfg.steps):
    params, opt_state, loss = step(params, opt_state, dev_triples, jax.random.fold_in(key, s))
    if (log_every and s % log_every == 0) or s == cfg.steps - 1:
      curve.append(float(loss))
  return jax.tree.map(np.asarray, params), curve


def _filtered_ranks(scores: np.ndarray, true: np.ndarray, known: list[set[int]]) -> np.ndarray:
  """scores [N, n] (lower = better), true [N], known[i] = the other correct answers to remove."""
  ranks = np.empty(len(true), np.int64)
  for i, (row, y) in enumerate(zip(scores, true)):
    better = row < row[y]
    for k in known[i]:
      if k != y:
        better[k] = False
    ranks[i] = better.sum() + 1
  return ranks


def evaluate(params: dict, test: np.ndarray, all_true: np.ndarray, norm: int = 1,
             chunk: int = 256) -> dict:
  """Filtered link prediction on `test` [N, 3]; `all_true` holds every known fact (train + valid +
  test) for the filter. -> {"mr", "mrr", "hits@1", "hits@10", "num_triples", "num_candidates"}."""
  ent, rel = jnp.asarray(params["entities"]), jnp.asarray(params["relations"])
  n = ent.shape[0]
  tails: dict[tuple[int, int], set[int]] = {}
  heads: dict[tuple[int, int], set[int]] = {}
  for h, r, t in np.asarray(all_true):
    tails.setdefault((int(h), int(r)), set()).add(int(t))
    heads.setdefault((int(r), int(t)), set()).add(int(h))
  score = jax.jit(lambda a, b, c: distance(ent, rel, a, b, c, norm))
  cand = jnp.arange(n)[None, :]
  ranks = []
  test = np.asarray(test, np.int32)
  for lo in range(0, len(test), chunk):
    part = test[lo:lo + chunk]
    h, r, t = (jnp.asarray(part[:, i])[:, None] for i in range(3))
    s_tail = np.asarray(score(jnp.broadcast_to(h, (len(part), n)), jnp.broadcast_to(r, (len(part), n)),
                              jnp.broadcast_to(cand, (len(part), n))))
    s_head = np.asarray(score(jnp.broadcast_to(cand, (len(part), n)), jnp.broadcast_to(r, (len(part), n)),
                              jnp.broadcast_to(t, (len(part), n))))
    ranks.append(_filtered_ranks(s_tail, part[:, 2], [tails[(a, b)] for a, b, _ in part.tolist()]))
    ranks.append(_filtered_ranks(s_head, part[:, 0], [heads[(b, c)] for _, b, c in part.tolist()]))
  rk = np.concatenate(ranks).astype(np.float64)
  return {"mr": float(rk.mean()), "mrr": float((1.0 / rk).mean()), "hits@1": float((rk <= 1).mean()),
          "hits@10": float((rk <= 10).mean()), "num_triples": int(len(test)), "num_candidates": int(n)}


def random_baseline(num_candidates: int) -> dict:
  """Expected metrics of a uniformly random ranking of `num_candidates` (no filtering)."""
  k = np.arange(1, num_candidates + 1)
  return {"mr": (num_candidates + 1) / 2, "mrr": float((1.0 / k).mean()),
          "hits@1": 1.0 / num_candidates, "hits@10": min(10, num_candidates) / num_candidates}


def split_triples(triples: np.ndarray, valid_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A seeded random split -> (train, held-out); held-out facts whose head or tail never occurs in
  train go back to train (no embedding could be learned for them)."""
  triples = np.asarray(triples, np.int32)
  perm = np.random.RandomState(seed).permutation(len(triples))
  n_test = int(round(valid_fraction * len(triples)))
  test, train = triples[perm[:n_test]], triples[perm[n_test:]]
  seen = set(train[:, 0].tolist()) | set(train[:, 2].tolist())
  ok = np.array([h in seen and t in seen for h, _, t in test.tolist()], bool) if len(test) else np.zeros(0, bool)
  return np.concatenate([train, test[~ok]]), test[ok]
