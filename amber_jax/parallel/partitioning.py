"""Logical-axis rules and shardings (the modern form of pjit: jax.jit + NamedSharding).

A rule set maps the model's logical axes onto the mesh axes ('data', 'fsdp', 'tensor'); the
mesh itself is built by `amber_jax.parallel.mesh`. `config.mesh.rules` names the set
(`rules_for`), as t5x's `standard_logical_axis_rules` and big_vision's `config.sharding_rules`:

  'fsdp_tensor'    (default) parameters split over fsdp (their 'embed' dimension) and tensor
                   (heads, mlp, vocab); activations' batch over data x fsdp, their heads, mlp
                   and vocab over tensor. A mesh axis of size 1 makes its rules no-ops, so this
                   one set serves data parallelism (data=N), FSDP (fsdp=N) and both with tensor
                   parallelism (fsdp=N, tensor=M).
  'fsdp'           parameters split over fsdp only; nothing uses 'tensor'.
  'data_parallel'  parameters replicated on every device; only the batch is split.

The input batch is always split over data x fsdp (BATCH_SPEC), whatever the set.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

MESH_AXES = ('data', 'fsdp', 'tensor')

Rules = tuple[tuple[str, Any], ...]

# (logical axis, mesh axis or axes). Rules are tried in order; a mesh axis already used by another
# dimension of the same array is skipped (flax's semantics), so activations' batch takes 'fsdp'
# and parameters' 'embed' takes it where there is no batch dimension.
RULE_SETS: dict[str, Rules] = {
    'fsdp_tensor': (
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
    ),
    'fsdp': (
        ('act_batch', ('data', 'fsdp')),
        ('act_length', None),
        ('act_embed', None),
        ('act_heads', None),
        ('act_kv', None),
        ('act_mlp', None),
        ('act_vocab', None),
        ('vocab', None),
        ('embed', 'fsdp'),
        ('heads', None),
        ('kv', None),
        ('mlp', None),
    ),
    'data_parallel': (
        ('act_batch', ('data', 'fsdp')),
        ('act_length', None),
        ('act_embed', None),
        ('act_heads', None),
        ('act_kv', None),
        ('act_mlp', None),
        ('act_vocab', None),
        ('vocab', None),
        ('embed', None),
        ('heads', None),
        ('kv', None),
        ('mlp', None),
    ),
}
DEFAULT_RULES = 'fsdp_tensor'


def rules_for(name: str) -> Rules:
  """The logical-axis rules named by config.mesh.rules.

  Args:
    name: a key of RULE_SETS ('fsdp_tensor', 'fsdp' or 'data_parallel').

  Returns:
    (logical axis, mesh axes) pairs for flax's logical partitioning.
  """
  if name not in RULE_SETS:
    raise ValueError(f'Unknown logical-axis rule set {name!r} (config.mesh.rules); allowed: '
                     f'{sorted(RULE_SETS)}.')
  return RULE_SETS[name]


def config_rules(mesh_cfg: Mapping[str, Any]) -> Rules:
  """The rules of a run's config.mesh (DEFAULT_RULES for configs written before the field)."""
  return rules_for(mesh_cfg.get('rules', DEFAULT_RULES))


# Input batches: rows split over data and fsdp.
BATCH_SPEC = P(('data', 'fsdp'))


def check_divisible(abstract_params, mesh: Mesh, rules: Rules = RULE_SETS[DEFAULT_RULES]) -> None:
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


def param_shardings(abstract_params, mesh: Mesh, rules: Rules = RULE_SETS[DEFAULT_RULES]):
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
def activation_rules(mesh: Mesh, rules: Rules = RULE_SETS[DEFAULT_RULES]):
  """Context in which the model's logical activation constraints bind to `mesh`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield
