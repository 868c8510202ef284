"""Device mesh, logical axis rules and shardings (the modern form of pjit: jax.jit + NamedSharding).

One rules table maps the model's logical axes onto the mesh axes ('data', 'fsdp', 'tensor'). A mesh
axis of size 1 makes its rules no-ops, so the same table serves pure data parallelism
(data=N), FSDP (fsdp=N) and FSDP + tensor parallelism (fsdp=N, tensor=M).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')

# (logical axis, mesh axis or axes). Rules are tried in order; a mesh axis already used by another
# dimension of the same array is skipped (flax's semantics), so activations' batch takes 'fsdp'
# and parameters' 'embed' takes it where there is no batch dimension.
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ('act_batch', ('data', 'fsdp')),
    ('act_length', None),
    ('act_embed', None),
    ('act_heads', 'tensor'),
    ('act_kv', None),
    ('act_mlp', 'tensor'),
    ('act_vocab', 'tensor'),
    ('vocab', 'tensor'),
    ('embed', 'fsdp'),
    ('heads', 'tensor'),
    ('kv', None),
    ('mlp', 'tensor'),
)

# Input batches: rows split over data and fsdp.
BATCH_SPEC = P(('data', 'fsdp'))


def mesh_shape(shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Resolves a {'data': -1, 'fsdp': 1, 'tensor': 1} spec against the device count.

  Args:
    shape: sizes per mesh axis; at most one may be -1 (filled with what is left).
    num_devices: the number of devices to cover.

  Returns:
    dict with a positive size for each of MESH_AXES, whose product is num_devices.
  """
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise ValueError(f'Unknown mesh axes {unknown}; allowed: {list(MESH_AXES)}.')
  sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
  fill = [a for a, s in sizes.items() if s == -1]
  if len(fill) > 1:
    raise ValueError(f'At most one mesh axis may be -1; got {fill} in {dict(shape)}.')
  bad = {a: s for a, s in sizes.items() if s == 0 or s < -1}
  if bad:
    raise ValueError(f'Mesh axis sizes must be positive or -1; got {bad}.')
  known = math.prod(s for s in sizes.values() if s != -1)
  if fill:
    if num_devices % known:
      raise ValueError(f'Mesh {dict(shape)}: the fixed axes (product {known}) do not divide the '
                       f'{num_devices} devices.')
    sizes[fill[0]] = num_devices // known
  if math.prod(sizes.values()) != num_devices:
    raise ValueError(f'Mesh {sizes} covers {math.prod(sizes.values())} devices but there are '
                     f'{num_devices}; set one axis to -1 or make the product match.')
  return sizes


def make_mesh(shape: Mapping[str, int], devices=None) -> Mesh:
  """A mesh with axes MESH_AXES (Auto axis types: shardings propagate from constraints)."""
  devices = jax.devices() if devices is None else devices
  sizes = mesh_shape(shape, len(devices))
  dims = tuple(sizes[a] for a in MESH_AXES)
  device_array = np.asarray(devices).reshape(dims)
  if devices[0].platform != 'cpu' and len(devices) == len(jax.devices()):
    # Topology-aware order on TPU/GPU (ICI rings); CPU devices have no topology.
    device_array = mesh_utils.create_device_mesh(dims, devices=devices)
  return Mesh(device_array, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def check_divisible(abstract_params, mesh: Mesh, rules=LOGICAL_RULES) -> None:
  """Raises naming the parameter when a sharded dimension does not divide its mesh axes."""
  specs = nn.get_partition_spec(abstract_params)
  flat_specs = jax.tree_util.tree_leaves_with_path(
      specs, is_leaf=lambda x: isinstance(x, P))
  flat_params = jax.tree_util.tree_leaves(nn.meta.unbox(abstract_params))
  for (path, logical), leaf in zip(flat_specs, flat_params):
    mesh_axes = nn.logical_to_mesh_axes(tuple(logical), rules)
    for dim, (size, axes) in enumerate(zip(leaf.shape, mesh_axes)):
      if axes is None:
        continue
      axes = axes if isinstance(axes, tuple) else (axes,)
      n = math.prod(mesh.shape[a] for a in axes)
      if size % n:
        name = jax.tree_util.keystr(path)
        raise ValueError(
            f'Parameter {name} dimension {dim} ({logical[dim]}={size}) does not divide mesh axes '
            f'{axes} of total size {n}. Pad that dimension (e.g. vocab to a multiple of {n}) or '
            'choose a mesh with a smaller axis.')


def param_shardings(abstract_params, mesh: Mesh, rules=LOGICAL_RULES):
  """NamedShardings for a tree of boxed (LogicallyPartitioned) abstract parameters."""
  check_divisible(abstract_params, mesh, rules)
  specs = nn.get_partition_spec(abstract_params)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, BATCH_SPEC)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_divisible(batch_sizes: Mapping[str, int], mesh: Mesh) -> None:
  """Every batch part's row count must divide over data x fsdp."""
  n = mesh.shape['data'] * mesh.shape['fsdp']
  for name, rows in batch_sizes.items():
    if rows % n:
      raise ValueError(f'Batch part {name} has {rows} rows, not divisible by data x fsdp = {n}; '
                       'choose a batch size that is a multiple of it.')


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Turns this process's rows of a batch into global jax.Arrays sharded over data x fsdp."""
  sharding = batch_sharding(mesh)
  out = {}
  for name, value in batch.items():
    try:
      out[name] = jax.make_array_from_process_local_data(sharding, np.asarray(value))
    except Exception as e:  # name the array at fault
      raise ValueError(f'Could not place batch array {name!r} of shape {np.shape(value)} on mesh '
                       f'{dict(mesh.shape)}: {e}') from e
  return out


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules=LOGICAL_RULES):
  """Context in which the model's logical activation constraints bind to `mesh`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield
