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
from test_data import corpus, make_cfg, vocab_path  # pylint: disable=unused-import

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


# --- two real processes on localhost, sharing only a bucket --------------------------------
#
# As on a TPU pod: each process has its own HOME and cache folder and the run lives in gs://
# (the local emulator of conftest.py). Process 1 is killed with SIGKILL mid-run, the job is
# restarted, and the run resumes from the bucket.

WORKER = textwrap.dedent("""
    import json, os, signal, sys, time
    sys.path.insert(0, {tests!r})
    from amber_jax.parallel import cluster
    cluster = cluster.initialize()          # reads AMBER_* from the environment
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    # No persistent compilation cache: jax writes it from process 0 only, so after a restart
    # process 0 ran the cached step and process 1 a fresh compile of it, and with packed pairs
    # the two disagreed on their first collective and hung (jax 0.10.2, CPU, gloo).
    import test_train
    from amber_jax import storage
    from amber_jax.core import model as model_lib
    from amber_jax.data import inputs
    from amber_jax.text import tokenizer
    from amber_jax.training import loop

    pid, n = jax.process_index(), jax.process_count()
    assert cluster['source'] == 'amber' and n == 2 and len(jax.local_devices()) == 2, cluster

    class Dying:                                 # the real input; process 1 dies at kill_at
      def __init__(self, it, step, workdir, kill_at):
        self.it, self.step, self.workdir, self.kill_at = it, step, workdir, kill_at

      def __getattr__(self, name):               # stats, resumable, get_state, set_state, ...
        return getattr(self.it, name)

      def __iter__(self):
        return self

      def __next__(self):
        self.step += 1
        if pid == 1 and self.step == self.kill_at:  # once checkpoint 4 is in the bucket
          done = storage.path(self.workdir + '/checkpoints/4/commit_success.txt')
          deadline = time.time() + 120
          while not done.exists() and time.time() < deadline:
            time.sleep(0.2)
          os.kill(os.getpid(), signal.SIGKILL)
        return next(self.it)

    out = {{}}
    for name, steps, kill_at in {runs}:
      workdir = {root!r} + '/' + name
      cfg = test_train.small_config(workdir, steps=steps)
      with cfg.unlocked():
        cfg.mesh.update(data=2, fsdp=2, tensor=1)
        cfg.model.num_layers = 1
        cfg.data.update({data!r})               # the cache and vocabulary in the bucket
        cfg.model.vocab_size = tokenizer.vocab_size(storage.local(cfg.data.vocab_path))
      lines = []
      def report(line):
        lines.append(line)
        print(line, flush=True)
      real = inputs.config_input(cfg)
      state, history = loop.train(cfg, batches=lambda start: Dying(real(start), start, workdir,
                                                                   kill_at), print_fn=report)
      # Every parameter, gathered onto every process by one compiled copy.
      params = jax.jit(lambda t: t, out_shardings=NamedSharding(state['step'].sharding.mesh, P()))(
          state['params'])
      params = jax.tree_util.tree_map(np.asarray, params)
      unpadded, _ = model_lib.strip_vocab_padding(
          params, model_lib.EncoderConfig.from_config(cfg.model))
      flat = lambda t: np.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(t)]).tolist()
      out[name] = dict(losses=[h['loss'] for h in history], lines=lines, params=flat(params),
                       unpadded=flat(unpadded))
    print('RESULT' + json.dumps(out))
""")


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# Two CPU devices per process, with the suite's fast-compile flag (xla_env.py).
XLA_FLAGS = xla_env.with_cpu_devices(2)


def host_env(scratch, pid, port, storage_env=None):
  """Process `pid`'s environment: its own HOME and cache folder under `scratch`, the cluster
  variables, and `storage_env` (the emulator's) when given."""
  home = pathlib.Path(scratch) / f'host{pid}'
  home.mkdir(parents=True, exist_ok=True)
  return dict(os.environ, **(storage_env or {}), HOME=str(home),
              AMBER_JAX_CACHE=str(home / 'cache'), XLA_FLAGS=XLA_FLAGS, JAX_PLATFORMS='cpu',
              AMBER_COORDINATOR=f'127.0.0.1:{port}', AMBER_NUM_PROCESSES='2',
              AMBER_PROCESS_ID=str(pid))


def start_two_processes(scratch, code, tag, storage_env=None):
  """Starts two processes running `code` on localhost; returns them and their log files (files,
  not pipes: a process blocked on a full pipe would stall the other's collectives)."""
  port = _free_port()
  procs, logs = [], []
  for pid in range(2):
    logs.append(pathlib.Path(scratch) / f'{tag}-{pid}-{port}.log')
    procs.append(subprocess.Popen([sys.executable, '-c', code],
                                  env=host_env(scratch, pid, port, storage_env),
                                  stdout=open(logs[-1], 'w', encoding='utf-8'),
                                  stderr=subprocess.STDOUT))
  return procs, logs


def run_two_processes(scratch, root, runs, tag, storage_env, data, killed=False):
  """Runs WORKER's `runs` [(name, steps, kill_at)] under `root` in two processes; returns each
  one's RESULT dict, or with `killed` waits for process 1's SIGKILL, kills process 0 as a
  scheduler would, and returns their logs."""
  code = WORKER.format(tests=str(TESTS), root=root, scratch=str(scratch), runs=runs, data=data)
  procs, logs = start_two_processes(scratch, code, tag, storage_env)
  try:
    if killed:
      procs[1].wait(timeout=300)
      assert procs[1].returncode == -9, logs[1].read_text()[-4000:]
      procs[0].kill()
      procs[0].wait(timeout=60)
      return [log.read_text() for log in logs]
    results = []
    for p, log in zip(procs, logs):
      p.wait(timeout=300)
      text = log.read_text()
      assert p.returncode == 0, text[-4000:]
      results.append(json.loads([l for l in text.splitlines() if l.startswith('RESULT')][0][6:]))
    return results
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


ROOT = 'gs://bkt/multihost'


@pytest.fixture(scope='module')
def two_process_runs(gcs, corpus, vocab_path, tmp_path_factory):
  """(logs of the run killed at step 7, its resume and an uninterrupted run in one job), each
  reading a pretokenized cache in the bucket."""
  from amber_jax import storage  # pylint: disable=import-outside-toplevel
  from amber_jax.data import preprocess  # pylint: disable=import-outside-toplevel
  scratch = tmp_path_factory.mktemp('multihost')
  storage.copy_file(vocab_path, f'{ROOT}/sp.model')
  data = dict(cache_dir=f'{ROOT}/tokens', vocab_path=f'{ROOT}/sp.model', mono_batch_size=4,
              parallel_batch_size=4, mono_length=16, sentence_length=12, packing=True)
  cfg = make_cfg(corpus, vocab_path)
  cfg.update(data)
  preprocess.write_cache(cfg, data['cache_dir'], print_fn=lambda *_: None)
  killed = run_two_processes(scratch, ROOT, [('part', 8, 7)], 'killed', gcs.env, data,
                             killed=True)
  # The restarted job resumes 'part' from the bucket, then runs 8 steps uninterrupted from scratch.
  second = run_two_processes(scratch, ROOT, [('part', 8, None), ('full', 8, None)], 'resumed',
                             gcs.env, data)
  return killed, second


def _losses_logged(text):
  """{step: 'loss=...'} of the step lines a process printed."""
  return {int(l.split()[1].split('/')[0]): l.split()[2] for l in text.splitlines()
          if l.startswith('step ') and ' loss=' in l}


@pytest.mark.slow
def test_two_processes_report_identical_losses(two_process_runs):
  killed, second = two_process_runs
  assert _losses_logged(killed[0]) == _losses_logged(killed[1])
  assert 2 in _losses_logged(killed[0])
  assert second[0]['full']['losses'] == second[1]['full']['losses']
  assert second[0]['part']['losses'] == second[1]['part']['losses']
  assert len(second[0]['full']['losses']) == 5   # steps 1, 2, 4, 6 and 8 (log_every=2)


@pytest.mark.slow
def test_a_killed_two_host_run_resumes_from_the_bucket_to_the_uninterrupted_parameters(
    two_process_runs):
  killed, second = two_process_runs
  resumed = [l for l in second[0]['part']['lines'] if l.startswith('Resumed from step ')]
  assert resumed, second[0]['part']['lines']
  step = int(resumed[0].split()[3])
  assert step in (4, 6), resumed   # checkpoint 4 was in the bucket before the kill
  for p in range(2):  # each host's input back at its position from the bucket, not replayed
    assert f'Input restored to its position at step {step} (saved with the checkpoint)' in (
        second[p]['part']['lines'])
  full = _losses_logged('\n'.join(second[0]['full']['lines']))
  before = _losses_logged(killed[0])
  assert before and all(full[s] == loss for s, loss in before.items()), (before, full)
  assert second[0]['part']['losses'][-1] == second[0]['full']['losses'][-1]
  np.testing.assert_array_equal(np.asarray(second[0]['part']['params']),
                                np.asarray(second[0]['full']['params']))


@pytest.mark.slow
def test_the_resumed_bucket_run_has_its_files_as_an_uninterrupted_one(two_process_runs):
  from amber_jax import storage  # pylint: disable=import-outside-toplevel
  from amber_jax.export import runs  # pylint: disable=import-outside-toplevel
  from amber_jax.training import metrics  # pylint: disable=import-outside-toplevel
  _, second = two_process_runs
  step = int([l for l in second[0]['part']['lines'] if l.startswith('Resumed from step ')][0]
             .split()[3])
  assert runs.saved_steps(f'{ROOT}/part') == runs.saved_steps(f'{ROOT}/full')
  # Logged every 2 steps and at a run's first step (1, and step + 1 after the resume): each once,
  # the lines written after the last checkpoint before the kill cut away.
  assert ([r['step'] for r in metrics.logged(f'{ROOT}/part')]
          == sorted({1, 2, 4, 6, 8, step + 1}))
  run = storage.path(f'{ROOT}/part')
  assert json.loads((run / 'config.json').read_text())['train']['steps'] == 8
  assert any(p.name.startswith('events.out') for p in (run / 'tensorboard').iterdir())


@pytest.mark.slow
def test_the_two_host_checkpoint_restores_on_one_device_and_exports_from_the_bucket(
    two_process_runs, tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  from amber_jax.export import runs  # pylint: disable=import-outside-toplevel
  _, second = two_process_runs
  params, _, _, step = runs.load_params(f'{ROOT}/part')   # a 1-device mesh, not 2 x (2 x 2)
  assert step == 8
  np.testing.assert_array_equal(
      np.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(params)]),
      np.asarray(second[0]['part']['unpadded'], np.float32))
  out = runs.export_run(f'{ROOT}/part', tmp_path / 'hf')
  assert (out / 'model.safetensors').is_file() and (out / 'tokenizer.json').is_file()
  assert not (pathlib.Path.cwd() / 'gs:').exists()


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


def _start_two(scratch, workdir, steps, tag, storage_env):
  code = PREEMPTED_WORKER.format(tests=str(TESTS), workdir=workdir, steps=steps)
  return start_two_processes(scratch, code, tag, storage_env)


@pytest.mark.slow
def test_sigterm_to_one_host_stops_both_at_the_same_step_and_they_resume_from_it(gcs, tmp_path):
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  run = 'gs://bkt/preempted'   # the hosts share only the bucket
  procs, logs = _start_two(tmp_path, run, steps=100_000, tag='first', storage_env=gcs.env)
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
  assert checkpoint.manager(run, keep=3).latest_step() == step

  procs, logs = _start_two(tmp_path, run, steps=step + 2, tag='resume', storage_env=gcs.env)
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
