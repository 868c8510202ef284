"""A batch -> the encoder passes -> the weighted AMBER losses.

This is the one extension point for objectives: a new loss adds a branch to `amber_losses` and a
weight to `config.objectives`.

Passes per step:
  mono rows:      one masked pass                        -> MLM
  parallel rows:  one masked pass on [x; y]              -> TLM
                  one unmasked pass on x and y (stacked) -> SA
                  two passes with the WA mask, [x; y] and [y; x], last layer's probabilities -> WA
A loss whose weight is 0 costs nothing: its passes are not traced.

Packed monolingual rows (several texts per row) add one optional batch key:
  mono_seq  int32 [batch, length]: 1, 2, 3, ... = which text of the row a token belongs to,
            0 on padding.
When it is present, the MLM pass lets a token attend only to tokens of its own text
(attention_mask = mono_seq[:, :, None] == mono_seq[:, None, :]; pads are masked as keys anyway)
and restarts position ids at 0 at the first token of each text (`packed_positions`), so each text
is encoded exactly as it would be alone in its own row. Masking still picks ~mask_rate of the
row's real tokens, so the number of predictions per text can differ from the unpacked layout;
the loss is the mean over every prediction of the batch either way. Without `mono_seq` a row is
one text with positions 0..length-1 (today's behaviour).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from amber_jax.core import losses
from amber_jax.core import masking
from amber_jax.core.model import PAD_ID, Encoder

Array = jax.Array


def max_predictions(length: int, rate: float) -> int:
  """Candidate positions per row: enough for `rate` of the row's tokens, rounded up."""
  return max(1, min(length, math.ceil(rate * length) + 1))


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


def _masked_lm(model: Encoder, params, ids, segments, rng, ocfg, dropout_rng, deterministic,
               seq=None):
  """MLM loss of one masked pass; `seq` int [batch, length] marks the texts of packed rows."""
  vocab = model.cfg.vocab_size
  m = masking.mask_tokens(rng, ids, vocab_size=vocab,
                          max_predictions=max_predictions(ids.shape[1], ocfg.mask_rate),
                          rate=ocfg.mask_rate)
  mask = positions = None
  if seq is not None:
    mask, positions = packed_attention_mask(seq), packed_positions(seq)
  out = model.apply({'params': params}, m.ids, segments, mask, positions,
                    deterministic=deterministic, rngs={'dropout': dropout_rng})
  logits = model.apply({'params': params}, out['hidden'], m.positions,
                       method=Encoder.mlm_logits)  # [batch, k, vocab]
  return losses.masked_lm_loss(logits, m.labels, m.weights)


def _side_lengths(src_ids, tgt_ids):
  """Number of real tokens of x and y (no [CLS]/[SEP]/pads): int [batch] each."""
  count = lambda ids: (~masking.is_special(ids)).sum(axis=1)
  return count(src_ids), count(tgt_ids)


def _cross_block(probs, first_len, n_first, n_second):
  """From [batch, heads, L, L] probabilities of a [CLS] a [SEP] b [SEP] input, the block of
  b queries over a keys: [batch, heads, n_second, n_first] (token j of b, token i of a)."""
  a_pos = 1 + jnp.arange(n_first)                                  # [n_first]
  b_pos = first_len[:, None] + 2 + jnp.arange(n_second)[None, :]  # [batch, n_second]
  b_pos = jnp.minimum(b_pos, probs.shape[-1] - 1)
  rows = jnp.take_along_axis(probs, b_pos[:, None, :, None], axis=2)  # [batch, heads, n_b, L]
  return rows[..., a_pos]                                          # [batch, heads, n_b, n_a]


def word_alignment(model: Encoder, params, batch, ocfg, dropout_rng, deterministic):
  """L_WA from the two masked passes. Returns (loss, per-pair loss)."""
  n_side = batch['src_ids'].shape[1] - 2
  len_x, len_y = _side_lengths(batch['src_ids'], batch['tgt_ids'])
  r1, r2 = jax.random.split(dropout_rng)

  def last_probs(ids, segs, rng):
    mask = masking.wa_attention_mask(ids, segs, ocfg.wa_mask)
    out = model.apply({'params': params}, ids, segs, mask, deterministic=deterministic,
                      return_last_probs=True, rngs={'dropout': rng})
    return out['last_probs']  # [batch, heads, L, L]

  p_xy = last_probs(batch['pair_ids'], batch['pair_segments'], r1)   # [x; y]
  p_yx = last_probs(batch['swap_ids'], batch['swap_segments'], r2)   # [y; x]
  a_y2x = _cross_block(p_xy, len_x, n_side, n_side)  # y queries over x keys [b, h, ny, nx]
  a_x2y = _cross_block(p_yx, len_y, n_side, n_side)  # x queries over y keys [b, h, nx, ny]
  x_mask = jnp.arange(n_side)[None, :] < len_x[:, None]
  y_mask = jnp.arange(n_side)[None, :] < len_y[:, None]
  return losses.word_alignment_loss(a_x2y, a_y2x, x_mask, y_mask)


def sentence_embeddings(model: Encoder, params, ids, dropout_rng, deterministic):
  """Mean of the last layer over non-pad tokens, x and y encoded separately: [batch, embed]."""
  out = model.apply({'params': params}, ids, None, deterministic=deterministic,
                    rngs={'dropout': dropout_rng})
  # float32 sums: a bfloat16 mean over a row loses digits the SA scores need.
  return losses.mean_pool(out['hidden'].astype(jnp.float32), ids != PAD_ID)


def amber_losses(model: Encoder, params, batch: Mapping[str, Array], rng: Array, ocfg: Any,
                 deterministic: bool = False) -> tuple[Array, dict[str, Array]]:
  """The weighted total loss of one batch and its parts.

  Args:
    model: the Encoder module.
    params: its (unboxed) parameters.
    batch: arrays as `amber_jax.data.pipeline` yields them (mono_* and/or src/tgt/pair/swap_*; the
      optional mono_seq marks packed rows, see the module docstring).
    rng: PRNG key for masking and dropout.
    ocfg: config.objectives (weights, mask_rate, sa_* options, wa_mask).
    deterministic: disable dropout.

  Returns:
    (total loss, metrics dict with each loss and accuracy).
  """
  k_mono, k_tlm, k_drop = jax.random.split(rng, 3)
  d_mono, d_tlm, d_sa, d_wa = jax.random.split(k_drop, 4)
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  if 'mono_ids' in batch and ocfg.mlm_weight:
    loss, acc = _masked_lm(model, params, batch['mono_ids'], batch['mono_segments'], k_mono,
                           ocfg, d_mono, deterministic, seq=batch.get('mono_seq'))
    total += ocfg.mlm_weight * loss
    metrics.update(mlm_loss=loss, mlm_accuracy=acc)
  if 'pair_ids' in batch:
    if ocfg.tlm_weight:
      loss, acc = _masked_lm(model, params, batch['pair_ids'], batch['pair_segments'], k_tlm,
                             ocfg, d_tlm, deterministic)
      total += ocfg.tlm_weight * loss
      metrics.update(tlm_loss=loss, tlm_accuracy=acc)
    if ocfg.sa_weight:
      n = batch['src_ids'].shape[0]
      both = jnp.concatenate([batch['src_ids'], batch['tgt_ids']], axis=0)  # one pass, 2n rows
      c = sentence_embeddings(model, params, both, d_sa, deterministic)
      loss = losses.sentence_alignment_loss(
          c[:n], c[n:], cosine=ocfg.sa_cosine, temperature=ocfg.sa_temperature,
          margin=ocfg.sa_margin, bidirectional=ocfg.sa_bidirectional)
      total += ocfg.sa_weight * loss
      metrics['sa_loss'] = loss
    if ocfg.wa_weight:
      loss, _ = word_alignment(model, params, batch, ocfg, d_wa, deterministic)
      total += ocfg.wa_weight * loss
      metrics['wa_loss'] = loss
  metrics['loss'] = total
  return total, metrics
