"""Lose nothing: a run never starts over silently, damage is caught, a failed save stops the run,
preemption has its own exit code, and every dropped or truncated input is counted
(docs/RELIABILITY.md lists each case with its test here)."""

import json
import pathlib
import resource
import shutil
import signal

import jax
import numpy as np
import pytest

from amber_jax import cli, errors
from amber_jax.training import checkpoint, loop, resume
from test_train import small_config, stream


def _lines():
  lines = []
  return lines, lines.append


def _snapshot(workdir: pathlib.Path) -> dict:
  return {name: (workdir / name).read_bytes() for name in ('config.json', 'metrics.jsonl')}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A 4-step run with checkpoints at steps 2 and 4, copied fresh for each test (`run_copy`)."""
  workdir = tmp_path_factory.mktemp('trained')
  cfg = small_config(workdir, steps=4)
  with cfg.unlocked():
    cfg.train.log_every = 1
  loop.train(cfg, batches=stream(), print_fn=lambda _: None)
  return workdir


@pytest.fixture
def run_copy(trained, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(trained, workdir)
  return workdir


def _config(workdir, steps=6, **train):
  cfg = small_config(workdir, steps=steps)
  with cfg.unlocked():
    cfg.train.update(log_every=1, **train)
  return cfg


def test_another_model_shape_raises_naming_arrays_and_fields_before_any_write(run_copy):
  before = _snapshot(run_copy)
  cfg = _config(run_copy)
  with cfg.unlocked():
    cfg.model.intermediate_size *= 2
  with pytest.raises(checkpoint.CheckpointMismatchError) as info:
    loop.train(cfg, batches=stream(), print_fn=lambda _: None)
  message = str(info.value)
  assert 'of another shape' in message and 'params/layer_0/intermediate/kernel' in message, message
  assert 'model.intermediate_size' in message, message
  assert isinstance(info.value, errors.UserError)
  assert _snapshot(run_copy) == before  # config.json and metrics.jsonl untouched


def test_a_missing_meta_folder_falls_back_to_the_previous_step_in_one_line(run_copy):
  shutil.rmtree(run_copy / 'checkpoints' / '4' / 'meta')
  lines, say = _lines()
  loop.train(_config(run_copy), batches=stream(), print_fn=say)
  notes = [l for l in lines if 'not usable' in l]
  assert len(notes) == 1 and 'step 4' in notes[0] and 'set aside' in notes[0], lines
  assert any('Resumed from step 2' in l for l in lines), lines
  assert (run_copy / 'unreadable-checkpoints' / '4' / 'state').is_dir()  # kept, not deleted


def _flip_bytes_inside_largest_chunk(step_dir: pathlib.Path) -> None:
  chunk = max((p for p in step_dir.rglob('*') if p.is_file() and p.parent.name == 'd'),
              key=lambda p: p.stat().st_size)
  data = bytearray(chunk.read_bytes())
  start = len(data) // 2
  for i in range(start, start + 400):
    data[i] ^= 0x5A
  chunk.write_bytes(bytes(data))  # same size: nothing but the content tells


def test_a_checkpoint_damaged_in_place_is_caught_by_its_fingerprint(run_copy):
  _flip_bytes_inside_largest_chunk(run_copy / 'checkpoints' / '4' / 'state')
  lines, say = _lines()
  state, _ = loop.train(_config(run_copy), batches=stream(), print_fn=say)
  # Caught either way: by the fingerprints (data bytes changed) or by the reader (the XOR hit
  # the chunk's own structure); the export test below checks the fingerprint path alone.
  assert any('step 4' in l and ('differ from their fingerprint' in l or 'cannot be read' in l)
             for l in lines), lines
  assert any('Resumed from step 2' in l for l in lines), lines
  for leaf in jax.tree_util.tree_leaves(state['params']):
    assert np.isfinite(np.asarray(leaf)).all()


def test_export_refuses_arrays_that_differ_from_their_fingerprint(run_copy):
  from amber_jax.export import runs  # pylint: disable=g-import-not-at-top
  meta_file = run_copy / 'checkpoints' / '4' / 'meta' / 'metadata'
  meta = json.loads(meta_file.read_text())
  name = sorted(k for k in meta['fingerprint'] if k.startswith('params/'))[0]
  meta['fingerprint'][name] ^= 1  # as if that array's bytes had changed since the save
  meta_file.write_text(json.dumps(meta))
  with pytest.raises(checkpoint.UnreadableCheckpointError, match=f'fingerprint.*{name}'):
    runs.load_params(run_copy, step=4)


def test_a_missing_state_metadata_of_the_latest_step_falls_back_not_blocks(run_copy):
  (run_copy / 'checkpoints' / '4' / 'state' / '_METADATA').unlink()
  lines, say = _lines()
  loop.train(_config(run_copy), batches=stream(), print_fn=say)
  assert any('step 4' in l and '_METADATA is missing' in l for l in lines), lines
  assert any('Resumed from step 2' in l for l in lines), lines
  assert not any('config the run was trained with' in l for l in lines)


def test_no_readable_checkpoint_stops_then_fresh_start_sets_the_run_aside(run_copy):
  steps = sorted(p.name for p in (run_copy / 'checkpoints').iterdir() if p.name.isdigit())
  assert steps[-2:] == ['2', '4'], steps
  for step in steps:
    shutil.rmtree(run_copy / 'checkpoints' / step / 'meta')
  before = _snapshot(run_copy)
  with pytest.raises(checkpoint.UnreadableCheckpointError, match='fresh_start') as info:
    loop.train(_config(run_copy), batches=stream(), print_fn=lambda _: None)
  assert 'step 4' in str(info.value) and 'step 2' in str(info.value)
  assert info.value.exit_code == errors.EXIT_FAILURE
  assert _snapshot(run_copy) == before  # nothing rewritten
  assert sorted(p.name for p in (run_copy / 'unreadable-checkpoints').iterdir()) == steps

  lines, say = _lines()
  loop.train(_config(run_copy, fresh_start=True), batches=stream(), print_fn=say)
  discarded = [p for p in run_copy.iterdir() if p.name.startswith('discarded-')]
  assert len(discarded) == 1, lines
  assert (discarded[0] / 'config.json').read_bytes() == before['config.json']
  assert (discarded[0] / 'unreadable-checkpoints' / '4').is_dir()
  steps = [json.loads(l)['step'] for l in (run_copy / 'metrics.jsonl').read_text().splitlines()]
  assert steps == [1, 2, 3, 4, 5, 6]


def test_a_workdir_of_another_model_without_checkpoints_is_not_overwritten(run_copy):
  shutil.rmtree(run_copy / 'checkpoints')
  before = _snapshot(run_copy)
  cfg = _config(run_copy)
  with cfg.unlocked():
    cfg.model.num_layers = 3
  with pytest.raises(errors.UserError, match=r'model.num_layers: 2 -> 3'):
    loop.train(cfg, batches=stream(), print_fn=lambda _: None)
  assert _snapshot(run_copy) == before


def test_resume_cuts_metrics_back_to_the_checkpoint(run_copy):
  # As if killed after logging steps 5 and 6 with its last checkpoint at 4.
  with open(run_copy / 'metrics.jsonl', 'a', encoding='utf-8') as f:
    f.write(json.dumps({'step': 5, 'total_loss': 1.0}) + '\n')
    f.write(json.dumps({'step': 6, 'total_loss': 1.0}) + '\n')
  lines, say = _lines()
  loop.train(_config(run_copy), batches=stream(), print_fn=say)
  steps = [json.loads(l)['step'] for l in (run_copy / 'metrics.jsonl').read_text().splitlines()]
  assert steps == [1, 2, 3, 4, 5, 6], steps
  assert any('2 lines after step 4 dropped' in l for l in lines), lines


class _FullDisk:
  """Writes past `limit` bytes per file fail with EFBIG from the step `at` on (RLIMIT_FSIZE, as a
  full disk fails a write: inside tensorstore's writer threads, not in Python)."""

  def __init__(self, batches, at: int, limit: int = 64 * 1024):
    self.batches, self.at, self.limit = batches, at, limit
    self.saved = None

  def __call__(self, start):
    for n, batch in enumerate(self.batches(start), start=start):
      if n == self.at and self.saved is None:
        self.saved = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.saved[1]))
      yield batch

  def __enter__(self):
    self.handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return self

  def __exit__(self, *exc):
    if self.saved is not None:
      resource.setrlimit(resource.RLIMIT_FSIZE, self.saved)
    signal.signal(signal.SIGXFSZ, self.handler)


def test_a_failing_save_stops_the_run_naming_the_cause_and_the_last_good_step(tmp_path):
  cfg = _config(tmp_path / 'run', steps=12)
  with _FullDisk(stream(), at=3) as full:
    with pytest.raises(errors.StorageError) as info:
      loop.train(cfg, batches=full, print_fn=lambda _: None)
  message = str(info.value)
  assert info.value.exit_code == errors.EXIT_STORAGE == 74
  assert 'Failed writing' in message or 'File too large' in message, message
  good = max(checkpoint.manager(tmp_path / 'run', keep=3).all_steps())
  assert f'the last good checkpoint is step {good}.' in message, message
  history = [json.loads(l)['step'] for l in (tmp_path / 'run' / 'metrics.jsonl').read_text()
             .splitlines()]
  assert max(history) <= 6  # stopped at the failure, not trained on without checkpoints
  lines, say = _lines()  # the disk has room again: the same run resumes from that step
  loop.train(cfg, batches=stream(), print_fn=say)
  assert any(f'Resumed from step {good} ' in l for l in lines), lines


def test_an_unwritable_workdir_is_one_line(tmp_path, capsys):
  blocker = tmp_path / 'a-file'
  blocker.write_text('')
  cfg = _config(blocker / 'run')
  with pytest.raises(errors.StorageError, match='cannot write to the workdir'):
    loop.train(cfg, batches=stream(), print_fn=lambda _: None)


class _CountedStream:
  """The contract's batches with the `stats` a real pipeline keeps."""

  def __init__(self, start):
    self._it = stream()(start)
    self.stats = {'steps': 0, 'mono_rows': 0, 'mono_texts': 0, 'pairs': 0, 'mono_truncated': 0,
                  'pairs_dropped': 0}

  def __iter__(self):
    return self

  def __next__(self):
    self.stats['steps'] += 1
    self.stats['mono_rows'] += 4  # unpacked rows: one text each, mono_texts stays 0
    self.stats['pairs'] += 4
    self.stats['mono_truncated'] += 1
    self.stats['pairs_dropped'] += 2
    return next(self._it)


def test_truncated_and_dropped_inputs_are_printed_and_logged(tmp_path):
  lines, say = _lines()
  loop.train(_config(tmp_path, steps=3), batches=_CountedStream, print_fn=say)
  summary = [l for l in lines if l.startswith('Input')]
  assert summary == ['Input: read 12 mono texts, 12 pairs; mono truncated=3, mono dropped=0, '
                     'src truncated=0, tgt truncated=0, pairs dropped=6, deferred=0.'], lines
  last = json.loads((tmp_path / 'metrics.jsonl').read_text().splitlines()[-1])
  assert last['input/mono_truncated'] == 3 and last['input/pairs_dropped'] == 6


def test_the_real_pipeline_counts_what_it_truncates():
  from amber_jax.data import batching  # pylint: disable=g-import-not-at-top
  assert {'mono_truncated', 'mono_dropped', 'pairs_dropped'} <= set(
      batching.TrainIterator(None, None).stats)


def test_preemption_stops_a_command_that_trains_with_exit_75(monkeypatch, capsys, tmp_path):
  from amber_jax.experiments import demo  # pylint: disable=g-import-not-at-top

  def preempted(config, **_):
    raise errors.Preempted('preempted (SIGTERM) at step 100 of 200: trained steps 1-100', 100)

  monkeypatch.setattr(loop, 'train', preempted)
  monkeypatch.setattr(demo, '_prepare_data', lambda config, print_fn: {})
  monkeypatch.setattr(demo.tokenizer, 'load_processor', lambda path: None)
  monkeypatch.setattr(demo.retrieval, 'retrieval', lambda embed, pairs: {})
  monkeypatch.setattr(demo.retrieval, 'mean_accuracy', lambda hits: (0.0, 0.0))
  monkeypatch.setenv('AMBER_JAX_CACHE', str(tmp_path / 'cache'))
  out = tmp_path / 'hf'
  with pytest.raises(SystemExit) as info:
    cli.main(['demo', '--out', str(out)])
  assert info.value.code == errors.EXIT_PREEMPTED == 75
  err = capsys.readouterr().err
  assert 'step 100 of 200' in err and 'Traceback' not in err
  assert not out.exists()  # nothing evaluated or exported from a half-trained model


def test_user_errors_are_one_line_with_code_2_and_debug_shows_the_traceback(capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(['train', '--config=tiny', '--config.train.steps=-5'])
  assert info.value.code == errors.EXIT_USER
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'train.steps=-5' in err and 'Traceback' not in err
  with pytest.raises(SystemExit, match='train.steps=-5'):
    cli.main(['--debug', 'train', '--config=tiny', '--config.train.steps=-5'])


def test_config_diff_names_nested_fields():
  assert resume.config_diff({'a': {'b': 1, 'c': 2}}, {'a': {'b': 1, 'c': 3}, 'd': 4}) == [
      'a.c: 2 -> 3', "d: '(absent)' -> 4"]
