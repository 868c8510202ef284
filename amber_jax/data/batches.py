"""The batch contract: the arrays one training step reads, their shapes, and how pairs join.

The batch contract (B_m = mono_batch_size, L_m = mono_length, B_p = parallel_batch_size,
L_s = sentence_length, L_p = 2 * L_s; a part whose batch size is 0 has none of its keys):
  mono_ids       [B_m, L_m]  [CLS] x [SEP] PAD...          x: one text, cut to L_m - 2 tokens
  mono_segments  [B_m, L_m]  zeros
  mono_seq       [B_m, L_m]  only with config.data.packing: rows are [CLS] a [SEP] [CLS] b [SEP]...
                             and mono_seq numbers their texts 1, 2, ... (0 on pads)
  src_ids        [B_p, L_s]  [CLS] x [SEP] PAD...          x: English, cut to L_s - 2 tokens
  tgt_ids        [B_p, L_s]  [CLS] y [SEP] PAD...          y: its translation, cut likewise
  pair_ids       [B_p, L_p]  [CLS] x [SEP] y [SEP] PAD...
  pair_segments  [B_p, L_p]  0 on [CLS] x [SEP], 1 on y [SEP], 0 on pads
  swap_ids       [B_p, L_p]  [CLS] y [SEP] x [SEP] PAD...
  swap_segments  [B_p, L_p]  0 on [CLS] y [SEP], 1 on x [SEP], 0 on pads
x and y are the same token lists in every array of a row.

With config.data.pair_packing (the default) the parallel part is R = parallel_batch_size rows of
L_p = 2 L_s, each holding as many whole pairs as fit (amber_jax.data.pairs), every array
[R, L_p]:
  pair_ids       [CLS] x1 [SEP] y1 [SEP] [CLS] x2 [SEP] y2 [SEP] ... PAD
  pair_segments  0 on [CLS] x [SEP], 1 on y [SEP] (per pair), 0 on pads
  swap_ids       [CLS] y1 [SEP] x1 [SEP] [CLS] y2 [SEP] x2 [SEP] ... PAD
  swap_segments  0 on [CLS] y [SEP], 1 on x [SEP] (per pair), 0 on pads
  pair_seq       k on the tokens of the row's k-th pair (1, 2, ...), 0 on pads; the same in the
                 pair and swap rows (a pair's unit has the same span in both)
  sent_ids       [CLS] x1 [SEP] [CLS] y1 [SEP] [CLS] x2 [SEP] ... PAD: the SA pass's sentences
  sent_seq       2k - 1 on x_k's [CLS] x_k [SEP], 2k on y_k's, 0 on pads
A row holds at most `amber_jax.core.objectives.max_pairs_per_row(L_p)` pairs.

With config.data.align_pairs (a user's word-aligned pairs, amber_jax.data.aligned; one pair per
row, no monolingual part) the parallel part adds
  guide          [B_p, (L_s - 2)^2]  1 at i (L_s - 2) + j when piece i of x and piece j of y
                                     belong to words a teacher links x and y are cut to
L_s - 2 tokens as in the one-pair layout, so the same pairs give the same tokens in both.

The keys come in groups of one shape (MONO_KEYS, PACKED_KEYS, SENTENCE_KEYS, PAIR_KEYS) and two
parts (PARTS: 'mono', 'parallel'), each present or absent as a whole. The losses that read them
are declared in `amber_jax.core.objectives.OBJECTIVES` (each objective's batch keys are keys of
one part here).

Everything here is numpy: no TensorFlow.
"""

from __future__ import annotations

import numpy as np

from amber_jax.core.model import CLS_ID, PAD_ID, SEP_ID

MONO_KEYS = ('mono_ids', 'mono_segments')  # [B_m, L_m]
PACKED_KEYS = ('mono_seq',)  # [B_m, L_m], only with config.data.packing
SENTENCE_KEYS = ('src_ids', 'tgt_ids')  # [B_p, L_s]
PAIR_KEYS = ('pair_ids', 'pair_segments', 'swap_ids', 'swap_segments')  # [B_p, 2 L_s]
PACKED_PAIR_KEYS = ('pair_seq', 'sent_ids', 'sent_seq')  # [R, 2 L_s], with config.data.pair_packing
GUIDE_KEYS = ('guide',)  # [B_p, (L_s - 2)^2], with config.data.align_pairs
# The parts of a batch: part -> every key it may hold (its batch size 0: none of them).
PARTS = {'mono': MONO_KEYS + PACKED_KEYS,
         'parallel': SENTENCE_KEYS + PAIR_KEYS + PACKED_PAIR_KEYS + GUIDE_KEYS}


def batch_spec(data_cfg) -> dict[str, tuple[tuple[int, int], np.dtype]]:
  """The arrays `make_train_iterator` yields: name -> (shape, dtype). Needs no TensorFlow."""
  check_sizes(data_cfg)
  bm, lm = data_cfg.mono_batch_size, data_cfg.mono_length
  bp, ls = data_cfg.parallel_batch_size, data_cfg.sentence_length
  int32 = np.dtype(np.int32)
  spec = {}
  if bm:
    spec.update({name: ((bm, lm), int32) for name in MONO_KEYS})
    if data_cfg.packing:
      spec.update({name: ((bm, lm), int32) for name in PACKED_KEYS})
  if bp and data_cfg.pair_packing:
    spec.update({name: ((bp, 2 * ls), int32) for name in PAIR_KEYS + PACKED_PAIR_KEYS})
  elif bp:
    spec.update({name: ((bp, ls), int32) for name in SENTENCE_KEYS})
    spec.update({name: ((bp, 2 * ls), int32) for name in PAIR_KEYS})
    if data_cfg.get('align_pairs'):
      spec.update({name: ((bp, (ls - 2) ** 2), int32) for name in GUIDE_KEYS})
  return spec


def join_pair(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Joins framed sentences into one input per row, with its segment ids.

  Args:
    first: int32 [rows, length], rows [CLS] a [SEP] PAD... (a holds no PAD id).
    second: int32 [rows, length], rows [CLS] b [SEP] PAD...

  Returns:
    ids [rows, 2 length] = [CLS] a [SEP] b [SEP] PAD..., and segments [rows, 2 length] = 1 on
    b [SEP], else 0.
  """
  rows, length = first.shape
  n_first = np.count_nonzero(first, axis=1)[:, None]  # [rows, 1]: [CLS] a [SEP] (PAD_ID is 0)
  n_second = np.count_nonzero(second, axis=1)[:, None] - 1  # [rows, 1]: b [SEP]
  pos = np.arange(2 * length)[None, :]  # [1, 2 length]
  in_second = (pos >= n_first) & (pos < n_first + n_second)  # [rows, 2 length]
  # Row r of the output reads first[r] up to n_first, then second[r] from its position 1: one
  # gather from [first | second] laid side by side.
  both = np.concatenate([first, second], axis=1)  # [rows, 2 length]
  source = np.where(pos < n_first, pos, pos - n_first + 1 + length)  # [rows, 2 length]
  ids = np.take_along_axis(both, np.minimum(source, 2 * length - 1), axis=1)
  ids[~((pos < n_first) | in_second)] = PAD_ID
  return ids.astype(np.int32, copy=False), in_second.astype(np.int32)


def frame_texts(texts: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
  """Texts (int id arrays, no specials) -> rows [CLS] x [SEP] PAD..., x cut to length - 2 ids.

  Returns:
    (int32 [len(texts), length] rows, int32 [len(texts)]: 1 where the text was cut).
  """
  n = len(texts)
  sizes = np.fromiter(map(len, texts), np.int64, n)  # [n]
  keep = np.minimum(sizes, length - 2)  # [n]
  rows = np.zeros((n, length), np.int32)  # PAD_ID
  rows[:, 0] = CLS_ID
  if n and keep.sum():
    flat = np.concatenate([t[:k] for t, k in zip(texts, keep.tolist())])  # [sum keep]
    row = np.repeat(np.arange(n), keep)
    col = 1 + np.arange(len(flat)) - np.repeat(np.cumsum(keep) - keep, keep)
    rows[row, col] = flat
  rows[np.arange(n), keep + 1] = SEP_ID
  return rows, (sizes > keep).astype(np.int32)


def check_sizes(data_cfg) -> None:
  sizes = {k: getattr(data_cfg, k) for k in ('mono_batch_size', 'parallel_batch_size',
                                             'mono_length', 'sentence_length')}
  negative = {k: v for k, v in sizes.items() if v < 0}
  if negative:
    raise ValueError(f'config.data sizes must be >= 0; got {negative}.')
  if not sizes['mono_batch_size'] and not sizes['parallel_batch_size']:
    raise ValueError('config.data.mono_batch_size and parallel_batch_size are both 0: there is '
                     'nothing to train on; set at least one.')
  for batch, length in (('mono_batch_size', 'mono_length'),
                        ('parallel_batch_size', 'sentence_length')):
    if sizes[batch] and sizes[length] < 3:
      raise ValueError(f'config.data.{length}={sizes[length]} leaves no room for a token between '
                       f'[CLS] and [SEP]; use >= 3 (or set {batch}=0).')
