"""The training loop: resume, run the stages' steps, log, checkpoint, stop on SIGTERM.

The input and the periodic evaluation are arguments (`amber_jax.data.inputs` makes the input of
config.data; `amber_jax.eval.retrieval.periodic_eval_fn` the default evaluation). Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import signal
import threading
import time
from typing import Any, Callable, Iterator

import jax

from amber_jax.parallel import partitioning
from amber_jax.training import checkpoint
from amber_jax.training.metrics import count_tokens, format_eta, MetricsWriter
from amber_jax.training.stages import Stage, stage_at, stages
from amber_jax.training.train_state import init_state, setup, State
from amber_jax.training.train_step import make_train_step, NonFiniteLossError
from amber_jax.training.vocab_check import check_run_vocabulary


class _Preemption:
  """Turns SIGTERM (a preempted TPU VM, `scancel`, Kubernetes) into a flag the loop polls."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def train(config, *, batches: Callable[..., Iterator[dict]],
          mesh=None, print_fn=print, eval_fn: Callable[[Any], dict] | None = None,
          stop_at: int | None = None) -> tuple[State, list[dict]]:
  """Trains until config.train.steps (or `stop_at`), resuming from the latest checkpoint in config.workdir.

  With config.train.stages the run goes through them in order (`stages`): at each boundary a new
  step function (the stage's objectives and batch shapes) and a new data stream (the stage's seed
  and shapes, from the stage's step 0). A resume inside a stage replays that stage's stream from
  its start, so a killed run ends bit-identical to an uninterrupted one. The learning-rate
  schedule and the optimizer state span the whole run.

  SIGTERM saves a checkpoint at the current step and returns; `train.max_nonfinite_steps`
  non-finite losses in a row (their updates are skipped) raise NonFiniteLossError.

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
  workdir = pathlib.Path(config.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  all_stages = stages(config)
  staged = bool(config.train.stages)
  s = setup(config, mesh)
  tcfg = config.train
  mgr = checkpoint.manager(workdir, keep=tcfg.keep_checkpoints, every=tcfg.checkpoint_every)
  restored = checkpoint.restore_latest(mgr, s.abstract_state, print_fn=print_fn)
  if restored is None:
    state, start = init_state(s, config.seed), 0
  else:
    state, _, start = restored
    print_fn(f'Resumed from step {start} ({mgr.directory})')
  check_run_vocabulary(config, workdir, resumed=restored is not None)
  if jax.process_index() == 0:
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))

  def open_stage(stage: Stage, at: int):
    """(step function, batch iterator) of `stage`, its stream from global step `at`."""
    if staged:
      it = batches(at - stage.start, stage)
    else:
      it = batches(at)
    step_fn = make_train_step(dataclasses.replace(s, config=stage.config))
    if staged:
      print_fn(f'Stage {stage.index} ({stage.name}): steps {stage.start}-{stage.end}'
               + (f', from step {at}' if at != stage.start else ''))
    return step_fn, it

  end = tcfg.steps if stop_at is None else min(stop_at, tcfg.steps)
  stage = stage_at(all_stages, start)
  step_fn, it = open_stage(stage, start) if start < end else (None, None)
  writer = MetricsWriter(workdir)
  history: list[dict] = []
  meta = {'config': json.loads(config.to_json_best_effort())}
  save = lambda step, force=False: checkpoint.save(mgr, step, state, {**meta, 'step': step},
                                                   force=force)
  t_start = t_window = time.time()
  tokens_window, steps_window, previous = 0, 0, None
  with _Preemption() as preemption:
    for step in range(start, end):
      if step >= stage.end:  # the boundary: the next stage's shapes, objectives and stream
        stage = stage_at(all_stages, step)
        step_fn, it = open_stage(stage, step)
        previous = None
      local = next(it)
      tokens_window += count_tokens(local) * jax.process_count()
      steps_window += 1
      state, metrics = step_fn(state, partitioning.to_global(local, s.mesh))
      done = step + 1
      # The previous step's streak is read while this one runs: no stall on the accelerator.
      if previous is not None and int(previous['nonfinite_streak']) >= tcfg.max_nonfinite_steps:
        raise NonFiniteLossError(
            f'{tcfg.max_nonfinite_steps} non-finite losses in a row up to step {done - 1}; their '
            f'updates were skipped. The last good checkpoint is step {mgr.latest_step()} in '
            f'{mgr.directory}. Lower the learning rate or inspect the data around this step.')
      previous = metrics
      first_of_stage = step == start or (staged and step == stage.start)
      if (done % tcfg.log_every == 0 or done == end or first_of_stage
          or (staged and done == stage.end)):
        scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
        elapsed = max(time.time() - t_window, 1e-9)
        scalars.update(tokens_per_s=tokens_window / elapsed, steps_per_s=steps_window / elapsed)
        if eval_fn is not None and tcfg.eval_every and done % tcfg.eval_every == 0:
          scalars.update({f'eval/{k}': v for k, v in eval_fn(state['params']).items()})
        writer.write(done, {**scalars, 'stage': float(stage.index)})
        history.append({'step': done, 'stage': stage.index, **scalars})
        rate = (done - start) / max(time.time() - t_start, 1e-9)
        shown = ' '.join(f'{k}={v:.4f}' for k, v in sorted(scalars.items())
                         if k.endswith('loss') or k.startswith('eval/'))
        print_fn(f'step {done}/{tcfg.steps} {shown} tok/s={scalars["tokens_per_s"]:.0f} '
                 f'eta={format_eta((tcfg.steps - done) / rate)}'
                 + (' (includes compilation)' if first_of_stage else ''))
        t_window, tokens_window, steps_window = time.time(), 0, 0
      save(done)
      if preemption.requested:
        print_fn(f'SIGTERM: saving a checkpoint at step {done} and stopping.')
        save(done, force=mgr.latest_step() != done)
        break
  if not preemption.requested and start < end and mgr.latest_step() != end:
    save(end, force=True)
  mgr.wait_until_finished()
  mgr.close()
  writer.close()
  return state, history
