"""What a run logs: TensorBoard scalars and metrics.jsonl, token counts, the ETA."""

from __future__ import annotations

import json
import pathlib
import shutil
import tempfile
import time

import jax
import numpy as np

from amber_jax import storage


class MetricsWriter:
  """TensorBoard scalars (tensorboardX: no TensorFlow needed) plus a JSON-lines copy.

  A local workdir gets both written as they come. A bucket has no appends: metrics.jsonl is kept
  in memory and replaced whole, and TensorBoard's events are written to a local staging folder and
  copied up, at most every `upload_every` seconds and at every `flush` (the loop flushes at each
  checkpoint, so the bucket's metrics reach at least the latest checkpoint).
  """

  def __init__(self, workdir, enabled: bool = True, upload_every: float = 30.0):
    self.enabled = enabled and jax.process_index() == 0
    self._remote = storage.is_url(workdir)
    self._dir = storage.path(workdir)
    self._upload_every, self._uploaded = upload_every, time.time()
    self._tb = self._jsonl = self._staging = None
    self._lines: list[str] = []
    if not self.enabled:
      return
    # tensorboardX imports torch when it is installed (~1.4 s): only a writing process pays.
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    if self._remote:
      self._staging = pathlib.Path(tempfile.mkdtemp(prefix='amber-jax-tensorboard-'))
      self._tb = SummaryWriter(str(self._staging))
      path = self._dir / 'metrics.jsonl'
      if path.exists():
        self._lines = path.read_text(encoding='utf-8').splitlines(keepends=True)
    else:
      self._tb = SummaryWriter(str(self._dir / 'tensorboard'))
      self._jsonl = open(self._dir / 'metrics.jsonl', 'a', encoding='utf-8')

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, step)
    line = json.dumps({'step': step, **scalars}) + '\n'
    if self._remote:
      self._lines.append(line)
      if time.time() - self._uploaded >= self._upload_every:
        self.flush()
    else:
      self._jsonl.write(line)
      self._jsonl.flush()

  def flush(self) -> None:
    """Everything written so far reaches the workdir (a bucket's copies are replaced)."""
    if not self.enabled:
      return
    self._tb.flush()
    if self._remote:
      storage.write_text(self._dir / 'metrics.jsonl', ''.join(self._lines))
      storage.upload(self._staging, self._dir / 'tensorboard')
      self._uploaded = time.time()

  def close(self) -> None:
    if not self.enabled:
      return
    if self._remote:
      self.flush()
      self._tb.close()
      storage.upload(self._staging, self._dir / 'tensorboard')
      shutil.rmtree(self._staging, ignore_errors=True)
    else:
      self._tb.close()
      self._jsonl.close()


class InputCounts:
  """Counts of the input a run read, truncated and dropped, summed over the iterators it opened
  (one per stage): each iterator's `stats` dict (`amber_jax.data.pipeline.TrainIterator`; an
  input without `stats`, e.g. synthetic batches, counts nothing). This process's share of the
  input: with several processes each reports its own."""

  # Counts of input that did not reach training whole: said at the end even when zero.
  LOSSES = ('mono_truncated', 'mono_dropped', 'src_truncated', 'tgt_truncated', 'pairs_dropped',
            'deferred')

  def __init__(self):
    self._closed: dict[str, int] = {}
    self._current: dict[str, int] | None = None

  def follow(self, iterator) -> None:
    """Adds the counts of the iterator followed so far and follows `iterator`'s from now on."""
    for k, v in (self._current or {}).items():
      self._closed[k] = self._closed.get(k, 0) + int(v)
    self._current = getattr(iterator, 'stats', None)

  def totals(self) -> dict[str, int]:
    totals = dict(self._closed)
    for k, v in (self._current or {}).items():
      totals[k] = totals.get(k, 0) + int(v)
    totals.pop('steps', None)
    return totals

  def scalars(self) -> dict[str, float]:
    """{'input/<count>': value} for metrics.jsonl and TensorBoard (running totals)."""
    return {f'input/{k}': float(v) for k, v in sorted(self.totals().items())}

  def summary(self) -> str:
    """One line for the end of a run: what was read, and every truncation and drop."""
    totals = self.totals()
    if not totals:
      return 'Input: synthetic or uncounted (no truncation or drop counts).'
    # Unpacked rows hold one text each (mono_texts counts the texts packed rows hold).
    texts = totals.get('mono_texts') or totals.get('mono_rows', 0)
    read = f'{texts} mono texts, {totals.get("pairs", 0)} pairs'
    lost = ', '.join(f'{k.replace("_", " ")}={totals.get(k, 0)}' for k in self.LOSSES)
    share = ' (this process\'s share)' if jax.process_count() > 1 else ''
    return f'Input{share}: read {read}; {lost}.'


def logged(workdir) -> list[dict]:
  """The records of workdir/metrics.jsonl, in order (one per logged step; a resumed run's file
  is cut back to its checkpoint first, so each step appears once)."""
  path = storage.path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines()
          if line.strip()]


def count_tokens(batch: dict) -> int:
  """Non-pad tokens of the rows that define a step's work (mono rows and [x; y] pairs)."""
  return int(sum(np.count_nonzero(batch[k]) for k in ('mono_ids', 'pair_ids') if k in batch))


def format_eta(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f'{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'
