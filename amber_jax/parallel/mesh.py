"""The device mesh: the one place that lays devices out on the axes ('data', 'fsdp', 'tensor').

`build(config.mesh, devices=None)` reads these fields (configs/default.py):

  data, fsdp, tensor  global axis sizes. One may be -1: it takes the devices the others leave.
                      data=-1 is the default filler, so when another axis is -1 as well, data
                      is 1 (`--config.mesh.fsdp=-1` alone means pure FSDP).
  num_slices          groups of devices joined by the data-centre network (DCN): TPU slices
                      (grouped by `slice_index`), or hosts / GPU nodes (grouped by
                      `process_index`, one process per node). 1: a single slice.
  dcn_axis            the axis that spans the slices: 'data', 'fsdp', or 'auto' (data when it is
                      a multiple of num_slices, else fsdp). 'tensor' never does: its per-layer
                      all-reduces would crawl over DCN.

One layout covers every case: each slice holds the ICI part of every axis (the axis sizes with
the DCN axis divided by num_slices), in topology-aware order on TPU and GPU
(`mesh_utils.create_device_mesh`: ICI rings, NVLink by device id), in the given order on CPU;
the slices then line up along the DCN axis, as `mesh_utils.create_hybrid_device_mesh` does.
So a single slice is the case num_slices=1; GPU nodes keep each tensor group inside a node
(NVLink) and put data or fsdp across nodes; ahead-of-time compilation passes compile-only TPU
devices (`amber_jax.training.aot.topology_devices`). Fake CPU devices have no slice: pass
`slices` (an explicit split of the devices) to lay them out as several.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh
import numpy as np

from amber_jax.parallel.partitioning import MESH_AXES

DCN_AXES = ('auto', 'data', 'fsdp')
# Fields of config.mesh that are not axis sizes (`rules` is read by partitioning.rules_for).
OTHER_FIELDS = ('num_slices', 'dcn_axis', 'rules')


def axis_sizes(shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Resolves a {'data': -1, 'fsdp': 1, 'tensor': 1} spec against the device count.

  Args:
    shape: sizes per mesh axis (missing axes are 1). One may be -1, filled with what the others
      leave; when 'data' and one other axis are -1, data is 1 (data is the default filler).
    num_devices: the number of devices to cover.

  Returns:
    dict with a positive size for each of MESH_AXES, whose product is num_devices.
  """
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise ValueError(f'Unknown mesh axes {unknown}; allowed: {list(MESH_AXES)}.')
  sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
  fill = [a for a, s in sizes.items() if s == -1]
  if len(fill) == 2 and fill[0] == 'data':
    sizes['data'], fill = 1, fill[1:]
  if len(fill) > 1:
    raise ValueError(f'At most one mesh axis may be -1 (besides the default data=-1); got {fill} '
                     f'in {dict(shape)}.')
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


def slice_shapes(sizes: Mapping[str, int], num_slices: int,
                 dcn_axis: str = 'auto') -> tuple[dict[str, int], dict[str, int]]:
  """Splits resolved axis sizes over slices: (inside one slice, across slices).

  Args:
    sizes: a size for each of MESH_AXES (see `axis_sizes`).
    num_slices: number of slices (1: everything inside one).
    dcn_axis: 'data' or 'fsdp' (the axis the slices divide), or 'auto': data when it is a
      multiple of num_slices, else fsdp.

  Returns:
    (ici_shape, dcn_shape), each with a size for every axis; their products per axis are
    `sizes`, and dcn_shape's product is num_slices.
  """
  if dcn_axis not in DCN_AXES:
    raise ValueError(f'mesh.dcn_axis={dcn_axis!r}; allowed: {list(DCN_AXES)} (tensor parallelism '
                     'stays inside a slice).')
  if num_slices < 1:
    raise ValueError(f'mesh.num_slices must be a positive integer; got {num_slices}.')
  for axis in (('data', 'fsdp') if dcn_axis == 'auto' else (dcn_axis,)):
    if sizes[axis] % num_slices == 0:
      ici = dict(sizes, **{axis: sizes[axis] // num_slices})
      return ici, {a: (num_slices if a == axis else 1) for a in MESH_AXES}
  raise ValueError(f'Mesh {dict(sizes)} over {num_slices} slices with dcn_axis={dcn_axis!r}: '
                   f'{"neither data nor fsdp is" if dcn_axis == "auto" else dcn_axis + " is not"} '
                   f'a multiple of {num_slices}; make one so (tensor stays inside a slice).')


def group_devices(devices: Sequence[Any], num_slices: int) -> list[list[Any]]:
  """Splits devices into their slices: by `slice_index` on TPU, else by `process_index`.

  Args:
    devices: all devices of the mesh.
    num_slices: the slices expected (config.mesh.num_slices).

  Returns:
    num_slices lists of equally many devices, in slice (or process) order.
  """
  tpu_slices = devices[0].platform == 'tpu' and getattr(devices[0], 'slice_index', None) is not None
  key = 'slice_index' if tpu_slices else 'process_index'
  groups: dict[int, list] = {}
  for d in devices:
    groups.setdefault(getattr(d, key), []).append(d)
  if num_slices == 1:
    if tpu_slices and len(groups) > 1:
      raise ValueError(f'The devices span {len(groups)} TPU slices (slice_index) but '
                       f'mesh.num_slices=1; set --config.mesh.num_slices={len(groups)}.')
    return [list(devices)]
  sizes = sorted(len(g) for g in groups.values())
  if len(groups) != num_slices or len(set(sizes)) != 1:
    raise ValueError(f'mesh.num_slices={num_slices} wants {num_slices} groups of '
                     f'{len(devices) // num_slices} devices, but the devices form {len(groups)} '
                     f'groups by {key} with sizes {sizes}. Run one process per host or GPU node, '
                     'or pass the split explicitly (build(..., slices=...)).')
  return [groups[k] for k in sorted(groups)]


def split_evenly(devices: Sequence[Any], num_slices: int) -> list[list[Any]]:
  """Splits devices in order into `num_slices` equal slices (for devices without a slice).

  Args:
    devices: e.g. 8 fake CPU devices.
    num_slices: how many slices; must divide the device count.

  Returns:
    num_slices lists of consecutive devices, for `build(..., slices=...)`.
  """
  if num_slices < 1 or len(devices) % num_slices:
    raise ValueError(f'Cannot split {len(devices)} devices into {num_slices} equal slices; '
                     'choose a slice count that divides the device count.')
  k = len(devices) // num_slices
  return [list(devices[i * k:(i + 1) * k]) for i in range(num_slices)]


def hybrid_device_array(ici_shape: Mapping[str, int], dcn_shape: Mapping[str, int],
                        groups: Sequence[Sequence[Any]], topology: bool = True) -> np.ndarray:
  """Devices laid out [data, fsdp, tensor] over slices: ICI inside each, DCN across them.

  Each mesh axis has size ici_shape[axis] * dcn_shape[axis], slice-major: the slice at DCN
  position i holds indices [i * ici, (i + 1) * ici) of that axis.

  Args:
    ici_shape: axis sizes inside one slice, e.g. {'fsdp': 256}; their product is the devices
      per slice.
    dcn_shape: axis sizes across slices, e.g. {'data': 2}; their product is the slice count.
      'tensor' must be 1.
    groups: the devices of each slice, in slice order (see `group_devices`).
    topology: order each slice by `mesh_utils.create_device_mesh` (TPU rings, GPU ids); False
      keeps the given order.

  Returns:
    An object array of devices of shape [data, fsdp, tensor].
  """
  ici, dcn = _sizes(ici_shape, 'ici_shape'), _sizes(dcn_shape, 'dcn_shape')
  if dcn[2] != 1:
    raise ValueError(f'dcn_shape {dict(dcn_shape)} puts tensor parallelism across slices; keep '
                     "'tensor' in ici_shape and use 'data' or 'fsdp' across slices.")
  total = sum(len(g) for g in groups)
  if math.prod(ici) * math.prod(dcn) != total:
    raise ValueError(f'ici_shape {dict(ici_shape)} x dcn_shape {dict(dcn_shape)} covers '
                     f'{math.prod(ici) * math.prod(dcn)} devices but there are {total}; '
                     'make the products match devices per slice and slice count.')
  if len(groups) != math.prod(dcn) or any(len(g) != math.prod(ici) for g in groups):
    raise ValueError(f'dcn_shape {dict(dcn_shape)} wants {math.prod(dcn)} groups of '
                     f'{math.prod(ici)} devices; got groups of {[len(g) for g in groups]}.')
  if topology:
    blocks = [mesh_utils.create_device_mesh(ici, devices=list(g)) for g in groups]
  else:
    blocks = [_object_array(g).reshape(ici) for g in groups]
  # [slices] of [ici...] -> [dcn_d, dcn_f, dcn_t, ici_d, ici_f, ici_t] -> [d, f, t], slice-major.
  stacked = np.stack(blocks).reshape(*dcn, *ici)
  return stacked.transpose(0, 3, 1, 4, 2, 5).reshape([i * d for i, d in zip(ici, dcn)])


def device_array(mesh_cfg: Mapping[str, Any], devices: Sequence[Any],
                 slices: Sequence[Sequence[Any]] | None = None) -> np.ndarray:
  """The devices of config.mesh laid out [data, fsdp, tensor] (see the module docstring).

  Args:
    mesh_cfg: config.mesh (or a dict with some of its fields; missing ones take the defaults
      data=-1, fsdp=1, tensor=1, num_slices=1, dcn_axis='auto').
    devices: all devices of the mesh.
    slices: an explicit split of `devices` into slices (fake CPU devices have no slice_index);
      its length overrides mesh_cfg's num_slices.

  Returns:
    An object array of devices of shape [data, fsdp, tensor].
  """
  cfg = dict(mesh_cfg)
  unknown = sorted(set(cfg) - set(MESH_AXES) - set(OTHER_FIELDS))
  if unknown:
    raise ValueError(f'Unknown config.mesh fields {unknown}; allowed: '
                     f'{list(MESH_AXES) + list(OTHER_FIELDS)}.')
  sizes = axis_sizes({'data': -1, **{a: cfg[a] for a in MESH_AXES if a in cfg}}, len(devices))
  if slices is not None:
    groups = [list(s) for s in slices]
    if sorted(map(id, devices)) != sorted(id(d) for g in groups for d in g):
      raise ValueError(f'slices must split the {len(devices)} devices exactly; they hold '
                       f'{sum(map(len, groups))} (possibly others).')
  else:
    groups = group_devices(devices, int(cfg.get('num_slices', 1)))
  ici, dcn = slice_shapes(sizes, len(groups), cfg.get('dcn_axis', 'auto'))
  return hybrid_device_array(ici, dcn, groups, topology=_topology_order(devices))


def build(mesh_cfg: Mapping[str, Any], devices: Sequence[Any] | None = None, *,
          slices: Sequence[Sequence[Any]] | None = None) -> Mesh:
  """The run's mesh, axes ('data', 'fsdp', 'tensor') with Auto axis types.

  Args:
    mesh_cfg: config.mesh (see the module docstring), or a dict with some of its fields.
    devices: the devices to use (default: all, `jax.devices()`; compile-only TPU devices for
      ahead-of-time compilation). With `slices`, default: theirs, in order.
    slices: an explicit split of the devices into slices, e.g. two halves of 8 fake CPU devices
      for a two-slice mesh (real TPU slices and GPU nodes are found from the devices).

  Returns:
    A jax.sharding.Mesh whose axis sizes follow mesh_cfg.
  """
  if devices is None:
    devices = [d for s in slices for d in s] if slices is not None else jax.devices()
  array = device_array(mesh_cfg, list(devices), slices)
  return Mesh(array, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _sizes(shape: Mapping[str, int], name: str) -> tuple[int, ...]:
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise ValueError(f'{name}: unknown mesh axes {unknown}; allowed: {list(MESH_AXES)}.')
  sizes = tuple(int(shape.get(a, 1)) for a in MESH_AXES)
  if any(s < 1 for s in sizes):
    raise ValueError(f'{name}: every axis size must be a positive integer; got {dict(shape)}.')
  return sizes


def _object_array(items: Sequence[Any]) -> np.ndarray:
  """A 1-D object array of devices (np.asarray could try to look inside them)."""
  out = np.empty(len(items), dtype=object)
  out[:] = list(items)
  return out


def _topology_order(devices: Sequence[Any]) -> bool:
  """Whether to order devices by topology: on TPU and GPU, unless they are a strict subset of
  this process's view (e.g. one device of a host, where ring order means nothing)."""
  if devices[0].platform == 'cpu':
    return False
  visible = jax.devices()
  return not (len(devices) < len(visible) and all(d in visible for d in devices))
