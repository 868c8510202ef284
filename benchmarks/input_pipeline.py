"""Input pipeline throughput: tokens/s per core from the pretokenized cache and from raw text.

  .venv/bin/python benchmarks/input_pipeline.py [--corpus django] [--batches 300]

Builds what is missing (the corpus, its vocabulary, a cache of the tiny preset's mixtures under
/tmp; an existing cache from the same vocabulary is reused), then times two batch layouts (the
tiny preset's, and a larger per-host layout: 256 mono rows x 128, 128 pairs x 64 a side; the
Django corpus has too few distinct English sentences for 256 distinct ones a batch) three ways:
the cache read with numpy (what a TF-free GPU host does), the cache with packed monolingual rows, and the seqio pipeline tokenizing raw text
(what the cache saves). Tokens are the non-pad ids the batches hold (mono rows, and the English and
translation sides of each pair); "per core" divides by the process CPU time, every thread
included, so a pipeline that is fast only because it uses many cores does not look cheap.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top

from amber_jax.data import pipeline  # pylint: disable=g-import-not-at-top
from amber_jax import config as config_lib
from amber_jax.data import mixtures  # pylint: disable=g-import-not-at-top
from amber_jax.data import token_cache  # pylint: disable=g-import-not-at-top
from configs import tiny  # pylint: disable=g-import-not-at-top


def measure(cfg, batches: int, warmup: int = 20) -> dict:
  """Builds an iterator, skips `warmup` batches (start-up, prefetch fill), times `batches`."""
  t0 = time.perf_counter()
  it = pipeline.make_train_iterator(cfg, seed=0)
  for _ in range(warmup):
    next(it)
  startup = time.perf_counter() - t0
  tokens = 0
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    b = next(it)
    tokens += sum(int(np.count_nonzero(b[k])) for k in ('mono_ids', 'src_ids', 'tgt_ids') if k in b)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return {'startup_s': startup, 'tokens': tokens, 'wall_s': wall, 'cpu_s': cpu,
          'tokens_per_s': tokens / wall, 'tokens_per_core_s': tokens / cpu}


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--corpus', default='django')
  p.add_argument('--batches', type=int, default=300)
  p.add_argument('--cache', default='/tmp/amber-bench-tokens')
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
  t = time.perf_counter()
  try:
    token_cache.TokenCache(args.cache).check_vocabulary(cfg.vocab_path)
  except (FileNotFoundError, ValueError):
    mixtures.write_cache(cfg, args.cache, print_fn=lambda *_: None)
  cache_seconds = time.perf_counter() - t

  print(f'corpus {args.corpus} at {cfg.corpus_dir}; {os.cpu_count()} cores; the cache took '
        f'{cache_seconds:.1f} s to write (or check)')
  print(f'{"layout":36s} {"source":26s} {"start-up s":>10s} {"tokens/s":>11s} '
        f'{"tokens/s/core":>14s}')
  host = cfg.copy_and_resolve_references()
  host.update(mono_batch_size=256, mono_length=128, parallel_batch_size=128, sentence_length=64)
  for layout in (cfg, host):
    name = (f'{layout.mono_batch_size}x{layout.mono_length} mono, '
            f'{layout.parallel_batch_size}x{layout.sentence_length} pairs')
    cached = layout.copy_and_resolve_references()
    cached.cache_dir = args.cache
    packed = cached.copy_and_resolve_references()
    packed.packing = True
    for source, c, n in (('cache (numpy)', cached, args.batches),
                         ('cache, packed mono', packed, args.batches),
                         ('raw text (seqio, tf.data)', layout, args.batches // 3)):
      r = measure(c, n)
      print(f'{name:36s} {source:26s} {r["startup_s"]:10.1f} {r["tokens_per_s"]:11,.0f} '
            f'{r["tokens_per_core_s"]:14,.0f}', flush=True)


if __name__ == '__main__':
  main()
