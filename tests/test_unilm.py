"""UNILM (plmjax/objectives/unilm.py): the four self-attention masks give exactly the paper's
visible sets, modes are drawn in the paper's proportions, seq2seq fine-tuning masks only the
target, and cached seq2seq generation (greedy and beam) equals recomputing the full model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plmjax.decode import PrefixLMDecoding, beam_search, sample
from plmjax.models.bert import Bert, BertConfig
from plmjax.objectives.masking import MaskSpec, Vocab
from plmjax.objectives.unilm import (MODE_TOKEN_TYPES, PAPER_PROPORTIONS, SEQ2SEQ,
                                     UnifiedLM, mode_attention_mask)

VOCAB = Vocab(vocab_size=30, pad_id=0, mask_id=4, special_ids=(0, 1, 2, 3, 4))
CLS, SEP = 2, 3
# [CLS] a b [SEP] c d e [SEP] pad pad
ROW = np.array([CLS, 10, 11, SEP, 12, 13, 14, SEP, 0, 0], np.int32)
SEG = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0], np.int32)
REAL = ROW != 0


def paper_visible(mode: int, i: int) -> set:
  """The keys query i may attend to, written out from the paper's definitions."""
  real = {j for j in range(len(ROW)) if REAL[j]}
  s1 = {j for j in real if SEG[j] == 0}
  s2 = {j for j in real if SEG[j] == 1}
  if mode == 0:
    return real                                              # bidirectional: everything
  if mode == 1:
    return {j for j in real if j <= i}                       # left-to-right
  if mode == 2:
    return {j for j in real if j >= i}                       # right-to-left
  return s1 | ({j for j in s2 if j <= i} if i in s2 else set())   # seq2seq


def test_masks_give_exactly_the_papers_visible_sets():
  for mode in range(4):
    m = np.asarray(mode_attention_mask(jnp.array([mode]), jnp.asarray(SEG[None]), jnp.asarray(REAL[None])))[0]
    for i in range(len(ROW)):
      got = set(np.nonzero(m[i])[0].tolist())
      assert got == (paper_visible(mode, i) if REAL[i] else got | {i}), (mode, i, got)
      assert m[i].any()                                      # no empty softmax row, padding included


def test_modes_follow_the_paper_proportions_over_many_seeds():
  obj = UnifiedLM(MaskSpec(), VOCAB)
  modes = np.concatenate([np.asarray(obj.sample_modes(jax.random.key(s), 256)) for s in range(400)])
  freq = np.bincount(modes, minlength=4) / len(modes)
  p = np.asarray(PAPER_PROPORTIONS)
  sigma = np.sqrt(p * (1 - p) / len(modes))
  print("mode frequencies", np.round(freq, 4), "expected", np.round(p, 4))
  assert (np.abs(freq - p) < 5 * sigma).all(), freq


def test_prepare_sets_mask_types_and_targets_per_row():
  obj = UnifiedLM(MaskSpec(mask_prob=0.3, max_predictions=3), VOCAB)
  B = 64
  batch = {"input_ids": jnp.tile(jnp.asarray(ROW), (B, 1)), "attention_mask": jnp.tile(jnp.asarray(REAL, jnp.int32), (B, 1)),
           "token_type_ids": jnp.tile(jnp.asarray(SEG), (B, 1))}
  p = obj.prepare(batch, jax.random.key(0))
  mode = np.asarray(p["targets"]["mode"])
  assert set(mode.tolist()) == {0, 1, 2, 3}
  for b in range(B):
    expect = np.asarray(mode_attention_mask(jnp.array([mode[b]]), jnp.asarray(SEG[None]), jnp.asarray(REAL[None])))[0]
    np.testing.assert_array_equal(p["inputs"]["attention_mask"][b], expect)
    np.testing.assert_array_equal(p["inputs"]["token_type_ids"][b], np.asarray(MODE_TOKEN_TYPES[mode[b]])[SEG])
  # targets come from both segments, in every mode
  pos, w = np.asarray(p["inputs"]["masked_positions"]), np.asarray(p["targets"]["masked_weights"])
  for m in range(4):
    segs = SEG[pos[(mode == m)[:, None] & (w > 0)]]
    assert set(segs.tolist()) == {0, 1}, m


def test_seq2seq_finetuning_masks_only_the_target_and_its_end():
  obj = UnifiedLM(MaskSpec(mask_prob=0.7, max_predictions=4), VOCAB, proportions=(0, 0, 0, 1),
                  target_only=True, sep_id=SEP)
  batch = {"input_ids": jnp.tile(jnp.asarray(ROW), (256, 1)), "attention_mask": jnp.tile(jnp.asarray(REAL, jnp.int32), (256, 1)),
           "token_type_ids": jnp.tile(jnp.asarray(SEG), (256, 1))}
  p = obj.prepare(batch, jax.random.key(0))
  assert (np.asarray(p["targets"]["mode"]) == SEQ2SEQ).all()
  pos, w = np.asarray(p["inputs"]["masked_positions"]), np.asarray(p["targets"]["masked_weights"])
  chosen = set(pos[w > 0].tolist())
  assert chosen == {4, 5, 6, 7}                               # c d e and the closing [SEP]


# ---- generation --------------------------------------------------------------------------------------
CFG = BertConfig(vocab_size=VOCAB.vocab_size, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64,
                 max_len=32, type_vocab_size=6, nsp_head=False, dropout_rate=0.0, attention_dropout_rate=0.0)
MODEL = Bert(CFG)
PROMPT = jnp.array([[0, CLS, 10, 11, 12, SEP], [CLS, 13, 14, 15, 16, SEP]])     # row 0 left-padded
PROMPT_MASK = (PROMPT != 0).astype(jnp.int32)
PARAMS = MODEL.init(jax.random.key(0), {"input_ids": PROMPT})["params"]
DEC = PrefixLMDecoding(MODEL, VOCAB.mask_id)


def next_logprobs(generated: jnp.ndarray) -> jnp.ndarray:
  """Full recomputation: [source, generated, MASK] under the seq2seq mask -> log p at the MASK."""
  B, P = PROMPT.shape
  tail = jnp.concatenate([generated, jnp.full((B, 1), VOCAB.mask_id)], 1)
  ids = jnp.concatenate([PROMPT, tail], 1)
  real = jnp.concatenate([PROMPT_MASK, jnp.ones(tail.shape, jnp.int32)], 1).astype(bool)
  seg = jnp.concatenate([jnp.zeros((B, P), jnp.int32), jnp.ones(tail.shape, jnp.int32)], 1)
  batch = {"input_ids": ids, "positions": jnp.maximum(jnp.cumsum(real, 1) - 1, 0),
           "token_type_ids": jnp.where(seg == 1, 5, 4),
           "attention_mask": mode_attention_mask(jnp.full((B,), SEQ2SEQ), seg, real)}
  return jax.nn.log_softmax(MODEL.apply({"params": PARAMS}, batch)["logits"][:, -1], -1)


def test_cached_greedy_equals_recomputed_greedy():
  gen = jnp.zeros((2, 0), jnp.int32)
  for _ in range(5):
    gen = jnp.concatenate([gen, jnp.argmax(next_logprobs(gen), -1)[:, None]], 1)
  got = sample(DEC, PARAMS, PROMPT, PROMPT_MASK, jax.random.key(0), max_new_tokens=5)
  np.testing.assert_array_equal(got, gen)
  seqs, _ = beam_search(DEC, PARAMS, PROMPT, PROMPT_MASK, max_new_tokens=5, beam_size=1)
  np.testing.assert_array_equal(seqs, gen)


def test_beam_search_scores_are_the_full_model_log_probabilities():
  seqs, scores = beam_search(DEC, PARAMS, PROMPT, PROMPT_MASK, max_new_tokens=4, beam_size=3)
  total = jnp.zeros(2)
  for t in range(4):
    total = total + jnp.take_along_axis(next_logprobs(seqs[:, :t]), seqs[:, t:t + 1], -1)[:, 0]
  np.testing.assert_allclose(scores, total, rtol=1e-5, atol=1e-5)


def test_nsp_trains_on_the_bidirectional_rows_only():
  """nsp_weight > 0: the NSP loss is the mean over bidirectional rows; other rows' [CLS] outputs
  get no NSP gradient. Checked against the loss computed by hand from the model's nsp_logits."""
  obj = UnifiedLM(MaskSpec(mask_prob=0.3, max_predictions=3), VOCAB, nsp_weight=1.0)
  B = 32
  labels = jnp.asarray(np.random.RandomState(0).randint(0, 2, B), jnp.int32)
  batch = {"input_ids": jnp.tile(jnp.asarray(ROW), (B, 1)),
           "attention_mask": jnp.tile(jnp.asarray(REAL, jnp.int32), (B, 1)),
           "token_type_ids": jnp.tile(jnp.asarray(SEG), (B, 1)), "next_sentence_label": labels}
  model = Bert(BertConfig(vocab_size=30, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32,
                          max_len=16, type_vocab_size=6, nsp_head=True))
  p = obj.prepare(batch, jax.random.key(1))
  params = model.init(jax.random.key(0), p["inputs"])["params"]
  out = model.apply({"params": params}, p["inputs"])
  loss, metrics = obj.loss(out, p)
  bi = np.asarray(p["targets"]["mode"]) == 0
  assert 0 < bi.sum() < B
  logp = np.asarray(jax.nn.log_softmax(out["nsp_logits"].astype(jnp.float32)))
  expect = -logp[np.arange(B), np.asarray(labels)][bi].mean()
  np.testing.assert_allclose(float(metrics["nsp_loss"]), expect, rtol=1e-5)
  without_nsp = UnifiedLM(MaskSpec(mask_prob=0.3, max_predictions=3), VOCAB).loss(out, p)[0]
  np.testing.assert_allclose(float(loss), float(without_nsp) + expect, rtol=1e-5)


def test_nsp_needs_labels_and_a_head():
  obj = UnifiedLM(MaskSpec(mask_prob=0.3, max_predictions=3), VOCAB, nsp_weight=1.0)
  batch = {"input_ids": jnp.asarray(ROW[None]), "token_type_ids": jnp.asarray(SEG[None])}
  with pytest.raises(ValueError, match="next_sentence_label"):
    obj.prepare(batch, jax.random.key(0))
