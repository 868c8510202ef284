"""The input from the pretokenized cache (amber_jax.data.grain_input): Grain's mixture interleave,
per-epoch permutations, processes' disjoint shares, and a position that saves and restores exactly
and in O(1), also through a checkpoint."""

import collections
import json
import time

import grain
import numpy as np
import pytest

from amber_jax.data import grain_input, pipeline, preprocess, records
from test_data import corpus, make_cfg, vocab_path  # pylint: disable=unused-import


def quiet(*_):
  pass


@pytest.fixture(scope='module')
def cache_dir(corpus, vocab_path, tmp_path_factory):
  folder = tmp_path_factory.mktemp('grain') / 'tokens'
  preprocess.write_cache(make_cfg(corpus, vocab_path), folder, print_fn=quiet)
  return folder


@pytest.fixture(scope='module')
def cached_cfg(corpus, vocab_path, cache_dir):
  return make_cfg(corpus, vocab_path, cache_dir=str(cache_dir))


def _equal(a: dict, b: dict) -> bool:
  return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_the_interleave_is_grains_mixture_at_any_position():
  rates = [0.55, 0.3, 0.14, 0.013]
  tasks = [grain.MapDataset.range(10 ** 12).map(lambda x, t=t: (t, x)) for t in range(4)]
  mixed = grain.MapDataset.mix(tasks, rates)  # the reference: Grain's own MapDataset.mix
  positions = np.concatenate([np.arange(3000), np.arange(10 ** 11, 10 ** 11 + 500)])
  task, key = grain_input.interleave(positions, grain_input.int_rates(rates))
  assert [(int(t), int(k)) for t, k in zip(task, key)] == [mixed[int(p)] for p in positions]
  share = np.bincount(task[:3000], minlength=4) / 3000
  assert np.allclose(share, np.array(rates) / sum(rates), atol=0.002)


def test_each_epoch_is_a_fresh_permutation():
  keys = [np.random.SeedSequence([0, e]).generate_state(4, np.uint64) for e in range(2)]
  for n in (1, 2, 3, 17, 1000, 4099):
    orders = [grain_input.permute(np.arange(n), n, k) for k in keys]
    assert all(sorted(o.tolist()) == list(range(n)) for o in orders)
  assert not (orders[0] == orders[1]).all()
  big = grain_input.permute(np.array([0, 1, 10 ** 9 - 1]), 10 ** 9, keys[0])
  assert ((big >= 0) & (big < 10 ** 9)).all() and len(set(big.tolist())) == 3


def test_the_processes_positions_are_disjoint_and_cover_the_stream(cache_dir, vocab_path):
  manifest, root = grain_input.open_cache(make_cfg('', vocab_path, cache_dir=str(cache_dir)))
  one = grain_input.MixtureSource(manifest, root, 'parallel', seed=4)
  n = 300  # more than an epoch of every task: the second epochs count too
  want = collections.Counter(zip(*map(list, one.locate(np.arange(2 * n)))))
  got = collections.Counter()
  for shard in range(2):
    mine = grain_input.MixtureSource(manifest, root, 'parallel', seed=4, shard_index=shard,
                                     num_shards=2)
    got.update(zip(*map(list, mine.locate(np.arange(n)))))
  assert got == want
  # Every record of a task is read once an epoch before any is read twice; every pair is read.
  task, record = one.locate(np.arange(2 * n))
  assert set(task.tolist()) == set(range(len(one.names)))
  for t in range(len(one.names)):
    size = manifest['tasks'][one.names[t]]['splits']['train']['examples']
    first = record[task == t][:size]
    assert sorted(first.tolist()) == list(range(size))


def test_two_processes_batches_hold_the_rows_of_one_process_reading_both_shares(cached_cfg):
  cfg = cached_cfg.copy_and_resolve_references()
  cfg.update(parallel_batch_size=0, packing=False)
  steps, rows = 5, collections.Counter()
  for shard in range(2):
    it = pipeline.make_train_iterator(cfg, seed=2, shard_index=shard, num_shards=2)
    for _ in range(steps):
      rows.update(map(bytes, next(it)['mono_ids']))
  single = pipeline.make_train_iterator(cfg, seed=2)
  want = collections.Counter()
  for _ in range(2 * steps):
    want.update(map(bytes, next(single)['mono_ids']))
  assert rows == want


@pytest.mark.parametrize('packing, too_long', [(False, 'truncate'), (True, 'drop')])
def test_a_restored_position_yields_the_uninterrupted_batches(cached_cfg, packing, too_long):
  cfg = cached_cfg.copy_and_resolve_references()
  cfg.update(packing=packing, too_long=too_long, sentence_length=16)
  it = pipeline.make_train_iterator(cfg, seed=7)
  full = [next(it) for _ in range(24)]
  assert it.stats['deferred'] > 0  # pairs waited in the pool: its positions are in the state
  at = pipeline.make_train_iterator(cfg, seed=7)
  for _ in range(13):
    next(at)
  state = at.get_state()
  resumed = pipeline.make_train_iterator(cfg, seed=7, start_step=13)
  resumed.set_state(state)
  replayed = pipeline.make_train_iterator(cfg, seed=7, start_step=13)  # no state: replays
  for want in full[13:]:
    assert _equal(next(resumed), want)
    assert _equal(next(replayed), want)


def test_a_resume_at_step_one_million_sets_up_in_o1_and_continues_exactly(cached_cfg):
  cfg = cached_cfg.copy_and_resolve_references()
  cfg.packing = True
  probe = pipeline.make_train_iterator(cfg, seed=1)
  for _ in range(10):
    next(probe)
  state = json.loads(probe.get_state())
  per_step = {part: state[part]['position'] / 10 for part in ('mono', 'parallel')}
  # The position of step 1,000,000 of this stream (positions advance ~per_step a step), the
  # deferred pairs of the probe moved along with it.
  far = {part: int(per_step[part] * 1_000_000) for part in per_step}
  state['mono']['position'] = far['mono']
  shift = far['parallel'] - state['parallel']['position']
  state['parallel'] = {'position': far['parallel'],
                       'pool': [q + shift for q in state['parallel']['pool']]}
  uninterrupted = pipeline.make_train_iterator(cfg, seed=1, start_step=1_000_000)
  uninterrupted.set_state(json.dumps(state).encode())
  for _ in range(3):
    next(uninterrupted)
  saved = uninterrupted.get_state()  # step 1,000,003
  want = [next(uninterrupted) for _ in range(4)]
  start = time.perf_counter()
  resumed = pipeline.make_train_iterator(cfg, seed=1, start_step=1_000_003)
  resumed.set_state(saved)
  first = next(resumed)
  setup = time.perf_counter() - start
  assert setup < 5, f'input set-up at step 1,000,003 took {setup:.1f} s'
  assert _equal(first, want[0]) and all(_equal(next(resumed), w) for w in want[1:])
  assert json.loads(saved)['mono']['position'] > 1_000_000 * cfg.mono_batch_size


def test_a_position_from_another_input_is_refused(cached_cfg):
  it = pipeline.make_train_iterator(cached_cfg, seed=1)
  next(it)
  state = it.get_state()
  other = pipeline.make_train_iterator(cached_cfg, seed=2)
  with pytest.raises(ValueError, match='same seed, processes, batch shapes and cache'):
    other.set_state(state)
  two = pipeline.make_train_iterator(cached_cfg, seed=1, shard_index=0, num_shards=2)
  with pytest.raises(ValueError, match="'num_shards': 1"):
    two.set_state(state)


def test_a_checkpoint_keeps_the_input_position_per_process(cached_cfg, tmp_path):
  from amber_jax.training import checkpoint  # pylint: disable=import-outside-toplevel
  it = pipeline.make_train_iterator(cached_cfg, seed=1)
  for _ in range(3):
    next(it)
  mgr = checkpoint.manager(tmp_path, keep=2, async_save=False)
  checkpoint.save(mgr, 3, {'w': np.zeros(2, np.float32)}, {'step': 3}, data=it, force=True)
  want = [next(it) for _ in range(2)]  # taken after the save: the saved position is step 3's
  mgr.wait_until_finished()
  assert (tmp_path / 'checkpoints' / '3' / 'data' / 'process_0-of-1.json').is_file()
  resumed = pipeline.make_train_iterator(cached_cfg, seed=1, start_step=3)
  assert checkpoint.restore_input(mgr, 3, resumed)
  assert all(_equal(next(resumed), w) for w in want)
  saved = tmp_path / 'checkpoints' / '3' / 'data' / 'process_0-of-1.json'
  saved.rename(saved.with_name('process_0-of-2.json'))  # as if two processes had saved it
  with pytest.raises(ValueError, match='saved by 2 processes .* this run has 1'):
    checkpoint.restore_input(mgr, 3, pipeline.make_train_iterator(cached_cfg, seed=1))
  mgr.close()


def test_records_hold_the_features_and_a_damaged_one_is_named():
  features = [np.array([5, 6, 7], np.int32), np.array([], np.int32), np.array([9], np.int32)]
  raw = [records.encode(features), records.encode([np.array([1], np.int32)] * 3)]
  got = records.decode_many(raw, 3)
  assert [[f.tolist() for f in ex] for ex in got] == [[[5, 6, 7], [], [9]], [[1], [1], [1]]]
  with pytest.raises(ValueError, match='cache is damaged'):
    records.decode_many([raw[0][:-4]], 3)


def test_the_mixture_source_is_a_grain_data_source(cache_dir, vocab_path):
  manifest, root = grain_input.open_cache(make_cfg('', vocab_path, cache_dir=str(cache_dir)))
  source = grain_input.MixtureSource(manifest, root, 'parallel', seed=0)
  want = records.decode_many(source.__getitems__(range(6)), 2)
  ds = grain.MapDataset.source(source).map(lambda r: records.decode(r, 2))
  by_index = [ds[i] for i in range(6)]
  iterator = iter(ds.to_iter_dataset())
  by_iteration = [next(iterator) for _ in range(6)]
  for got in (by_index, by_iteration):
    assert [[x.tolist() for x in ex] for ex in got] == [[x.tolist() for x in ex] for ex in want]


def test_tasks_read_from_disk_give_the_records_held_in_memory(cache_dir, vocab_path,
                                                              monkeypatch):
  manifest, root = grain_input.open_cache(make_cfg('', vocab_path, cache_dir=str(cache_dir)))
  held = grain_input.MixtureSource(manifest, root, 'mono', seed=3)  # small tasks: all in memory
  monkeypatch.setattr(grain_input, 'MEMORY_BYTES', 0)
  on_disk = grain_input.MixtureSource(manifest, root, 'mono', seed=3)
  for start in (0, 5000):  # batched reads (> 64 records of a file) and one by one
    for count in (2000, 9):
      positions = range(start, start + count)
      assert on_disk.__getitems__(positions) == held.__getitems__(positions)
