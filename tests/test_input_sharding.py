"""Two real processes on localhost read disjoint shares of a cache in the (emulated) bucket into one
global batch."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import pytest

import xla_env
from amber_jax.data import grain_input, preprocess
from test_data import corpus, make_cfg, vocab_path  # pylint: disable=unused-import

WORKER = textwrap.dedent("""
    import json, sys
    sys.modules['tensorflow'] = None             # a cache needs no TensorFlow on the hosts
    from amber_jax.parallel import cluster
    cluster.initialize()                     # AMBER_* from the environment
    import jax, ml_collections, numpy as np
    from jax.experimental import multihost_utils
    from amber_jax.parallel import mesh as mesh_lib
    from amber_jax.parallel import partitioning
    from amber_jax.training import loop
    from amber_jax.data import inputs

    config = ml_collections.ConfigDict({config!r})
    pid = jax.process_index()
    mesh = mesh_lib.build(dict(data=-1, fsdp=1, tensor=1))
    out = []
    for step, local in zip(range(3), inputs.real_batches(config, start_step=0)):
      glob = partitioning.to_global(local, mesh)  # one jax.Array over both processes
      full = {{k: multihost_utils.process_allgather(v, tiled=True) for k, v in glob.items()}}
      out.append({{'local': {{k: v.tolist() for k, v in local.items()}},
                   'global': {{k: np.asarray(v).tolist() for k, v in full.items()}}}})
    print('RESULT' + json.dumps(out))
""")


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def runs(gcs, corpus, vocab_path, tmp_path_factory):
  folder = tmp_path_factory.mktemp('sharding')
  cfg = make_cfg(corpus, vocab_path, cache_dir='gs://bkt/sharding/tokens')
  preprocess.write_cache(cfg, cfg.cache_dir, print_fn=lambda *_: None)
  config = {'seed': 0, 'data': cfg.to_dict(), 'model': {'vocab_size': 1000}}
  code = WORKER.format(config=config)
  port = _free_port()
  procs, logs = [], []
  for pid in range(2):
    env = dict(os.environ, **gcs.env, XLA_FLAGS=xla_env.with_cpu_devices(1),
               AMBER_JAX_CACHE=str(folder / f'host{pid}'),  # each host mirrors the bucket
               JAX_PLATFORMS='cpu', AMBER_COORDINATOR=f'127.0.0.1:{port}',
               AMBER_NUM_PROCESSES='2', AMBER_PROCESS_ID=str(pid),
               PYTHONPATH=str(pathlib.Path(__file__).parent.parent))
    logs.append(open(folder / f'process{pid}.log', 'w+', encoding='utf-8'))
    procs.append(subprocess.Popen([sys.executable, '-c', code], env=env, text=True,
                                  stdout=logs[-1], stderr=subprocess.STDOUT))
  results = []
  try:
    for p, log in zip(procs, logs):
      p.wait(timeout=240)
      log.seek(0)
      text = log.read()
      assert p.returncode == 0, text[-4000:]
      results.append(json.loads([l for l in text.splitlines() if l.startswith('RESULT')][0][6:]))
  finally:
    for p, log in zip(procs, logs):
      if p.poll() is None:
        p.kill()
      log.close()
  return cfg, results


def _pairs(batch):
  return [(tuple(s), tuple(t)) for s, t in zip(batch['src_ids'], batch['tgt_ids'])]


def test_the_global_batch_is_the_union_of_both_hosts_rows(runs):
  cfg, (first, second) = runs
  for a, b in zip(first, second):
    assert a['global'] == b['global']  # every process sees the same global array
    for key, rows in a['global'].items():
      assert rows == a['local'][key] + b['local'][key]
    assert len(a['global']['src_ids']) == cfg.parallel_batch_size
    assert len(a['local']['mono_ids']) == cfg.mono_batch_size // 2


def test_each_host_reads_only_its_share_and_no_pair_is_read_twice(runs):
  from amber_jax.data import records  # pylint: disable=import-outside-toplevel
  from amber_jax.data.batches import frame_texts  # pylint: disable=import-outside-toplevel
  cfg, results = runs
  manifest, root = grain_input.open_cache(cfg)
  share = []  # the framed pairs at each host's first positions (position p of host i is
  for pid in range(2):  # p * 2 + i of the mixed stream)
    source = grain_input.MixtureSource(manifest, root, 'parallel', seed=0, shard_index=pid,
                                       num_shards=2)
    pairs = records.decode_many(source.__getitems__(range(40)), 2)
    src, tgt = (frame_texts([p[i] for p in pairs], cfg.sentence_length)[0] for i in (0, 1))
    share.append([(tuple(s), tuple(t)) for s, t in zip(src.tolist(), tgt.tolist())])
  for step in range(3):
    hosts = [_pairs(results[p][step]['local']) for p in range(2)]
    for p, pairs in enumerate(hosts):
      assert set(pairs) <= set(share[p])  # read from its own share
    assert not set(hosts[0]) & set(hosts[1])  # no pair on both hosts
