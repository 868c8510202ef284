"""Checkpoints that survive: kill -9, SIGTERM, corrupt latest step, mismatched parameters, and
non-finite losses."""

import dataclasses
import json
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amber_jax import errors
from amber_jax.core import model as model_lib
from amber_jax.training import checkpoint
from amber_jax.training import loop
from amber_jax.training import train_state
from amber_jax.training import train_step
from test_train import small_config, stream

TESTS = str(pathlib.Path(__file__).parent)


def _quiet(*_):
  pass


def _leaves(state):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(state['params'])]


def test_nonfinite_loss_skips_the_update_and_counts(tmp_path):
  s = train_state.setup(small_config(tmp_path))
  state = train_state.init_state(s, 0)
  poisoned = jax.tree_util.tree_map(lambda x: x, state)
  poisoned['params']['mlm_bias'] = jnp.full_like(state['params']['mlm_bias'], jnp.inf)
  before = _leaves(poisoned)
  moments = [np.asarray(x) for x in jax.tree_util.tree_leaves(poisoned['opt_state'])]
  after, metrics = train_step.make_train_step(s)(poisoned, next(stream()(0)))
  assert int(metrics['nonfinite_streak']) == 1 and float(metrics['skipped']) == 1.0
  for a, b in zip(before, _leaves(after)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(moments, jax.tree_util.tree_leaves(after['opt_state'])):
    np.testing.assert_array_equal(a, np.asarray(b))
  assert int(after['step']) == 1  # the data moves on


def test_training_halts_after_repeated_nonfinite_losses(tmp_path):
  cfg = small_config(tmp_path, steps=30)
  with cfg.unlocked():
    cfg.optimizer.update(learning_rate=1e30, grad_clip_norm=0.0, warmup_steps=1)
    cfg.train.update(max_nonfinite_steps=3, checkpoint_every=1)
  with pytest.raises(train_step.NonFiniteLossError, match='3 non-finite losses in a row'):
    loop.train(cfg, batches=stream(), print_fn=_quiet)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
  loop.train(small_config(tmp_path, steps=4), batches=stream(), print_fn=_quiet)
  latest = tmp_path / 'checkpoints' / '4' / 'state'
  for f in latest.rglob('*'):
    if f.is_file():
      f.write_bytes(b'garbage')
  lines = []
  loop.train(small_config(tmp_path, steps=6), batches=stream(), print_fn=lines.append)
  assert any('step 4' in l and 'unreadable' in l for l in lines), lines
  assert any('Resumed from step 2' in l for l in lines), lines


def test_restoring_with_different_parameters_names_them(tmp_path):
  loop.train(small_config(tmp_path, steps=2), batches=stream(), print_fn=_quiet)
  bigger = small_config(tmp_path, steps=4)
  with bigger.unlocked():
    bigger.model.num_layers = 3
  with pytest.raises(checkpoint.CheckpointMismatchError, match='layer_2'):
    loop.train(bigger, batches=stream(), print_fn=_quiet)


def test_load_params_restores_the_params_alone_whatever_the_optimizer(tmp_path, monkeypatch):
  from amber_jax.export import runs  # pylint: disable=g-import-not-at-top
  state, _ = loop.train(small_config(tmp_path, steps=2), batches=stream(), print_fn=_quiet)
  path = tmp_path / 'config.json'
  config = json.loads(path.read_text())
  config['optimizer']['grad_clip_norm'] = 0.0  # another optimizer chain: another opt_state tree
  path.write_text(json.dumps(config))

  def no_optimizer(*_):
    raise AssertionError('load_params built an optimizer; it needs only the parameters')

  monkeypatch.setattr(train_state, 'make_optimizer', no_optimizer)
  params, mcfg, run_config, step = runs.load_params(tmp_path)
  assert step == 2 and mcfg.num_layers == 2 and run_config.optimizer.grad_clip_norm == 0.0
  # The run's state pads the vocabulary rows (64 ids -> 128 rows); load_params keeps the ids'.
  want, _ = model_lib.strip_vocab_padding(jax.device_get(state['params']),
                                          dataclasses.replace(mcfg, vocab_multiple=128))
  assert state['params']['mlm_bias'].shape == (128,) and params['mlm_bias'].shape == (64,)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(want)
  for (key, got), expected in zip(jax.tree_util.tree_leaves_with_path(params),
                                  jax.tree_util.tree_leaves(want)):
    assert isinstance(got, np.ndarray), key
    np.testing.assert_array_equal(got, expected, err_msg=jax.tree_util.keystr(key))

  config['model']['num_layers'] = 3  # the model still has to match: the difference is named
  path.write_text(json.dumps(config))
  with pytest.raises(checkpoint.CheckpointMismatchError, match='missing .*layer_2'):
    runs.load_params(tmp_path)


RUNNER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from amber_jax import errors
    from amber_jax.training import loop
    from test_train import small_config, stream
    cfg = small_config({workdir!r}, steps={steps})
    with cfg.unlocked():
      cfg.train.update(checkpoint_every=1, log_every=1)
    try:
      loop.train(cfg, batches=stream(), print_fn=lambda m: print(m, flush=True))
    except errors.Preempted as e:
      print('PREEMPTED', e.step, flush=True)
      raise SystemExit(e.exit_code)
    print('FINISHED', flush=True)
""")


def _start(workdir, steps):
  code = RUNNER.format(tests=TESTS, workdir=str(workdir), steps=steps)
  return subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)


def _wait_for_step(proc, step):
  for line in proc.stdout:
    if line.startswith(f'step {step}/'):
      return
  raise AssertionError(f'the run ended before step {step}')


@pytest.mark.slow
def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path):
  full, _ = loop.train(small_config(tmp_path / 'full', steps=8), batches=stream(),
                        print_fn=_quiet)
  proc = _start(tmp_path / 'killed', steps=8)
  _wait_for_step(proc, 5)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  resumed, _ = loop.train(small_config(tmp_path / 'killed', steps=8), batches=stream(),
                           print_fn=_quiet)
  for a, b in zip(_leaves(full), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_with_the_preemption_code(tmp_path):
  proc = _start(tmp_path, steps=100_000)
  _wait_for_step(proc, 3)
  t = time.time()
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=60)
  assert time.time() - t < 30
  # Not 0: a scheduler tells a preempted run (75: rerun it) from a finished one.
  assert proc.returncode == errors.EXIT_PREEMPTED == 75, out
  assert 'SIGTERM: saving a checkpoint' in out and 'FINISHED' not in out
  saved = int(out.split('SIGTERM: saving a checkpoint at step ')[1].split()[0])
  assert f'PREEMPTED {saved}' in out
  mgr = checkpoint.manager(tmp_path, keep=3)
  assert mgr.latest_step() == saved
