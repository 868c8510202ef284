"""Input at scale, side by side in one run: preprocessing on Beam, reading the cache, and resuming.

  .venv/bin/python benchmarks/input_pipeline.py [--corpus django] [--batches 300]

Builds what is missing (the corpus, its vocabulary), then prints:
  1. `amber-jax data cache` on Apache Beam's DirectRunner with 1 and 2 worker processes: seconds
     and tokens/s over every task of the tiny preset's mixtures (train and validation).
  2. Reading the cache: records/s and tokens/s per core of the mixture source alone (ours with
     the small tasks held in memory, as training reads, and with every task read from disk, as a
     corpus too large for memory is; and the same stream built from Grain's own MapDataset
     transformations), then whole batches in
     two layouts (the tiny preset's, and a larger per-host one: 256 mono rows x 128, 128 pairs x
     64 a side), one text a row and packed, against the seqio pipeline tokenizing raw text.
  3. Resume set-up at step 1,000,000: the cache's saved position (set_state and the first batch),
     against replaying the steps (raw text's way; its time is the replay rate measured here times
     a million, printed as an estimate).
Tokens are non-pad ids of the batches (mono rows, English and translation sides); "per core"
divides by the process CPU time, every thread included.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top

from amber_jax import config as config_lib  # pylint: disable=g-import-not-at-top
from amber_jax.data import grain_input, pipeline, preprocess, records  # pylint: disable=g-import-not-at-top
from configs import tiny  # pylint: disable=g-import-not-at-top

KEYS = ('mono_ids', 'src_ids', 'tgt_ids')


def _tokens(batch) -> int:
  return sum(int(np.count_nonzero(batch[k])) for k in KEYS if k in batch)


def measure(cfg, batches: int, warmup: int = 10) -> dict:
  """Builds an iterator, skips `warmup` batches (start-up), times `batches`."""
  gc.collect()
  t0 = time.perf_counter()
  it = pipeline.make_train_iterator(cfg, seed=0)
  for _ in range(warmup):
    next(it)
  startup = time.perf_counter() - t0
  tokens = 0
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    tokens += _tokens(next(it))
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return {'startup_s': startup, 'wall_s': wall, 'tokens_per_s': tokens / wall,
          'tokens_per_core_s': tokens / cpu, 'steps_per_s': batches / wall}


def read_source(read, count: int) -> dict:
  """Times `read(start, n)` (-> decoded examples) over `count` positions, 1024 at a time."""
  tokens, wall, cpu = 0, time.perf_counter(), time.process_time()
  for start in range(0, count, 1024):
    tokens += sum(len(f) for ex in read(start, 1024) for f in ex)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return {'records_per_s': count / wall, 'tokens_per_s': tokens / wall,
          'tokens_per_core_s': tokens / cpu}


def resume_setup(cfg, step: int) -> float:
  """Seconds from a fresh iterator to its first batch at `step`, from a saved position."""
  probe = pipeline.make_train_iterator(cfg, seed=0)
  for _ in range(20):
    next(probe)
  state = json.loads(probe.get_state())
  for part in ('mono', 'parallel'):
    if part in state:
      scale = step / 20
      shift = int(state[part]['position'] * scale) - state[part]['position']
      state[part]['position'] += shift
      if 'pool' in state[part]:
        state[part]['pool'] = [q + shift for q in state[part]['pool']]
  start = time.perf_counter()
  it = pipeline.make_train_iterator(cfg, seed=0, start_step=step)
  it.set_state(json.dumps(state).encode())
  next(it)
  return time.perf_counter() - start


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--corpus', default='django')
  p.add_argument('--batches', type=int, default=1000, help='tiny-layout batches timed (the '
                 'larger layout: a quarter; raw text: a tenth)')
  p.add_argument('--cache', default='', help='cache folder (default: a temporary one)')
  args = p.parse_args()

  config = tiny.get_config()
  with config.unlocked():
    config.data.task_prefix = args.corpus
  config_lib.resolve_paths(config)
  cfg = config.data
  if not pathlib.Path(cfg.corpus_dir, 'manifest.json').exists() and args.corpus == 'django':
    from amber_jax.corpora import django_po  # pylint: disable=import-outside-toplevel
    django_po.build_django_corpus(cfg.corpus_dir)
  if not pathlib.Path(cfg.vocab_path).exists():
    from amber_jax.corpora import vocabulary  # pylint: disable=import-outside-toplevel
    vocabulary.train_corpus_vocabulary(cfg.corpus_dir, cfg.vocab_path,
                                       vocab_size=config.model.vocab_size)
  tmp = tempfile.TemporaryDirectory(prefix='amber-bench-cache-')
  cache = args.cache or f'{tmp.name}/tokens'
  print(f'corpus {args.corpus} at {cfg.corpus_dir}; {os.cpu_count()} cores')

  print('\n1. Preprocessing (amber-jax data cache, Apache Beam DirectRunner)')
  print(f'{"workers":>8s} {"seconds":>8s} {"tokens":>11s} {"tokens/s":>11s}')
  for workers in (1, 2):
    start = time.perf_counter()
    manifest = preprocess.write_cache(cfg, cache, num_workers=workers, print_fn=lambda *_: None)
    seconds = time.perf_counter() - start
    tokens = sum(sum(s['tokens'].values()) for t in manifest['tasks'].values()
                 for s in t['splits'].values())
    print(f'{workers:8d} {seconds:8.1f} {tokens:11,d} {tokens / seconds:11,.0f}', flush=True)

  time.sleep(10)  # the DirectRunner's worker processes wind down
  print('\n2. Reading the cache (one process; per core = tokens / process CPU s)')
  cached = cfg.copy_and_resolve_references()
  cached.cache_dir = cache
  manifest, root = grain_input.open_cache(cached)
  print(f'{"source":52s} {"records/s":>10s} {"tokens/s":>11s} {"tokens/s/core":>14s}')
  held = grain_input.MEMORY_BYTES
  for part in ('mono', 'parallel'):
    count = len(records.FEATURES[part])
    ours = grain_input.MixtureSource(manifest, root, part, seed=0)
    grain_input.MEMORY_BYTES = 0  # every task read from its files, record by record
    from_disk = grain_input.MixtureSource(manifest, root, part, seed=0)
    grain_input.MEMORY_BYTES = held
    theirs = grain_input.grain_dataset(manifest, root, part, seed=0)
    for name, read, n in (
        (f'{part}: MixtureSource (small tasks held in memory)',
         lambda s, k, src=ours, c=count: records.decode_many(src.__getitems__(range(s, s + k)), c),
         200 * 1024),
        (f'{part}: MixtureSource (every task read from disk)',
         lambda s, k, src=from_disk, c=count: records.decode_many(
             src.__getitems__(range(s, s + k)), c),
         100 * 1024),
        (f'{part}: Grain MapDataset shuffle/repeat/mix/slice',
         lambda s, k, ds=theirs, c=count: [records.decode(ds[i], c) for i in range(s, s + k)],
         20 * 1024)):
      r = read_source(read, n)
      print(f'{name:52s} {r["records_per_s"]:10,.0f} {r["tokens_per_s"]:11,.0f} '
            f'{r["tokens_per_core_s"]:14,.0f}', flush=True)

  print(f'\n{"layout":36s} {"source":26s} {"start-up s":>10s} {"tokens/s":>11s} '
        f'{"tokens/s/core":>14s}')
  host = cfg.copy_and_resolve_references()
  host.update(mono_batch_size=256, mono_length=128, parallel_batch_size=128, sentence_length=64)
  replay = {}
  for layout in (cfg, host):
    name = (f'{layout.mono_batch_size}x{layout.mono_length} mono, '
            f'{layout.parallel_batch_size}x{layout.sentence_length} pairs')
    from_cache = layout.copy_and_resolve_references()
    from_cache.cache_dir = cache
    packed = from_cache.copy_and_resolve_references()
    packed.packing = True
    n = args.batches if layout is cfg else args.batches // 4
    for source, c, n in (('cache (Grain source)', from_cache, n),
                         ('cache, packed mono', packed, n),
                         ('raw text (seqio, tf.data)', layout, n // 10)):
      r = measure(c, n)
      replay.setdefault(source, r['steps_per_s'])
      print(f'{name:36s} {source:26s} {r["startup_s"]:10.1f} {r["tokens_per_s"]:11,.0f} '
            f'{r["tokens_per_core_s"]:14,.0f}', flush=True)

  print('\n3. Resume set-up at step 1,000,000 (tiny layout)')
  print(f'{"input":40s} {"seconds":>12s}')
  from_cache = cfg.copy_and_resolve_references()
  from_cache.cache_dir = cache
  print(f'{"cache, saved position (measured)":40s} {resume_setup(from_cache, 1_000_000):12.2f}')
  for source in ('raw text (seqio, tf.data)', 'cache (Grain source)'):
    print(f'{source + ", replay (estimate)":40s} {1_000_000 / replay[source]:12,.0f}')
  tmp.cleanup()


if __name__ == '__main__':
  main()
