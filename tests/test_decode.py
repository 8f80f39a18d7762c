"""Generation with the KV cache against brute-force references."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from plmjax.decode import beam_search, sample
from plmjax.models.gpt import GPT, gpt2

V = 7
MODEL = GPT(gpt2(vocab_size=V, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32, max_len=32,
                 dropout_rate=0.0, attention_dropout_rate=0.0))
PROMPT = jnp.array([[1, 2, 3, 4], [5, 1, 6, 2]])
PARAMS = MODEL.init(jax.random.key(0), {"input_ids": PROMPT})["params"]


def full_logprobs(seq):
  return jax.nn.log_softmax(MODEL.apply({"params": PARAMS}, {"input_ids": seq})["logits"], -1)


def naive_greedy(prompt, n):
  seq = prompt
  for _ in range(n):
    nxt = jnp.argmax(full_logprobs(seq)[:, -1], -1)
    seq = jnp.concatenate([seq, nxt[:, None]], 1)
  return seq[:, prompt.shape[1]:]


def seq_logprob(prompt, cont):
  lp = full_logprobs(jnp.concatenate([prompt, cont], 1))
  p = prompt.shape[1]
  return jnp.take_along_axis(lp[:, p - 1:-1], cont[..., None], -1)[..., 0].sum(-1)


def test_greedy_with_cache_equals_recomputing_greedy():
  got = sample(MODEL, PARAMS, PROMPT, jnp.ones_like(PROMPT), jax.random.key(0), max_new_tokens=6)
  np.testing.assert_array_equal(got, naive_greedy(PROMPT, 6))


def test_left_padding_does_not_change_generation():
  short = PROMPT[:, 1:]
  padded = jnp.concatenate([jnp.zeros((2, 2), jnp.int32), short], 1)
  mask = jnp.concatenate([jnp.zeros((2, 2), jnp.int32), jnp.ones_like(short)], 1)
  a = sample(MODEL, PARAMS, short, jnp.ones_like(short), jax.random.key(0), max_new_tokens=5)
  b = sample(MODEL, PARAMS, padded, mask, jax.random.key(0), max_new_tokens=5)
  np.testing.assert_array_equal(a, b)


def test_top_k_1_sampling_is_greedy_and_sampling_follows_softmax():
  g = sample(MODEL, PARAMS, PROMPT, jnp.ones_like(PROMPT), jax.random.key(0), max_new_tokens=4)
  s = sample(MODEL, PARAMS, PROMPT, jnp.ones_like(PROMPT), jax.random.key(1), max_new_tokens=4,
             greedy=False, top_k=1)
  np.testing.assert_array_equal(g, s)
  n = 3000
  prompts = jnp.repeat(PROMPT[:1], n, 0)
  first = sample(MODEL, PARAMS, prompts, jnp.ones_like(prompts), jax.random.key(2), max_new_tokens=1,
                 greedy=False)[:, 0]
  freq = np.bincount(np.asarray(first), minlength=V) / n
  p = np.exp(np.asarray(full_logprobs(PROMPT[:1])[0, -1]))
  assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-3), (freq, p)


def test_beam_search_is_exact_when_the_beam_holds_every_sequence():
  n = 3
  seqs, scores = beam_search(MODEL, PARAMS, PROMPT, jnp.ones_like(PROMPT), max_new_tokens=n,
                             beam_size=V ** (n - 1))
  all_conts = jnp.array(list(itertools.product(range(V), repeat=n)))
  for r in range(2):
    lp = seq_logprob(jnp.repeat(PROMPT[r:r + 1], len(all_conts), 0), all_conts)
    best = int(jnp.argmax(lp))
    np.testing.assert_array_equal(seqs[r], all_conts[best])
    np.testing.assert_allclose(scores[r], lp[best], atol=1e-4)


def test_beam_size_one_is_greedy():
  seqs, _ = beam_search(MODEL, PARAMS, PROMPT, jnp.ones_like(PROMPT), max_new_tokens=5, beam_size=1)
  np.testing.assert_array_equal(seqs, naive_greedy(PROMPT, 5))


def test_xlnet_generation_equals_stepwise_argmax_of_the_full_model():
  """PermutationDecoding (a fixed buffer, slots >= t hidden) gives the tokens of the recipe it
  implements run naively: at each step the prompt + tokens so far + one dummy slot, perm_mask
  hiding the dummy from every position, target_mapping at the dummy, argmax — so the hidden future
  slots have no influence; left padding changes nothing; one beam is greedy."""
  from plmjax.decode import PermutationDecoding
  from plmjax.models.xlnet import XLNet, XLNetConfig
  model = XLNet(XLNetConfig(vocab_size=40, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64,
                            dropout_rate=0.0, attention_dropout_rate=0.0, init_std=0.5))
  prompt = jnp.asarray([[5, 9, 3, 17]], jnp.int32)
  params = model.init(jax.random.PRNGKey(0), {"input_ids": prompt})["params"]
  n = 5
  got = sample(PermutationDecoding(model), params, prompt, jnp.ones_like(prompt), jax.random.PRNGKey(0),
               max_new_tokens=n)
  apply = jax.jit(lambda p, batch: model.apply({"params": p}, batch)["logits"])
  seq = list(np.asarray(prompt[0]))
  for _ in range(n):
    ids = jnp.asarray([seq + [0]], jnp.int32)
    s = ids.shape[1]
    perm = np.zeros((1, s, s), np.float32)
    perm[:, :, -1] = 1.0
    target = np.zeros((1, 1, s), np.float32)
    target[0, 0, -1] = 1.0
    logits = apply(params, {"input_ids": ids, "perm_mask": jnp.asarray(perm),
                            "target_mapping": jnp.asarray(target)})
    seq.append(int(jnp.argmax(logits[0, 0])))
  assert list(np.asarray(got[0])) == seq[4:] and len(set(seq[4:])) > 1
  padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), prompt], 1)
  mask = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), jnp.ones_like(prompt)], 1)
  again = sample(PermutationDecoding(model), params, padded, mask, jax.random.PRNGKey(0), max_new_tokens=n)
  assert (np.asarray(again) == np.asarray(got)).all()
  beam, _ = beam_search(PermutationDecoding(model), params, prompt, jnp.ones_like(prompt),
                        max_new_tokens=n, beam_size=1)
  assert (np.asarray(beam) == np.asarray(got)).all()
