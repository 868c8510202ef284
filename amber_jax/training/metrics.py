"""What a run logs: TensorBoard scalars and metrics.jsonl, token counts, the ETA."""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np


class MetricsWriter:
  """TensorBoard scalars (tensorboardX: no TensorFlow needed) plus a JSON-lines copy."""

  def __init__(self, workdir: pathlib.Path, enabled: bool = True):
    self.enabled = enabled and jax.process_index() == 0
    self._tb = None
    self._jsonl = None
    if self.enabled:
      # tensorboardX imports torch when it is installed (~1.4 s): only a writing process pays.
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(str(workdir / 'tensorboard'))
      self._jsonl = open(workdir / 'metrics.jsonl', 'a', encoding='utf-8')

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, step)
    self._jsonl.write(json.dumps({'step': step, **scalars}) + '\n')
    self._jsonl.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()


def count_tokens(batch: dict) -> int:
  """Non-pad tokens of the rows that define a step's work (mono rows and [x; y] pairs)."""
  return int(sum(np.count_nonzero(batch[k]) for k in ('mono_ids', 'pair_ids') if k in batch))


def format_eta(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f'{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'
