"""Pretokenized task shards: tokenize once (`amber-jax data cache`), then train from memory maps.

No TensorFlow here: the writer takes examples from any iterator (the `cache` command feeds it the
seqio tasks of the configured mixtures) and the reader is numpy only, so a GPU machine without
TensorFlow trains from a cache.

Layout under `cache_dir`:
  cache.json                          what is cached (see `write_cache`)
  <task>/<split>.<feature>.ids        int32 ids of every example, back to back (no specials)
  <task>/<split>.<feature>.offsets.npy  int64 [n + 1]: example i is ids[offsets[i]:offsets[i + 1]]

cache.json: {'version': 1, 'vocab': {'path', 'sha256', 'size'}, 'mixtures': {'mono'|'parallel':
{'name': mixture, 'rates': {task: rate}}}, 'tasks': {task: {'kind', 'features', 'splits': {split:
{'examples': n, 'tokens': {feature: t}}}}}}.

Sampling (`ExampleStream`) is deterministic given (seed, shard): the task of each draw comes from a
seeded generator with the mixture's rates; each task is read in a fresh seeded permutation per epoch
of the examples of this shard (example i belongs to shard i % num_shards, like seqio's ShardInfo).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import json
import pathlib
import shutil
import tempfile

import numpy as np

from amber_jax.core.model import CLS_ID, PAD_ID, SEP_ID
from amber_jax.text import tokenizer

VERSION = 1
_PART_SEED = {'mono': 0, 'parallel': 1}
_CHUNK = 4096  # draws per vectorised step of the sampler


def write_cache(cache_dir: str | pathlib.Path, *, vocab: Mapping, mixtures: Mapping,
                tasks: Mapping[str, Mapping]) -> dict:
  """Writes a cache folder atomically (a crash leaves any earlier cache as it was).

  Args:
    cache_dir: the folder to (re)create.
    vocab: {'path', 'sha256', 'size'} of the vocabulary the ids come from.
    mixtures: {'mono'|'parallel': {'name': str, 'rates': {task: rate}}}; a part may be absent.
    tasks: {task: {'kind': 'mono'|'parallel', 'features': [names], 'splits': {split: iterable of
      {feature: int ids}}}}.

  Returns:
    The manifest written to cache.json.
  """
  cache_dir = pathlib.Path(cache_dir)
  cache_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{cache_dir.name}.writing-', dir=cache_dir.parent))
  try:
    manifest = {'version': VERSION, 'vocab': dict(vocab), 'mixtures': dict(mixtures), 'tasks': {}}
    for name, task in tasks.items():
      features = list(task['features'])
      entry = {'kind': task['kind'], 'features': features, 'splits': {}}
      (tmp / name).mkdir()
      for split, examples in task['splits'].items():
        entry['splits'][split] = _write_split(tmp / name, split, features, examples)
      manifest['tasks'][name] = entry
    for part, mixture in manifest['mixtures'].items():
      missing = sorted(set(mixture['rates']) - set(manifest['tasks']))
      if missing:
        raise ValueError(f'The {part} mixture names tasks that were not cached: {missing}.')
    (tmp / 'cache.json').write_text(json.dumps(manifest, indent=1) + '\n', encoding='utf-8')
    old = cache_dir.parent / f'{tmp.name}.old' if cache_dir.exists() else None
    if old is not None:
      cache_dir.rename(old)
    tmp.rename(cache_dir)
    if old is not None:
      shutil.rmtree(old)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return manifest


def _write_split(folder: pathlib.Path, split: str, features: list[str],
                 examples: Iterable[Mapping[str, np.ndarray]]) -> dict:
  files = {f: open(folder / f'{split}.{f}.ids', 'wb') for f in features}
  offsets = {f: [0] for f in features}
  n = 0
  try:
    for example in examples:
      for f in features:
        ids = np.asarray(example[f], dtype='<i4').ravel()
        files[f].write(ids.tobytes())
        offsets[f].append(offsets[f][-1] + len(ids))
      n += 1
  finally:
    for handle in files.values():
      handle.close()
  for f in features:
    np.save(folder / f'{split}.{f}.offsets.npy', np.asarray(offsets[f], np.int64))
  return {'examples': n, 'tokens': {f: int(offsets[f][-1]) for f in features}}


class TokenCache:
  """A cache folder, read through memory maps."""

  def __init__(self, cache_dir: str | pathlib.Path):
    self.dir = pathlib.Path(cache_dir)
    path = self.dir / 'cache.json'
    if not path.is_file():
      raise FileNotFoundError(
          f'No pretokenized cache at {self.dir} (no cache.json). Write one with `amber-jax data '
          f'cache --config=... --config.data.cache_dir={self.dir}`, or set config.data.cache_dir '
          "to '' to tokenize while training.")
    self.manifest = json.loads(path.read_text(encoding='utf-8'))
    if self.manifest.get('version') != VERSION:
      raise ValueError(f'{path} has version {self.manifest.get("version")}; this amber-jax '
                       f'reads version {VERSION}. Rewrite it with `amber-jax data cache`.')

  def check_vocabulary(self, vocab_path: str | pathlib.Path) -> None:
    """The cache's ids must come from the vocabulary the run uses."""
    want = self.manifest['vocab']['sha256']
    got = tokenizer.vocab_fingerprint(vocab_path)
    if got != want:
      raise ValueError(
          f'The cache {self.dir} was tokenized with {self.manifest["vocab"]["path"]} (sha256 '
          f'{want[:12]}...), but config.data.vocab_path={vocab_path} has sha256 {got[:12]}...: '
          'its ids would mean other pieces. Rewrite the cache with `amber-jax data cache` or '
          'point vocab_path at the vocabulary it was made with.')

  def mixture(self, part: str) -> dict[str, float] | None:
    mixture = self.manifest['mixtures'].get(part)
    return None if mixture is None else dict(mixture['rates'])

  def arrays(self, task: str, split: str, feature: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [tokens] memory map, offsets int64 [n + 1]) of one feature of a split."""
    folder = self.dir / task
    if task not in self.manifest['tasks']:
      raise KeyError(f'Task {task!r} is not in the cache {self.dir}; it has '
                     f'{sorted(self.manifest["tasks"])}.')
    offsets = np.load(folder / f'{split}.{feature}.offsets.npy')
    ids_path = folder / f'{split}.{feature}.ids'
    if offsets[-1] == 0:
      return np.zeros(0, np.int32), offsets
    ids = np.memmap(ids_path, dtype='<i4', mode='r')
    if len(ids) != offsets[-1]:
      raise ValueError(f'{ids_path} holds {len(ids)} ids but its offsets say {offsets[-1]}: the '
                       'cache is damaged; rewrite it with `amber-jax data cache`.')
    return ids, offsets


class ExampleStream:
  """Endless mixture draws from a cache, `_CHUNK` at a time, as framed rows or as id arrays."""

  def __init__(self, cache: TokenCache, part: str, features: tuple[str, ...], *, seed: int,
               shard_index: int = 0, num_shards: int = 1, split: str = 'train'):
    rates = cache.mixture(part)
    if not rates:
      raise ValueError(f'The cache {cache.dir} has no {part} mixture; cache one (amber-jax data '
                       f'cache) or set config.data.{part}_batch_size=0.')
    self.names = sorted(rates)
    p = np.array([rates[n] for n in self.names], np.float64)
    self._p = p / p.sum()
    # Per task and feature: its ids (a memory map: only what is drawn is read) and offsets.
    self._ids = [{f: cache.arrays(name, split, f)[0] for f in features} for name in self.names]
    self._offsets = [{f: cache.arrays(name, split, f)[1] for f in features} for name in self.names]
    self._mine = []  # per task: the example indices of this shard
    for t, name in enumerate(self.names):
      n = len(self._offsets[t][features[0]]) - 1
      mine = np.arange(shard_index, n, num_shards)
      if len(mine) == 0 and self._p[t] > 0:
        raise ValueError(f'Task {name} has {n} {split} examples: none for shard {shard_index} of '
                         f'{num_shards}. Give it more data or a rate of 0.')
      self._mine.append(mine)
    self.features = features
    self._seed = (seed, shard_index, _PART_SEED[part])
    self._rng = np.random.default_rng(self._seed)
    self._count = np.zeros(len(self.names), np.int64)
    self._perm: dict[tuple[int, int], np.ndarray] = {}

  def _indices(self, t: int, k: np.ndarray) -> np.ndarray:
    """Example indices of task t's draws number k (ascending, per-epoch permutations)."""
    mine = self._mine[t]
    epoch, j = np.divmod(k, len(mine))
    out = np.empty(len(k), np.int64)
    for e in np.unique(epoch):
      perm = self._perm.get((t, e))
      if perm is None:
        self._perm = {key: v for key, v in self._perm.items() if key[0] != t}  # keep one epoch
        perm = np.random.default_rng((*self._seed, t, int(e))).permutation(len(mine))
        self._perm[(t, e)] = perm
      at = epoch == e
      out[at] = mine[perm[j[at]]]
    return out

  def next_chunk(self) -> dict:
    """The next draws: {'task': int [chunk], feature: (starts int64 [chunk], lengths)}."""
    tasks = self._rng.choice(len(self.names), size=_CHUNK, p=self._p)  # [chunk]
    out = {'task': tasks}
    out.update({f: (np.empty(_CHUNK, np.int64), np.empty(_CHUNK, np.int64))
                for f in self.features})
    for t in np.unique(tasks):
      at = np.flatnonzero(tasks == t)
      k = self._count[t] + np.arange(len(at))
      self._count[t] += len(at)
      index = self._indices(t, k)
      for f in self.features:
        offsets = self._offsets[t][f]
        out[f][0][at] = offsets[index]
        out[f][1][at] = offsets[index + 1] - offsets[index]
    return out

  def framed(self, chunk: dict, feature: str, length: int) -> tuple[np.ndarray, np.ndarray]:
    """A chunk's `feature` as rows [CLS] x [SEP] PAD...: (int32 [chunk, length], cut [chunk])."""
    tasks, (starts, lengths) = chunk['task'], chunk[feature]
    rows = np.empty((len(tasks), length), np.int32)
    cut = np.empty(len(tasks), np.int32)
    for t in np.unique(tasks):
      at = np.flatnonzero(tasks == t)
      rows[at], cut[at] = frame_rows(self._ids[t][feature], starts[at], lengths[at], length)
    return rows, cut

  def texts(self, chunk: dict, feature: str) -> list[np.ndarray]:
    """A chunk's `feature` as a list of int32 id arrays (no specials), in draw order."""
    tasks, (starts, lengths) = chunk['task'], chunk[feature]
    return [np.asarray(self._ids[t][feature][s:s + n]) for t, s, n in zip(tasks, starts, lengths)]


def frame_rows(ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
               length: int) -> tuple[np.ndarray, np.ndarray]:
  """Examples -> rows [CLS] x [SEP] PAD..., x cut to length - 2 ids; one vectorised gather.

  Args:
    ids: int32 [tokens], the examples' ids back to back.
    starts, lengths: int [rows]: example r is ids[starts[r]:starts[r] + lengths[r]].
    length: row length, >= 3.

  Returns:
    (int32 [rows, length] framed ids, int32 [rows] 1 where x was cut).
  """
  keep = np.minimum(lengths, length - 2)  # [rows]
  pos = np.arange(length - 2)[None, :]  # [1, length - 2]
  inside = pos < keep[:, None]  # [rows, length - 2]
  if len(ids) == 0:  # every example empty
    ids = np.zeros(1, np.int32)
  body = np.where(inside, ids[np.where(inside, starts[:, None] + pos, 0)], PAD_ID)
  rows = np.full((len(starts), length), PAD_ID, np.int32)
  rows[:, 0] = CLS_ID
  rows[:, 1:-1] = body
  rows[np.arange(len(starts)), keep + 1] = SEP_ID
  return rows, (lengths > length - 2).astype(np.int32)
