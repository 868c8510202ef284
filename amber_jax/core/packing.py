"""Packed rows (several texts, pairs or sentences per row): the per-token text ids `seq` (1, 2,
...; 0 on padding) -> the block-diagonal attention mask and the restarted position ids with which
each text is encoded exactly as it would be alone in its own row."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def packed_positions(seq: Array) -> Array:
  """Position ids that restart at 0 at the first token of each text of a packed row.

  Args:
    seq: int [batch, length], which text each token belongs to (1, 2, ...; 0 on padding).

  Returns:
    int32 [batch, length]: the token's offset from the start of its run of equal `seq` values.
  """
  length = seq.shape[1]
  index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), seq.shape)
  starts = jnp.concatenate([jnp.ones_like(seq[:, :1], bool), seq[:, 1:] != seq[:, :-1]], axis=1)
  start_index = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)  # [batch, length]
  return index - start_index


def packed_attention_mask(seq: Array) -> Array:
  """bool [batch, length, length]: query i sees key j iff both belong to the same text."""
  return seq[:, :, None] == seq[:, None, :]
