"""The one mesh builder (amber_jax.parallel.mesh): axis sizes, slices over DCN, GPU nodes (fake
devices), and a two-slice run on 8 CPU devices whose losses equal one device's."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import xla_env
from amber_jax.parallel import mesh as mesh_lib

TESTS = pathlib.Path(__file__).parent


# --- axis sizes --------------------------------------------------------------------------------

def test_axis_sizes_fill_minus_one():
  assert mesh_lib.axis_sizes({'data': -1, 'fsdp': 2, 'tensor': 1}, 8) == {
      'data': 4, 'fsdp': 2, 'tensor': 1}


def test_default_data_filler_yields_to_another_minus_one():
  # configs/default.py has data=-1, so `--config.mesh.fsdp=-1` alone must mean pure FSDP.
  assert mesh_lib.axis_sizes({'data': -1, 'fsdp': -1, 'tensor': 1}, 8) == {
      'data': 1, 'fsdp': 8, 'tensor': 1}
  assert mesh_lib.axis_sizes({'data': -1, 'fsdp': 2, 'tensor': -1}, 8) == {
      'data': 1, 'fsdp': 2, 'tensor': 4}


@pytest.mark.parametrize('shape, message', [
    ({'data': 3, 'fsdp': 1, 'tensor': 1}, 'covers 3 devices'),
    ({'data': 1, 'fsdp': -1, 'tensor': -1}, 'At most one'),
    ({'data': -1, 'fsdp': 3}, 'do not divide'),
    ({'data': -1, 'pipeline': 2}, 'Unknown mesh axes'),
])
def test_axis_sizes_errors_name_the_problem(shape, message):
  with pytest.raises(ValueError, match=message):
    mesh_lib.axis_sizes(shape, 8)


# --- slices: ICI inside, DCN across ------------------------------------------------------------

@pytest.mark.parametrize('shape, ici, dcn', [
    ({'data': -1, 'fsdp': 16}, {'data': 1, 'fsdp': 16, 'tensor': 1},
     {'data': 4, 'fsdp': 1, 'tensor': 1}),
    ({'data': 4, 'fsdp': -1, 'tensor': 4}, {'data': 1, 'fsdp': 4, 'tensor': 4},
     {'data': 4, 'fsdp': 1, 'tensor': 1}),
    ({'data': 2, 'fsdp': -1, 'tensor': 4}, {'data': 2, 'fsdp': 2, 'tensor': 4},
     {'data': 1, 'fsdp': 4, 'tensor': 1}),
])
def test_slice_shapes_put_slices_on_data_then_fsdp(shape, ici, dcn):
  assert mesh_lib.slice_shapes(mesh_lib.axis_sizes(shape, 64), 4) == (ici, dcn)


def test_slice_shapes_follow_an_explicit_dcn_axis():
  sizes = {'data': 4, 'fsdp': 4, 'tensor': 1}
  assert mesh_lib.slice_shapes(sizes, 2, 'fsdp') == (
      {'data': 4, 'fsdp': 2, 'tensor': 1}, {'data': 1, 'fsdp': 2, 'tensor': 1})
  assert mesh_lib.slice_shapes(sizes, 1) == (sizes, {'data': 1, 'fsdp': 1, 'tensor': 1})


@pytest.mark.parametrize('sizes, slices, axis, message', [
    ({'data': 1, 'fsdp': 2, 'tensor': 8}, 4, 'auto', 'neither data nor fsdp'),
    ({'data': 2, 'fsdp': 8, 'tensor': 1}, 4, 'data', 'data is not a multiple of 4'),
    ({'data': 2, 'fsdp': 8, 'tensor': 1}, 2, 'tensor', "allowed: \\['auto', 'data', 'fsdp'\\]"),
    ({'data': 2, 'fsdp': 8, 'tensor': 1}, 0, 'auto', 'positive integer; got 0'),
])
def test_slice_shapes_errors_name_the_problem(sizes, slices, axis, message):
  with pytest.raises(ValueError, match=message):
    mesh_lib.slice_shapes(sizes, slices, axis)


@dataclasses.dataclass(frozen=True)
class FakeDevice:
  id: int
  process_index: int
  platform: str = 'gpu'
  device_kind: str = 'fake'
  slice_index: int | None = None


def gpus(nodes, per_node):
  # Interleave the ids so that a layout by id alone would mix nodes.
  return [FakeDevice(id=g * nodes + n, process_index=n) for n in range(nodes)
          for g in range(per_node)]


def cpus(n):
  return [FakeDevice(id=i, process_index=0, platform='cpu') for i in range(n)]


def ids(array):
  return np.vectorize(lambda d: d.id, otypes=[int])(array).tolist()


def test_hybrid_mesh_multiplies_ici_and_dcn_sizes():
  arr = mesh_lib.hybrid_device_array({'fsdp': 8}, {'data': 2},
                                     mesh_lib.group_devices(gpus(2, 8), 2))
  assert arr.shape == (2, 8, 1)
  assert [{d.process_index for d in arr[i].flat} for i in range(2)] == [{0}, {1}]


def test_hybrid_mesh_keeps_tensor_inside_a_granule():
  arr = mesh_lib.hybrid_device_array({'fsdp': 2, 'tensor': 4}, {'fsdp': 2},
                                     mesh_lib.group_devices(gpus(2, 8), 2))
  assert arr.shape == (1, 4, 4)
  for group in arr.reshape(-1, 4):
    assert len({d.process_index for d in group}) == 1


@pytest.mark.parametrize('ici, dcn, message', [
    ({'fsdp': 8}, {'tensor': 2}, 'tensor parallelism across slices'),
    ({'fsdp': 8}, {'data': 3}, 'covers 24 devices but there are 16'),
    ({'fsdp': 4}, {'data': 4}, 'wants 4 groups of 4 devices'),
    ({'pipeline': 8}, {'data': 2}, 'unknown mesh axes'),
    ({'fsdp': 0}, {'data': 2}, 'positive'),
])
def test_hybrid_mesh_errors_name_the_problem(ici, dcn, message):
  with pytest.raises(ValueError, match=message):
    mesh_lib.hybrid_device_array(ici, dcn, mesh_lib.group_devices(gpus(2, 8), 2))


def test_single_slice_keeps_the_cpu_device_order():
  arr = mesh_lib.device_array({'data': 2, 'fsdp': 2, 'tensor': 2}, cpus(8))
  assert ids(arr) == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]


def test_two_slices_on_data_take_the_outer_half_each():
  devices = cpus(8)
  arr = mesh_lib.device_array({'data': -1, 'fsdp': 2, 'tensor': 1, 'num_slices': 2}, devices,
                              slices=mesh_lib.split_evenly(devices, 2))
  assert arr.shape == (4, 2, 1)
  assert ids(arr[..., 0]) == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_two_slices_on_fsdp_interleave_along_fsdp():
  devices = cpus(8)
  arr = mesh_lib.device_array({'data': 2, 'fsdp': 4, 'dcn_axis': 'fsdp'}, devices,
                              slices=mesh_lib.split_evenly(devices, 2))
  # Slice 0 (devices 0-3) holds fsdp 0-1 of both data rows, slice 1 holds fsdp 2-3.
  assert ids(arr[..., 0]) == [[0, 1, 4, 5], [2, 3, 6, 7]]


def test_explicit_slices_must_cover_the_devices():
  devices = cpus(8)
  with pytest.raises(ValueError, match='split the 8 devices exactly'):
    mesh_lib.device_array({'num_slices': 2}, devices, slices=[devices[:4], devices[:4]])
  with pytest.raises(ValueError, match='Cannot split 8 devices into 3'):
    mesh_lib.split_evenly(cpus(8), 3)


def test_tpu_devices_are_grouped_by_slice_and_a_missing_num_slices_is_named():
  tpus = [FakeDevice(id=i, process_index=i // 2, platform='tpu', slice_index=1 - i // 4)
          for i in range(8)]
  groups = mesh_lib.group_devices(tpus, 2)
  assert [[d.id for d in g] for g in groups] == [[4, 5, 6, 7], [0, 1, 2, 3]]
  with pytest.raises(ValueError, match='num_slices=2'):
    mesh_lib.group_devices(tpus, 1)


def test_unknown_mesh_fields_are_named():
  with pytest.raises(ValueError, match="Unknown config.mesh fields \\['slices'\\]"):
    mesh_lib.device_array({'slices': 2}, cpus(8))


# --- GPU nodes: tensor inside a node, data/fsdp across ----------------------------------------

@pytest.mark.parametrize('tensor, fsdp', [(8, 1), (4, 2), (2, -1), (1, 4)])
def test_gpu_mesh_keeps_each_tensor_group_inside_a_node(tensor, fsdp):
  arr = mesh_lib.device_array({'data': -1, 'fsdp': fsdp, 'tensor': tensor, 'num_slices': 4},
                              gpus(4, 8))
  assert arr.shape[2] == tensor and arr.size == 32
  assert sorted(d.id for d in arr.flat) == list(range(32))
  for group in arr.reshape(-1, tensor):
    assert len({d.process_index for d in group}) == 1


def test_gpu_mesh_puts_data_across_nodes():
  arr = mesh_lib.device_array({'tensor': 8, 'num_slices': 4}, gpus(4, 8))
  assert arr.shape == (4, 1, 8)
  assert [arr[i, 0, 0].process_index for i in range(4)] == [0, 1, 2, 3]
  # Inside a node, GPUs in id order (NVLink neighbours).
  assert [d.id for d in arr[0, 0]] == sorted(d.id for d in arr[0, 0])


@pytest.mark.parametrize('cfg, devices, message', [
    ({'tensor': 3, 'num_slices': 2}, gpus(2, 8), 'do not divide'),
    ({'tensor': 8, 'num_slices': 3}, gpus(2, 8), 'wants 3 groups'),
    ({'tensor': 4, 'num_slices': 4}, gpus(2, 8), 'one process per host or GPU node'),
    ({'data': 2, 'tensor': 4, 'num_slices': 4}, gpus(4, 2), 'tensor stays inside a slice'),
])
def test_gpu_mesh_errors_name_the_problem(cfg, devices, message):
  with pytest.raises(ValueError, match=message):
    mesh_lib.device_array(cfg, devices)


def test_build_on_one_cpu_device_makes_a_real_mesh():
  import jax  # pylint: disable=import-outside-toplevel
  mesh = mesh_lib.build({}, devices=jax.devices()[:1])
  assert dict(mesh.shape) == {'data': 1, 'fsdp': 1, 'tensor': 1}
  assert mesh.axis_names == ('data', 'fsdp', 'tensor')


# --- a two-slice run on 8 CPU devices ----------------------------------------------------------

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    sys.path.insert(0, {tests!r})
    import test_train
    from amber_jax.parallel import mesh as mesh_lib
    from amber_jax.training import loop, train_state

    devices = jax.devices()
    out = {{}}
    runs = {{
        'single': mesh_lib.build(dict(data=1, fsdp=1, tensor=1), devices=devices[:1]),
        'two_slices': mesh_lib.build(dict(data=-1, fsdp=2, tensor=1, num_slices=2),
                                     slices=mesh_lib.split_evenly(devices, 2)),
    }}
    for name, mesh in runs.items():
      cfg = test_train.small_config({workdir!r} + '/' + name, steps=4)
      with cfg.unlocked():
        cfg.data.update(mono_batch_size=8, parallel_batch_size=8)
      _, history = loop.train(cfg, batches=test_train.stream_of(8), print_fn=lambda *_: None,
                              mesh=mesh)
      out[name] = dict(losses=[h['loss'] for h in history], shape=dict(mesh.shape),
                       ids=[[d.id for d in row.flat] for row in mesh.devices])
    # The chosen rule set lays out the parameters: embeddings [vocab 64, embed 32].
    cfg = test_train.small_config({workdir!r} + '/rules')
    tensor_mesh = mesh_lib.build(dict(data=1, fsdp=4, tensor=2))
    out['shards'] = {{}}
    for rules in ('fsdp_tensor', 'fsdp', 'data_parallel'):
      with cfg.unlocked():
        cfg.mesh.rules = rules
      s = train_state.setup(cfg, tensor_mesh)
      emb = s.state_shardings['params']['embeddings']['word_embeddings']
      out['shards'][rules] = list(emb.shard_shape((64, 32)))
    print('RESULT' + json.dumps(out))
""")


@pytest.fixture(scope='module')
def two_slice_run(tmp_path_factory):
  code = SCRIPT.format(tests=str(TESTS), workdir=str(tmp_path_factory.mktemp('slices')))
  env = dict(os.environ, XLA_FLAGS=xla_env.with_cpu_devices(8), JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  line = [l for l in out.stdout.splitlines() if l.startswith('RESULT')][0]
  return json.loads(line[len('RESULT'):])


@pytest.mark.slow
def test_two_slice_training_matches_one_device(two_slice_run):
  single, sliced = two_slice_run['single'], two_slice_run['two_slices']
  assert sliced['shape'] == {'data': 4, 'fsdp': 2, 'tensor': 1}
  # data rows 0-1 on the first slice (devices 0-3), rows 2-3 on the second.
  assert sliced['ids'] == [[0, 1], [2, 3], [4, 5], [6, 7]]
  assert len(single['losses']) == len(sliced['losses']) == 3   # steps 1, 2 and 4
  np.testing.assert_allclose(sliced['losses'], single['losses'], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_setup_lays_parameters_out_by_the_chosen_rule_set(two_slice_run):
  # fsdp_tensor: vocab over tensor (2), embed over fsdp (4); fsdp: embed only; data_parallel:
  # replicated.
  assert two_slice_run['shards'] == {'fsdp_tensor': [32, 8], 'fsdp': [64, 8],
                                     'data_parallel': [64, 32]}
