"""The pretokenized cache: ArrayRecord shards of int32 token ids, and the manifest that lists them.

`amber-jax data cache` (amber_jax.data.preprocess, on Apache Beam) writes a cache; the training
input (amber_jax.data.grain_input, on Grain) reads it. Numpy only: no TensorFlow, no Beam.

Layout under a cache folder (local or gs://):
  manifest.json                             written last: a cache without it is unfinished
  <task>/<split>-00000-of-00004.array_record   the examples of input shard 0 of 4, in file order

A record holds one example: the int32 little-endian array [n_1, ..., n_k, ids_1..., ..., ids_k...]
for the k features of its kind (FEATURES), ids without [CLS]/[SEP].

manifest.json: {'version', 'vocab': {'path', 'sha256', 'size' (bytes of the model file)},
'mono_length' (the row length long documents were cut for), 'mixtures': {'mono'|'parallel':
{'name', 'rates': {task: rate}}}, 'tasks': {task: {'kind', 'features', 'splits': {split:
{'examples', 'tokens': {feature: n}, 'shards': [paths relative to the cache folder, in shard
order, e.g. '<task>/train-00000-of-00004.array_record' (`shard_name`)], 'skipped': {reason: n},
'documents', 'chunked'}}}}}.
'documents' counts the source examples; 'chunked' the documents longer than a row that became
several rows (so 'examples' = documents - skipped + extra rows). Beside each shard, the writer
leaves `<shard>.json`, its own counts, from which the manifest is summed.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from amber_jax import storage
from amber_jax.text import tokenizer

VERSION = 2
MANIFEST = 'manifest.json'
FEATURES = {'mono': ('tokens',), 'parallel': ('src', 'tgt')}
# Pieces that end a sentence: a long document is cut after one of them where it can be.
SENTENCE_ENDS = ('.', '!', '?', '。', '！', '？', '؟', '।', ':', ';')


def shard_name(task: str, split: str, index: int, count: int) -> str:
  """The file of input shard `index` of `count` of a task's split, relative to the cache."""
  return f'{task}/{split}-{index:05d}-of-{count:05d}.array_record'


def encode(features: list[np.ndarray]) -> bytes:
  """One example's features (int id arrays) -> one record."""
  lengths = np.array([len(f) for f in features], '<i4')
  return np.concatenate([lengths, *(np.asarray(f, '<i4').ravel() for f in features)]).tobytes()


def decode(record: bytes, count: int) -> list[np.ndarray]:
  """One record -> its `count` features, int32 arrays (views of the record)."""
  ids = np.frombuffer(record, '<i4')
  out, at = [], count
  for n in ids[:count]:
    out.append(ids[at:at + n])
    at += n
  if at != len(ids):
    raise ValueError(f'A cache record of {len(ids)} ids does not match its {count} lengths '
                     f'{ids[:count].tolist()}: the cache is damaged; rewrite it with '
                     '`amber-jax data cache`.')
  return out


def decode_many(raw: list[bytes], count: int) -> list[list[np.ndarray]]:
  """Records -> their `count` features each (views of one array): `decode` for a block, at a
  fraction of its cost a record."""
  sizes = np.fromiter(map(len, raw), np.int64, len(raw)) // 4  # [n] ids a record
  flat = np.frombuffer(b''.join(raw), '<i4')
  starts = np.cumsum(sizes) - sizes  # [n]
  lengths = flat[starts[:, None] + np.arange(count)].astype(np.int64)  # [n, count]
  if (lengths.sum(axis=1) + count != sizes).any():
    bad = int(np.flatnonzero(lengths.sum(axis=1) + count != sizes)[0])
    decode(raw[bad], count)  # raises, naming the damage
  ends = starts[:, None] + count + np.cumsum(lengths, axis=1)  # [n, count]
  begins = ends - lengths
  if count == 1:
    return [[flat[b:e]] for b, e in zip(begins[:, 0].tolist(), ends[:, 0].tolist())]
  return [[flat[b:e] for b, e in zip(bs, es)] for bs, es in zip(begins.tolist(), ends.tolist())]


def sentence_ends(pieces: list[str]) -> np.ndarray:
  """bool [vocab]: the pieces after which a long document may be cut."""
  return np.array([p.rstrip().endswith(SENTENCE_ENDS) for p in pieces], bool)


def chunk_document(ids: np.ndarray, limit: int, ends: np.ndarray | None = None) -> list[np.ndarray]:
  """A document of more than `limit` ids -> consecutive pieces of at most `limit` ids.

  Each piece ends at the last sentence-ending piece (`ends[id]`) of its window when that leaves it
  at least half full, else at `limit` ids. The pieces joined are the document.
  """
  if limit < 1:
    raise ValueError(f'A row must hold at least one id; got limit={limit}.')
  ids = np.asarray(ids)
  out, start = [], 0
  while len(ids) - start > limit:
    cut = start + limit
    if ends is not None:
      first = start + max(limit // 2 - 1, 0)  # a cut after it leaves the row half full
      at = np.flatnonzero(ends[np.clip(ids[first:cut], 0, len(ends) - 1)])
      if len(at):
        cut = first + int(at[-1]) + 1
    out.append(ids[start:cut])
    start = cut
  out.append(ids[start:])
  return out


def read_manifest(cache_dir: str | pathlib.Path, vocab_path: str | None = None) -> dict:
  """The manifest of a finished cache; with `vocab_path`, checks the ids came from it."""
  path = storage.path(cache_dir) / MANIFEST
  if not path.exists():
    raise FileNotFoundError(
        f'No finished pretokenized cache at {cache_dir} (no {MANIFEST}; it is written last). '
        f'Write one with `amber-jax data cache --config=... --config.data.cache_dir={cache_dir}`, '
        "or set config.data.cache_dir to '' to tokenize while training.")
  manifest = json.loads(path.read_text(encoding='utf-8'))
  if manifest.get('version') != VERSION:
    raise ValueError(f'{path} has version {manifest.get("version")}; this amber-jax reads '
                     f'version {VERSION}. Rewrite it with `amber-jax data cache`.')
  if vocab_path:
    want, got = manifest['vocab']['sha256'], tokenizer.vocab_fingerprint(vocab_path)
    if got != want:
      raise ValueError(
          f'The cache {cache_dir} was tokenized with {manifest["vocab"]["path"]} (sha256 '
          f'{want[:12]}...), but config.data.vocab_path={vocab_path} has sha256 {got[:12]}...: '
          'its ids would mean other pieces. Rewrite the cache with `amber-jax data cache` or '
          'point vocab_path at the vocabulary it was made with.')
  return manifest
