"""Where a run starts: its newest sound checkpoint, or step 0 only when nothing would be lost.

A run never starts over silently. Given a workdir, `open_run`:
- restores the newest checkpoint that reads back intact (`checkpoint.restore_latest`: a damaged
  or unreadable step is said in one line and set aside, never deleted);
- raises before any write when the checkpoint holds another model than the config describes,
  naming the arrays and the config fields that differ from the run's config.json;
- raises when checkpoints exist but none restores, or when the workdir holds a run of another
  model with no checkpoint, unless config.train.fresh_start, which moves the old run's files into
  `discarded-<UTC time>/` in the workdir and starts at step 0;
- writes config.json only for a run that resumed from it or starts fresh, and cuts metrics.jsonl
  back to the step it resumes from (the steps after it are trained again).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from amber_jax import errors, storage
from amber_jax.training import checkpoint
from amber_jax.training.train_state import init_state, Setup
from amber_jax.training.vocab_check import check_run_vocabulary

# What a run leaves in its workdir, moved aside by a fresh start.
RUN_FILES = ('checkpoints', 'unreadable-checkpoints', 'config.json', 'metrics.jsonl',
             'tensorboard', 'vocab.json')


@dataclasses.dataclass
class Start:
  """Where `open_run` left a run: its checkpoint manager, state and first step to train."""
  mgr: ocp.CheckpointManager
  state: Any
  step: int
  resumed: bool


def config_diff(saved: dict, current: dict, prefix: str = '') -> list[str]:
  """'a.b: OLD -> NEW' for each field that differs between two config dicts (nested)."""
  lines = []
  for key in sorted(set(saved) | set(current)):
    old, new = saved.get(key, '(absent)'), current.get(key, '(absent)')
    if isinstance(old, dict) and isinstance(new, dict):
      lines += config_diff(old, new, f'{prefix}{key}.')
    elif old != new:
      lines.append(f'{prefix}{key}: {old!r} -> {new!r}')
  return lines


def _saved_config(workdir: storage.Path) -> dict | None:
  path = workdir / 'config.json'
  try:
    return json.loads(path.read_text(encoding='utf-8')) if path.exists() else None
  except (OSError, ValueError):
    return None


def _model_diff(workdir: storage.Path, config) -> list[str]:
  saved = _saved_config(workdir)
  if saved is None:
    return []
  current = json.loads(config.to_json_best_effort())
  return config_diff(saved.get('model', {}), current.get('model', {}), 'model.')


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def discard(workdir: storage.Path, print_fn=print) -> storage.Path | None:
  """Moves the run's files (RUN_FILES) into `workdir/discarded-<UTC time>/`; returns that folder
  (None when there was nothing to move). Process 0 moves; the others wait for it."""
  present = [workdir / name for name in RUN_FILES if (workdir / name).exists()]
  target = workdir / time.strftime('discarded-%Y%m%d-%H%M%S', time.gmtime())
  if present and jax.process_index() == 0:
    storage.makedirs(target)
    for path in present:
      path.rename(target / path.name)
    print_fn(f'Fresh start: the earlier run\'s {", ".join(p.name for p in present)} moved to '
             f'{target}.')
  _sync('amber_jax fresh start')
  return target if present else None


def cut_metrics(workdir: storage.Path, step: int) -> int:
  """Drops the lines of workdir/metrics.jsonl past `step` (the steps a resumed run trains again);
  returns how many were dropped. Rewritten atomically by process 0."""
  path = workdir / 'metrics.jsonl'
  if jax.process_index() != 0 or not path.exists():
    return 0
  lines = path.read_text(encoding='utf-8').splitlines(keepends=True)
  kept = [line for line in lines if line.strip() and json.loads(line).get('step', 0) <= step]
  if len(kept) != len(lines):
    storage.write_text(path, ''.join(kept))
  return len(lines) - len(kept)


def _check_workdir(workdir: storage.Path) -> None:
  """The workdir can be written, and with several processes it is one folder that all of them
  see (a bucket or a shared filesystem): a local path on each host would give each its own part
  of every checkpoint. Raises StorageError / UserError before anything is trained."""
  try:
    storage.makedirs(workdir)
    probe = workdir / f'.amber-jax-write-test-{jax.process_index()}'
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise errors.StorageError(
        f'cannot write to the workdir {workdir} ({e.strerror or e}); nothing was trained. '
        'Give a writable --config.workdir.') from None
  if jax.process_count() == 1:
    return
  token = int(multihost_utils.broadcast_one_to_all(np.int32(time.time_ns() % 2**31)))
  marker = workdir / f'.amber-jax-shared-{token}'
  if jax.process_index() == 0:
    marker.write_text('')
  _sync('amber_jax workdir marker written')
  seen = multihost_utils.process_allgather(np.int32(marker.exists()))
  _sync('amber_jax workdir marker read')
  if jax.process_index() == 0:
    marker.unlink()
  blind = [int(i) for i in np.flatnonzero(np.asarray(seen) == 0)]
  if blind:
    raise errors.UserError(
        f'the workdir {workdir} is not shared: processes {blind} of {jax.process_count()} do '
        'not see the file process 0 wrote there. With several hosts the workdir must be one '
        'folder for all (a gs:// bucket or a shared filesystem), or each host keeps its own part '
        'of every checkpoint. Nothing was trained.')


def open_run(config, s: Setup, print_fn=print) -> Start:
  """The run in config.workdir, resumed from its newest sound checkpoint or started at step 0
  (see the module's docstring for when a start at 0 is refused)."""
  workdir = storage.path(config.workdir)
  tcfg = config.train
  _check_workdir(workdir)
  if tcfg.get('fresh_start', False):
    discard(workdir, print_fn)
  mgr = checkpoint.manager(workdir, keep=tcfg.keep_checkpoints, every=tcfg.checkpoint_every)
  try:
    restored = checkpoint.restore_latest(mgr, s.abstract_state, print_fn=print_fn)
  except checkpoint.CheckpointMismatchError as e:
    diff = _model_diff(workdir, config)
    raise checkpoint.CheckpointMismatchError(
        f'{e} The config differs from the run\'s config.json in '
        f'{"; ".join(diff) if diff else "no model field"}. Resume with the run\'s config, or '
        'train in another workdir (--config.workdir=...). Nothing was written.') from None
  if restored is None:
    diff = _model_diff(workdir, config)
    if diff:
      raise errors.UserError(
          f'{workdir} holds a run of another model ({"; ".join(diff)}) with no checkpoint. Use '
          'another --config.workdir, or --config.train.fresh_start=True to set that run aside '
          '(moved, not deleted). Nothing was written.')
    state, start = init_state(s, config.seed), 0
  else:
    state, _, start = restored
    print_fn(f'Resumed from step {start} ({mgr.directory})')
  check_run_vocabulary(config, workdir, resumed=restored is not None)
  if jax.process_index() == 0:
    storage.write_text(workdir / 'config.json', config.to_json_best_effort(indent=2))
  dropped = cut_metrics(workdir, start)
  if dropped:
    print_fn(f'metrics.jsonl: {dropped} lines after step {start} dropped (those steps are '
             'trained again).')
  return Start(mgr=mgr, state=state, step=start, resumed=restored is not None)
