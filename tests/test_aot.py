"""`amber-jax compile`: the train step compiled for a mesh of fake CPU devices, no data; FSDP
holds an eighth of the replicated state per device."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

import xla_env
from amber_jax.training import aot

# A one-layer encoder wide enough that the few unsharded vectors (biases over 'mlp' and 'heads',
# the vocab bias) are a negligible part of the state, as in the base model.
SMALL = ['--config=configs/tiny.py', '--config.model.num_layers=1',
         '--config.model.hidden_size=256', '--config.model.num_heads=4',
         '--config.model.intermediate_size=512', '--config.model.vocab_size=512',
         '--config.model.max_position_embeddings=64', '--config.data.mono_batch_size=8',
         '--config.data.parallel_batch_size=8', '--config.data.mono_length=32',
         '--config.data.sentence_length=16']


@pytest.mark.parametrize('spec, parsed', [
    ('cpu:8', ('cpu', 8)), ('cpu:1', ('cpu', 1)), ('tpu:v5e:2x2', ('tpu', 'v5e:2x2')),
    # Cloud TPU accelerator types: v4/v5p count TensorCores (2 a chip), v5e/v6e count chips.
    ('tpu:v5p-8', ('tpu', 'v5p:2x2x1')), ('tpu:v4-32', ('tpu', 'v4:2x2x4')),
    ('tpu:v5litepod-16', ('tpu', 'v5e:4x4')), ('tpu:v5e-8', ('tpu', 'v5e:2x4')),
    ('tpu:v6e-256', ('tpu', 'v6e:16x16'))])
def test_parse_topology(spec, parsed):
  assert aot.parse_topology(spec) == parsed


@pytest.mark.parametrize('spec', ['cpu:0', 'cpu', 'cpu:x', 'gpu:8', 'tpu:', '8'])
def test_parse_topology_rejects_other_forms_naming_the_allowed_ones(spec):
  with pytest.raises(ValueError, match='expected "cpu:N"'):
    aot.parse_topology(spec)


def test_an_accelerator_type_of_no_slice_size_names_the_sizes():
  with pytest.raises(ValueError, match='no v5p slice has 6 TensorCores; sizes are v5p-8, v5p-16'):
    aot.parse_topology('tpu:v5p-6')


def compile_cli(*args):
  # The command chooses its devices itself: only the suite's fast-compile flag goes along.
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  env['XLA_FLAGS'] = xla_env.FAST_COMPILE
  return subprocess.Popen([sys.executable, '-m', 'amber_jax.cli', 'compile', *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def report(proc):
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def data8_fsdp8():
  # All compile at once (XLA compiles on one core each). FSDP is asked for as launch/README.md
  # does, `--config.mesh.fsdp=-1` alone (the default data=-1 yields); the third is two slices.
  procs = [compile_cli(*SMALL, '--topology=cpu:8', '--json', *mesh)
           for mesh in (['--config.mesh.data=8', '--config.mesh.fsdp=1'],
                        ['--config.mesh.fsdp=-1'],
                        ['--config.mesh.fsdp=4', '--config.mesh.num_slices=2'])]
  return [report(p) for p in procs]


@pytest.mark.slow
def test_compile_reports_the_mesh_memory_and_flops(data8_fsdp8):
  data8, fsdp8, _ = data8_fsdp8
  assert data8['mesh'] == {'data': 8, 'fsdp': 1, 'tensor': 1}
  assert fsdp8['mesh'] == {'data': 1, 'fsdp': 8, 'tensor': 1}
  for r in (data8, fsdp8):
    assert r['platform'] == 'cpu' and r['topology'] == 'cpu:8'
    assert r['flops'] > 0 and r['temp_bytes'] > 0 and r['argument_bytes'] >= r['state_bytes']
  # Data parallelism replicates parameters and Adam's two moments: each device holds all of it.
  assert data8['state_bytes'] == data8['global_state_bytes']


@pytest.mark.slow
def test_compile_splits_cpu_devices_into_the_configured_slices(data8_fsdp8):
  two_slices = data8_fsdp8[2]
  assert two_slices['mesh'] == {'data': 2, 'fsdp': 4, 'tensor': 1} and two_slices['flops'] > 0


@pytest.mark.slow
def test_fsdp_holds_an_eighth_of_the_replicated_state_per_device(data8_fsdp8):
  data8, fsdp8, _ = data8_fsdp8
  assert fsdp8['params_bytes'] <= data8['params_bytes'] / 8 * 1.05
  assert fsdp8['opt_state_bytes'] <= data8['opt_state_bytes'] / 8 * 1.05
  # XLA agrees: the compiled step's inputs shrink the same way (the batch is split in both).
  assert fsdp8['argument_bytes'] <= data8['argument_bytes'] / 8 * 1.05


@pytest.mark.slow
def test_tpu_topology_compiles_with_libtpu_or_says_how_to_get_it():
  """Without libtpu (this project's CI) the command must explain itself; with it, compile."""
  if importlib.util.find_spec('libtpu') is None:
    proc = compile_cli('--config=configs/tiny.py', '--topology=tpu:v5e:2x2')
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert 'needs libtpu' in err and 'jax[tpu]' in err and '--topology=cpu:N' in err
  else:
    proc = compile_cli(*SMALL, '--topology=tpu:v5e:2x2', '--json', '--config.mesh.data=1',
                       '--config.mesh.fsdp=4')
    r = report(proc)
    assert r['platform'] == 'tpu' and r['mesh']['fsdp'] == 4 and r['flops'] > 0


def test_compile_rejects_an_unknown_topology():
  proc = compile_cli('--config=configs/tiny.py', '--topology=gpu:8')
  _, err = proc.communicate(timeout=120)
  assert proc.returncode != 0 and 'Unknown topology' in err
