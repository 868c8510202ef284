"""BERT masking (15%: 80% [MASK], 10% random, 10% kept) and the WA attention masks, in JAX.

Masking runs inside the jitted step from a key derived from the step number, so a run is
deterministic given (seed, step) and the data pipeline stays free of model details.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from amber_jax.core.model import CLS_ID, MASK_ID, NUM_SPECIALS, PAD_ID, SEP_ID

Array = jax.Array


class Masked(NamedTuple):
  ids: Array        # int [batch, length], the input with masked tokens replaced
  positions: Array  # int [batch, k], candidate positions (the first `count` of each row are masked)
  labels: Array     # int [batch, k], original token at each position
  weights: Array    # float [batch, k], 1 for a masked position, 0 for a filler


def is_special(ids: Array) -> Array:
  """True at [PAD], [CLS] and [SEP]: positions that are never masked nor aligned."""
  return (ids == PAD_ID) | (ids == CLS_ID) | (ids == SEP_ID)


def mask_tokens(rng: Array, ids: Array, *, vocab_size: int, max_predictions: int,
                rate: float = 0.15, mask_prob: float = 0.8, random_prob: float = 0.1) -> Masked:
  """Chooses round(rate * n) real tokens per row (at least 1, at most max_predictions).

  Args:
    rng: PRNG key.
    ids: int [batch, length].
    vocab_size: random replacements are drawn from [NUM_SPECIALS, vocab_size).
    max_predictions: k, the fixed number of candidate positions per row (static shape).
    rate: fraction of real tokens masked.
    mask_prob: of the chosen, the fraction replaced by [MASK].
    random_prob: of the chosen, the fraction replaced by a random token (the rest keep theirs).

  Returns:
    Masked(ids, positions, labels, weights).
  """
  k_pick, k_kind, k_tok = jax.random.split(rng, 3)
  real = ~is_special(ids)  # [batch, length]
  scores = jnp.where(real, jax.random.uniform(k_pick, ids.shape), -1.0)
  k = min(max_predictions, ids.shape[1])
  _, positions = jax.lax.top_k(scores, k)  # [batch, k], real tokens first (random order)
  n_real = real.sum(axis=1)
  count = jnp.clip(jnp.round(rate * n_real), 1, k).astype(jnp.int32)
  count = jnp.minimum(count, n_real)
  weights = (jnp.arange(k)[None, :] < count[:, None]).astype(jnp.float32)  # [batch, k]
  labels = jnp.take_along_axis(ids, positions, axis=1)
  u = jax.random.uniform(k_kind, positions.shape)
  random_tokens = jax.random.randint(k_tok, positions.shape, NUM_SPECIALS, vocab_size)
  replacement = jnp.where(u < mask_prob, MASK_ID,
                          jnp.where(u < mask_prob + random_prob, random_tokens, labels))
  replacement = jnp.where(weights > 0, replacement, labels)
  rows = jnp.arange(ids.shape[0])[:, None]
  new_ids = ids.at[rows, positions].set(replacement.astype(ids.dtype))
  return Masked(new_ids, positions, labels, weights)


def wa_attention_mask(ids: Array, segments: Array, variant: str = 'paper') -> Array:
  """The word-alignment pass's [batch, length, length] (query, key) attention mask.

  The first sentence is segment 0 ([CLS] x [SEP]), the second segment 1 (y [SEP]).

  'paper': x attends to x only; each y token attends to all of x and to the y tokens strictly
    before it (the paper's figure).
  'cross': x attends to y only and y attends to x only (specials of the own side included so
    that no row is empty).
  'full': every real token attends to every real token of both sentences (TLM's attention), so
    one pass over [x; y] holds both directions (configs/align.py).

  Returns:
    bool [batch, length(query), length(key)].
  """
  first = (segments == 0) & (ids != PAD_ID)   # [batch, length]
  second = (segments == 1) & (ids != PAD_ID)
  q_first, k_first = first[:, :, None], first[:, None, :]
  q_second, k_second = second[:, :, None], second[:, None, :]
  if variant == 'paper':
    length = ids.shape[1]
    before = jnp.tril(jnp.ones((length, length), bool), k=-1)[None]  # key strictly before query
    mask = (q_first & k_first) | (q_second & k_first) | (q_second & k_second & before)
  elif variant == 'cross':
    special = is_special(ids)
    own_special_first = q_first & k_first & special[:, None, :]
    own_special_second = q_second & k_second & special[:, None, :]
    mask = (q_first & k_second) | (q_second & k_first) | own_special_first | own_special_second
  elif variant == 'full':
    real = first | second
    mask = real[:, :, None] & real[:, None, :]
  else:
    raise ValueError(f"Unknown WA mask variant {variant!r}; allowed: 'paper', 'cross', 'full'.")
  return mask
