"""Pre-training objectives: `build_objective(cfg, vocab)` from an `ml_collections` config.

    name           model        what
    "mlm"          Bert         masked LM (RoBERTa; unit="word"|"phrase"|"entity"|"span" for
                                whole-word / ERNIE / span masking)
    "mlm_nsp"      Bert         masked LM + next-sentence prediction (BERT)
    "span_mlm_sbo" Bert + SBO   geometric span masking, masked LM + span boundary objective (SpanBERT)
    "ernie_dea"    ErnieThu     masked LM + NSP + denoising entity auto-encoder (ERNIE THU; dea.py)
    "staged_mlm"   Bert         masked LM whose unit changes at step boundaries (ERNIE 1.0:
                                token -> phrase -> entity; staged.py)
    "mass"         Seq2Seq      masked seq2seq: one contiguous fragment, decoder predicts it (mass.py)
    "unilm"        Bert         bi / left-to-right / right-to-left / seq2seq masked LMs mixed per
                                row through [B, T, T] attention masks (unilm.py)
    "unilm_s2s"    Bert         UNILM seq2seq fine-tuning: target tokens masked, seq2seq mask
    "clm"          GPT          causal LM (GPT-1, GPT-2)
    "plm"          XLNet        permutation LM (plm.py)
    "bilm"         ELMo         forward + backward LM (bilm.py)
    "rnn_lm"       AWD-LSTM     causal LM with AR/TAR (bilm.py)

`default_objective_config(name)` lists every key with its default; experiment configs override some
of them, and `build_objective` rejects keys a given objective does not have.
"""
from __future__ import annotations

from typing import Any

import ml_collections

from plmjax.objectives.base import Objective, prepare_inputs
from plmjax.objectives.clm import CausalLM
from plmjax.objectives.masking import MaskSpec, Vocab, mask_tokens
from plmjax.objectives.mlm import MaskedLM

_MASKING = dict(
    mask_prob=0.15,            # fraction of the eligible (real, non-special) tokens to predict
    max_predictions=20,        # P, static target slots per row (BERT: 20 at T=128, 80 at T=512;
                               #   multi-token units need headroom above 0.15 T, see masking.py)
    unit="token",              # token | word | phrase | entity | span
    mask_token_prob=0.8,       # 80/10/10: [MASK] / random token / unchanged, per unit
    random_token_prob=0.1,
    span_p=0.2,                # unit="span": length in words ~ Geometric(span_p) clipped at
    span_max_words=10,         #   span_max_words (mean 3.8)
    static_masking=False,      # True: BERT's offline masks, `dupe_factor` fixed masks per example
    dupe_factor=10,
    static_seed=0,
)

_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlm": dict(name="mlm", **_MASKING),
    "mlm_nsp": dict(name="mlm_nsp", **_MASKING, nsp_weight=1.0),
    # spans need slot headroom above the 15 % budget (masking.py): >= 0.15 T + 10, here T = 128
    "span_mlm_sbo": dict(name="span_mlm_sbo", **{**_MASKING, "unit": "span", "max_predictions": 30},
                         sbo_weight=1.0, sbo_max_offset=20),
    "staged_mlm": dict(name="staged_mlm", **_MASKING, nsp_weight=0.0,
                       stage_units=("token", "phrase", "entity"),   # ERNIE 1.0's three stages
                       stage_steps=(0, 0)),       # step at which each later stage starts
    "ernie_dea": dict(name="ernie_dea", **_MASKING, nsp_weight=1.0, dea_weight=1.0, dea_replace_prob=0.05,
                      dea_mask_prob=0.15, max_entities=16,
                      knowledge="",     # "kg:..." or entity2vec.vec: random replacements draw from its rows
                      num_entities=0),  # 0: the number of rows of `knowledge`
    "mass": dict(name="mass", mask_ratio=0.5, span_tokens=0, start_prob=0.2, end_prob=0.2,
                 mask_token_prob=0.8, random_token_prob=0.1),
    "unilm": dict(name="unilm", **_MASKING, proportions=(1 / 3, 1 / 6, 1 / 6, 1 / 3),
                  nsp_weight=0.0),        # > 0: NSP on the bidirectional rows (unilm.py)
    "unilm_s2s": dict(name="unilm_s2s", **{**_MASKING, "mask_prob": 0.7}),
    "clm": dict(name="clm"),
    "plm": dict(name="plm", num_predict=85, max_span=5, mask_alpha=6, perm_size=0),
    "bilm": dict(name="bilm"),
    "rnn_lm": dict(name="rnn_lm"),
}

NAMES = tuple(_DEFAULTS)


def default_objective_config(name: str) -> ml_collections.ConfigDict:
  """Every key of objective `name` with its default value."""
  if name not in _DEFAULTS:
    raise ValueError(f"objective.name={name!r}: expected one of {NAMES}")
  return ml_collections.ConfigDict(dict(_DEFAULTS[name]))


def _resolve(cfg: Any) -> ml_collections.ConfigDict:
  given = dict(cfg.items()) if hasattr(cfg, "items") else dict(cfg)
  name = given.get("name")
  if name is None:
    raise ValueError(f"objective.name is missing: expected one of {NAMES}")
  full = default_objective_config(name)
  unknown = sorted(set(given) - set(full.keys()))
  if unknown:
    raise ValueError(f"objective.{unknown[0]}: unknown key for objective {name!r} "
                     f"(keys: {sorted(full.keys())})")
  for k, v in given.items():
    try:
      full[k] = v
    except TypeError as e:
      raise TypeError(f"objective.{k}={v!r}: {e}") from None
  return full


def build_objective(cfg: Any, vocab: Any) -> Objective:
  """cfg: ConfigDict (or mapping) with `name` and any of its keys; vocab: the tokenizer (vocab_size,
  pad_id, cls_id, sep_id, mask_id, special_ids)."""
  c = _resolve(cfg)
  if c.name == "clm":
    return CausalLM()
  if c.name in ("bilm", "rnn_lm"):
    from plmjax.objectives import bilm
    return bilm.build(c, vocab)
  if c.name == "plm":
    from plmjax.objectives.plm import PermutationLM
    return PermutationLM(num_predict=c.num_predict, max_span=c.max_span, mask_alpha=c.mask_alpha,
                         perm_size=c.perm_size, special_ids=Vocab.from_tokenizer(vocab).special_ids)
  if c.name == "mass":
    from plmjax.objectives.mass import MaskedSeq2Seq
    return MaskedSeq2Seq(Vocab.from_tokenizer(vocab), mask_ratio=c.mask_ratio, span_tokens=c.span_tokens,
                         start_prob=c.start_prob, end_prob=c.end_prob,
                         mask_token_prob=c.mask_token_prob, random_token_prob=c.random_token_prob)
  spec = lambda unit: MaskSpec(mask_prob=c.mask_prob, max_predictions=c.max_predictions, unit=unit,
                               mask_token_prob=c.mask_token_prob, random_token_prob=c.random_token_prob,
                               span_p=c.span_p, span_max_words=c.span_max_words)
  if c.name in ("unilm", "unilm_s2s"):
    from plmjax.objectives.unilm import UnifiedLM
    s2s = c.name == "unilm_s2s"
    sep = getattr(vocab, "sep_id", None)
    return UnifiedLM(spec(c.unit), Vocab.from_tokenizer(vocab),
                     proportions=(0.0, 0.0, 0.0, 1.0) if s2s else tuple(c.proportions),
                     target_only=s2s, sep_id=-1 if sep is None else int(sep),
                     nsp_weight=c.get("nsp_weight", 0.0))
  mlm = lambda unit: MaskedLM(spec(unit), Vocab.from_tokenizer(vocab), static_masking=c.static_masking,
                              dupe_factor=c.dupe_factor, static_seed=c.static_seed,
                              nsp_weight=c.get("nsp_weight", 0.0), sbo_weight=c.get("sbo_weight", 0.0),
                              sbo_max_offset=c.get("sbo_max_offset", 20))
  if c.name == "ernie_dea":
    from plmjax.objectives.dea import ErnieDEA
    num = c.num_entities
    if not num:
      from plmjax.knowledge.kg import entity_vectors
      num = len(entity_vectors(c.knowledge))
    return ErnieDEA(mlm(c.unit), num_entities=num, dea_weight=c.dea_weight,
                    dea_replace_prob=c.dea_replace_prob, dea_mask_prob=c.dea_mask_prob,
                    max_entities=c.max_entities)
  if c.name == "staged_mlm":
    from plmjax.objectives.staged import StagedMaskedLM
    return StagedMaskedLM(tuple(mlm(u) for u in c.stage_units), tuple(int(s) for s in c.stage_steps))
  return mlm(c.unit)


__all__ = ["Objective", "prepare_inputs", "build_objective", "default_objective_config", "NAMES", "MaskSpec", "Vocab",
           "mask_tokens", "MaskedLM", "CausalLM"]
