"""Batches of one step from streams of examples: monolingual rows (one text each, or packed), and
translation pairs with no English sentence twice in a batch. Numpy only: the seqio path
(amber_jax.data.pipeline) and the cache path (amber_jax.data.grain_input) share these.

A `TrainIterator` joins a mono part and a parallel part into the batch contract's dicts
(amber_jax.data.batches). A part is any object with `next() -> (arrays, counts)` (see RowBatcher,
Packer, StreamPairs); when both parts also have `get_state()`/`set_state(dict)` the
iterator's position can be saved and restored in O(1) (`TrainIterator.resumable`).
"""

from __future__ import annotations

import json
from typing import Iterator

import numpy as np

from amber_jax import errors
from amber_jax.core.model import CLS_ID, PAD_ID, SEP_ID
from amber_jax.data import pairs


class RowBatcher:
  """Chunks of framed rows -> batches of `batch_size` rows; rows that were cut are dropped
  (and counted) when `drop`. Returns (batch dict, stats) per call of `next`."""

  def __init__(self, chunks: Iterator[tuple[np.ndarray, np.ndarray]], batch_size: int,
               drop: bool):
    self._chunks, self._size, self._drop = chunks, batch_size, drop
    self._ids = np.zeros((0, 0), np.int32)
    self._cut = np.zeros(0, np.int32)

  def next(self) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    dropped = 0
    while len(self._ids) < self._size:
      ids, cut = next(self._chunks)
      if self._drop:
        dropped += int(cut.sum())
        ids, cut = ids[cut == 0], cut[cut == 0]
      self._ids = ids if not len(self._ids) else np.concatenate([self._ids, ids])
      self._cut = np.concatenate([self._cut, cut])
    ids, self._ids = self._ids[:self._size], self._ids[self._size:]
    cut, self._cut = self._cut[:self._size], self._cut[self._size:]
    return ({'mono_ids': ids, 'mono_segments': np.zeros_like(ids)},
            {'mono_rows': len(ids), 'mono_truncated': int(cut.sum()), 'mono_dropped': dropped})


class Packer:
  """Packs texts into rows: [CLS] a [SEP] [CLS] b [SEP] ... PAD, greedily in arrival order.

  Each batch is {'mono_ids', 'mono_segments' (zeros), 'mono_seq'}: int32 [batch_size, length];
  mono_seq numbers the texts of a row 1, 2, ... and is 0 on padding. The model attends within a
  text only and restarts positions at each text (amber_jax.core.objectives), so a packed text is
  encoded as if alone. A text longer than length - 2 ids is cut (or dropped, when `drop`) and
  counted; a text that does not fit the rest of a row starts the next one.
  """

  def __init__(self, texts: Iterator[np.ndarray], length: int, batch_size: int, drop: bool):
    self._texts, self._length, self._size, self._drop = texts, length, batch_size, drop
    self._pending: np.ndarray | None = None

  @property
  def holding(self) -> int:
    """Texts taken from the stream but not yet in a row (0 or 1: one that did not fit)."""
    return int(self._pending is not None)

  def next(self) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    size, length = self._size, self._length
    ids = np.full((size, length), PAD_ID, np.int32)
    seq = np.zeros((size, length), np.int32)
    stats = {'mono_rows': size, 'mono_texts': 0, 'mono_truncated': 0, 'mono_dropped': 0}
    for row in range(size):
      fill, k = 0, 0
      while True:
        if self._pending is None:
          text = np.asarray(next(self._texts), np.int32)
          if len(text) > length - 2:
            if self._drop:
              stats['mono_dropped'] += 1
              continue
            stats['mono_truncated'] += 1
            text = text[:length - 2]
          self._pending = text
        text = self._pending
        if fill + len(text) + 2 > length:
          break  # starts the next row
        k += 1
        ids[row, fill] = CLS_ID
        ids[row, fill + 1:fill + 1 + len(text)] = text
        ids[row, fill + 1 + len(text)] = SEP_ID
        seq[row, fill:fill + len(text) + 2] = k
        fill += len(text) + 2
        stats['mono_texts'] += 1
        self._pending = None
    return {'mono_ids': ids, 'mono_segments': np.zeros_like(ids), 'mono_seq': seq}, stats


class TrainIterator:
  """Yields the contract's batch dicts forever.

  `stats` counts over the yielded batches: steps, mono_rows, mono_texts (packed texts),
  mono_truncated (texts cut to mono_length - 2 tokens), mono_dropped (too long, dropped), pairs,
  src_truncated, tgt_truncated, pairs_dropped (a side too long, dropped), deferred (pairs passed
  over for a later batch: their English sentence was already in the batch, or, packed, no row
  had room; one pair can count more than once).
  """

  def __init__(self, mono, parallel, *, skip: int = 0, layout: dict | None = None):
    """`mono`, `parallel`: the parts (either may be None); `skip`: batches to pass over before
    the first one yielded (a resume without a saved state replays them, on the first `next`);
    `layout`: what a saved state must match to be restored here (seed, shard, batch shapes)."""
    self._mono, self._parallel = mono, parallel
    self._skip, self._layout = skip, dict(layout or {})
    self.stats = dict.fromkeys(('steps', 'mono_rows', 'mono_texts', 'mono_truncated',
                                'mono_dropped', 'pairs', 'src_truncated', 'tgt_truncated',
                                'pairs_dropped', 'deferred'), 0)

  def __iter__(self) -> TrainIterator:
    return self

  @property
  def resumable(self) -> bool:
    """Whether `get_state`/`set_state` work (every part present keeps its position)."""
    return all(hasattr(p, 'get_state') for p in (self._mono, self._parallel) if p is not None)

  def get_state(self) -> bytes:
    """The position after the batches yielded so far, as JSON bytes (Grain's checkpoint
    handler writes one file of them per process)."""
    self._replay()
    parts = {name: part.get_state() for name, part in (('mono', self._mono),
                                                       ('parallel', self._parallel)) if part}
    return json.dumps({'layout': self._layout, **parts}).encode()

  def set_state(self, state: bytes) -> None:
    """Continues from a `get_state` of an iterator with the same layout: the batches yielded
    next are those that iterator yielded after it."""
    saved = json.loads(state)
    if saved.get('layout') != self._layout:
      raise errors.UserError(
          f'The saved input position was taken with {saved.get("layout")}; this input is '
          f'{self._layout}: a position is only valid for the same seed, processes, batch shapes '
          'and cache: resume with the settings it was saved with.')
    for name, part in (('mono', self._mono), ('parallel', self._parallel)):
      if part is not None:
        part.set_state(saved[name])
    self._skip = 0

  def start_prefetch(self) -> None:
    """Called by Grain's checkpoint handler after `set_state`; batches are made on demand."""

  def _replay(self) -> None:
    if self._skip:
      skip, self._skip = self._skip, 0
      for _ in range(skip):  # the parts carry state: replay them (no model work)
        next(self)
      for k in self.stats:
        self.stats[k] = 0

  def __next__(self) -> dict[str, np.ndarray]:
    self._replay()
    batch = {}
    if self._mono is not None:
      rows, counts = self._mono.next()
      batch.update(rows)
      for k, v in counts.items():
        self.stats[k] += v
    if self._parallel is not None:
      rows, counts = self._parallel.next()
      batch.update(rows)
      for k, v in counts.items():
        self.stats[k] += v
    self.stats['steps'] += 1
    return batch


class StreamPairs:
  """The parallel part of the live (seqio) path: steps of pairs chosen by `pairs.select_pairs`
  from a stream of (x ids, y ids), laid out one per row or packed. Pairs deferred to a later step
  are held here, oldest first."""

  def __init__(self, stream: Iterator[tuple[np.ndarray, np.ndarray]], rows: int,
               sentence_length: int, packed: bool, drop: bool):
    self._stream, self._rows, self._length = stream, rows, sentence_length
    self._packed, self._drop = packed, drop
    self.pool: list[tuple[np.ndarray, np.ndarray]] = []

  def next(self) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    arrays, counts, self.pool = pairs.next_step(
        self.pool, lambda pair: pair, self._fresh(), rows=self._rows,
        sentence_length=self._length, packed=self._packed, drop=self._drop)
    return arrays, counts

  def _fresh(self):
    """(pair, x, y) from the stream: a held pair is its own handle."""
    for src, tgt in self._stream:
      pair = (np.asarray(src, np.int32), np.asarray(tgt, np.int32))
      yield (pair, *pair)
