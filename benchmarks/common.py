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
