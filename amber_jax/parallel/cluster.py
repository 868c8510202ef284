"""Multi-host start-up and the meshes that span hosts: one call before anything touches a device.

`initialize()` picks how this process joins the others, in this order:

  1. explicit arguments, or AMBER_COORDINATOR / AMBER_NUM_PROCESSES / AMBER_PROCESS_ID
     (launch/local_multiprocess.sh, any hand-made launcher);
  2. SLURM (srun sets SLURM_JOB_NODELIST, SLURM_NTASKS, SLURM_PROCID): the coordinator is the
     first host of the node list, on AMBER_COORDINATOR_PORT or a port derived from the job id;
  3. a Cloud TPU VM or GKE TPU pod: `jax.distributed.initialize()` with no arguments (JAX reads
     the TPU metadata itself);
  4. otherwise a single process: nothing to do.

`resolve_cluster(env)` makes that choice from a dict of environment variables and does nothing
else, so every branch is testable without a cluster. `hybrid_mesh` (multi-slice TPU: ICI inside a
slice, DCN across slices) and `gpu_mesh` (tensor parallelism inside a node) build meshes with the
axes of `amber_jax.parallel.partitioning`.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import re
import shutil
import subprocess
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from amber_jax.parallel import partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

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


# ---------------------------------------------------------------------------------------------
# Meshes across hosts.


def _sizes(shape: Mapping[str, int], name: str) -> tuple[int, ...]:
  unknown = sorted(set(shape) - set(partitioning.MESH_AXES))
  if unknown:
    raise ValueError(f'{name}: unknown mesh axes {unknown}; allowed: '
                     f'{list(partitioning.MESH_AXES)}.')
  sizes = tuple(int(shape.get(a, 1)) for a in partitioning.MESH_AXES)
  if any(s < 1 for s in sizes):
    raise ValueError(f'{name}: every axis size must be a positive integer; got {dict(shape)}.')
  return sizes


def hybrid_device_array(ici_shape: Mapping[str, int], dcn_shape: Mapping[str, int],
                        devices: Sequence[Any]) -> np.ndarray:
  """Devices laid out [data, fsdp, tensor] for several TPU slices (or hosts) joined by DCN.

  Each mesh axis has size ici_shape[axis] * dcn_shape[axis]; the ICI part stays inside a slice.
  Tensor parallelism must stay inside a slice (its per-layer all-reduces would crawl over DCN).

  Args:
    ici_shape: axis sizes inside one slice, e.g. {'fsdp': 256}; their product is the devices
      per slice.
    dcn_shape: axis sizes across slices, e.g. {'data': 2}; their product is the slice count.
    devices: all devices; TPU devices are grouped by `slice_index`, others by `process_index`.

  Returns:
    An object array of devices of shape [data, fsdp, tensor].
  """
  ici, dcn = _sizes(ici_shape, 'ici_shape'), _sizes(dcn_shape, 'dcn_shape')
  if dcn[2] != 1:
    raise ValueError(f'dcn_shape {dict(dcn_shape)} puts tensor parallelism across slices; keep '
                     "'tensor' in ici_shape and use 'data' or 'fsdp' across slices.")
  if math.prod(ici) * math.prod(dcn) != len(devices):
    raise ValueError(f'ici_shape {dict(ici_shape)} x dcn_shape {dict(dcn_shape)} covers '
                     f'{math.prod(ici) * math.prod(dcn)} devices but there are {len(devices)}; '
                     'make the products match devices per slice and slice count.')
  by_process = devices[0].platform != 'tpu' or getattr(devices[0], 'slice_index', None) is None
  granule = 'process_index' if by_process else 'slice_index'
  counts = {}
  for d in devices:
    counts[getattr(d, granule)] = counts.get(getattr(d, granule), 0) + 1
  if len(counts) != math.prod(dcn) or set(counts.values()) != {math.prod(ici)}:
    raise ValueError(f'dcn_shape {dict(dcn_shape)} wants {math.prod(dcn)} groups of '
                     f'{math.prod(ici)} devices, but the devices form {len(counts)} groups by '
                     f'{granule} with sizes {sorted(counts.values())}.')
  return mesh_utils.create_hybrid_device_mesh(list(ici), list(dcn), list(devices),
                                              process_is_granule=by_process)


def hybrid_mesh(ici_shape: Mapping[str, int], dcn_shape: Mapping[str, int],
                devices=None) -> Mesh:
  """A multi-slice mesh with axes ('data', 'fsdp', 'tensor'); see `hybrid_device_array`."""
  devices = jax.devices() if devices is None else devices
  return _mesh(hybrid_device_array(ici_shape, dcn_shape, devices))


def multislice_shapes(shape: Mapping[str, int], num_slices: int,
                      devices_per_slice: int) -> tuple[dict[str, int], dict[str, int]]:
  """Splits a config's mesh over several slices: (ici_shape, dcn_shape) for `hybrid_mesh`.

  The slices take the outermost axis that they divide, 'data' before 'fsdp' (the axes whose
  collectives tolerate DCN); 'tensor' always stays inside a slice.

  Args:
    shape: the config's mesh sizes, e.g. {'data': -1, 'fsdp': 16, 'tensor': 1}.
    num_slices: number of slices.
    devices_per_slice: devices in each slice.

  Returns:
    (ici_shape, dcn_shape), each with a size for every axis.
  """
  sizes = partitioning.mesh_shape(shape, num_slices * devices_per_slice)
  for axis in ('data', 'fsdp'):
    if sizes[axis] % num_slices == 0:
      ici = dict(sizes, **{axis: sizes[axis] // num_slices})
      dcn = {a: (num_slices if a == axis else 1) for a in partitioning.MESH_AXES}
      return ici, dcn
  raise ValueError(f'Mesh {sizes} over {num_slices} slices: neither data ({sizes["data"]}) nor '
                   f'fsdp ({sizes["fsdp"]}) is a multiple of {num_slices}; make one of them so.')


def auto_mesh(shape: Mapping[str, int], devices=None) -> Mesh:
  """The config's mesh: `partitioning.make_mesh` on one slice, `hybrid_mesh` across several."""
  devices = jax.devices() if devices is None else devices
  slices = {getattr(d, 'slice_index', 0) for d in devices}
  if devices[0].platform != 'tpu' or len(slices) <= 1:
    return partitioning.make_mesh(shape, devices=devices)
  ici, dcn = multislice_shapes(shape, len(slices), len(devices) // len(slices))
  return hybrid_mesh(ici, dcn, devices)


def gpu_device_array(num_nodes: int, gpus_per_node: int, *, tensor: int = 1, fsdp: int = 1,
                     devices: Sequence[Any]) -> np.ndarray:
  """Devices laid out [data, fsdp, tensor] with each tensor group inside one node.

  A node is a `process_index` (one process per node: `srun --ntasks-per-node=1`). The tensor
  axis runs over neighbouring GPUs of a node (NVLink); fsdp over consecutive tensor groups, first
  inside a node, then across nodes; data over what is left, across nodes.

  Args:
    num_nodes: number of nodes (processes).
    gpus_per_node: devices per node.
    tensor: tensor-parallel size; must divide gpus_per_node.
    fsdp: FSDP size, or -1 for every device not used by tensor (no data parallelism).
    devices: all devices (jax.devices()).

  Returns:
    An object array of devices of shape [data, fsdp, tensor].
  """
  total = num_nodes * gpus_per_node
  if num_nodes < 1 or gpus_per_node < 1:
    raise ValueError(f'num_nodes and gpus_per_node must be positive; got {num_nodes} and '
                     f'{gpus_per_node}.')
  if len(devices) != total:
    raise ValueError(f'{num_nodes} nodes x {gpus_per_node} GPUs = {total} devices, but there are '
                     f'{len(devices)}.')
  if tensor < 1 or gpus_per_node % tensor:
    raise ValueError(f'tensor={tensor} must divide gpus_per_node={gpus_per_node}: a tensor '
                     'group must stay inside one node.')
  data = 1 if fsdp == -1 else -1
  sizes = partitioning.mesh_shape({'data': data, 'fsdp': fsdp, 'tensor': tensor}, total)
  nodes = {}
  for d in devices:
    nodes.setdefault(d.process_index, []).append(d)
  if len(nodes) != num_nodes or any(len(v) != gpus_per_node for v in nodes.values()):
    raise ValueError(f'Expected {num_nodes} processes with {gpus_per_node} devices each; found '
                     f'{ {k: len(v) for k, v in sorted(nodes.items())} } (by process_index). Run '
                     'one process per node.')
  ordered = [d for p in sorted(nodes) for d in sorted(nodes[p], key=lambda d: d.id)]
  # [nodes * gpus_per_node] -> [data, fsdp, tensor]: tensor fastest, so a tensor group is
  # gpus_per_node-aligned and never crosses a node.
  array = np.empty(total, dtype=object)
  array[:] = ordered
  return array.reshape(sizes['data'], sizes['fsdp'], sizes['tensor'])


def gpu_mesh(num_nodes: int, gpus_per_node: int, *, tensor: int = 1, fsdp: int = 1,
             devices=None) -> Mesh:
  """A GPU-cluster mesh with tensor parallelism inside nodes; see `gpu_device_array`."""
  devices = jax.devices() if devices is None else devices
  return _mesh(gpu_device_array(num_nodes, gpus_per_node, tensor=tensor, fsdp=fsdp,
                                devices=devices))


def _mesh(device_array: np.ndarray) -> Mesh:
  return Mesh(device_array, partitioning.MESH_AXES,
              axis_types=(AxisType.Auto,) * len(partitioning.MESH_AXES))


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
