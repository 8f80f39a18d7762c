"""Encoder-decoder: decoder causality, encoder padding invariance, cross-attention is used."""
import jax
import jax.numpy as jnp
import numpy as np

from plmjax.models.seq2seq import Seq2Seq, Seq2SeqConfig

CFG = Seq2SeqConfig(vocab_size=30, hidden_size=16, num_layers=2, num_decoder_layers=2, num_heads=2,
                    mlp_dim=32, max_len=20, dropout_rate=0.0, attention_dropout_rate=0.0)
MODEL = Seq2Seq(CFG)
SRC = jnp.array([[5, 6, 7, 8, 9, 0], [4, 4, 3, 0, 0, 0]])
SRC_MASK = (SRC != 0).astype(jnp.int32)
TGT = jnp.array([[1, 2, 3, 4], [2, 2, 5, 6]])
BATCH = {"input_ids": SRC, "attention_mask": SRC_MASK, "decoder_input_ids": TGT}
PARAMS = MODEL.init(jax.random.key(0), BATCH)["params"]


def logits(**changes):
  return MODEL.apply({"params": PARAMS}, {**BATCH, **changes})["logits"]


def test_shapes_and_decoder_causality():
  base = logits()
  assert base.shape == (2, 4, 30)
  changed = logits(decoder_input_ids=TGT.at[:, 2:].set(9))
  np.testing.assert_allclose(changed[:, :2], base[:, :2], atol=1e-6)
  assert float(jnp.abs(changed[:, 2:] - base[:, 2:]).max()) > 1e-4


def test_encoder_padding_is_invisible_and_source_matters():
  base = logits()
  np.testing.assert_allclose(logits(input_ids=SRC.at[1, 3:].set(17)), base, atol=1e-6)
  assert float(jnp.abs(logits(input_ids=SRC.at[0, 0].set(17)) - base).max()) > 1e-4


def test_cached_decoding_equals_full_decoder():
  encoded = MODEL.apply({"params": PARAMS}, BATCH, method=Seq2Seq.encode)
  shapes = jax.eval_shape(lambda: MODEL.init(jax.random.key(0), {**BATCH, "decoder_input_ids": jnp.zeros((2, 8), jnp.int32)}, decode=True))
  cache = {"cache": jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])}
  got = []
  for t in range(4):
    step = {"decoder_input_ids": TGT[:, t:t + 1], "decoder_positions": jnp.full((2, 1), t),
            "attention_mask": SRC_MASK}
    (_, lg), mut = MODEL.apply({"params": PARAMS, **cache}, step, encoded, decode=True,
                               method=Seq2Seq.decode_step, mutable=["cache"])
    cache = {"cache": mut["cache"]}
    got.append(lg)
  np.testing.assert_allclose(jnp.concatenate(got, 1), logits(), atol=1e-5)
