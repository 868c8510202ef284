"""The training loop: resume, run the stages' steps, log, checkpoint, stop on SIGTERM.

What ends a run early ends it plainly (`amber_jax.errors`): SIGTERM saves a checkpoint and raises
`Preempted` (exit 75: rerun to resume); a checkpoint that cannot be written raises `StorageError`
(exit 74) naming the cause and the last good step; nothing trains on without checkpoints.

The input and the periodic evaluation are arguments (`amber_jax.data.inputs` makes the input of
config.data; `amber_jax.eval.retrieval.periodic_eval_fn` the default evaluation). Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator

import jax
from jax.experimental import multihost_utils

from amber_jax import errors
from amber_jax.parallel import partitioning
from amber_jax.training import checkpoint, flops, resume
from amber_jax.training.metrics import count_tokens, format_eta, InputCounts, MetricsWriter
from amber_jax.training.stages import Stage, stage_at, stages
from amber_jax.training.train_state import setup, State
from amber_jax.training.train_step import make_train_step, NonFiniteLossError


class _Preemption:
  """Turns SIGTERM (a preempted TPU VM, `scancel`, Kubernetes) into a stop at an agreed step.

  One process: a Python handler sets a flag the loop polls. Several: JAX's preemption sync
  manager (started by jax.distributed.initialize) catches SIGTERM on any one host, and
  `reached_preemption_sync_point` turns true at the same step on every host, so all of them save
  that step and stop together instead of the others hanging in the next collective.
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    self._multihost = jax.process_count() > 1

  def __enter__(self):
    if not self._multihost and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def reached(self, step: int) -> bool:
    """Whether to save `step` and stop (called at every step, the same steps on every host)."""
    if self._multihost and not self.requested:
      self.requested = bool(multihost_utils.reached_preemption_sync_point(step))
    return self.requested

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class _OrbaxErrorsSaidOnce(logging.Filter):
  """Holds back orbax's own error records (a failed async save logs four tracebacks); the loop
  says the failure in one line instead. AMBER_JAX_DEBUG=1 lets them through."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and '/orbax/' in record.pathname.replace('\\', '/'))


@contextlib.contextmanager
def _quiet_orbax_errors():
  if os.environ.get('AMBER_JAX_DEBUG', '') not in ('', '0'):
    yield
    return
  quiet = _OrbaxErrorsSaidOnce()
  loggers = [logging.getLogger('absl'), logging.getLogger()]
  for logger in loggers:
    logger.addFilter(quiet)
  try:
    yield
  finally:
    for logger in loggers:
      logger.removeFilter(quiet)


def _save_failed(e: Exception, step: int, mgr) -> errors.StorageError:
  """The one line a failed checkpoint write ends the run with (orbax reports a failed async save
  at the next save or wait, so `step` is where training stopped, not always the failed step)."""
  good = max(mgr.all_steps(), default=None)  # only steps whose save completed
  cause = ' '.join(str(e).split())[:400]
  return errors.StorageError(
      f'a checkpoint write in {mgr.directory} failed ({type(e).__name__}: {cause}). Training '
      f'stopped at step {step}; the last good checkpoint is '
      f'{"step " + str(good) if good is not None else "none"}. Free space or fix the storage, '
      'then rerun the same command to resume from it.')


def train(config, *, batches: Callable[..., Iterator[dict]],
          mesh=None, print_fn=print, eval_fn: Callable[[Any], dict] | None = None,
          stop_at: int | None = None) -> tuple[State, list[dict]]:
  """Trains until config.train.steps (or `stop_at`), resuming from the latest checkpoint in config.workdir.

  With config.train.stages the run goes through them in order (`stages`): at each boundary a new
  step function (the stage's objectives and batch shapes) and a new data stream (the stage's seed
  and shapes, from the stage's step 0). A resume inside a stage replays that stage's stream from
  its start, so a killed run ends bit-identical to an uninterrupted one. The learning-rate
  schedule and the optimizer state span the whole run.

  The start is `resume.open_run`: the newest sound checkpoint, or step 0 only when nothing is
  lost (a damaged checkpoint falls back to the one before; another model's checkpoint raises).

  SIGTERM saves a checkpoint at the current step and raises `errors.Preempted`; a checkpoint
  write that fails raises `errors.StorageError`; `train.max_nonfinite_steps` non-finite losses
  in a row (their updates are skipped) raise NonFiniteLossError. The counts of truncated and
  dropped input (the iterator's `stats`, when it has them) are logged at each log step as
  `input/*` and printed at the end; so are model FLOPs a step, tokens/s and model FLOP/s per
  device, MFU where the device's peak is known and peak device memory (`perf/*`,
  `amber_jax.training.flops`).

  Args:
    config: a resolved config (see `amber_jax.config.resolve_paths`).
    batches: the input. Without stages: start_step -> iterator of numpy batches (this process's
      rows). With stages: (step within the stage, Stage) -> iterator for that stage (read the
      shapes and seed from `stage.config`). `amber_jax.data.inputs.config_input(config)` is the
      pipeline of config.data; `synthetic_batches` needs no data.
    mesh: an explicit mesh (default: from config.mesh).
    print_fn: where progress lines go.
    eval_fn: params -> scalars, run every config.train.eval_every steps (None: no evaluation;
      `amber_jax.eval.retrieval.periodic_eval_fn(config)` is retrieval on the corpus's
      validation pairs).
    stop_at: stop after this global step, with a checkpoint there (e.g. the end of a stage that
      several runs share); a later call resumes from it. None: config.train.steps.

  Returns:
    (final state, the logged metrics as a list of dicts; each has its 'stage' index).
  """
  all_stages = stages(config)
  staged = bool(config.train.stages)
  s = setup(config, mesh)
  tcfg = config.train
  with _quiet_orbax_errors():
    run = resume.open_run(config, s, print_fn=print_fn)
  mgr, state, start = run.mgr, run.state, run.step
  counts = InputCounts()

  def open_stage(stage: Stage, at: int):
    """(step function, batch iterator) of `stage`, its stream from global step `at`."""
    if staged:
      it = batches(at - stage.start, stage)
    else:
      it = batches(at)
    if at == start and at > stage.start and getattr(it, 'resumable', False):
      if checkpoint.restore_input(mgr, at, it):  # O(1); else the iterator replays on first use
        print_fn(f'Input restored to its position at step {at} (saved with the checkpoint)')
    counts.follow(it)
    step_fn = make_train_step(dataclasses.replace(s, config=stage.config))
    if staged:
      print_fn(f'Stage {stage.index} ({stage.name}): steps {stage.start}-{stage.end}'
               + (f', from step {at}' if at != stage.start else ''))
    return step_fn, it

  end = tcfg.steps if stop_at is None else min(stop_at, tcfg.steps)
  stage = stage_at(all_stages, start)
  step_fn, it = open_stage(stage, start) if start < end else (None, None)
  writer = MetricsWriter(config.workdir)
  history: list[dict] = []
  meta = {'config': json.loads(config.to_json_best_effort())}

  def save(step: int, force: bool = False) -> None:
    try:
      started = checkpoint.save(mgr, step, state, {**meta, 'step': step}, force=force,
                                data=it if getattr(it, 'resumable', False) else None)
    except Exception as e:  # pylint: disable=broad-except  (orbax, tensorstore, the OS)
      raise _save_failed(e, step, mgr) from e
    if started:
      writer.flush()  # a bucket's metrics.jsonl reaches every checkpoint

  t_start = t_window = time.time()
  tokens_window, steps_window, previous, done, step_fn_flops = 0, 0, None, start, None
  try:
    with _Preemption() as preemption, _quiet_orbax_errors():
      for step in range(start, end):
        if step >= stage.end:  # the boundary: the next stage's shapes, objectives and stream
          stage = stage_at(all_stages, step)
          step_fn, it = open_stage(stage, step)
          previous, step_fn_flops = None, None
        local = next(it)
        if step_fn_flops is None:  # this stage's model FLOPs a step, from its global batch shapes
          step_fn_flops = flops.step_flops(
              stage.config.model, stage.config.objectives,
              {k: (v.shape[0] * jax.process_count(), *v.shape[1:]) for k, v in local.items()})
        tokens_window += count_tokens(local) * jax.process_count()
        steps_window += 1
        state, metrics = step_fn(state, partitioning.to_global(local, s.mesh))
        done = step + 1
        # The previous step's streak is read while this one runs: no stall on the accelerator.
        if (previous is not None
            and int(previous['nonfinite_streak']) >= tcfg.max_nonfinite_steps):
          raise NonFiniteLossError(
              f'{tcfg.max_nonfinite_steps} non-finite losses in a row up to step {done - 1}; '
              f'their updates were skipped. The last good checkpoint is step '
              f'{mgr.latest_step()} in {mgr.directory}. Lower the learning rate or inspect the '
              'data around this step.')
        previous = metrics
        first_of_stage = step == start or (staged and step == stage.start)
        if (done % tcfg.log_every == 0 or done == end or first_of_stage
            or (staged and done == stage.end)):
          scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
          elapsed = max(time.time() - t_window, 1e-9)
          scalars.update(tokens_per_s=tokens_window / elapsed,
                         steps_per_s=steps_window / elapsed)
          scalars.update(flops.throughput(step_fn_flops, scalars['steps_per_s'],
                                          scalars['tokens_per_s']))
          if eval_fn is not None and tcfg.eval_every and done % tcfg.eval_every == 0:
            scalars.update({f'eval/{k}': v for k, v in eval_fn(state['params']).items()})
          scalars.update(counts.scalars())
          writer.write(done, {**scalars, 'stage': float(stage.index)})
          history.append({'step': done, 'stage': stage.index, **scalars})
          rate = (done - start) / max(time.time() - t_start, 1e-9)
          shown = ' '.join(f'{k}={v:.4f}' for k, v in sorted(scalars.items())
                           if k.endswith('loss') or k.startswith('eval/'))
          mfu = f' mfu={scalars["perf/mfu"]:.1%}' if 'perf/mfu' in scalars else ''
          print_fn(f'step {done}/{tcfg.steps} {shown} tok/s={scalars["tokens_per_s"]:.0f}{mfu} '
                   f'eta={format_eta((tcfg.steps - done) / rate)}'
                   + (' (includes compilation)' if first_of_stage else ''))
          t_window, tokens_window, steps_window = time.time(), 0, 0
        save(done)
        if preemption.reached(done):
          print_fn(f'SIGTERM: saving a checkpoint at step {done} and stopping.')
          save(done, force=mgr.latest_step() != done)
          break
      if not preemption.requested and start < end and mgr.latest_step() != end:
        save(end, force=True)
      try:
        mgr.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except  (a failed async save surfaces here)
        raise _save_failed(e, done, mgr) from e
  finally:
    _close_quietly(mgr)
    writer.close()
    if start < end:
      print_fn(counts.summary())
  if preemption.requested:
    raise errors.Preempted(
        f'preempted (SIGTERM) at step {done} of {tcfg.steps}: trained steps {start + 1}-{done}; '
        f'a checkpoint was saved in {mgr.directory}. Rerun the same command to resume from it.',
        step=done)
  return state, history


def _close_quietly(mgr) -> None:
  """Closes the manager; an error here follows one already raised (or was raised by the final
  wait), so it is not raised again."""
  try:
    mgr.close()
  except Exception:  # pylint: disable=broad-except
    pass
