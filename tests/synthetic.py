"""Random token batches in the layout of amber_jax.data.pipeline, for tests that need no corpus or TF."""

import numpy as np

from amber_jax.core.model import CLS_ID, NUM_SPECIALS, SEP_ID


def random_batch(rng, *, vocab, mono_rows=4, mono_length=16, pairs=4, sentence_length=12):
  """A batch with random sentences of random lengths (pads included)."""

  def sentence(max_len):
    return list(rng.integers(NUM_SPECIALS, vocab, size=int(rng.integers(2, max_len - 1))))

  batch = {}
  if mono_rows:
    ids = np.zeros((mono_rows, mono_length), np.int32)
    for i in range(mono_rows):
      s = [CLS_ID] + sentence(mono_length) + [SEP_ID]
      ids[i, :len(s)] = s
    batch.update(mono_ids=ids, mono_segments=np.zeros_like(ids))
  if pairs:
    ls, lp = sentence_length, 2 * sentence_length
    shapes = dict(src_ids=ls, tgt_ids=ls, pair_ids=lp, pair_segments=lp, swap_ids=lp,
                  swap_segments=lp)
    arr = {k: np.zeros((pairs, n), np.int32) for k, n in shapes.items()}
    for i in range(pairs):
      x, y = sentence(ls), sentence(ls)
      arr['src_ids'][i, :len(x) + 2] = [CLS_ID] + x + [SEP_ID]
      arr['tgt_ids'][i, :len(y) + 2] = [CLS_ID] + y + [SEP_ID]
      for name, a, b in (('pair', x, y), ('swap', y, x)):
        s = [CLS_ID] + a + [SEP_ID] + b + [SEP_ID]
        arr[name + '_ids'][i, :len(s)] = s
        arr[name + '_segments'][i, len(a) + 2:len(s)] = 1
    batch.update(arr)
  return batch


def batches(seed, **kwargs):
  """An endless deterministic stream: batch k depends only on (seed, k)."""

  def from_step(start):
    k = start
    while True:
      yield random_batch(np.random.default_rng([seed, k]), **kwargs)
      k += 1

  return from_step


def random_pairs(rng, *, vocab, count, sentence_length, short=False):
  """`count` pairs (x, y) of random ids, lengths 1..sentence_length - 2 (1..5 when
  `short`, so that several pairs share a packed row), each x distinct."""
  top = 6 if short else sentence_length - 1
  out, seen = [], set()
  while len(out) < count:
    x, y = (rng.integers(NUM_SPECIALS, vocab, size=int(rng.integers(1, top)), dtype=np.int32)
            for _ in range(2))
    if x.tobytes() not in seen:
      seen.add(x.tobytes())
      out.append((x, y))
  return out


def pair_layouts(pairs, *, rows, sentence_length):
  """The same pairs in both layouts of amber_jax.data.pairs: (packed parallel part of `rows`
  rows, placed first-fit in order; one pair per row). Every pair must fit (asserted)."""
  from amber_jax.core.objectives import max_pairs_per_row  # pylint: disable=import-outside-toplevel
  from amber_jax.data import pairs as pairs_lib  # pylint: disable=import-outside-toplevel
  free = np.full(rows, 2 * sentence_length)
  count = np.zeros(rows, int)
  placed = []
  for x, y in pairs:
    fits = np.flatnonzero((free >= len(x) + len(y) + 4) & (count < max_pairs_per_row(2 * sentence_length)))
    assert len(fits), 'the pairs do not fit the rows'
    free[fits[0]] -= len(x) + len(y) + 4
    count[fits[0]] += 1
    placed.append(int(fits[0]))
  none = np.zeros(len(pairs), np.int32)
  selection = pairs_lib.Selection(list(pairs), placed, [], len(pairs), 0, none, none)
  return (pairs_lib.packed_pair_rows(selection, rows, sentence_length),
          pairs_lib.pair_rows(selection, sentence_length))
