"""Multi-host start-up: the cluster chosen from the environment, and a real two-process run on
localhost that trains, checkpoints and resumes (meshes across hosts: test_mesh.py)."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import xla_env
from amber_jax.parallel import cluster

TESTS = pathlib.Path(__file__).parent


# --- expand_nodelist ------------------------------------------------------------------------

@pytest.mark.parametrize('nodelist, hosts', [
    ('node01', ['node01']),
    ('node[01-03,07]', ['node01', 'node02', 'node03', 'node07']),
    ('a1,b[8-10]', ['a1', 'b8', 'b9', 'b10']),
    ('gpu[08-10]', ['gpu08', 'gpu09', 'gpu10']),
    ('rack[1-2]-n[1,3]', ['rack1-n1', 'rack1-n3', 'rack2-n1', 'rack2-n3']),
    ('x-[1-2],y', ['x-1', 'x-2', 'y']),
])
def test_expand_nodelist_matches_scontrol(nodelist, hosts):
  assert cluster.expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize('nodelist', ['node[01-03', 'node[3-1]', 'node[a-b]', ''])
def test_expand_nodelist_rejects_malformed_lists(nodelist):
  with pytest.raises(ValueError, match='node list'):
    cluster.expand_nodelist(nodelist)


# --- resolve_cluster ------------------------------------------------------------------------

def test_no_cluster_environment_means_single_process():
  assert cluster.resolve_cluster({'HOME': '/root'}) is None


def test_amber_variables_give_coordinator_count_and_id():
  env = {'AMBER_COORDINATOR': '10.0.0.2:1234', 'AMBER_NUM_PROCESSES': '4', 'AMBER_PROCESS_ID': '3'}
  assert cluster.resolve_cluster(env) == dict(
      source='amber', coordinator='10.0.0.2:1234', num_processes=4, process_id=3)


def test_amber_variables_win_over_slurm():
  env = {'AMBER_COORDINATOR': 'h:1', 'AMBER_NUM_PROCESSES': '2', 'AMBER_PROCESS_ID': '0',
         'SLURM_JOB_NODELIST': 'n[1-4]', 'SLURM_NTASKS': '4', 'SLURM_PROCID': '2'}
  assert cluster.resolve_cluster(env)['source'] == 'amber'


@pytest.mark.parametrize('env, message', [
    ({'AMBER_COORDINATOR': 'h:1', 'AMBER_NUM_PROCESSES': '2'}, 'AMBER_PROCESS_ID'),
    ({'AMBER_COORDINATOR': 'h:1', 'AMBER_NUM_PROCESSES': 'two', 'AMBER_PROCESS_ID': '0'},
     'must be an integer'),
    ({'AMBER_COORDINATOR': 'h:1', 'AMBER_NUM_PROCESSES': '2', 'AMBER_PROCESS_ID': '2'},
     r'not in \[0, 2\)'),
    ({'AMBER_COORDINATOR': 'h', 'AMBER_NUM_PROCESSES': '2', 'AMBER_PROCESS_ID': '0'},
     'host:port'),
])
def test_incomplete_or_bad_amber_variables_say_what_to_set(env, message):
  with pytest.raises(ValueError, match=message):
    cluster.resolve_cluster(env)


def test_slurm_coordinator_is_first_node_with_a_port_from_the_job_id():
  env = {'SLURM_JOB_NODELIST': 'gpu[07-08,11]', 'SLURM_NTASKS': '3', 'SLURM_PROCID': '1',
         'SLURM_JOB_ID': '4097'}
  assert cluster.resolve_cluster(env) == dict(
      source='slurm', coordinator=f'gpu07:{65535 - 4096 + 1 + 1}', num_processes=3, process_id=1)


def test_slurm_port_can_be_set():
  env = {'SLURM_JOB_NODELIST': 'n1,n2', 'SLURM_NTASKS': '2', 'SLURM_PROCID': '0',
         'AMBER_COORDINATOR_PORT': '5555'}
  assert cluster.resolve_cluster(env)['coordinator'] == 'n1:5555'


def test_slurm_step_nodelist_is_preferred_over_the_job_one():
  env = {'SLURM_JOB_NODELIST': 'n[1-8]', 'SLURM_STEP_NODELIST': 'n[5-6]', 'SLURM_NTASKS': '2',
         'SLURM_PROCID': '0', 'AMBER_COORDINATOR_PORT': '1'}
  assert cluster.resolve_cluster(env)['coordinator'] == 'n5:1'


def test_slurm_task_per_gpu_takes_the_gpu_of_its_local_rank():
  env = {'SLURM_JOB_NODELIST': 'n[1-2]', 'SLURM_NTASKS': '16', 'SLURM_PROCID': '11',
         'SLURM_NTASKS_PER_NODE': '8', 'SLURM_LOCALID': '3', 'AMBER_COORDINATOR_PORT': '1'}
  assert cluster.resolve_cluster(env) == dict(
      source='slurm', coordinator='n1:1', num_processes=16, process_id=11, local_device_ids=[3])


def test_single_task_slurm_job_is_a_single_process():
  env = {'SLURM_JOB_NODELIST': 'n1', 'SLURM_NTASKS': '1', 'SLURM_PROCID': '0'}
  assert cluster.resolve_cluster(env) is None


def test_slurm_uses_the_given_hostname_expander():
  env = {'SLURM_JOB_NODELIST': 'whatever', 'SLURM_NTASKS': '2', 'SLURM_PROCID': '0',
         'AMBER_COORDINATOR_PORT': '9'}
  got = cluster.resolve_cluster(env, hostnames=lambda s: ['from-scontrol', 'other'])
  assert got['coordinator'] == 'from-scontrol:9'


@pytest.mark.parametrize('env, chips', [({}, 4), ({'TPU_WORKER_HOSTNAMES': 'a,b'}, 0),
                                        ({'MEGASCALE_COORDINATOR_ADDRESS': 'a'}, 0)])
def test_tpu_host_leaves_discovery_to_jax(env, chips):
  assert cluster.resolve_cluster(env, tpu_chips=chips) == {'source': 'tpu'}


def test_count_tpu_chips_reads_google_tpu_pci_ids(tmp_path):
  for name, vendor, device in (('a', '0x1ae0', '0x0063'), ('b', '0x1ae0', '0x0063'),
                               ('nic', '0x1ae0', '0x0042'), ('gpu', '0x10de', '0x2330')):
    d = tmp_path / 'bus/pci/devices' / name
    d.mkdir(parents=True)
    (d / 'vendor').write_text(vendor + '\n')
    (d / 'device').write_text(device + '\n')
  assert cluster.count_tpu_chips(str(tmp_path)) == 2


def test_initialize_is_a_no_op_for_a_single_process(monkeypatch):
  for k in list(os.environ):
    if k.startswith(('AMBER_', 'SLURM_', 'TPU_', 'MEGASCALE_')):
      monkeypatch.delenv(k)
  monkeypatch.setattr(cluster, 'count_tpu_chips', lambda: 0)
  assert cluster.initialize() is None


def test_initialize_wants_all_three_arguments():
  with pytest.raises(ValueError, match='together'):
    cluster.initialize(coordinator='h:1', num_processes=2)


# Meshes across hosts (fake devices) are tested in test_mesh.py.


# --- two real processes on localhost --------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    from amber_jax.parallel import cluster
    cluster = cluster.initialize()          # reads AMBER_* from the environment
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    # Runs with equal configs compile once (the second finds the first's executable on disk).
    jax.config.update('jax_compilation_cache_dir', {workdir!r} + '/xla_cache')
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
    import synthetic, test_train
    from amber_jax.training import loop

    pid, n = jax.process_index(), jax.process_count()
    assert cluster['source'] == 'amber' and n == 2 and len(jax.local_devices()) == 2, cluster
    glob = synthetic.batches(0, vocab=64, mono_rows=4, mono_length=16, pairs=4, sentence_length=12)

    def mine(start):                             # this process's rows of each global batch
      for batch in glob(start):
        yield {{k: v[pid * len(v) // n:(pid + 1) * len(v) // n] for k, v in batch.items()}}

    out = {{}}
    for name, steps in {runs}:
      cfg = test_train.small_config({workdir!r} + '/' + name, steps=steps)
      with cfg.unlocked():
        cfg.mesh.update(data=2, fsdp=2, tensor=1)
        cfg.model.num_layers = 1
      lines = []
      state, history = loop.train(cfg, batches=mine, print_fn=lines.append)
      # Every parameter, gathered onto every process by one compiled concatenation.
      flat = jax.jit(lambda t: jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(t)]),
                     out_shardings=NamedSharding(state['step'].sharding.mesh, P()))
      out[name] = dict(losses=[h['loss'] for h in history], lines=lines,
                       params=np.asarray(flat(state['params'])).tolist())
    print('RESULT' + json.dumps(out))
""")


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# Two CPU devices per process, with the suite's fast-compile flag (xla_env.py).
XLA_FLAGS = xla_env.with_cpu_devices(2)


def run_two_processes(workdir, runs, xla_flags=XLA_FLAGS):
  """Starts two processes of WORKER on localhost; returns each one's RESULT dict."""
  code = WORKER.format(tests=str(TESTS), workdir=str(workdir), runs=runs)
  port = _free_port()
  procs, logs = [], []
  for pid in range(2):
    env = dict(os.environ, XLA_FLAGS=xla_flags,
               JAX_PLATFORMS='cpu', AMBER_COORDINATOR=f'127.0.0.1:{port}',
               AMBER_NUM_PROCESSES='2', AMBER_PROCESS_ID=str(pid))
    # Files, not pipes: a process blocked on a full pipe would stall the other's collectives.
    logs.append(open(workdir / f'process{pid}-{port}.log', 'w+', encoding='utf-8'))
    procs.append(subprocess.Popen([sys.executable, '-c', code], env=env, text=True,
                                  stdout=logs[-1], stderr=subprocess.STDOUT))
  results = []
  try:
    for p, log in zip(procs, logs):
      p.wait(timeout=300)
      log.seek(0)
      text = log.read()
      assert p.returncode == 0, text[-4000:]
      results.append(json.loads([l for l in text.splitlines() if l.startswith('RESULT')][0][6:]))
  finally:
    for p, log in zip(procs, logs):
      if p.poll() is None:
        p.kill()
      log.close()
  return results


@pytest.fixture(scope='module')
def two_process_runs(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('multihost')
  first = run_two_processes(workdir, [('part', 2)])
  # A new invocation resumes 'part' at step 2, then runs 4 steps uninterrupted from scratch.
  second = run_two_processes(workdir, [('part', 4), ('full', 4)])
  return first, second


@pytest.mark.slow
def test_two_processes_report_identical_losses(two_process_runs):
  first, second = two_process_runs
  assert first[0]['part']['losses'] == first[1]['part']['losses']
  assert second[0]['full']['losses'] == second[1]['full']['losses']
  assert len(second[0]['full']['losses']) == 3   # steps 1, 2 and 4 (log_every=2)


@pytest.mark.slow
def test_two_processes_resume_to_the_uninterrupted_parameters(two_process_runs):
  first, second = two_process_runs
  assert any('Resumed from step 2' in line for line in second[0]['part']['lines'])
  assert first[0]['part']['losses'] == second[0]['full']['losses'][:2]
  assert second[0]['part']['losses'][-1] == second[0]['full']['losses'][-1]
  np.testing.assert_array_equal(np.asarray(second[0]['part']['params']),
                                np.asarray(second[0]['full']['params']))


# --- preemption of one host -----------------------------------------------------------------

PREEMPTED_WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from amber_jax.parallel import cluster
    cluster.initialize()
    import jax
    import synthetic, test_train
    from amber_jax import errors
    from amber_jax.training import loop

    pid, n = jax.process_index(), jax.process_count()
    glob = synthetic.batches(0, vocab=64, mono_rows=4, mono_length=16, pairs=4, sentence_length=12)

    def mine(start):
      for batch in glob(start):
        yield {{k: v[pid * len(v) // n:(pid + 1) * len(v) // n] for k, v in batch.items()}}

    cfg = test_train.small_config({workdir!r}, steps={steps})
    with cfg.unlocked():
      cfg.mesh.update(data=2, fsdp=2, tensor=1)
      cfg.model.num_layers = 1
      cfg.train.update(log_every=1, checkpoint_every=100_000)
    try:
      loop.train(cfg, batches=mine, print_fn=lambda m: print(m, flush=True))
    except errors.Preempted as e:
      print('PREEMPTED', e.step, flush=True)
      raise SystemExit(e.exit_code)
    print('FINISHED', flush=True)
""")


def _start_two(workdir, steps, tag):
  code = PREEMPTED_WORKER.format(tests=str(TESTS), workdir=str(workdir / 'run'), steps=steps)
  port = _free_port()
  procs, logs = [], []
  for pid in range(2):
    env = dict(os.environ, XLA_FLAGS=XLA_FLAGS, JAX_PLATFORMS='cpu',
               AMBER_COORDINATOR=f'127.0.0.1:{port}', AMBER_NUM_PROCESSES='2',
               AMBER_PROCESS_ID=str(pid))
    logs.append(workdir / f'{tag}-{pid}.log')
    procs.append(subprocess.Popen([sys.executable, '-c', code], env=env,
                                  stdout=open(logs[-1], 'w', encoding='utf-8'),
                                  stderr=subprocess.STDOUT))
  return procs, logs


@pytest.mark.slow
def test_sigterm_to_one_host_stops_both_at_the_same_step_and_they_resume_from_it(tmp_path):
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  procs, logs = _start_two(tmp_path, steps=100_000, tag='first')
  try:
    deadline = time.time() + 240
    while not all('step 3/' in log.read_text() for log in logs):
      assert time.time() < deadline and all(p.poll() is None for p in procs), [
          log.read_text()[-2000:] for log in logs]
      time.sleep(0.2)
    t = time.time()
    procs[1].send_signal(signal.SIGTERM)  # one host only
    for p in procs:
      p.wait(timeout=60)
    assert time.time() - t < 30
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  texts = [log.read_text() for log in logs]
  assert [p.returncode for p in procs] == [75, 75], [t[-3000:] for t in texts]
  saved = [int(t.split('PREEMPTED ')[1].split()[0]) for t in texts]
  assert saved[0] == saved[1], saved
  step = saved[0]
  from amber_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  assert checkpoint.manager(tmp_path / 'run', keep=3).latest_step() == step

  procs, logs = _start_two(tmp_path, steps=step + 2, tag='resume')
  for p in procs:
    p.wait(timeout=240)
  texts = [log.read_text() for log in logs]
  assert [p.returncode for p in procs] == [0, 0], [t[-3000:] for t in texts]
  for t in texts:
    assert f'Resumed from step {step} ' in t and 'FINISHED' in t and f'step {step + 2}/' in t


def test_a_workdir_each_host_sees_alone_fails_before_any_step(tmp_path):
  code = PREEMPTED_WORKER.format(tests=str(TESTS), workdir=str(tmp_path / 'run'), steps=2)
  code = code.replace("test_train.small_config(" + repr(str(tmp_path / 'run')),
                      "test_train.small_config(" + repr(str(tmp_path / 'run')) + " + str(pid)")
  port = _free_port()
  procs = []
  for pid in range(2):
    env = dict(os.environ, XLA_FLAGS=XLA_FLAGS, JAX_PLATFORMS='cpu',
               AMBER_COORDINATOR=f'127.0.0.1:{port}', AMBER_NUM_PROCESSES='2',
               AMBER_PROCESS_ID=str(pid))
    procs.append(subprocess.Popen([sys.executable, '-c', code], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  outs = [p.communicate(timeout=240)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode != 0 and 'is not shared: processes [1] of 2' in out, out[-3000:]
    assert 'step 1/' not in out
