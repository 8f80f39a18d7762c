"""Autoregressive generation with a KV cache: greedy, sampling (temperature / top-k / top-p) and
beam search, each one jitted `lax` loop.

Works with any model whose `apply(vars, batch, decode=True, mutable=["cache"])` keeps a KV cache
(plmjax.models.gpt.GPT; see plmjax.nn.attention.MultiHeadAttention). Prompts are left-padded
[B, P] with `prompt_mask` (1 = real token); positions count real tokens only, so a left-padded
prompt decodes exactly like the same prompt without padding.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from plmjax.models.gpt import init_cache

Array = jax.Array
NEG = -1e9


def _filter_logits(logits: Array, top_k: int, top_p: float) -> Array:
  """logits [B, V] with everything outside the top-k / nucleus set to NEG."""
  if top_k > 0:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, NEG, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    cum = jnp.cumsum(jax.nn.softmax(sorted_logits, -1), -1)
    # smallest logit still inside the nucleus (the first token is always kept)
    cutoff_idx = jnp.sum(cum < top_p, axis=-1, keepdims=True)
    cutoff = jnp.take_along_axis(sorted_logits, cutoff_idx, axis=-1)
    logits = jnp.where(logits < cutoff, NEG, logits)
  return logits


def _prefill(model, params, prompt: Array, prompt_mask: Array, total: int):
  """Runs the prompt through the model once, filling the cache. -> (last logits [B, V], cache)."""
  b, p = prompt.shape
  cache = init_cache(model, b, total)
  key_mask = jnp.concatenate([prompt_mask, jnp.ones((b, total - p), prompt_mask.dtype)], 1)   # [B, S]
  positions = jnp.maximum(jnp.cumsum(prompt_mask, 1) - 1, 0)                                  # [B, P]
  out, mut = model.apply({"params": params, **cache},
                         {"input_ids": prompt, "positions": positions, "attention_mask": key_mask},
                         decode=True, mutable=["cache"])
  return out["logits"][:, -1], {"cache": mut["cache"]}, key_mask, positions[:, -1]


def _step(model, params, cache, tokens: Array, positions: Array, key_mask: Array):
  out, mut = model.apply({"params": params, **cache},
                         {"input_ids": tokens[:, None], "positions": positions[:, None],
                          "attention_mask": key_mask}, decode=True, mutable=["cache"])
  return out["logits"][:, 0], {"cache": mut["cache"]}


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "greedy", "top_k", "top_p"))
def sample(model, params, prompt: Array, prompt_mask: Array, key: Array, *, max_new_tokens: int,
           greedy: bool = True, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Array:
  """-> generated tokens [B, max_new_tokens] (greedy, or sampled from filtered softmax(logits/T))."""
  total = prompt.shape[1] + max_new_tokens
  logits, cache, key_mask, last_pos = _prefill(model, params, prompt, prompt_mask, total)

  def body(carry, step_key):
    logits, cache, pos = carry
    if greedy:
      tok = jnp.argmax(logits, -1)
    else:
      tok = jax.random.categorical(step_key, _filter_logits(logits / temperature, top_k, top_p))
    logits, cache = _step(model, params, cache, tok, pos + 1, key_mask)
    return (logits, cache, pos + 1), tok

  _, tokens = jax.lax.scan(body, (logits, cache, last_pos), jax.random.split(key, max_new_tokens))
  return tokens.T


def _gather_beams(tree, idx: Array):
  """Reorders cache leaves [..., B*K, S, N, D] (and [B*K]-leading arrays) by flat beam index."""
  def g(x):
    if x.ndim >= 4:   # cached key / value: batch axis is ndim - 4 (a leading layer axis if scanned)
      return jnp.take(x, idx, axis=x.ndim - 4)
    return x          # cache_index
  return jax.tree_util.tree_map(g, tree)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "beam_size"))
def beam_search(model, params, prompt: Array, prompt_mask: Array, *, max_new_tokens: int,
                beam_size: int = 4, eos_id: int = -1, length_penalty: float = 0.0):
  """-> (best sequences [B, max_new_tokens], their scores [B]). Score = sum log p / len^alpha;
  a beam that emitted `eos_id` stays finished (pads with eos at no cost)."""
  b, k = prompt.shape[0], beam_size
  rep = lambda x: jnp.repeat(x, k, axis=0)                                         # [B*K, ...]
  total = prompt.shape[1] + max_new_tokens
  logits, cache, key_mask, last_pos = _prefill(model, params, rep(prompt), rep(prompt_mask), total)
  vocab = logits.shape[-1]
  scores = jnp.tile(jnp.array([0.0] + [NEG] * (k - 1)), b)                          # [B*K]
  seqs = jnp.zeros((b * k, max_new_tokens), jnp.int32)
  finished = jnp.zeros((b * k,), bool)

  def body(t, carry):
    logits, cache, scores, seqs, finished, pos = carry
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)                      # [B*K, V]
    eos_only = jnp.full((vocab,), NEG).at[jnp.maximum(eos_id, 0)].set(0.0)
    logp = jnp.where(finished[:, None], eos_only, logp)
    cand = (scores[:, None] + logp).reshape(b, k * vocab)                          # [B, K*V]
    top, flat = jax.lax.top_k(cand, k)                                             # [B, K]
    beam = flat // vocab + jnp.arange(b)[:, None] * k                              # flat beam idx
    tok = (flat % vocab).reshape(-1)
    beam = beam.reshape(-1)
    seqs = seqs[beam].at[:, t].set(tok)
    finished = finished[beam] | ((tok == eos_id) & (eos_id >= 0))
    cache = _gather_beams(cache, beam)
    logits, cache = _step(model, params, cache, tok, pos + 1, key_mask)
    return logits, cache, top.reshape(-1), seqs, finished, pos + 1

  carry = (logits, cache, scores, seqs, finished, last_pos)
  _, _, scores, seqs, finished, _ = jax.lax.fori_loop(0, max_new_tokens, body, carry)
  if eos_id >= 0:
    lengths = jnp.where(finished, jnp.argmax(seqs == eos_id, axis=1) + 1, max_new_tokens)
  else:
    lengths = jnp.full_like(scores, max_new_tokens)
  normed = (scores / lengths.astype(jnp.float32) ** length_penalty).reshape(b, k)
  best = jnp.argmax(normed, -1) + jnp.arange(b) * k
  return seqs[best], normed.reshape(-1)[best]
