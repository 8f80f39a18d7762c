"""Autoregressive generation with a KV cache: greedy, sampling (temperature / top-k / top-p) and
beam search, each one jitted `lax` loop.

The loops only need two calls, `prefill` (run the prompt, fill the cache, logits for the first new
token) and `step` (feed the token just chosen, logits for the next), given by a decoding adapter:

  CausalDecoding(model)        a causal LM (plmjax.models.gpt.GPT): the prompt is prefilled causally,
                               each step feeds one token. A bare flax module is wrapped in it.
  PrefixLMDecoding(model, ...) a prefix LM that predicts at a [MASK] (UNILM's seq2seq mode on
                               plmjax.models.bert.Bert): the source fills the first cache slots with
                               full (bidirectional) visibility (`cache_prefix`); a [MASK] after it
                               is the query for the next token; each step feeds [token, MASK] and
                               then rewinds the cache by one slot, so that the [MASK]'s keys are
                               overwritten by the next token's: the cache only ever holds the source
                               and the tokens generated so far.

  FragmentDecoding(model, ...) MASS (plmjax.models.seq2seq): the encoder reads a sentence with a
                               run of [MASK]s, the decoder writes that fragment at its positions.
  MemoryDecoding(model)        Transformer-XL (plmjax.models.transformer_xl): no KV cache but the
                               model's own recurrence memory, carried as explicit state: the prompt
                               runs as one segment from zero memory (as a stream starts in training),
                               each step feeds one token with the memory of the last `mem_len`
                               positions, the model's memory update (Hugging Face's generation).
  PermutationDecoding(model)   XLNet (plmjax.models.xlnet): each step predicts the next slot as the
                               single target of a left-to-right factorisation order over the whole
                               buffer (perm_mask hides it and everything after it).

Prompts are left-padded [B, P] with `prompt_mask` (1 = real token); positions count real tokens
only, so a left-padded prompt decodes exactly like the same prompt without padding.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from plmjax.models.gpt import init_cache
from plmjax.models.transformer_xl import TransformerXL
from plmjax.models.xlnet import XLNet

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


def _prompt_layout(prompt_mask: Array, total: int) -> tuple[Array, Array]:
  """-> key padding over the cache [B, total] and prompt positions [B, P] (real tokens counted)."""
  b, p = prompt_mask.shape
  key_mask = jnp.concatenate([prompt_mask, jnp.ones((b, total - p), prompt_mask.dtype)], 1)   # [B, S]
  return key_mask, jnp.maximum(jnp.cumsum(prompt_mask, 1) - 1, 0)                            # [B, P]


@dataclasses.dataclass(frozen=True)
class CausalDecoding:
  """Causal LM decoding: prefill the prompt, then one token per step."""
  model: Any

  def prefill(self, params, prompt: Array, prompt_mask: Array, max_new_tokens: int):
    """-> (logits [B, V] for the first new token, cache, key_mask [B, S], last prompt position [B])."""
    b, p = prompt.shape
    total = p + max_new_tokens
    cache = init_cache(self.model, b, total)
    key_mask, positions = _prompt_layout(prompt_mask, total)
    out, mut = self.model.apply({"params": params, **cache},
                                {"input_ids": prompt, "positions": positions, "attention_mask": key_mask},
                                decode=True, mutable=["cache"])
    return out["logits"][:, -1], {"cache": mut["cache"]}, key_mask, positions[:, -1]

  def step(self, params, cache, tokens: Array, positions: Array, key_mask: Array):
    """tokens, positions [B] -> (logits [B, V] for the next token, cache)."""
    out, mut = self.model.apply({"params": params, **cache},
                                {"input_ids": tokens[:, None], "positions": positions[:, None],
                                 "attention_mask": key_mask}, decode=True, mutable=["cache"])
    return out["logits"][:, 0], {"cache": mut["cache"]}


def rewind_cache(cache, n: int):
  """Moves every `cache_index` back by n slots (the slots are overwritten by the next call)."""
  def f(path, x):
    return x - n if getattr(path[-1], "key", None) == "cache_index" else x
  return jax.tree_util.tree_map_with_path(f, cache)


@dataclasses.dataclass(frozen=True)
class PrefixLMDecoding:
  """UNILM seq2seq decoding on a Bert with `decode=True` (module docstring). The source gets token
  type `source_type`, generated tokens and [MASK] queries `target_type` (unilm.MODE_TOKEN_TYPES)."""
  model: Any
  mask_id: int
  source_type: int = 4
  target_type: int = 5

  def _apply(self, params, cache, ids, positions, types, key_mask, prefix: int = 0):
    out, mut = self.model.apply({"params": params, **cache},
                                {"input_ids": ids, "positions": positions, "token_type_ids": types,
                                 "attention_mask": key_mask}, decode=True, cache_prefix=prefix,
                                mutable=["cache"])
    return out["logits"][:, -1], rewind_cache({"cache": mut["cache"]}, 1)   # drop the [MASK] slot

  def prefill(self, params, prompt: Array, prompt_mask: Array, max_new_tokens: int):
    b, p = prompt.shape
    total = p + max_new_tokens + 1                       # + the slot of the trailing [MASK]
    cache = init_cache(self.model, b, total)
    key_mask, positions = _prompt_layout(prompt_mask, total)
    ids = jnp.concatenate([prompt, jnp.full((b, 1), self.mask_id, prompt.dtype)], 1)         # [B, P+1]
    pos = jnp.concatenate([positions, positions[:, -1:] + 1], 1)
    types = jnp.concatenate([jnp.full((b, p), self.source_type), jnp.full((b, 1), self.target_type)],
                            1).astype(jnp.int32)
    logits, cache = self._apply(params, cache, ids, pos, types, key_mask, prefix=p)
    return logits, cache, key_mask, positions[:, -1]

  def step(self, params, cache, tokens: Array, positions: Array, key_mask: Array):
    ids = jnp.stack([tokens, jnp.full_like(tokens, self.mask_id)], 1)                        # [B, 2]
    pos = jnp.stack([positions, positions + 1], 1)
    types = jnp.full(ids.shape, self.target_type, jnp.int32)
    return self._apply(params, cache, ids, pos, types, key_mask)


@dataclasses.dataclass(frozen=True)
class MemoryDecoding:
  """Transformer-XL decoding: the state is the memory {"mems": [B, L, M, E]} (batch first, so that
  beam search reorders it like a KV cache). Relative positions need no position ids, and the model
  has no key padding: prompts must be unpadded (prompt_mask all ones; decode prompts of different
  lengths separately). `mem_len` > 0 overrides the model's memory length (the paper evaluates with
  a longer memory than it trains with); memory length is not a weight, so any value loads."""
  model: Any
  mem_len: int = 0

  def _module(self):
    cfg = self.model.config
    if self.mem_len and self.mem_len != cfg.mem_len:
      return type(self.model)(dataclasses.replace(cfg, mem_len=self.mem_len))
    return self.model

  def _apply(self, params, ids, mems):
    m = self._module()
    out = m.apply({"params": params}, {"input_ids": ids, "mems": mems},
                  method=lambda mdl, b: mdl._segment(b, False, False))       # one segment, any length
    return out["logits"][:, -1], {"mems": jnp.moveaxis(out["mems"], 1, 0)}   # [B, V], [B, L, M, E]

  def prefill(self, params, prompt: Array, prompt_mask: Array, max_new_tokens: int):
    b, p = prompt.shape
    logits, state = self._apply(params, prompt, self._module().init_mems(b))
    key_mask, positions = _prompt_layout(prompt_mask, p + max_new_tokens)
    return logits, state, key_mask, positions[:, -1]

  def step(self, params, cache, tokens: Array, positions: Array, key_mask: Array):
    del positions, key_mask                       # relative positions; no padding
    return self._apply(params, tokens[:, None], jnp.moveaxis(cache["mems"], 0, 1))


@dataclasses.dataclass(frozen=True)
class FragmentDecoding:
  """MASS (plmjax.models.seq2seq.Seq2Seq): the prompt is the encoder input, a sentence with one
  contiguous run of [MASK]s; the decoder writes the fragment at the masks' positions, as in
  pretraining: input [MASK] at position u (the first mask), then each generated token at the
  next position, over the decoder's KV cache; the encoder output stays in the state."""
  model: Any
  mask_id: int

  def prefill(self, params, prompt: Array, prompt_mask: Array, max_new_tokens: int):
    b = prompt.shape[0]
    src = {"input_ids": prompt, "attention_mask": prompt_mask}
    encoded = self.model.apply({"params": params}, src, method=self.model.encode)   # [B, S, E]
    dec = {**src, "decoder_input_ids": jnp.zeros((b, max_new_tokens), jnp.int32)}
    shapes = jax.eval_shape(lambda: self.model.init(jax.random.key(0), dec, decode=True))
    cache = {"cache": jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes["cache"])}
    u = jnp.argmax(prompt == self.mask_id, axis=1).astype(jnp.int32)                # [B]
    state = {**cache, "encoded": encoded, "source_mask": prompt_mask}
    logits, state = self.step(params, state, jnp.full((b,), self.mask_id, prompt.dtype), u, None)
    return logits, state, jnp.ones((b, max_new_tokens), jnp.int32), u

  def step(self, params, cache, tokens: Array, positions: Array, key_mask: Array):
    del key_mask
    batch = {"decoder_input_ids": tokens[:, None], "decoder_positions": positions[:, None],
             "attention_mask": cache["source_mask"]}
    (_, logits), mut = self.model.apply({"params": params, "cache": cache["cache"]}, batch,
                                        cache["encoded"], decode=True,
                                        method=self.model.decode_step, mutable=["cache"])
    return logits[:, 0], {**cache, "cache": mut["cache"]}


@dataclasses.dataclass(frozen=True)
class PermutationDecoding:
  """XLNet (plmjax.models.xlnet.XLNet): the next token is the paper's partial prediction with one
  target. The state is the token buffer [B, P + N] and the next slot t; each step runs the model
  over the whole buffer with perm_mask hiding every slot >= t (and the prompt's padding) from every
  position, and target_mapping pointing the query stream at slot t — the factorisation order of a
  left-to-right reading, transformers' XLNet generation recipe. The query stream has no KV cache,
  so a step costs a forward pass over P + N tokens. Buffer and validity are stored [B, S, 1, 1] so
  that beam search reorders them like a KV cache."""
  model: Any

  def _logits(self, params, buf: Array, valid: Array, t: Array) -> Array:
    b, s = buf.shape
    visible = valid & (jnp.arange(s)[None, :] < t)                                   # [B, S]
    perm = jnp.broadcast_to(~visible[:, None, :], (b, s, s)).astype(jnp.float32)     # [B, S, S]
    target = jax.nn.one_hot(jnp.full((b, 1), t), s, dtype=jnp.float32)              # [B, 1, S]
    out = self.model.apply({"params": params}, {"input_ids": buf, "perm_mask": perm,
                                                "target_mapping": target})
    return out["logits"][:, 0]                                                       # [B, V]

  def prefill(self, params, prompt: Array, prompt_mask: Array, max_new_tokens: int):
    b, p = prompt.shape
    buf = jnp.concatenate([prompt, jnp.zeros((b, max_new_tokens), prompt.dtype)], 1)         # [B, S]
    valid = jnp.concatenate([prompt_mask > 0, jnp.ones((b, max_new_tokens), bool)], 1)
    t = jnp.asarray(p, jnp.int32)
    state = {"buf": buf[:, :, None, None], "valid": valid[:, :, None, None], "t": t}
    key_mask, positions = _prompt_layout(prompt_mask, p + max_new_tokens)
    return self._logits(params, buf, valid, t), state, key_mask, positions[:, -1]

  def step(self, params, cache, tokens: Array, positions: Array, key_mask: Array):
    del positions, key_mask                      # relative positions; padding is in "valid"
    t = cache["t"]
    buf = cache["buf"][:, :, 0, 0].at[:, t].set(tokens.astype(cache["buf"].dtype))
    valid = cache["valid"][:, :, 0, 0]
    state = {**cache, "buf": buf[:, :, None, None], "t": t + 1}
    return self._logits(params, buf, valid, t + 1), state


def as_decoding(model):
  """A decoding adapter for `model`: itself if it is one, MemoryDecoding(model) for a
  Transformer-XL, PermutationDecoding(model) for an XLNet, else CausalDecoding(model)."""
  if hasattr(model, "prefill") and hasattr(model, "step"):
    return model
  if isinstance(model, XLNet):
    return PermutationDecoding(model)
  return MemoryDecoding(model) if isinstance(model, TransformerXL) else CausalDecoding(model)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "greedy", "top_k", "top_p"))
def sample(model, params, prompt: Array, prompt_mask: Array, key: Array, *, max_new_tokens: int,
           greedy: bool = True, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Array:
  """-> generated tokens [B, max_new_tokens] (greedy, or sampled from filtered softmax(logits/T)).
  `model`: a decoding adapter or a causal LM module (module docstring)."""
  dec = as_decoding(model)
  logits, cache, key_mask, last_pos = dec.prefill(params, prompt, prompt_mask, max_new_tokens)

  def body(carry, step_key):
    logits, cache, pos = carry
    if greedy:
      tok = jnp.argmax(logits, -1)
    else:
      tok = jax.random.categorical(step_key, _filter_logits(logits / temperature, top_k, top_p))
    logits, cache = dec.step(params, cache, tok, pos + 1, key_mask)
    return (logits, cache, pos + 1), tok

  _, tokens = jax.lax.scan(body, (logits, cache, last_pos), jax.random.split(key, max_new_tokens))
  return tokens.T


def _gather_beams(tree, idx: Array):
  """Reorders cache leaves [..., B*K, S, N, D] (Transformer-XL memory [B*K, L, M, E]) by flat
  beam index."""
  def g(x):
    if x.ndim >= 4:   # cached key / value: batch axis is ndim - 4 (a leading layer axis if scanned)
      return jnp.take(x, idx, axis=x.ndim - 4)
    return x          # cache_index
  return jax.tree_util.tree_map(g, tree)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "beam_size", "eos_id"))
def beam_search(model, params, prompt: Array, prompt_mask: Array, *, max_new_tokens: int,
                beam_size: int = 4, eos_id: int = -1, length_penalty: float = 0.0):
  """-> (best sequences [B, max_new_tokens], their scores [B]). Score = sum log p / len^alpha;
  a beam that emitted `eos_id` stays finished (pads with eos at no cost)."""
  b, k = prompt.shape[0], beam_size
  rep = lambda x: jnp.repeat(x, k, axis=0)                                         # [B*K, ...]
  dec = as_decoding(model)
  logits, cache, key_mask, last_pos = dec.prefill(params, rep(prompt), rep(prompt_mask), max_new_tokens)
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
    logits, cache = dec.step(params, cache, tok, pos + 1, key_mask)
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
