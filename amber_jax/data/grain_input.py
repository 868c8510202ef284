"""Training input from a pretokenized cache (amber_jax.data.records): no TensorFlow,
deterministic, and a position that saves and restores in O(1).

Per part (mono, parallel) a Grain data source (`MixtureSource`: `__len__`, `__getitem__`,
`__getitems__`) where an example is found from its position alone:
  position p of process i            global position g = p * num_shards + i: the processes'
                                     positions are disjoint and together cover the stream
  -> (task, k)                       Grain's deterministic interleave at the mixture's rates
                                     (exactly `grain.MapDataset.mix`, vectorised)
  -> record of task's epoch k // n   a fresh permutation each epoch (seeded by seed, task, epoch)
  -> ArrayRecord readers             BLOCK positions read at a time

That is the stream Grain's own `MapDataset.shuffle().repeat()`, `mix` and `[i::n]` describe
(`grain_dataset` builds it so, for the benchmark); done per block in numpy it reads 10-30x more
records a second on one core (benchmarks/input_pipeline.py), because Grain's per-element index
shuffle alone costs ~19 us.

The parts then cut this process's positions into rows (`Rows`, `PackedRows`) and pair batches
(`UniquePairs`) in order. What they carry from one batch to the next is positions: the next
position to read, and for pairs the positions of the pairs deferred to a later batch (their English
sentence was already in the batch). So a part's state is a few integers, and `set_state` puts it
at step 1,000,000 as fast as at step 1 (`amber_jax.data.batching.TrainIterator` joins the parts;
the training loop saves its state beside the model with Grain's orbax checkpoint handler).

The positions depend on the number of processes: a state restores only onto as many processes as
saved it (the loop says so plainly).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np

from amber_jax import storage
from amber_jax.data import batching, pairs, records
from amber_jax.data.batches import frame_texts

BLOCK = 1024  # positions read together
MEMORY_BYTES = 256 << 20  # per part: small tasks' records held in memory (the rest read per use)
_PART_SEED = {'mono': 0, 'parallel': 1}


def open_cache(data_cfg) -> tuple[dict, str]:
  """(manifest, this host's local folder of the cache) of config.data.cache_dir, checked against
  config.data.vocab_path. A gs:// cache is mirrored to local disk (ArrayRecord reads local
  files)."""
  manifest = records.read_manifest(data_cfg.cache_dir, data_cfg.vocab_path or None)
  return manifest, str(storage.local(data_cfg.cache_dir))


def int_rates(rates: list[float]) -> list[int]:
  """Rates -> the integer proportions of `grain.MapDataset.mix` (the smallest scaled to 100)."""
  scale = 100 / min(rates)
  return [int(r * scale) for r in rates]


def interleave(positions: np.ndarray, proportions: list[int]) -> tuple[np.ndarray, np.ndarray]:
  """Grain's deterministic mixture interleave (`MapDataset.mix`), vectorised: position k of the
  mixed stream -> (task, k-th example of that task). Exact for any position: the pattern repeats
  every sum(proportions) positions, so the arithmetic runs on the remainder (no overflow)."""
  total = sum(proportions)
  cycle, k = np.divmod(np.asarray(positions, np.int64), total)
  task = np.full(len(k), -1, np.int64)
  key = np.zeros(len(k), np.int64)
  curr_k, curr_k1, remaining = k.copy(), k + 1, total
  for i, p in enumerate(proportions):
    next_k = curr_k * (remaining - p) // remaining
    next_k1 = curr_k1 * (remaining - p) // remaining
    count = curr_k1 - next_k1
    here = (task < 0) & ((curr_k - next_k) != count)
    task[here], key[here] = i, count[here] - 1 + cycle[here] * p
    remaining -= p
    curr_k, curr_k1 = next_k, next_k1
  return task, key


def permute(index: np.ndarray, n, key: np.ndarray) -> np.ndarray:
  """Seeded bijections of [0, n), applied to `index` (int64 [m]): a 4-round Feistel network on
  the smallest even power of two >= n, cycle-walked back into [0, n). O(1) memory, unlike a
  stored permutation. `n`: an int, or int64 [m] (a domain per element); `key`: uint64 [4] (one
  per round), or [m, 4] (a permutation per element)."""
  x = np.asarray(index, np.uint64)
  n = np.broadcast_to(np.asarray(n, np.uint64), x.shape)
  key = np.broadcast_to(np.asarray(key, np.uint64), (len(x), 4))
  half = np.maximum(1, (np.ceil(np.log2(np.maximum(n, 2).astype(np.float64))) + 1) // 2)
  half = half.astype(np.uint64)  # [m]: bits of each half, 2 * half >= bits of n - 1
  mask = (np.uint64(1) << half) - np.uint64(1)
  todo = np.arange(len(x))
  while len(todo):
    left, right = x[todo] >> half[todo], x[todo] & mask[todo]
    for r in range(4):
      h = (right ^ key[todo, r]) * np.uint64(0x9E3779B97F4A7C15)
      h ^= h >> np.uint64(29)
      h *= np.uint64(0xBF58476D1CE4E5B9)
      left, right = right, (left ^ (h >> np.uint64(32))) & mask[todo]
    x[todo] = (left << half[todo]) | right
    todo = todo[x[todo] >= n[todo]]
  return x.astype(np.int64)


class TaskRecords:
  """One task's ArrayRecord shards as one sequence of records, read straight from the C++ readers
  (`grain.sources.ArrayRecordDataSource` reads through a thread pool, whose set-up costs ~100 us a
  call: most calls here read a few records of one task)."""

  def __init__(self, files: list[str]):
    from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
    options = 'readahead_buffer_size:0,max_parallelism:0'  # random access, in this thread
    self._readers = [array_record_module.ArrayRecordReader(f, options) for f in files]
    self._starts = np.cumsum([0] + [r.num_records() for r in self._readers])  # [files + 1]
    self.bytes = sum(os.path.getsize(f) for f in files)
    self._memory: list[bytes] | None = None

  def load(self) -> None:
    """Reads every record into memory once (a small task: no file read per record after)."""
    self._memory = [record for reader in self._readers for record in reader.read_all()]

  def __len__(self) -> int:
    return int(self._starts[-1])

  def read(self, indices: np.ndarray) -> list[bytes]:
    """The records at `indices` (int [m], each in [0, len)), in that order."""
    if self._memory is not None:
      return [self._memory[i] for i in indices.tolist()]
    file = np.searchsorted(self._starts, indices, side='right') - 1
    out: list[bytes] = [b''] * len(indices)
    for f in np.unique(file):
      at = np.flatnonzero(file == f)
      reader, wanted = self._readers[f], (indices[at] - self._starts[f]).tolist()
      # One record at a time costs ~3 us; a batched read has ~100 us of set-up (its thread pool).
      got = reader.read(wanted) if len(wanted) > 64 else [reader.read([i])[0] for i in wanted]
      for i, data in zip(at.tolist(), got):
        out[i] = data
    return out


class MixtureSource:
  """A part's endless mixture as a Grain data source (`__len__`, `__getitem__`, `__getitems__`):
  position p of this process -> the record of the example at global position
  p * num_shards + shard_index, vectorised over a block (`__getitems__`).

  Global position g -> (task, k) by Grain's interleave at the mixture's rates (`interleave`) ->
  epoch k // n_task, index `permute`d within the epoch with a key of (seed, task, epoch): every
  epoch of a task is a fresh permutation. `grain.MapDataset.source(source)` makes it a Grain
  MapDataset; the same stream built from Grain's own transformations is `grain_dataset` (the
  benchmark times both).
  """

  def __init__(self, manifest: dict, root: str, part: str, *, seed: int, shard_index: int = 0,
               num_shards: int = 1, split: str = 'train'):
    mixture = manifest['mixtures'].get(part)
    if not mixture:
      raise ValueError(f'The cache has no {part} mixture; cache one (amber-jax data cache) or '
                       f'set config.data.{part}_batch_size=0.')
    self.names = sorted(n for n, rate in mixture['rates'].items() if rate > 0)
    self._proportions = int_rates([mixture['rates'][n] for n in self.names])
    self._sources, self._sizes = [], []
    for name in self.names:
      info = manifest['tasks'][name]['splits'].get(split)
      if not info or not info['examples']:
        raise ValueError(f'Task {name} has no {split} examples in the cache, but a rate of '
                         f'{mixture["rates"][name]:.4g} in the {part} mixture: give it data or a '
                         'rate of 0 (config.data.rates).')
      self._sources.append(TaskRecords([f'{root}/{shard}' for shard in info['shards']]))
      self._sizes.append(len(self._sources[-1]))
    self._sizes = np.array(self._sizes, np.int64)
    budget = MEMORY_BYTES  # the smallest tasks are held in memory: ~3 us a record less
    for source in sorted(self._sources, key=lambda s: s.bytes):
      if source.bytes > budget:
        break
      source.load()
      budget -= source.bytes
    self._seed, self._part = seed, _PART_SEED[part]
    self._shard_index, self._num_shards = shard_index, num_shards
    self._keys: dict[tuple[int, int], np.ndarray] = {}

  def __len__(self) -> int:
    return sys.maxsize  # endless

  def __getitem__(self, position: int) -> bytes:
    return self.__getitems__([position])[0]

  def locate(self, positions) -> tuple[np.ndarray, np.ndarray]:
    """(task, record index within the task) of this process's `positions`."""
    positions = np.asarray(positions, np.int64) * self._num_shards + self._shard_index
    task, k = interleave(positions, self._proportions)
    sizes = self._sizes[task]
    epoch, index = np.divmod(k, sizes)
    pairs, which = np.unique(np.stack([task, epoch], axis=1), axis=0, return_inverse=True)
    keys = np.stack([self._key(int(t), int(e)) for t, e in pairs])  # [pairs, 4]
    return task, permute(index, sizes, keys[which.ravel()])

  def __getitems__(self, positions) -> list[bytes]:
    task, record = self.locate(positions)
    out: list[bytes] = [b''] * len(task)
    for t in np.unique(task):
      at = np.flatnonzero(task == t)
      for i, data in zip(at, self._sources[t].read(record[at])):
        out[i] = data
    return out

  def _key(self, task: int, epoch: int) -> np.ndarray:
    key = self._keys.get((task, epoch))
    if key is None:
      if len(self._keys) > 4 * len(self._sizes):
        self._keys.clear()
      key = np.random.SeedSequence([self._seed, self._part, task, epoch]).generate_state(
          4, np.uint64)
      self._keys[(task, epoch)] = key
    return key


def grain_dataset(manifest: dict, root: str, part: str, *, seed: int, shard_index: int = 0,
                  num_shards: int = 1, split: str = 'train'):
  """The same kind of stream from Grain's own transformations: each task's records
  `.shuffle(seed).repeat()`, `MapDataset.mix` at the rates, `[shard_index::num_shards]`. Same
  interleave, Grain's own permutation; ~9-11k records/s on one core (benchmarks/
  input_pipeline.py; its per-element index shuffle alone takes ~19 us), which is why the
  input reads `MixtureSource` instead."""
  import grain  # pylint: disable=import-outside-toplevel
  mixture = manifest['mixtures'][part]
  names = sorted(n for n, rate in mixture['rates'].items() if rate > 0)
  datasets = []
  for t, name in enumerate(names):
    files = [f'{root}/{s}' for s in manifest['tasks'][name]['splits'][split]['shards']]
    task_seed = int(np.random.SeedSequence([seed, t]).generate_state(1)[0])
    datasets.append(grain.MapDataset.source(grain.sources.ArrayRecordDataSource(files))
                    .shuffle(seed=task_seed).repeat())
  mixed = grain.MapDataset.mix(datasets, [mixture['rates'][n] for n in names])
  return mixed[shard_index::num_shards]


class Positions:
  """Decoded examples of a `MixtureSource` by position, BLOCK positions read at a time."""

  def __init__(self, source: MixtureSource, features: int, block: int = BLOCK):
    self._source, self._features, self._block = source, features, block
    self._cached: dict[int, list] = {}  # the last blocks read (deferred pairs reach back)

  def __getitem__(self, position: int) -> list[np.ndarray]:
    block, offset = divmod(position, self._block)
    examples = self._cached.get(block)
    if examples is None:
      start = block * self._block
      raw = self._source.__getitems__(range(start, start + self._block))
      examples = self._cached[block] = records.decode_many(raw, self._features)
      if len(self._cached) > 2:
        del self._cached[min(self._cached)]
    return examples[offset]

  def texts(self, start: int, feature: int = 0):
    """Feature `feature` of the examples from position `start` on, endlessly."""
    position = start
    while True:
      yield self[position][feature]
      position += 1


class Rows:
  """Monolingual rows, one text each: the mono part without packing."""

  def __init__(self, positions: Positions, length: int, batch_size: int, drop: bool):
    self._positions, self._length, self._size, self._drop = positions, length, batch_size, drop
    self.position = 0

  def next(self) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    texts, dropped = [], 0
    while len(texts) < self._size:
      text = self._positions[self.position][0]
      self.position += 1
      if self._drop and len(text) > self._length - 2:
        dropped += 1
        continue
      texts.append(text)
    ids, cut = frame_texts(texts, self._length)
    return ({'mono_ids': ids, 'mono_segments': np.zeros_like(ids)},
            {'mono_rows': len(ids), 'mono_truncated': int(cut.sum()), 'mono_dropped': dropped})

  def get_state(self) -> dict:
    return {'position': self.position}

  def set_state(self, state: dict) -> None:
    self.position = int(state['position'])


class PackedRows:
  """Monolingual rows packed with several texts (`batching.Packer`), from positions: a text that
  did not fit a batch's last row is read again for the next batch."""

  def __init__(self, positions: Positions, length: int, batch_size: int, drop: bool):
    self._positions, self._length, self._size, self._drop = positions, length, batch_size, drop
    self.position = 0

  def next(self) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    taken = 0

    def texts():
      nonlocal taken
      for text in self._positions.texts(self.position):
        taken += 1
        yield text

    packer = batching.Packer(texts(), self._length, self._size, self._drop)
    out = packer.next()
    self.position += taken - packer.holding
    return out

  get_state, set_state = Rows.get_state, Rows.set_state


class UniquePairs:
  """The parallel part from positions: each step's pairs chosen by `pairs.select_pairs` (no English
  sentence twice; packed or one per row), the positions of the pairs it defers kept for the next
  steps, oldest first."""

  def __init__(self, positions: Positions, sentence_length: int, rows: int, drop: bool,
               packed: bool):
    self._positions, self._length, self._rows = positions, sentence_length, rows
    self._drop, self._packed = drop, packed
    self.position = 0
    self.pool: list[int] = []  # positions of deferred pairs, oldest first

  def next(self) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    arrays, counts, self.pool = pairs.next_step(
        self.pool, self._positions.__getitem__, self._fresh(), rows=self._rows,
        sentence_length=self._length, packed=self._packed, drop=self._drop)
    return arrays, counts

  def _fresh(self):
    """(position, x, y) from the next position on; a position counts as read once yielded."""
    while True:
      self.position += 1
      yield (self.position - 1, *self._positions[self.position - 1])

  def get_state(self) -> dict:
    return {'position': self.position, 'pool': list(self.pool)}

  def set_state(self, state: dict) -> None:
    self.position, self.pool = int(state['position']), [int(q) for q in state['pool']]


def make_parts(data_cfg, *, seed: int, shard_index: int, num_shards: int):
  """(mono part or None, parallel part or None, layout) of config.data read from its cache."""
  manifest, root = open_cache(data_cfg)
  layout = {'seed': seed, 'shard_index': shard_index, 'num_shards': num_shards,
            'cache': hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]}
  drop = data_cfg.too_long == 'drop'
  mono = parallel = None

  def positions(part):
    source = MixtureSource(manifest, root, part, seed=seed, shard_index=shard_index,
                           num_shards=num_shards)
    return Positions(source, len(records.FEATURES[part]))

  if data_cfg.mono_batch_size:
    kind = PackedRows if data_cfg.packing else Rows
    mono = kind(positions('mono'), data_cfg.mono_length, data_cfg.mono_batch_size, drop)
    layout['mono'] = [kind.__name__, data_cfg.mono_length, data_cfg.mono_batch_size, drop]
  if data_cfg.parallel_batch_size:
    parallel = UniquePairs(positions('parallel'), data_cfg.sentence_length,
                           data_cfg.parallel_batch_size, drop, data_cfg.pair_packing)
    layout['parallel'] = [data_cfg.sentence_length, data_cfg.parallel_batch_size, drop]
    if data_cfg.pair_packing:
      layout['parallel'].append('packed')
  return mono, parallel, layout
