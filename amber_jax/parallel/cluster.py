"""Multi-host start-up: one call before anything touches a device.

`initialize()` picks how this process joins the others, in this order:

  1. explicit arguments, or AMBER_COORDINATOR / AMBER_NUM_PROCESSES / AMBER_PROCESS_ID
     (launch/local_multiprocess.sh, any hand-made launcher);
  2. SLURM (srun sets SLURM_JOB_NODELIST, SLURM_NTASKS, SLURM_PROCID): the coordinator is the
     first host of the node list, on AMBER_COORDINATOR_PORT or a port derived from the job id;
  3. a Cloud TPU VM or GKE TPU pod: `jax.distributed.initialize()` with no arguments (JAX reads
     the TPU metadata itself);
  4. otherwise a single process: nothing to do.

`resolve_cluster(env)` makes that choice from a dict of environment variables and does nothing
else, so every branch is testable without a cluster. The meshes that span hosts (TPU slices, GPU
nodes) are built by `amber_jax.parallel.mesh`.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import shutil
import subprocess
from typing import Mapping

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

# SLURM's own choice in JAX: a port in the top 4,096 derived from the job id, so two jobs that
# share a first node do not collide.
_SLURM_PORT_BASE = 65535 - 2**12 + 1

# Environment variables that only exist on Cloud TPU hosts (GKE pods and queued resources).
_TPU_ENV = ('TPU_WORKER_HOSTNAMES', 'TPU_PROCESS_ADDRESSES', 'MEGASCALE_COORDINATOR_ADDRESS',
            'TPU_ACCELERATOR_TYPE')
# PCI ids of TPU chips (vendor Google); the table jax._src.hardware_utils keeps.
_GOOGLE_PCI_VENDOR = '0x1ae0'
_TPU_PCI_DEVICES = ('0x0027', '0x0056', '0x005e', '0x0062', '0x0063', '0x006f', '0x0076')


def expand_nodelist(nodelist: str) -> list[str]:
  """Expands a SLURM host list such as 'node[01-03,07],gpu-a[1-2]-x' into host names.

  Zero padding is kept ('node[08-10]' -> node08, node09, node10); several bracket groups in one
  name expand as a product, as `scontrol show hostnames` does.

  Args:
    nodelist: the value of SLURM_JOB_NODELIST (or SLURM_STEP_NODELIST).

  Returns:
    The host names, in order.
  """
  hosts = []
  for name in _split_top_level(nodelist.strip()):
    hosts.extend(_expand_name(name, nodelist))
  if not hosts:
    raise ValueError(f'Empty SLURM node list {nodelist!r}; expected e.g. "node[01-04]".')
  return hosts


def _split_top_level(text: str) -> list[str]:
  parts, depth, start = [], 0, 0
  for i, ch in enumerate(text):
    depth += ch == '['
    depth -= ch == ']'
    if depth < 0 or depth > 1:
      raise ValueError(f'Unbalanced brackets in SLURM node list {text!r}.')
    if ch == ',' and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  if depth:
    raise ValueError(f'Unbalanced brackets in SLURM node list {text!r}.')
  parts.append(text[start:])
  return [p for p in parts if p]


def _expand_name(name: str, whole: str) -> list[str]:
  match = re.search(r'\[([^\]]*)\]', name)
  if not match:
    return [name]
  head, tail = name[:match.start()], name[match.end():]
  out = []
  for item in match.group(1).split(','):
    bounds = item.split('-')
    if len(bounds) == 1 and bounds[0].isdigit():
      numbers = [bounds[0]]
    elif len(bounds) == 2 and all(b.isdigit() for b in bounds) and int(bounds[0]) <= int(bounds[1]):
      width = len(bounds[0])
      numbers = [str(n).zfill(width) for n in range(int(bounds[0]), int(bounds[1]) + 1)]
    else:
      raise ValueError(f'Cannot read range {item!r} in SLURM node list {whole!r}; expected '
                       'N or N-M with N <= M, as in "node[01-03,07]".')
    for n in numbers:
      out.extend(_expand_name(head + n + tail, whole))
  return out


def _scontrol_hostnames(nodelist: str) -> list[str] | None:
  """`scontrol show hostnames` where SLURM's tools are installed (the authority), else None."""
  if shutil.which('scontrol') is None:
    return None
  try:
    out = subprocess.run(['scontrol', 'show', 'hostnames', nodelist], capture_output=True,
                         text=True, timeout=30, check=True).stdout.split()
  except (OSError, subprocess.SubprocessError):
    return None
  return out or None


def _int(env: Mapping[str, str], name: str) -> int:
  try:
    return int(env[name])
  except ValueError:
    raise ValueError(f'{name} must be an integer; found {env[name]!r}.') from None


def resolve_cluster(env: Mapping[str, str], *, tpu_chips: int = 0,
                    hostnames=expand_nodelist) -> dict | None:
  """Decides how this process joins a multi-process run, from its environment alone.

  Args:
    env: environment variables (os.environ, or a fake one in tests).
    tpu_chips: TPU chips attached to this host (see `count_tpu_chips`); > 0 means a TPU VM.
    hostnames: expands a SLURM node list (default: `expand_nodelist`).

  Returns:
    None for a single process; else a dict with 'source' ('amber', 'slurm' or 'tpu') and, except
    for 'tpu' (where JAX asks the TPU metadata), 'coordinator' ('host:port'), 'num_processes'
    and 'process_id'; with several SLURM tasks per node also 'local_device_ids' (the task's
    SLURM_LOCALID).
  """
  amber = [k for k in ('AMBER_COORDINATOR', 'AMBER_NUM_PROCESSES', 'AMBER_PROCESS_ID') if k in env]
  if amber:
    missing = sorted({'AMBER_COORDINATOR', 'AMBER_NUM_PROCESSES', 'AMBER_PROCESS_ID'} - set(amber))
    if missing:
      raise ValueError(f'Found {amber} but not {missing}: set all three (coordinator host:port, '
                       'process count, this process id) or none.')
    out = dict(source='amber', coordinator=env['AMBER_COORDINATOR'],
               num_processes=_int(env, 'AMBER_NUM_PROCESSES'),
               process_id=_int(env, 'AMBER_PROCESS_ID'))
    return _checked(out)
  if 'SLURM_JOB_NODELIST' in env and 'SLURM_NTASKS' in env and 'SLURM_PROCID' in env:
    num = _int(env, 'SLURM_NTASKS')
    if num <= 1:
      return None
    first = hostnames(env.get('SLURM_STEP_NODELIST') or env['SLURM_JOB_NODELIST'])[0]
    if 'AMBER_COORDINATOR_PORT' in env:
      port = _int(env, 'AMBER_COORDINATOR_PORT')
    else:
      port = _SLURM_PORT_BASE + (int(env.get('SLURM_JOB_ID', '0') or 0) % 2**12)
    cluster = _checked(dict(source='slurm', coordinator=f'{first}:{port}', num_processes=num,
                            process_id=_int(env, 'SLURM_PROCID')))
    if cluster and int(env.get('SLURM_NTASKS_PER_NODE', '1') or 1) > 1:
      # One process per GPU (srun --ntasks-per-node=G): each takes the GPU of its local rank.
      cluster['local_device_ids'] = [_int(env, 'SLURM_LOCALID')]
    return cluster
  if tpu_chips > 0 or any(k in env for k in _TPU_ENV):
    return dict(source='tpu')
  return None


def _checked(cluster: dict) -> dict | None:
  n, i, addr = cluster['num_processes'], cluster['process_id'], cluster['coordinator']
  if n < 1 or not 0 <= i < n:
    raise ValueError(f'{cluster["source"]}: process id {i} is not in [0, {n}); check the process '
                     'count and id.')
  if not re.fullmatch(r'[^:\s]+:\d+', addr):
    raise ValueError(f'{cluster["source"]}: coordinator {addr!r} is not host:port (e.g. '
                     '"10.0.0.2:1234").')
  return None if n == 1 else cluster


def count_tpu_chips(sys_root: str = '/sys') -> int:
  """TPU chips on this host's PCI bus (0 on CPU and GPU machines)."""
  n = 0
  for vendor in pathlib.Path(sys_root, 'bus/pci/devices').glob('*/vendor'):
    try:
      if (vendor.read_text().strip() == _GOOGLE_PCI_VENDOR
          and (vendor.parent / 'device').read_text().strip() in _TPU_PCI_DEVICES):
        n += 1
    except OSError:
      continue
  return n


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> dict | None:
  """Joins this process to the others of its run (a no-op for a single process).

  Call it before anything creates a device array. Calling it twice is harmless.

  Args:
    coordinator: 'host:port' of process 0; with num_processes and process_id, overrides the
      environment.
    num_processes: total number of processes.
    process_id: this process's index in [0, num_processes).

  Returns:
    The cluster description used (see `resolve_cluster`), or None for a single process.
  """
  given = (coordinator, num_processes, process_id)
  if any(v is not None for v in given):
    if any(v is None for v in given):
      raise ValueError(f'initialize: pass coordinator, num_processes and process_id together; '
                       f'got {given}.')
    cluster = _checked(dict(source='arguments', coordinator=coordinator,
                            num_processes=int(num_processes), process_id=int(process_id)))
  else:
    hostnames = lambda nodes: _scontrol_hostnames(nodes) or expand_nodelist(nodes)
    cluster = resolve_cluster(os.environ, tpu_chips=count_tpu_chips(), hostnames=hostnames)
  if cluster is None:
    return None
  if jax.distributed.is_initialized():
    logging.info('jax.distributed is already initialized; keeping it.')
    return cluster
  if cluster['source'] == 'tpu':
    jax.distributed.initialize()
  else:
    logging.info('Joining %d processes as %d via %s (%s)', cluster['num_processes'],
                 cluster['process_id'], cluster['coordinator'], cluster['source'])
    jax.distributed.initialize(coordinator_address=cluster['coordinator'],
                               num_processes=cluster['num_processes'],
                               process_id=cluster['process_id'],
                               local_device_ids=cluster.get('local_device_ids'))
  return cluster


def check() -> dict:
  """Joins the run and sums a 1 from every device across all processes (a collective).

  Returns:
    What this process sees: its index, the process and device counts, the platform, the cluster
    source, and the sum (equal to the device count when every process took part).
  """
  cluster = initialize()
  mesh = Mesh(np.asarray(jax.devices()), ('all',), axis_types=(AxisType.Auto,))
  ones = jax.make_array_from_process_local_data(
      NamedSharding(mesh, P('all')), np.ones(jax.local_device_count(), np.float32))
  total = jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, P()))(ones)
  return dict(process=jax.process_index(), processes=jax.process_count(),
              local_devices=jax.local_device_count(), devices=jax.device_count(),
              platform=jax.devices()[0].platform,
              source=cluster['source'] if cluster else 'single', sum=float(total))


if __name__ == '__main__':
  # `python -m amber_jax.parallel.cluster` on every host (srun, --worker=all): a cheap check that the
  # hosts find each other before a real run.
  import json  # pylint: disable=import-outside-toplevel
  print(json.dumps(check()), flush=True)
