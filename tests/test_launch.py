"""The launch scripts: every --dry-run prints the exact commands; the local and SLURM launchers
start real processes that find each other (a fake `srun` stands in for SLURM's)."""

import json
import os
import pathlib
import shlex
import socket
import stat
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCH = ROOT / 'launch'
CHECK = f'{sys.executable} -m amber_jax.parallel.cluster'   # joins, sums across processes, prints


def clean_env(**extra):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('AMBER_', 'SLURM_', 'TPU_', 'MEGASCALE_', 'XLA_FLAGS'))}
  env.update(extra)
  return env


def launch(script, *args, env=None, check=True, timeout=60):
  out = subprocess.run(['bash', str(LAUNCH / script), *args], capture_output=True, text=True,
                       env=env or clean_env(), timeout=timeout, cwd=ROOT)
  if check:
    assert out.returncode == 0, out.stderr
  return out


def lines(out):
  return [l for l in out.stdout.splitlines() if l and not l.startswith('#')]


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# --- TPU VM slice ----------------------------------------------------------------------------

def test_tpu_pod_dry_run_creates_copies_installs_and_trains_on_every_worker():
  out = launch('tpu_pod.sh', '--dry-run', '--name', 'amber-v5e', '--zone', 'us-west4-a',
               '--project', 'proj', '--accelerator', 'v5litepod-16', '--workdir', '/mnt/run',
               '--', '--config.train.steps=1000')
  create, archive, scp, install, train = lines(out)
  assert create.startswith('gcloud compute tpus tpu-vm create amber-v5e ')
  for flag in ('--zone=us-west4-a', '--project=proj', '--accelerator-type=v5litepod-16',
               '--version=v2-alpha-tpuv5-lite'):
    assert flag in create.split()
  assert archive.startswith('git -C ') and archive.endswith(' HEAD')
  assert scp.startswith('gcloud compute tpus tpu-vm scp ') and '--worker=all' in scp.split()
  for cmd in (install, train):
    words = shlex.split(cmd)
    assert words[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'amber-v5e']
    assert '--worker=all' in words and '--zone=us-west4-a' in words
  assert "'jax[tpu]==0.10.2'" in shlex.split(install)[-1]
  remote = shlex.split(shlex.split(train)[-1][len('--command='):])
  assert remote[remote.index('&&') + 1:] == [
      '.venv/bin/amber-jax', 'train', '--config=configs/base.py', '--config.workdir=/mnt/run',
      '--config.mesh.num_slices=1', '--config.train.steps=1000']


def test_tpu_pod_queued_resources_create_waits_and_deletes_the_queued_resource():
  out = launch('tpu_pod.sh', '--dry-run', '--name', 'a', '--zone', 'z', '--queued', '--spot',
               '--accelerator', 'v4-32', '--step', 'create')
  create = lines(out)[0].split()
  assert create[:5] == ['gcloud', 'compute', 'tpus', 'queued-resources', 'create']
  assert {'--node-id=a', '--accelerator-type=v4-32', '--runtime-version=tpu-ubuntu2204-base',
          '--spot'} <= set(create)
  assert 'queued-resources describe a' in out.stdout and 'ACTIVE' in out.stdout
  delete = launch('tpu_pod.sh', '--dry-run', '--name', 'a', '--zone', 'z', '--queued', '--step',
                  'delete')
  assert lines(delete) == ['gcloud compute tpus queued-resources delete a --zone=z --force --quiet']


def test_tpu_pod_data_step_builds_corpus_and_vocab_on_every_worker():
  out = launch('tpu_pod.sh', '--dry-run', '--name', 'a', '--zone', 'z', '--step', 'data')
  (cmd,) = lines(out)
  assert '--worker=all' in cmd and 'amber-jax data build django' in cmd
  assert 'amber-jax vocab train' in cmd


@pytest.mark.parametrize('args, message', [
    (['--zone', 'z'], 'missing --name'),
    (['--name', 'a'], 'missing --zone'),
    (['--name', 'a', '--zone', 'z', '--step', 'launch'], '--step must be'),
    (['--name', 'a', '--zone', 'z', 'extra'], 'unknown option extra'),
    (['--name', 'a', '--zone', 'z'], '--workdir is required to train'),
    (['--name', 'a', '--zone', 'z', '--step', 'train'], '--workdir is required to train'),
])
def test_tpu_pod_bad_arguments_say_what_is_wrong(args, message):
  out = launch('tpu_pod.sh', '--dry-run', *args, check=False)
  assert out.returncode == 2 and message in out.stderr


# --- GKE / xpk -------------------------------------------------------------------------------

def test_xpk_dry_run_builds_from_this_checkout_and_installs_jax_tpu():
  out = launch('gke_xpk.sh', '--dry-run', '--cluster', 'tpu-cluster', '--workload', 'amber-1',
               '--tpu-type', 'v5litepod-256', '--num-slices', '2', '--storage', 'ckpt',
               '--workdir', '/gcs/runs/base', '--', '--config.mesh.fsdp=-1')
  (line,) = lines(out)
  words = shlex.split(line)
  assert words[:3] == ['xpk', 'workload', 'create']
  assert {'--cluster=tpu-cluster', '--workload=amber-1', '--tpu-type=v5litepod-256',
          '--num-slices=2', '--storage=ckpt', f'--script-dir={ROOT}',
          '--max-restarts=10'} <= set(words)  # a preempted run (exit 75) is restarted
  command = [w for w in words if w.startswith('--command=')][0][len('--command='):]
  # The slice count reaches the mesh (a DCN axis across the two slices), before the user's args.
  assert command == ("pip install -q -e . 'jax[tpu]==0.10.2' && amber-jax train "
                     '--config=configs/base.py --config.workdir=/gcs/runs/base '
                     '--config.mesh.num_slices=2 --config.mesh.fsdp=-1')


def test_xpk_slice_count_gives_the_run_a_two_slice_mesh():
  """The command xpk runs, loaded as `amber-jax train` would, builds two slices of fake devices."""
  from amber_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from amber_jax.parallel import mesh  # pylint: disable=import-outside-toplevel
  out = launch('gke_xpk.sh', '--dry-run', '--cluster', 'c', '--docker-image', 'i',
               '--num-slices', '2', '--', '--config.mesh.fsdp=-1')
  command = [w for w in shlex.split(lines(out)[0]) if w.startswith('--command=')][0]
  argv = shlex.split(command[len('--command='):])[2:]       # after `amber-jax train`
  config, rest = config_lib.load_config(argv)
  assert rest == [] and config.mesh.num_slices == 2
  devices = [Fake(i, i // 8) for i in range(16)]             # 2 hosts (slices) of 8
  array = mesh.device_array(config.mesh, devices)
  assert array.shape == (1, 16, 1)                            # fsdp=-1 alone: pure FSDP
  assert [d.process_index for d in array[0, :, 0]] == [0] * 8 + [1] * 8


class Fake:
  platform = 'cpu'

  def __init__(self, id_, process_index):
    self.id, self.process_index = id_, process_index


def test_slice_count_must_be_a_positive_integer():
  out = launch('gke_xpk.sh', '--dry-run', '--cluster', 'c', '--num-slices', '0', check=False)
  assert out.returncode == 2 and '--num-slices must be a positive integer' in out.stderr


def test_xpk_with_a_prebuilt_image_runs_train_directly():
  out = launch('gke_xpk.sh', '--dry-run', '--cluster', 'c', '--docker-image', 'gcr.io/p/amber:1')
  words = shlex.split(lines(out)[0])
  assert '--docker-image=gcr.io/p/amber:1' in words
  assert '--command=amber-jax train --config=configs/base.py --config.mesh.num_slices=1' in words
  assert not any(w.startswith('--script-dir') for w in words)


def test_xpk_needs_a_cluster():
  out = launch('gke_xpk.sh', '--dry-run', check=False)
  assert out.returncode == 2 and 'missing --cluster' in out.stderr


# --- SLURM -----------------------------------------------------------------------------------

def test_slurm_submit_dry_run_prints_the_sbatch_line():
  out = launch('slurm_submit.sh', '--dry-run', '--nodes', '4', '--gpus-per-node', '8',
               '--partition', 'a100', '--time', '12:00:00', '--', '--config=configs/base.py',
               '--config.workdir=/shared/runs/base')
  assert lines(out) == [
      'sbatch --job-name=amber-jax --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 '
      f'--time=12:00:00 --partition=a100 {LAUNCH}/slurm.sbatch --config=configs/base.py '
      '--config.workdir=/shared/runs/base']


def test_slurm_submit_needs_nodes_and_train_arguments():
  assert 'missing --nodes' in launch('slurm_submit.sh', '--dry-run', '--', 'x',
                                     check=False).stderr
  assert 'train arguments after --' in launch('slurm_submit.sh', '--dry-run', '--nodes', '2',
                                              check=False).stderr


def test_sbatch_script_asks_for_one_task_per_node():
  text = (LAUNCH / 'slurm.sbatch').read_text()
  assert '#SBATCH --ntasks-per-node=1' in text and '#SBATCH --gpus-per-node=' in text


FAKE_SRUN = """#!/usr/bin/env bash
# Stands in for SLURM's srun: records its arguments, then starts SLURM_NTASKS copies of the
# command with SLURM_PROCID set, as srun does on the nodes of a job.
echo "$*" > "$FAKE_SRUN_DIR/args"
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=0 "$@" > "$FAKE_SRUN_DIR/task-$i.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
"""


@pytest.mark.slow
def test_sbatch_script_starts_processes_that_join_through_slurm_variables(tmp_path):
  srun = tmp_path / 'srun'
  srun.write_text(FAKE_SRUN)
  srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
  env = clean_env(PATH=f'{tmp_path}:{os.environ["PATH"]}', FAKE_SRUN_DIR=str(tmp_path),
                  SLURM_JOB_NODELIST='localhost', SLURM_NTASKS='2', SLURM_JOB_ID='77',
                  SLURM_JOB_NUM_NODES='2',  # reaches the mesh as its node (slice) count
                  AMBER_COORDINATOR_PORT=str(free_port()), AMBER_JAX=CHECK, JAX_PLATFORMS='cpu',
                  XLA_FLAGS='--xla_force_host_platform_device_count=2')
  launch('slurm.sbatch', '--config=configs/base.py', env=env, timeout=120)
  args = (tmp_path / 'args').read_text().split()
  assert '--kill-on-bad-exit=1' in args
  assert args[-3:] == ['train', '--config.mesh.num_slices=2', '--config=configs/base.py']
  for i in range(2):
    log = (tmp_path / f'task-{i}.log').read_text()
    report = json.loads([l for l in log.splitlines() if l.startswith('{')][-1])
    assert report == dict(process=i, processes=2, local_devices=2, devices=4, platform='cpu',
                          source='slurm', sum=4.0)


def test_sbatch_script_requeues_a_preempted_run_and_passes_other_codes_on(tmp_path):
  (tmp_path / 'srun').write_text('#!/usr/bin/env bash\nexit "$FAKE_CODE"\n')
  (tmp_path / 'scontrol').write_text('#!/usr/bin/env bash\necho "$*" > "$FAKE_DIR/scontrol"\n')
  for tool in ('srun', 'scontrol'):
    (tmp_path / tool).chmod(0o755)
  text = (LAUNCH / 'slurm.sbatch').read_text()
  assert '#SBATCH --requeue' in text and '#SBATCH --signal=TERM@' in text
  for code, requeued in ((75, True), (0, False), (2, False), (74, False)):
    env = clean_env(PATH=f'{tmp_path}:{os.environ["PATH"]}', FAKE_CODE=str(code),
                    FAKE_DIR=str(tmp_path / f'out{code}'), SLURM_JOB_ID='77')
    (tmp_path / f'out{code}').mkdir()
    out = launch('slurm.sbatch', '--config=configs/base.py', env=env, check=False)
    assert out.returncode == code, out.stderr
    assert (tmp_path / f'out{code}' / 'scontrol').exists() == requeued, code
    if requeued:
      assert (tmp_path / f'out{code}' / 'scontrol').read_text().split() == ['requeue', '77']
      assert 'preempted; requeueing job 77' in out.stderr


# --- local processes -------------------------------------------------------------------------

def test_local_dry_run_prints_one_command_per_process_with_its_environment():
  out = launch('local_multiprocess.sh', '--dry-run', '-n', '3', '--devices-per-process', '4',
               '--port', '1234', '--', 'train', '--config=configs/tiny.py',
               '--config.train.steps=2')
  *procs, last = lines(out)
  assert last == 'wait' and len(procs) == 3
  for i, line in enumerate(procs):
    words = shlex.split(line)
    assert words[:6] == ['env', 'AMBER_COORDINATOR=127.0.0.1:1234', 'AMBER_NUM_PROCESSES=3',
                         f'AMBER_PROCESS_ID={i}', 'JAX_PLATFORMS=cpu',
                         'XLA_FLAGS=--xla_force_host_platform_device_count=4']
    assert words[6:9] == ['amber-jax', 'train', '--config=configs/tiny.py']
    assert line.endswith(f'> process-{i}.log 2>&1 &')


@pytest.mark.slow
def test_local_processes_really_connect(tmp_path):
  env = clean_env(AMBER_JAX=CHECK)
  out = launch('local_multiprocess.sh', '-n', '2', '--devices-per-process', '2', '--log-dir',
               str(tmp_path), env=env, timeout=120)
  for i in range(2):
    log = (tmp_path / f'process-{i}.log').read_text()
    report = json.loads([l for l in log.splitlines() if l.startswith('{')][-1])
    assert (report['process'], report['devices'], report['source'], report['sum']) == (
        i, 4, 'amber', 4.0)
  assert 'Started 2 processes' in out.stderr


def test_local_run_stops_the_others_when_one_fails(tmp_path):
  script = tmp_path / 'fail_one.py'
  script.write_text('import os, sys, time\n'
                    'sys.exit(3) if os.environ["AMBER_PROCESS_ID"] == "1" else time.sleep(60)\n')
  out = launch('local_multiprocess.sh', '-n', '2', '--log-dir', str(tmp_path / 'logs'),
               env=clean_env(AMBER_JAX=f'{sys.executable} {script}'), check=False, timeout=30)
  assert out.returncode == 1 and 'process 1 failed' in out.stderr


@pytest.mark.parametrize('script', ['tpu_pod.sh', 'gke_xpk.sh', 'slurm_submit.sh',
                                    'local_multiprocess.sh'])
def test_help_prints_the_usage(script):
  out = launch(script, '--help')
  assert f'launch/{script} [--dry-run]' in out.stdout and not out.stdout.startswith('!')
