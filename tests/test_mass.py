"""MASS (plmjax/objectives/mass.py): fragment length and placement statistics, the arrays it builds,
and its two ends on a shared example: k = 1 is BERT's masked LM, k = m is a causal LM."""
import jax
import jax.numpy as jnp
import numpy as np

from plmjax.models.seq2seq import Seq2Seq, Seq2SeqConfig
from plmjax.objectives.clm import CausalLM
from plmjax.objectives.mass import MaskedSeq2Seq, fragment_inputs
from plmjax.objectives.masking import MASK, MaskSpec, Vocab, mask_tokens

VOCAB = Vocab(vocab_size=50, pad_id=0, mask_id=4, special_ids=(0, 1, 2, 3, 4))
T = 16
# two rows: 12 real tokens (pad after), and [CLS] 10 tokens [SEP] with padding
IDS = np.zeros((2, T), np.int32)
IDS[0, :12] = np.arange(10, 22)
IDS[1, :12] = [2] + list(range(30, 40)) + [3]
MASK_ROWS = (IDS != 0).astype(np.int32)


def test_placement_is_20_start_20_end_60_uniform_and_k_is_half():
  obj = MaskedSeq2Seq(VOCAB)
  n = 200_000
  for m in (7, 20):
    start, k = obj.sample_fragment(jax.random.key(m), jnp.full((n,), m, jnp.int32), 64)
    start, k = np.asarray(start), np.asarray(k)
    assert (k == round(0.5 * m)).all()
    room = m - k[0]
    freq = np.bincount(start, minlength=room + 1) / n
    expect = np.full(room + 1, 0.6 / (room + 1))
    expect[0] += 0.2
    expect[room] += 0.2
    sigma = np.sqrt(expect * (1 - expect) / n)
    assert (np.abs(freq - expect) < 5 * sigma).all(), (m, freq, expect)
    print(f"m={m} k={k[0]}: P(start)={np.round(freq, 4)} expected {np.round(expect, 4)}")


def test_fragment_length_k_1_and_k_m():
  m = jnp.array([1, 5, 9, 12])
  assert np.asarray(MaskedSeq2Seq(VOCAB, span_tokens=1).sample_fragment(jax.random.key(0), m, 16)[1]).tolist() == [1] * 4
  assert np.asarray(MaskedSeq2Seq(VOCAB, mask_ratio=1.0).sample_fragment(jax.random.key(0), m, 16)[1]).tolist() == [1, 5, 9, 12]
  assert MaskedSeq2Seq(VOCAB).slots(T) == 8 and MaskedSeq2Seq(VOCAB, span_tokens=3).slots(T) == 3


def test_prepare_masks_one_contiguous_fragment_and_feeds_it_shifted_to_the_decoder():
  obj = MaskedSeq2Seq(VOCAB, mask_token_prob=1.0, random_token_prob=0.0)
  batch = {"input_ids": jnp.asarray(IDS), "attention_mask": jnp.asarray(MASK_ROWS)}
  for seed in range(20):
    p = obj.prepare(batch, jax.random.key(seed))
    x, t = p["inputs"], p["targets"]
    for b in range(2):
      real = np.nonzero((IDS[b] != 0) & ~np.isin(IDS[b], VOCAB.special_ids))[0]
      k, s = int(t["length"][b]), int(t["start"][b])
      assert k == round(0.5 * len(real))
      pos = real[s:s + k]
      assert np.array_equal(np.asarray(x["decoder_positions"][b, :k]), pos)
      assert np.array_equal(np.asarray(t["ids"][b, :k]), IDS[b, pos])
      assert np.asarray(x["decoder_input_ids"][b, 0]) == VOCAB.mask_id
      assert np.array_equal(np.asarray(x["decoder_input_ids"][b, 1:k]), IDS[b, pos[:-1]])
      assert np.asarray(t["weights"][b]).tolist() == [1.0] * k + [0.0] * (obj.slots(T) - k)
      changed = np.nonzero(np.asarray(x["input_ids"][b]) != IDS[b])[0]
      assert np.array_equal(changed, pos) and (np.asarray(x["input_ids"][b, pos]) == VOCAB.mask_id).all()


def test_k_1_is_masked_lm_on_a_shared_example():
  """MLM picks one target position (budget 1, all [MASK]); the MASS fragment of k = 1 at that
  position gives the identical encoder input, and its decoder predicts the same token at the same
  position from a lone [MASK]: p(x_s | x without x_s)."""
  batch = {"input_ids": jnp.asarray(IDS), "attention_mask": jnp.asarray(MASK_ROWS)}
  spec = MaskSpec(mask_prob=0.01, max_predictions=1, mask_token_prob=1.0, random_token_prob=0.0)
  for seed in range(5):
    mlm = mask_tokens(batch, jax.random.key(seed), spec, VOCAB)
    eligible = (IDS != 0) & ~np.isin(IDS, VOCAB.special_ids)
    rank = np.cumsum(eligible, 1) - 1                                      # eligible index of a position
    s = rank[np.arange(2), np.asarray(mlm["masked_positions"][:, 0])]
    mass = fragment_inputs(jnp.asarray(IDS), jnp.asarray(eligible), jnp.asarray(s), jnp.ones(2, jnp.int32),
                           1, VOCAB, jnp.full((2, T), MASK), jnp.zeros((2, T)))
    np.testing.assert_array_equal(mass["input_ids"], mlm["input_ids"])
    np.testing.assert_array_equal(mass["decoder_positions"], mlm["masked_positions"])
    np.testing.assert_array_equal(mass["target_ids"], mlm["masked_ids"])
    np.testing.assert_array_equal(mass["decoder_input_ids"], jnp.full((2, 1), VOCAB.mask_id))


def test_k_m_is_a_causal_lm_on_a_shared_example():
  """k = m: the encoder input has no token of the sentence left (all [MASK]) and the decoder's
  inputs, targets and weights are the causal LM's (clm.py) on [MASK] x_1 .. x_m."""
  ids = jnp.asarray(IDS[:1, :12])                                          # one row, no padding
  eligible = jnp.ones_like(ids, bool)
  mass = fragment_inputs(ids, eligible, jnp.zeros(1, jnp.int32), jnp.array([12]), 12, VOCAB,
                         jnp.full(ids.shape, MASK), jnp.zeros(ids.shape))
  assert (np.asarray(mass["input_ids"]) == VOCAB.mask_id).all()
  lm = CausalLM().prepare({"input_ids": jnp.concatenate([jnp.full((1, 1), VOCAB.mask_id), ids], 1)}, None)
  np.testing.assert_array_equal(mass["decoder_input_ids"], lm["inputs"]["input_ids"][:, :-1])
  np.testing.assert_array_equal(mass["target_ids"], lm["targets"]["ids"][:, :-1])
  np.testing.assert_array_equal(mass["target_weights"], lm["targets"]["weights"][:, :-1])
  np.testing.assert_array_equal(mass["decoder_positions"], jnp.arange(12)[None])
  # and the model's prediction at position t depends on no token at or after t (nothing leaks)
  cfg = Seq2SeqConfig(vocab_size=50, hidden_size=16, num_layers=1, num_decoder_layers=1, num_heads=2,
                      mlp_dim=32, max_len=16, dropout_rate=0.0, attention_dropout_rate=0.0)
  model = Seq2Seq(cfg)
  inputs = {k: mass[k] for k in ("input_ids", "decoder_input_ids", "decoder_positions")}
  params = model.init(jax.random.key(0), inputs)["params"]
  logits = lambda x: model.apply({"params": params}, dict(inputs, decoder_input_ids=x))["logits"]
  other = mass["decoder_input_ids"].at[:, 6:].set(45)                      # change x_6 .. x_11
  np.testing.assert_allclose(logits(other)[:, :6], logits(mass["decoder_input_ids"])[:, :6], atol=1e-6)


def test_encoder_corruption_is_80_10_10_per_token():
  obj = MaskedSeq2Seq(VOCAB)
  batch = {"input_ids": jnp.tile(jnp.asarray(IDS[:1]), (4096, 1)),
           "attention_mask": jnp.tile(jnp.asarray(MASK_ROWS[:1]), (4096, 1))}
  p = obj.prepare(batch, jax.random.key(1))
  frag = np.asarray(jax.vmap(lambda w, pos: jnp.zeros(T, bool).at[pos].max(w > 0))(
      p["targets"]["weights"], p["inputs"]["decoder_positions"]))
  enc = np.asarray(p["inputs"]["input_ids"])[frag]
  orig = np.asarray(batch["input_ids"])[frag]
  masked, kept = (enc == VOCAB.mask_id).mean(), (enc == orig).mean()
  assert abs(masked - 0.8) < 0.01 and abs(kept - 0.1 - 1 / 45 * 0.1) < 0.01, (masked, kept)
