"""Ahead-of-time compilation of the train step for a target mesh: memory and FLOPs, no data.

`amber-jax compile --config=configs/base.py --topology=cpu:8 --config.mesh.fsdp=8` lowers and
compiles the real jitted step (`train_step.make_train_step`) on abstract inputs carrying the state's and
the batch's shardings, then reports what one device would hold:

  * parameters and optimizer state, computed from their shardings (exact, any backend);
  * XLA's buffer assignment (`compiled.memory_analysis()`): arguments, outputs, temporaries
    (activations, gradients) and generated code;
  * XLA's cost model (`compiled.cost_analysis()`): FLOPs and bytes accessed per device.

Topologies: 'cpu:N' compiles for N host CPU devices (the device count is fixed when JAX starts;
`use_cpu_devices` sets it, so call it before anything touches a device). 'tpu:NAME' (e.g.
'tpu:v5e:2x2', 'tpu:v4:2x2x2', or an accelerator type: 'tpu:v5p-8', 'tpu:v5litepod-16') compiles
for a TPU slice without one, through
`jax.experimental.topologies.get_topology_desc`; that needs libtpu installed
(`pip install 'jax[tpu]'`). CPU figures give the state's exact bytes and a fair picture of the
activation memory; TPU figures also account for TPU layouts and fusion.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
from jax.experimental import topologies
import numpy as np

from amber_jax.data.batches import batch_spec
from amber_jax.parallel import mesh as mesh_lib
from amber_jax.parallel import partitioning
from amber_jax.training import train_state, train_step

GIB = 2**30


# Chips of a slice by its accelerator-type name -> the shape `get_topology_desc` takes.
# v4 and v5p name a slice by TensorCores (2 a chip), in a 3-D torus; v5e and v6e by chips, 2-D.
_TORUS_3D = {4: '2x2x1', 8: '2x2x2', 16: '2x2x4', 32: '2x4x4', 64: '4x4x4', 128: '4x4x8',
             256: '4x8x8', 512: '8x8x8'}
_TORUS_2D = {1: '1x1', 4: '2x2', 8: '2x4', 16: '4x4', 32: '4x8', 64: '8x8', 128: '8x16',
             256: '16x16'}
_SLICE_NAMES = {'v4': ('v4', 2, _TORUS_3D), 'v5p': ('v5p', 2, _TORUS_3D),
                'v5litepod': ('v5e', 1, _TORUS_2D), 'v5e': ('v5e', 1, _TORUS_2D),
                'v6e': ('v6e', 1, _TORUS_2D)}


def slice_topology(name: str) -> str | None:
  """'v5p-8' (Cloud TPU's accelerator type) -> 'v5p:2x2x1'; None when `name` is not one."""
  family, _, count = name.rpartition('-')
  if family not in _SLICE_NAMES or not count.isdigit():
    return None
  version, per_chip, shapes = _SLICE_NAMES[family]
  chips = int(count) // per_chip
  if int(count) % per_chip or chips not in shapes:
    raise ValueError(f'{name}: no {family} slice has {count} '
                     f'{"TensorCores" if per_chip == 2 else "chips"}; sizes are '
                     f'{", ".join(f"{family}-{c * per_chip}" for c in shapes)}.')
  return f'{version}:{shapes[chips]}'


def parse_topology(spec: str) -> tuple[str, str | int]:
  """Splits 'cpu:8' into ('cpu', 8) and 'tpu:v5e:2x2' into ('tpu', 'v5e:2x2'); a Cloud TPU
  accelerator type ('tpu:v5p-8', 'tpu:v5litepod-16', 'tpu:v4-32', 'tpu:v6e-8') becomes its shape
  ('tpu:v5p-8' -> ('tpu', 'v5p:2x2x1')).

  Args:
    spec: 'cpu:N' with N >= 1, or 'tpu:NAME' with a TPU topology name or accelerator type.

  Returns:
    (platform, device count for 'cpu' or topology name for 'tpu').
  """
  platform, _, rest = spec.partition(':')
  if platform == 'cpu' and rest.isdigit() and int(rest) >= 1:
    return 'cpu', int(rest)
  if platform == 'tpu' and rest:
    return 'tpu', slice_topology(rest) or rest
  raise ValueError(f'Unknown topology {spec!r}; expected "cpu:N" (N host CPU devices, e.g. '
                   '"cpu:8") or "tpu:NAME" (e.g. "tpu:v5e:2x2", needs libtpu).')


def use_cpu_devices(n: int) -> None:
  """Makes JAX start with `n` CPU devices and no accelerator (before any device is touched)."""
  try:
    jax.config.update('jax_platforms', 'cpu')
    jax.config.update('jax_num_cpu_devices', n)
  except RuntimeError as e:
    if len(jax.devices()) == n and jax.devices()[0].platform == 'cpu':
      return
    raise RuntimeError(
        f'JAX already started with {len(jax.devices())} {jax.devices()[0].platform} devices; '
        f'cpu:{n} must be chosen before the first JAX operation (run `amber-jax compile` in a '
        f'fresh process, or set XLA_FLAGS=--xla_force_host_platform_device_count={n} '
        'JAX_PLATFORMS=cpu).') from e


def topology_devices(spec: str, num_slices: int = 1) -> list:
  """The devices to compile for: real CPU devices, or compile-only TPU devices.

  Args:
    spec: 'cpu:N' or 'tpu:NAME' (see `parse_topology`).
    num_slices: TPU slices of that topology (config.mesh.num_slices); ignored for CPU devices
      (`topology_mesh` splits them into slices).

  Returns:
    The devices, for `amber_jax.parallel.mesh.build`.
  """
  platform, arg = parse_topology(spec)
  if platform == 'cpu':
    devices = jax.devices('cpu')
    if len(devices) != arg:
      raise RuntimeError(f'Topology {spec} wants {arg} CPU devices; JAX has {len(devices)}. Call '
                         'aot.use_cpu_devices(N) before the first JAX operation, or set '
                         f'XLA_FLAGS=--xla_force_host_platform_device_count={arg}.')
    return devices
  try:
    extra = {'num_slices': num_slices} if num_slices > 1 else {}
    return list(topologies.get_topology_desc(arg, platform='tpu', **extra).devices)
  except Exception as e:  # RuntimeError without libtpu; XLA errors for unknown names
    raise RuntimeError(
        f'Could not describe TPU topology {arg!r}: {e}. Compiling for a TPU without one needs '
        "libtpu (pip install 'jax[tpu]==" + jax.__version__ + "'); names look like 'v5e:2x2', "
        "'v4:2x2x2', 'v5p:2x2x2'; a second process using libtpu at once needs "
        'ALLOW_MULTIPLE_LIBTPU_LOAD=1. Use --topology=cpu:N for sharding and memory figures '
        'without libtpu.') from e


def per_device_bytes(abstract_tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings (its largest shard)."""
  total = 0
  for leaf in jax.tree_util.tree_leaves(abstract_tree):
    shard = leaf.sharding.shard_shape(leaf.shape)
    total += math.prod(shard) * np.dtype(leaf.dtype).itemsize
  return total


def global_bytes(abstract_tree) -> int:
  return sum(math.prod(l.shape) * np.dtype(l.dtype).itemsize
             for l in jax.tree_util.tree_leaves(abstract_tree))


@dataclasses.dataclass
class Report:
  """What compiling the train step for one mesh found (bytes are per device unless named)."""

  topology: str
  mesh: dict[str, int]
  platform: str
  params_bytes: int          # this device's shards of the parameters
  opt_state_bytes: int       # this device's shards of the optimizer state (Adam moments, counts)
  global_state_bytes: int    # parameters + optimizer state, all devices together, unsharded
  argument_bytes: int        # XLA: inputs (state + batch)
  output_bytes: int          # XLA: outputs (new state + metrics)
  alias_bytes: int           # XLA: outputs written in place of donated inputs
  temp_bytes: int            # XLA: activations, gradients, scratch
  generated_code_bytes: int  # XLA: the executable itself
  flops: float               # XLA cost model, one device, one step
  bytes_accessed: float      # XLA cost model
  lower_s: float
  compile_s: float
  scanned_layers: bool = False  # model.scan_layers: XLA's cost model counts the loop body once

  @property
  def state_bytes(self) -> int:
    return self.params_bytes + self.opt_state_bytes

  @property
  def peak_bytes(self) -> int:
    """Arguments + outputs not aliased to them + temporaries + code: the footprint estimate."""
    return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
            + self.generated_code_bytes)

  def lines(self) -> list[str]:
    mib = lambda b: f'{b / 2**20:,.1f} MiB'
    return [
        f'topology {self.topology} ({self.platform}), mesh {self.mesh}',
        f'  per device: params {mib(self.params_bytes)} + optimizer {mib(self.opt_state_bytes)}'
        f' = {mib(self.state_bytes)} (unsharded total {mib(self.global_state_bytes)})',
        f'  XLA per device: arguments {mib(self.argument_bytes)}, outputs {mib(self.output_bytes)}'
        f' (aliased {mib(self.alias_bytes)}), temporaries {mib(self.temp_bytes)}, code '
        f'{mib(self.generated_code_bytes)}; estimated peak {mib(self.peak_bytes)}',
        f'  FLOPs per device per step {self.flops:.3e}; bytes accessed {self.bytes_accessed:.3e}'
        + (' (scan_layers: XLA counts the scanned layer body once, so both are undercounts)'
           if self.scanned_layers else ''),
        f'  lowering {self.lower_s:.1f} s, compilation {self.compile_s:.1f} s',
    ]

  def to_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), 'state_bytes': self.state_bytes,
            'peak_bytes': self.peak_bytes}


def abstract_batch(config, mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """ShapeDtypeStructs of one global batch, sharded over data x fsdp like real input."""
  sharding = partitioning.batch_sharding(mesh)
  return {name: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
          for name, (shape, dtype) in batch_spec(config.data).items()}


def compile_train_step(config, mesh, topology: str = '') -> tuple[Report, Any]:
  """Lowers and compiles the jitted train step for `mesh` from shapes alone.

  Args:
    config: a run's config (its model, data batch sizes, optimizer and objectives).
    mesh: the target mesh (its devices may be compile-only TPU devices).
    topology: a label for the report.

  Returns:
    (Report, the compiled executable).
  """
  s = train_state.setup(config, mesh)
  batch = abstract_batch(config, mesh)
  step = train_step.make_train_step(s)
  t0 = time.perf_counter()
  with partitioning.activation_rules(mesh, s.rules):
    lowered = step.jitted.lower(s.abstract_state, batch)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
  field = lambda name: int(getattr(mem, name, 0) or 0) if mem is not None else 0
  report = Report(
      topology=topology or f'{mesh.devices.flat[0].platform}:{mesh.size}',
      mesh={a: int(n) for a, n in mesh.shape.items()},
      platform=mesh.devices.flat[0].platform,
      params_bytes=per_device_bytes(s.abstract_state['params']),
      opt_state_bytes=per_device_bytes(s.abstract_state['opt_state']),
      global_state_bytes=global_bytes({'p': s.abstract_state['params'],
                                       'o': s.abstract_state['opt_state']}),
      argument_bytes=field('argument_size_in_bytes'),
      output_bytes=field('output_size_in_bytes'),
      alias_bytes=field('alias_size_in_bytes'),
      temp_bytes=field('temp_size_in_bytes'),
      generated_code_bytes=field('generated_code_size_in_bytes'),
      flops=float(cost.get('flops', 0.0)),
      bytes_accessed=float(cost.get('bytes accessed', 0.0)),
      lower_s=t1 - t0, compile_s=t2 - t1,
      scanned_layers=bool(config.model.get('scan_layers', False)))
  return report, compiled


def topology_mesh(config, topology: str) -> jax.sharding.Mesh:
  """The config's mesh over the devices of `topology` (see `topology_devices`).

  With config.mesh.num_slices > 1, 'cpu:N' devices are split in order into that many equal
  slices (fake devices have no slice), so a multi-slice layout compiles without TPUs.
  """
  num_slices = int(config.mesh.get('num_slices', 1))
  devices = topology_devices(topology, num_slices)
  if parse_topology(topology)[0] == 'cpu' and num_slices > 1:
    return mesh_lib.build(config.mesh, slices=mesh_lib.split_evenly(devices, num_slices))
  return mesh_lib.build(config.mesh, devices)


def compile_for_topology(config, topology: str) -> Report:
  """`compile_train_step` on the config's mesh over the devices of `topology`."""
  mesh = topology_mesh(config, topology)
  report, _ = compile_train_step(config, mesh, topology)
  return report
