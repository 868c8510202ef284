"""Sharding rule sets, and one AMBER step agreeing across mesh layouts on 8 CPU
devices (run in a subprocess: the device count is fixed when JAX starts)."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import flax.linen as nn
import pytest
from jax.sharding import PartitionSpec as P

import xla_env
from amber_jax.parallel import partitioning


# Mesh construction is tested in test_mesh.py.


@pytest.mark.parametrize('rules, logical, spec', [
    ('fsdp_tensor', ('vocab', 'embed'), P('tensor', 'fsdp')),
    ('fsdp_tensor', ('embed', 'mlp'), P('fsdp', 'tensor')),
    ('fsdp_tensor', ('act_batch', 'act_length', 'act_heads', 'act_kv'),
     P(('data', 'fsdp'), None, 'tensor', None)),
    ('fsdp', ('vocab', 'embed'), P(None, 'fsdp')),
    ('fsdp', ('embed', 'mlp'), P('fsdp', None)),
    ('fsdp', ('act_batch', 'act_length', 'act_mlp'), P(('data', 'fsdp'), None, None)),
    ('data_parallel', ('vocab', 'embed'), P(None, None)),
    ('data_parallel', ('act_batch', 'act_length', 'act_vocab'), P(('data', 'fsdp'), None, None)),
])
def test_rule_sets_give_the_expected_partition_specs(rules, logical, spec):
  assert nn.logical_to_mesh_axes(logical, partitioning.rules_for(rules)) == spec


def test_every_rule_set_names_the_same_logical_axes():
  names = {k: [name for name, _ in v] for k, v in partitioning.RULE_SETS.items()}
  assert all(n == names['fsdp_tensor'] for n in names.values()), names


def test_default_rules_are_the_config_default_and_old_configs_get_them():
  from configs import default  # pylint: disable=import-outside-toplevel
  assert default.get_config().mesh.rules == partitioning.DEFAULT_RULES == 'fsdp_tensor'
  assert partitioning.config_rules({'data': -1}) == partitioning.RULE_SETS['fsdp_tensor']


def test_unknown_rule_set_lists_the_names():
  with pytest.raises(ValueError, match="'tp'.*allowed: \\['data_parallel', 'fsdp', 'fsdp_tensor'\\]"):
    partitioning.rules_for('tp')


SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    import synthetic, test_train
    from amber_jax.parallel import mesh as mesh_lib
    from amber_jax.training import loop

    cfg = test_train.small_config({workdir!r})
    with cfg.unlocked():
      cfg.data.update(mono_batch_size=8, parallel_batch_size=8)
    batch = synthetic.random_batch(np.random.default_rng(0), vocab=64, mono_rows=8, pairs=8)
    results = {{}}
    layouts = {{
        'single': (dict(data=1, fsdp=1, tensor=1), jax.devices()[:1], False),
        'data8': (dict(data=8, fsdp=1, tensor=1), None, False),
        'fsdp8': (dict(data=1, fsdp=8, tensor=1), None, False),
        'd2f2t2': (dict(data=2, fsdp=2, tensor=2), None, False),
        'd2f2t2_scan': (dict(data=2, fsdp=2, tensor=2), None, True),  # model.scan_layers
    }}
    params = None
    for name, (shape, devices, scan) in layouts.items():
      with cfg.unlocked():
        cfg.model.scan_layers = scan
      s, params, metrics, grads = test_train.mesh_loss_and_grads(
          cfg, mesh_lib.build(shape, devices=devices), batch, params)
      results[name] = dict(metrics=metrics, grads=grads,
                           embedding_shard=list(s.state_shardings['params']['embeddings']
                                                ['word_embeddings'].shard_shape((64, 32))))
    print('RESULT' + json.dumps(results))
""")


@pytest.fixture(scope='module')
def layouts(tmp_path_factory):
  tests = str(pathlib.Path(__file__).parent)
  code = SCRIPT.format(tests=tests, workdir=str(tmp_path_factory.mktemp('mesh')))
  env = dict(os.environ, XLA_FLAGS=xla_env.with_cpu_devices(8),
             JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  line = [l for l in out.stdout.splitlines() if l.startswith('RESULT')][0]
  return json.loads(line[len('RESULT'):])


@pytest.mark.slow
def test_loss_and_gradients_agree_across_meshes(layouts):
  import numpy as np
  ref = layouts['single']
  assert set(ref['metrics']) >= {'mlm_loss', 'tlm_loss', 'sa_loss', 'wa_loss'}
  for name in ('data8', 'fsdp8', 'd2f2t2', 'd2f2t2_scan'):
    for k, v in ref['metrics'].items():
      np.testing.assert_allclose(layouts[name]['metrics'][k], v, rtol=1e-5, atol=1e-6,
                                 err_msg=f'{name}: {k}')
    np.testing.assert_allclose(layouts[name]['grads'], ref['grads'], rtol=1e-4, atol=1e-5,
                               err_msg=name)
  # data parallel replicates parameters; FSDP splits the embedding axis 8 ways; tensor splits vocab
  assert layouts['data8']['embedding_shard'] == [64, 32]
  assert layouts['fsdp8']['embedding_shard'] == [64, 4]
  assert layouts['d2f2t2']['embedding_shard'] == [32, 16]


RESTORE_SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    import test_train
    from amber_jax.training import checkpoint
    from amber_jax.parallel import mesh as mesh_lib
    from amber_jax.training import loop
    from amber_jax.training import train_state

    cfg = test_train.small_config({workdir!r}, steps=2)
    with cfg.unlocked():
      cfg.data.update(mono_batch_size=8, parallel_batch_size=8)
      cfg.train.checkpoint_every = 2
    saved, _ = loop.train(cfg, batches=test_train.stream_of(8), print_fn=lambda *_: None,
                           mesh=mesh_lib.build(dict(data=8, fsdp=1, tensor=1)))
    target = train_state.setup(cfg, mesh_lib.build(dict(data=1, fsdp=4, tensor=2)))
    mgr = checkpoint.manager({workdir!r}, keep=3)
    restored, _ = checkpoint.restore(mgr, 2, target.abstract_state)
    emb = restored['params']['embeddings']['word_embeddings']
    # 64 ids padded to 128 rows (model.vocab_multiple): tensor splits them, fsdp the embedding.
    assert emb.shape == (128, 32) and emb.sharding.shard_shape(emb.shape) == (64, 8), emb.sharding
    for a, b in zip(jax.tree_util.tree_leaves(saved), jax.tree_util.tree_leaves(restored)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    print('RESTORED-IDENTICAL')
""")


@pytest.mark.slow
def test_checkpoint_saved_on_data8_restores_on_fsdp4_tensor2_bit_exactly(tmp_path):
  code = RESTORE_SCRIPT.format(tests=str(pathlib.Path(__file__).parent), workdir=str(tmp_path))
  env = dict(os.environ, XLA_FLAGS=xla_env.with_cpu_devices(8),
             JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  assert 'RESTORED-IDENTICAL' in out.stdout
