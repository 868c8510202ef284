"""A run's input: this process's share of the real pipeline, or synthetic batches of its layout.

`real_batches` imports the TensorFlow-based pipeline only when called; `synthetic_batches` needs
no TensorFlow (benchmarks, TF-free machines).
"""

from __future__ import annotations

import copy
import itertools
from typing import Callable, Iterator

import jax
import ml_collections
import numpy as np

from amber_jax import storage
from amber_jax.core.model import CLS_ID, NUM_SPECIALS, SEP_ID
from amber_jax.data import aligned, batches, pairs, pipeline
from amber_jax.text.tokenizer import check_vocabulary

# The config.data paths that may be gs:// URLs: the pipeline reads this host's mirror of them.
URL_INPUTS = ('corpus_dir', 'cache_dir', 'vocab_path')


def real_batches(config, start_step: int, data_seed: int | None = None) -> Iterator[dict]:
  """This process's share of the real input pipeline, from `start_step` on.

  `data_seed` seeds shuffling and mixture sampling (default config.seed; a stage passes its own).
  """
  seed = config.seed if data_seed is None else data_seed
  if config.data.align_pairs:  # a user's word-aligned pairs with a teacher's links
    return aligned.guided_input(config, start_step, seed=seed, process=jax.process_index(),
                                processes=jax.process_count())
  check_vocabulary(config)
  # config.data's batch sizes are global; each process reads and batches its share of the rows.
  local = mirrored(ml_collections.ConfigDict(config.data.to_dict()))
  for field in ('mono_batch_size', 'parallel_batch_size'):
    if local[field] % jax.process_count():
      raise ValueError(f'config.data.{field}={local[field]} is not divisible by the '
                       f'{jax.process_count()} processes; make it a multiple.')
    local[field] //= jax.process_count()
  return pipeline.make_train_iterator(local, seed=seed, start_step=start_step,
                                  shard_index=jax.process_index(),
                                  num_shards=jax.process_count())


def mirrored(data_cfg, fields=URL_INPUTS):
  """`data_cfg` with each of its `fields` that is a URL replaced by this host's mirror of it (a
  copy; `data_cfg` itself when none is a URL)."""
  urls = {f: getattr(data_cfg, f, None) for f in fields}
  urls = {f: url for f, url in urls.items() if url and storage.is_url(url)}
  if not urls:
    return data_cfg
  local = (ml_collections.ConfigDict(data_cfg.to_dict())
           if isinstance(data_cfg, ml_collections.ConfigDict) else copy.copy(data_cfg))
  for field, url in urls.items():
    setattr(local, field, str(storage.local(url)))
  return local


def config_input(config) -> Callable[..., Iterator[dict]]:
  """The `batches` argument of `amber_jax.training.loop.train` that reads config.data's pipeline.

  Called as (start_step) for a run without stages, or (step within the stage, Stage) with them;
  each stage reads with its own shapes and seed (`stage.config`).
  """

  def batches(start_step: int, stage=None) -> Iterator[dict]:
    cfg = config if stage is None else stage.config
    return real_batches(cfg, start_step, data_seed=cfg.seed)

  return batches


# Synthetic sentences: lengths (pieces) log-normal around the Django catalogs' median of 15, so
# that one pair per row carries the padding real pairs do.
SYNTHETIC_MEDIAN, SYNTHETIC_SIGMA = 15, 0.6


def synthetic_batches(config, start_step: int = 0) -> Iterator[dict]:
  """Random token batches with the real batch layout (benchmarks, TF-free machines). Monolingual
  rows are full (one text each); translation pairs have random lengths (`SYNTHETIC_MEDIAN`) and
  are laid out as the real input lays them out (amber_jax.data.pairs: one per row, or packed)."""
  spec = batches.batch_spec(config.data)
  step = start_step
  while True:
    rng = np.random.default_rng([config.seed, step])
    batch = {name: _synthetic_array(name, shape, dtype, rng, config.model.vocab_size)
             for name, (shape, dtype) in spec.items() if name in batches.PARTS['mono']}
    if config.data.parallel_batch_size:
      batch.update(_synthetic_pairs(config.data, rng, config.model.vocab_size))
    yield batch
    step += 1


def _synthetic_pairs(data_cfg, rng, vocab_size) -> dict[str, np.ndarray]:
  """One step's parallel part from random pairs (`SYNTHETIC_MEDIAN`)."""

  def candidates():
    for i in itertools.count():
      n = np.maximum(1, np.round(rng.lognormal(np.log(SYNTHETIC_MEDIAN), SYNTHETIC_SIGMA, 2)))
      yield (i, *(rng.integers(NUM_SPECIALS, vocab_size, int(k), dtype=np.int32) for k in n))

  rows, length = data_cfg.parallel_batch_size, data_cfg.sentence_length
  selection = pairs.select_pairs(candidates(), rows=rows, sentence_length=length,
                                 packed=data_cfg.pair_packing, drop=False)
  return pairs.layout(selection, rows, length, data_cfg.pair_packing)


def _synthetic_array(name, shape, dtype, rng, vocab_size):
  """One monolingual array of a synthetic batch: ids are [CLS] random tokens [SEP], a packed row
  holds one text, segments are 0."""
  if name in batches.PACKED_KEYS:  # one text per row, as the ids below are framed
    return np.ones(shape, dtype)
  if name.endswith('_segments'):
    return np.zeros(shape, dtype)
  ids = rng.integers(NUM_SPECIALS, vocab_size, size=shape).astype(dtype)
  ids[:, 0] = CLS_ID
  ids[:, -1] = SEP_ID
  return ids
