"""seqio mixtures -> one dict of fixed-shape int32 numpy arrays per training step, in the
batch contract of `amber_jax.data.batches`.

No two rows of a parallel batch share the same x (after truncation): a duplicate would be a false
negative for the in-batch sentence-alignment softmax. A pair whose x is already in the batch waits
in a carry-over pool and goes into the next batch it fits (order otherwise kept; deterministic).

Examples come from the two mixtures that `data_cfg.task_module`'s `register(data_cfg)` returns
(see tasks/django.py), tokenized while training, or from a pretokenized cache of them
(`data_cfg.cache_dir`, written by `amber-jax data cache`; amber_jax.data.token_cache) read with numpy
only. A text longer than its row is cut, or dropped when `data_cfg.too_long == 'drop'`; both are
counted in `TrainIterator.stats`. Only this module of amber_jax imports TensorFlow, and only inside the
functions that build the pipeline.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Iterator

import numpy as np

from amber_jax.core.model import CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID
from amber_jax.data import token_cache
from amber_jax.data.batches import batch_spec, join_pair

# A parallel batch that cannot be filled with distinct English sentences from this many
# batches' worth of consecutive pairs means the corpus has too few of them for the batch size.
assert PAD_ID == 0  # join_pair and the cache reader count real tokens with count_nonzero
_MAX_POOL_BATCHES = 16




def make_train_iterator(data_cfg, *, seed: int, start_step: int = 0, shard_index: int = 0,
                        num_shards: int = 1) -> TrainIterator:
  """An endless, deterministic iterator of training batches (see the module docstring).

  Args:
    data_cfg: `config.data`: task_module, mono/parallel_batch_size, mono_length, sentence_length,
      too_long, packing, cache_dir, and whatever the task module's `register` reads
      (tasks/django.py).
    seed: shuffling and mixture-sampling seed; two iterators with the same arguments yield
      identical batches.
    start_step: yield the batches that an iterator from step 0 yields from its start_step-th on.
    shard_index: this host's shard of the examples (seqio ShardInfo), in [0, num_shards).
    num_shards: number of hosts reading disjoint shards.

  Returns:
    A `TrainIterator` (its `stats` count truncations, drops and deferred duplicates).
  """
  spec = batch_spec(data_cfg)
  if not 0 <= shard_index < num_shards:
    raise ValueError(f'shard_index must be in [0, num_shards={num_shards}); got {shard_index}.')
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0; got {start_step}.')
  if data_cfg.too_long not in ('truncate', 'drop'):
    raise ValueError("config.data.too_long must be 'truncate' or 'drop'; got "
                     f'{data_cfg.too_long!r}.')
  drop = data_cfg.too_long == 'drop'
  source = (_CacheSource(data_cfg, seed, shard_index, num_shards) if data_cfg.cache_dir
            else _SeqioSource(data_cfg, seed, shard_index, num_shards))
  mono = parallel = None
  if 'mono_ids' in spec:
    size, length = data_cfg.mono_batch_size, data_cfg.mono_length
    mono = (Packer(source.mono_texts(), length, size, drop) if data_cfg.packing
            else RowBatcher(source.mono_rows(), size, drop))
  if 'src_ids' in spec:
    parallel = UniqueSourceBatcher(_drop_long_pairs(source.pair_rows(), drop),
                                   data_cfg.parallel_batch_size)
  iterator = TrainIterator(mono, parallel)
  for _ in range(start_step):  # the pools and packers carry state: replay them (no model work)
    next(iterator)
  iterator.stats = dict.fromkeys(iterator.stats, 0)
  return iterator


class _SeqioSource:
  """Examples of the task module's seqio mixtures, framed (and batched) by tf.data."""

  def __init__(self, data_cfg, seed, shard_index, num_shards):
    tf, seqio = import_tf()
    self._cfg, self._seed, self._tf = data_cfg, seed, tf
    self._names = importlib.import_module(data_cfg.task_module).register(data_cfg)
    self._shard = seqio.ShardInfo(index=shard_index, num_shards=num_shards)
    self._options = tf.data.Options()
    self._options.deterministic = True

  def _numpy(self, ds):
    return ds.with_options(self._options).prefetch(self._tf.data.AUTOTUNE).as_numpy_iterator()

  def mono_rows(self):
    """Chunks (int32 [B_m, L_m] framed ids, int32 [B_m] cut flags)."""
    length, tf = self._cfg.mono_length, self._tf
    ds = _examples(self._cfg, self._names, 'mono', ('tokens',), self._seed, self._shard)
    ds = ds.map(lambda ex: _frame(ex['tokens'], length), num_parallel_calls=tf.data.AUTOTUNE)
    return self._numpy(ds.batch(self._cfg.mono_batch_size, drop_remainder=True))

  def mono_texts(self):
    """int32 id arrays (no specials), one text each."""
    ds = _examples(self._cfg, self._names, 'mono', ('tokens',), self._seed, self._shard)
    return self._numpy(ds.map(lambda ex: self._tf.cast(ex['tokens'], self._tf.int32)))

  def pair_rows(self):
    """Chunks {'src_ids', 'tgt_ids': int32 [B_p, L_s], 'src_truncated', 'tgt_truncated'}."""
    length, tf = self._cfg.sentence_length, self._tf

    def sides(ex):
      (src, src_cut), (tgt, tgt_cut) = _frame(ex['src'], length), _frame(ex['tgt'], length)
      return {'src_ids': src, 'tgt_ids': tgt, 'src_truncated': src_cut,
              'tgt_truncated': tgt_cut}

    ds = _examples(self._cfg, self._names, 'parallel', ('src', 'tgt'), self._seed, self._shard)
    ds = ds.map(sides, num_parallel_calls=tf.data.AUTOTUNE)
    return self._numpy(ds.batch(self._cfg.parallel_batch_size, drop_remainder=True))


class _CacheSource:
  """Examples of a pretokenized cache (amber_jax.data.token_cache): numpy only, no TensorFlow."""

  def __init__(self, data_cfg, seed, shard_index, num_shards):
    self._cfg = data_cfg
    self._cache = token_cache.TokenCache(data_cfg.cache_dir)
    if data_cfg.vocab_path:
      self._cache.check_vocabulary(data_cfg.vocab_path)
    self._stream = functools.partial(token_cache.ExampleStream, self._cache, seed=seed,
                                     shard_index=shard_index, num_shards=num_shards)

  def mono_rows(self):
    stream = self._stream('mono', ('tokens',))
    while True:
      yield stream.framed(stream.next_chunk(), 'tokens', self._cfg.mono_length)

  def mono_texts(self):
    stream = self._stream('mono', ('tokens',))
    while True:
      yield from stream.texts(stream.next_chunk(), 'tokens')

  def pair_rows(self):
    stream = self._stream('parallel', ('src', 'tgt'))
    length = self._cfg.sentence_length
    while True:
      chunk = stream.next_chunk()
      (src, src_cut), (tgt, tgt_cut) = (stream.framed(chunk, f, length) for f in ('src', 'tgt'))
      yield {'src_ids': src, 'tgt_ids': tgt, 'src_truncated': src_cut, 'tgt_truncated': tgt_cut}


def _drop_long_pairs(chunks, drop: bool):
  """Chunks of framed pairs, without the pairs with a cut side when `drop` (counted in 'dropped')."""
  for chunk in chunks:
    if drop:
      cut = (chunk['src_truncated'] | chunk['tgt_truncated']).astype(bool)
      chunk = {k: v[~cut] for k, v in chunk.items()}
      chunk['dropped'] = int(cut.sum())
    yield chunk


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
  over because their English sentence was already in the batch; one pair can count more than
  once).
  """

  def __init__(self, mono: RowBatcher | Packer | None, parallel: UniqueSourceBatcher | None):
    self._mono, self._parallel = mono, parallel
    self.stats = dict.fromkeys(('steps', 'mono_rows', 'mono_texts', 'mono_truncated',
                                'mono_dropped', 'pairs', 'src_truncated', 'tgt_truncated',
                                'pairs_dropped', 'deferred'), 0)

  def __iter__(self) -> TrainIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = {}
    if self._mono is not None:
      rows, counts = self._mono.next()
      batch.update(rows)
      for k, v in counts.items():
        self.stats[k] += v
    if self._parallel is not None:
      rows, deferred = self._parallel.next()
      src, tgt = rows['src_ids'], rows['tgt_ids']  # [B_p, L_s] each
      pair, pair_segments = join_pair(src, tgt)  # [B_p, 2 L_s] each
      swap, swap_segments = join_pair(tgt, src)
      batch.update(src_ids=src, tgt_ids=tgt, pair_ids=pair, pair_segments=pair_segments,
                   swap_ids=swap, swap_segments=swap_segments)
      self.stats['pairs'] += len(src)
      self.stats['src_truncated'] += int(rows['src_truncated'].sum())
      self.stats['tgt_truncated'] += int(rows['tgt_truncated'].sum())
      self.stats['pairs_dropped'] += self._parallel.dropped
      self._parallel.dropped = 0
      self.stats['deferred'] += deferred
    self.stats['steps'] += 1
    return batch


class UniqueSourceBatcher:
  """Cuts chunks of framed pairs into batches whose `src_ids` rows are all distinct.

  A batch takes, in arrival order, each pair whose English row is not yet in it, until it has
  `batch_size`; the pairs passed over stay in the pool, ahead of newer ones, for the next batch.
  """

  def __init__(self, chunks: Iterator[dict[str, np.ndarray]], batch_size: int):
    self._chunks = chunks  # dicts of arrays with a leading [rows] axis, 'src_ids' among them
    self._batch_size = batch_size
    self._pool: dict[str, np.ndarray] | None = None
    self.dropped = 0  # pairs that chunks reported dropped (too long), since last reset

  def next(self) -> tuple[dict[str, np.ndarray], int]:
    """Returns (the next batch's arrays, how many pooled pairs it passed over)."""
    size = self._batch_size
    taken, seen, i = [], set(), 0  # a walk through the pool in order: cost ~ batch, not pool
    while len(taken) < size:
      if self._pool is None or i == len(self._pool['src_ids']):
        if i >= _MAX_POOL_BATCHES * size:
          raise ValueError(
              f'Could not fill a parallel batch of {size} distinct English sentences: '
              f'{i} consecutive pairs hold only {len(seen)}. The corpus has too few distinct '
              'English sentences for this batch; lower config.data.parallel_batch_size (or add '
              'data).')
        chunk = dict(next(self._chunks))
        self.dropped += chunk.pop('dropped', 0)
        self._pool = chunk if self._pool is None else {
            k: np.concatenate([v, chunk[k]]) for k, v in self._pool.items()}
        continue
      key = self._pool['src_ids'][i].tobytes()
      if key not in seen:
        seen.add(key)
        taken.append(i)
      i += 1
    pool = self._pool
    batch = {k: v[taken] for k, v in pool.items()}
    if i == size:  # nothing passed over: the rest of the pool is a view
      self._pool = {k: v[i:] for k, v in pool.items()}
    else:
      keep = np.ones(len(pool['src_ids']), bool)  # [pool]
      keep[taken] = False
      self._pool = {k: v[keep] for k, v in pool.items()}
    return batch, i - size






@functools.cache
def import_tf():
  """(tensorflow, seqio), imported once; TensorFlow sees no GPU (JAX owns the accelerators)."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # devices already initialised by an earlier import; nothing to do.
    pass
  import seqio  # pylint: disable=import-outside-toplevel
  return tf, seqio


def _examples(data_cfg, names: dict, part: str, features: tuple[str, ...], seed: int, shard):
  """The endless shuffled example stream of mixture `names[part]`, after checking it."""
  _, seqio = import_tf()
  name = names.get(part)
  if name is None:
    raise ValueError(
        f'{data_cfg.task_module}.register returned no {part} mixture (the corpus has no {part} '
        f'examples for the chosen languages), but config.data.{part}_batch_size is '
        f'{getattr(data_cfg, part + "_batch_size")}; set it to 0 or add {part} data.')
  provider = seqio.get_mixture_or_task(name)
  missing = [f for f in features if f not in provider.output_features]
  if missing:
    raise ValueError(f'{part} mixture {name!r} lacks the output features {missing}: amber_jax.data.pipeline '
                     f'expects {list(features)} (int32 token ids without [CLS]/[SEP]); it has '
                     f'{list(provider.output_features)}. Fix {data_cfg.task_module}.register.')
  for feature in features:
    _check_special_ids(provider.output_features[feature].vocabulary, f'{name}:{feature}')
  return provider.get_dataset(sequence_length=None, split='train', shuffle=True, seed=seed,
                              shard_info=shard, num_epochs=None, trim_output_features=False)


def _check_special_ids(vocab, where: str) -> None:
  """A SentencePiece vocabulary must put the specials at the ids the model and batches use."""
  _, seqio = import_tf()
  if not isinstance(vocab, seqio.SentencePieceVocabulary):
    return
  sp = vocab.tokenizer
  want = {'pad': PAD_ID, 'unk': UNK_ID, 'bos ([CLS])': CLS_ID, 'eos ([SEP])': SEP_ID,
          '[MASK]': MASK_ID}
  got = {'pad': sp.pad_id(), 'unk': sp.unk_id(), 'bos ([CLS])': sp.bos_id(),
         'eos ([SEP])': sp.eos_id(), '[MASK]': sp.piece_to_id('[MASK]')}
  if got != want:
    raise ValueError(f'The vocabulary of {where} has special ids {got}; expected {want}. '
                     'Rebuild it with amber_jax.text.vocab (which fixes these ids).')


def _frame(tokens, length: int):
  """int32 [n] ids -> ([CLS] x [SEP] PAD... as int32 [length], 1 if x was cut to length - 2)."""
  tf, _ = import_tf()
  tokens = tf.cast(tokens, tf.int32)
  framed = tf.concat([[CLS_ID], tokens[:length - 2], [SEP_ID]], axis=0)  # [<= length]
  framed = tf.pad(framed, [[0, length - tf.size(framed)]], constant_values=PAD_ID)
  return tf.ensure_shape(framed, [length]), tf.cast(tf.size(tokens) > length - 2, tf.int32)
