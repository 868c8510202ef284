"""Translation pairs -> the parallel part of a step: which pairs go in, and the rows they fill.

Both input paths (the cache read through Grain, and the live seqio path) choose a step's pairs with
`select_pairs` and lay them out with `pair_rows` (one pair per row) or `packed_pair_rows` (several
pairs per row, config.data.pair_packing); the layouts are the batch contract's
(amber_jax.data.batches).

Choosing pairs: candidates come in order (the pairs deferred by earlier steps first). A pair whose
English side (after cutting) is already in the step waits for a later step: a duplicate would be a
false negative of the in-batch sentence alignment. With packing, each pair goes into the first row
with room for it (first fit, in arrival order); a pair that fits no row waits too, ahead of newer
pairs, and the step is closed once no row has room for the smallest pair, every row holds its
maximum, or as many pairs as there are rows have not fitted.

A packed row's unit for pair (x, y) is [CLS] x [SEP] y [SEP] in the TLM/WA rows (|x| + |y| + 3
tokens) and [CLS] x [SEP] [CLS] y [SEP] in the SA rows (|x| + |y| + 4): rows are filled by the
larger, so the same pairs sit in the same row of every array. Numpy only.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

import numpy as np

from amber_jax.core.model import CLS_ID, PAD_ID, SEP_ID
from amber_jax.core.objectives import max_pairs_per_row
from amber_jax.data.batches import frame_texts, join_pair

# A parallel batch that cannot be filled with distinct English sentences from this many
# batches' worth of consecutive pairs means the corpus has too few of them for the batch size.
MAX_POOL_BATCHES = 16
MIN_UNIT = 6  # the SA unit of the shortest pair: [CLS] x [SEP] [CLS] y [SEP] with one token a side


class Selection(NamedTuple):
  """The pairs of one step and what was passed over.

  Attributes:
    pairs: (x, y) token arrays, cut to the side limit, in the order they were placed.
    rows: the row each pair went into (one pair per row: 0, 1, 2, ...).
    deferred: handles of the pairs that wait for a later step, oldest first (English already in
      the step, or no room left).
    examined: candidates looked at.
    dropped: pairs with a side too long that were dropped (with `drop`).
    src_cut, tgt_cut: int32 [pairs], 1 where that side was cut.
  """

  pairs: list[tuple[np.ndarray, np.ndarray]]
  rows: list[int]
  deferred: list[Any]
  examined: int
  dropped: int
  src_cut: np.ndarray
  tgt_cut: np.ndarray


def select_pairs(candidates: Iterator[tuple[Any, np.ndarray, np.ndarray]], *, rows: int,
                 sentence_length: int, packed: bool, drop: bool) -> Selection:
  """Chooses the pairs of one step (see the module docstring).

  Args:
    candidates: (handle, x ids, y ids) in order, no specials; the handle is the caller's (a
      position, an index into its pool) and comes back in `Selection.deferred`.
    rows: parallel_batch_size: pairs (one per row), or rows of 2 * sentence_length when packed.
    sentence_length: L_s; each side is cut to L_s - 2 ids (or the pair dropped, with `drop`).
    packed: several pairs per row.
    drop: drop a pair with a side longer than L_s - 2 (counted) instead of cutting it.

  Returns:
    A `Selection`.

  Raises:
    ValueError: the candidates hold too few distinct English sentences to fill a step.
  """
  limit = sentence_length - 2
  row_length = 2 * sentence_length
  per_row = max_pairs_per_row(row_length) if packed else 1
  free = np.full(rows, row_length if packed else 1, np.int64)  # room left in each row
  count = np.zeros(rows, np.int64)  # pairs in each row
  pairs, placed, deferred, cuts, seen = [], [], [], [], set()
  examined = dropped = misses = 0
  while (free >= (MIN_UNIT if packed else 1)).any() and misses < rows:
    if examined - misses >= MAX_POOL_BATCHES * rows * per_row:
      raise ValueError(
          f'Could not fill a parallel batch of {rows} {"rows" if packed else "pairs"} with '
          f'distinct English sentences: {examined} consecutive pairs hold only {len(seen)}. The '
          'corpus has too few distinct English sentences for this batch; lower '
          'config.data.parallel_batch_size (or add data).')
    handle, src, tgt = next(candidates)
    examined += 1
    if drop and (len(src) > limit or len(tgt) > limit):
      dropped += 1
      continue
    cut = (len(src) > limit, len(tgt) > limit)
    src, tgt = src[:limit], tgt[:limit]
    key = src.tobytes()
    if key in seen:
      deferred.append(handle)
      continue
    need = len(src) + len(tgt) + 4 if packed else 1
    fits = (free >= need) & (count < per_row)
    if not fits.any():
      deferred.append(handle)
      misses += 1
      continue
    row = int(np.argmax(fits))
    free[row] -= need
    count[row] += 1
    if count[row] == per_row:
      free[row] = 0
    seen.add(key)
    pairs.append((src, tgt))
    placed.append(row)
    cuts.append(cut)
  cut = np.asarray(cuts, np.int32).reshape(-1, 2)
  return Selection(pairs, placed, deferred, examined, dropped, cut[:, 0], cut[:, 1])


def pair_rows(selection: Selection, sentence_length: int) -> dict[str, np.ndarray]:
  """One pair per row: src_ids, tgt_ids [B_p, L_s]; pair_*, swap_* [B_p, 2 L_s]."""
  src, _ = frame_texts([x for x, _ in selection.pairs], sentence_length)
  tgt, _ = frame_texts([y for _, y in selection.pairs], sentence_length)
  pair, pair_segments = join_pair(src, tgt)
  swap, swap_segments = join_pair(tgt, src)
  return dict(src_ids=src, tgt_ids=tgt, pair_ids=pair, pair_segments=pair_segments,
              swap_ids=swap, swap_segments=swap_segments)


def packed_pair_rows(selection: Selection, rows: int, sentence_length: int
                     ) -> dict[str, np.ndarray]:
  """Several pairs per row, every array int32 [rows, 2 L_s] (the batch contract's packed keys):

    pair_ids       [CLS] x1 [SEP] y1 [SEP] [CLS] x2 [SEP] y2 [SEP] ... PAD
    pair_segments  0 on [CLS] x [SEP], 1 on y [SEP] (per pair), 0 on pads
    swap_ids       [CLS] y1 [SEP] x1 [SEP] [CLS] y2 [SEP] x2 [SEP] ... PAD
    swap_segments  0 on [CLS] y [SEP], 1 on x [SEP]
    pair_seq       1 on pair 1 of the row, 2 on pair 2, ...; 0 on pads (pair and swap rows)
    sent_ids       [CLS] x1 [SEP] [CLS] y1 [SEP] [CLS] x2 [SEP] ... PAD (the SA pass)
    sent_seq       2k - 1 on x_k, 2k on y_k, 0 on pads
  """
  length = 2 * sentence_length
  shape = (rows, length)
  out = {k: np.zeros(shape, np.int32) for k in ('pair_ids', 'pair_segments', 'swap_ids',
                                                'swap_segments', 'pair_seq', 'sent_ids',
                                                'sent_seq')}
  fill = np.zeros(rows, np.int64)       # next free position of each TLM/WA row
  sent_fill = np.zeros(rows, np.int64)  # of each SA row
  k = np.zeros(rows, np.int64)          # pairs so far in each row
  for (x, y), r in zip(selection.pairs, selection.rows):
    a, b, s, t = len(x), len(y), fill[r], sent_fill[r]
    k[r] += 1
    unit = a + b + 3
    out['pair_ids'][r, s:s + unit] = np.concatenate([[CLS_ID], x, [SEP_ID], y, [SEP_ID]])
    out['pair_segments'][r, s + a + 2:s + unit] = 1
    out['swap_ids'][r, s:s + unit] = np.concatenate([[CLS_ID], y, [SEP_ID], x, [SEP_ID]])
    out['swap_segments'][r, s + b + 2:s + unit] = 1
    out['pair_seq'][r, s:s + unit] = k[r]
    out['sent_ids'][r, t:t + unit + 1] = np.concatenate(
        [[CLS_ID], x, [SEP_ID], [CLS_ID], y, [SEP_ID]])
    out['sent_seq'][r, t:t + a + 2] = 2 * k[r] - 1
    out['sent_seq'][r, t + a + 2:t + unit + 1] = 2 * k[r]
    fill[r] += unit
    sent_fill[r] += unit + 1
  assert PAD_ID == 0 and (sent_fill <= length).all()
  return out


def layout(selection: Selection, rows: int, sentence_length: int, packed: bool
           ) -> dict[str, np.ndarray]:
  """The parallel part's arrays of a step: `packed_pair_rows` or `pair_rows`."""
  if packed:
    return packed_pair_rows(selection, rows, sentence_length)
  return pair_rows(selection, sentence_length)


def next_step(pool: list, read, fresh: Iterator[tuple[Any, np.ndarray, np.ndarray]], *,
              rows: int, sentence_length: int, packed: bool, drop: bool
              ) -> tuple[dict[str, np.ndarray], dict[str, int], list]:
  """One step of a parallel part: candidates are the deferred `pool` (handles, oldest first, read
  with `read(handle) -> (x, y)`), then `fresh` (handle, x, y). Returns (the step's arrays
  (`layout`), its `counts`, the new pool: this step's deferred handles, then the pool entries it
  did not reach)."""
  used = 0

  def candidates():
    nonlocal used
    for handle in pool:
      used += 1
      yield (handle, *read(handle))
    yield from fresh

  selection = select_pairs(candidates(), rows=rows, sentence_length=sentence_length,
                           packed=packed, drop=drop)
  return (layout(selection, rows, sentence_length, packed), counts(selection),
          selection.deferred + pool[used:])


def counts(selection: Selection) -> dict[str, int]:
  """The step's pair counts for `TrainIterator.stats`."""
  return {'pairs': len(selection.pairs), 'src_truncated': int(selection.src_cut.sum()),
          'tgt_truncated': int(selection.tgt_cut.sum()), 'pairs_dropped': selection.dropped,
          'deferred': len(selection.deferred)}
