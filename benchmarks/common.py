"""Shared pieces of the benchmarks: configs, synthetic batches, timing."""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np

from amber_jax.data import inputs
from amber_jax.training import train_state
from amber_jax.training import metrics
from amber_jax.training import train_step
from configs import base, tiny

PRESETS = {'tiny': tiny.get_config, 'base': base.get_config}


def config(preset: str, *, mono: int, pairs: int, mono_length: int = 128,
           sentence_length: int = 64, **objective_weights):
  """A preset with the given batch layout and objective weights (no dropout: same work each run)."""
  cfg = PRESETS[preset]()
  with cfg.unlocked():
    cfg.workdir = '/tmp/amber-bench'
    cfg.data.update(mono_batch_size=mono, parallel_batch_size=pairs, mono_length=mono_length,
                    sentence_length=sentence_length)
    cfg.objectives.update(objective_weights)
    cfg.model.update(dropout_rate=0.0, attention_dropout_rate=0.0)
  return cfg


def median_seconds(fn, repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
  """Median wall seconds of fn() (which must block until its work is done)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times), times


class JaxStep:
  """A compiled train step of `cfg` on one synthetic batch; `run()` does one step and blocks."""

  def __init__(self, cfg, mesh=None):
    self.setup = train_state.setup(cfg, mesh)
    self.state = train_state.init_state(self.setup, 0)
    self.step = train_step.make_train_step(self.setup)
    local = next(inputs.synthetic_batches(cfg))
    self.tokens = metrics.count_tokens(local)
    self.positions = count_positions(local)
    self.pairs = count_pairs(local)
    from amber_jax.parallel import partitioning  # pylint: disable=import-outside-toplevel
    self.batch = partitioning.to_global(local, self.setup.mesh)
    with partitioning.activation_rules(self.setup.mesh, self.setup.rules):
      t = time.perf_counter()
      self.compiled = self.step.jitted.lower(self.state, self.batch).compile()
      self.compile_seconds = time.perf_counter() - t

  def flops(self) -> float:
    cost = self.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get('flops', float('nan')))

  def run(self):
    self.state, metrics = self.step(self.state, self.batch)
    jax.block_until_ready(metrics)


def describe_machine() -> str:
  import os  # pylint: disable=import-outside-toplevel
  devices = jax.devices()
  return (f'{len(devices)} x {devices[0].device_kind} ({devices[0].platform}), '
          f'{os.cpu_count()} CPU cores, jax {jax.__version__}')


def synthetic_ids(rng: np.random.Generator, rows: int, length: int, vocab: int) -> np.ndarray:
  from amber_jax.core.model import CLS_ID, NUM_SPECIALS, SEP_ID  # pylint: disable=import-outside-toplevel
  ids = rng.integers(NUM_SPECIALS, vocab, size=(rows, length)).astype(np.int32)
  ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
  return ids


def count_positions(batch: dict) -> int:
  """Token positions, pads included, of the rows `metrics.count_tokens` counts (mono_ids and
  pair_ids): what the step's row shapes cost."""
  return int(sum(np.size(batch[k]) for k in ('mono_ids', 'pair_ids') if k in batch))


def count_pairs(batch: dict) -> int:
  """Translation pairs in a batch: one per pair_ids row, or with pair packing the pairs numbered
  in each row's pair_seq (1, 2, ... k)."""
  if 'pair_seq' in batch:
    return int(np.asarray(batch['pair_seq']).max(axis=1).sum())
  return int(np.shape(batch['pair_ids'])[0]) if 'pair_ids' in batch else 0


def unpack_pairs(batch: dict) -> list[tuple[np.ndarray, np.ndarray]]:
  """The translation pairs (x, y) of a batch's pair rows, as token id arrays without specials,
  row by row and in row order; packed rows (pair_seq) or one pair per row alike.

  A pair's tokens in pair_ids are [CLS] x [SEP] y [SEP] with pair_segments 0 on [CLS] x [SEP] and
  1 on y [SEP] (amber_jax.data.batches).
  """
  from amber_jax.core.model import PAD_ID  # pylint: disable=import-outside-toplevel
  ids = np.asarray(batch['pair_ids'])
  segments = np.asarray(batch['pair_segments'])
  seq = np.asarray(batch['pair_seq']) if 'pair_seq' in batch else (ids != PAD_ID).astype(np.int32)
  out = []
  for r in range(ids.shape[0]):
    for k in range(1, int(seq[r].max()) + 1):
      unit, unit_segments = ids[r][seq[r] == k], segments[r][seq[r] == k]
      out.append((unit[unit_segments == 0][1:-1], unit[unit_segments == 1][:-1]))
  return out
