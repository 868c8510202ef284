"""Orbax checkpointing: an async CheckpointManager that keeps N steps and restores onto any mesh.

A checkpoint holds two items: 'state' (step, params, opt_state: sharded arrays, restored onto the
shardings of the target) and 'meta' (JSON: the config, the data position and the fingerprint of
every array). `restore_params` reads only the state's 'params' (export, evaluation: no optimizer).

Nothing damaged is restored as sound: the fingerprint of each array (`fingerprints`, computed on
the devices where the array lives) is recorded at save time and checked after every restore. A
restore that fails, or whose arrays do not match their fingerprints, falls back to the previous
step and sets the bad one aside (`unreadable-checkpoints/` beside `checkpoints/`), never deleting
it. A checkpoint whose arrays have other shapes or names than the model's is not damage but a
different model: `CheckpointMismatchError`, raised before anything is written.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
from jax import lax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import orbax.checkpoint as ocp

from amber_jax import errors, storage


def manager(directory: str | pathlib.Path, *, keep: int, every: int = 1,
            async_save: bool = True) -> ocp.CheckpointManager:
  """A CheckpointManager for `directory`/checkpoints keeping the `keep` latest steps (a local
  folder or a bucket URL)."""
  path = storage.path(directory) / 'checkpoints'
  if not storage.is_url(directory):
    path = path.absolute()
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, save_interval_steps=every, enable_async_checkpointing=async_save,
      create=True)
  handlers = {'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()}
  try:  # the input position of a run from a cache (Grain's handler; not on a GPU-only install)
    import grain  # pylint: disable=import-outside-toplevel
    handlers['data'] = grain.checkpoint.CheckpointHandler()
  except ImportError:
    pass
  return ocp.CheckpointManager(path, options=options, item_handlers=handlers)


def save(mgr: ocp.CheckpointManager, step: int, state: Any, meta: dict, *,
         data: Any = None, force: bool = False) -> bool:
  """Starts an (async) save of `state` at `step` with the arrays' fingerprints in its meta;
  returns whether a save was started (not every step is a save step: `every` of `manager`).

  `data`: the input iterator (`get_state() -> bytes`), whose position at this call is saved
  beside the model, one file per process (Grain's checkpoint handler), or None.

  An earlier async save that failed raises here (orbax reports it on the next call)."""
  if not (force or mgr.should_save(step)):
    return False
  meta = {**meta, 'fingerprint': fingerprints(state)}
  items = {'state': ocp.args.StandardSave(state), 'meta': ocp.args.JsonSave(meta)}
  if data is not None:  # taken now: the async part of the save runs after the next batches
    import grain  # pylint: disable=import-outside-toplevel
    items['data'] = grain.checkpoint.CheckpointSave(_Position(data.get_state()))
  return mgr.save(step, args=ocp.args.Composite(**items), force=force)


class _Position:
  """An input position taken at save time, in the form Grain's handler writes."""

  def __init__(self, state: bytes):
    self._state = state

  def get_state(self) -> bytes:
    return self._state


def restore_input(mgr: ocp.CheckpointManager, step: int, iterator: Any) -> bool:
  """Puts `iterator` (`set_state`) at the input position saved with `step`; returns False when the
  step has none (saved by an input that keeps no position: the caller replays).

  Raises:
    UserError: the position was saved by another number of processes (positions are per
      process), or for another input (`set_state` says which).
  """
  folder = storage.path(mgr.directory) / str(step) / 'data'
  if not folder.exists():
    return False
  want = f'process_{jax.process_index()}-of-{jax.process_count()}.json'
  saved = sorted(p.name for p in folder.iterdir() if p.name.startswith('process_'))
  if want not in saved:
    raise errors.UserError(
        f'The input position of checkpoint step {step} in {mgr.directory} was saved by '
        f'{saved[0].split("-of-")[-1][:-5] if saved else "no"} processes ({", ".join(saved)}); '
        f'this run has {jax.process_count()}. Positions are per process: resume with as many '
        'processes, or start the data stream over in a fresh workdir.')
  import grain  # pylint: disable=import-outside-toplevel
  mgr.restore(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(iterator)))
  return True


def _as_words(x: jax.Array) -> jax.Array:
  """The bits of `x` as uint32 words of its shape (one word per element)."""
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[x.dtype.itemsize]
  bits = lax.bitcast_convert_type(x, unsigned)
  if x.dtype.itemsize == 8:
    bits = (bits ^ (bits >> 32)).astype(jnp.uint32)
  return bits.astype(jnp.uint32)


def _flat_index(shape: tuple[int, ...]) -> jax.Array:
  """Each element's row-major position (mod 2**32), built in `shape` from one iota per axis:
  no reshape, so a sharded array is never gathered or relaid out to weight it."""
  index, stride = jnp.zeros(shape, jnp.uint32), 1
  for axis in reversed(range(len(shape))):
    index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride % 2**32)
    stride *= shape[axis]
  return index


@jax.jit
def _fingerprint_leaf(x: jax.Array) -> jax.Array:
  """Two position-weighted sums (mod 2**32) of an array's bits, with odd weights: any change of
  one element changes both. Each device reduces its own shard, then the partial sums add up."""
  words = _as_words(jnp.asarray(x))
  i = _flat_index(words.shape)
  return jnp.stack([jnp.sum(words * ((i * jnp.uint32(k)) * jnp.uint32(2) + jnp.uint32(1)),
                            dtype=jnp.uint32) for k in (0x9E3779B1, 0x85EBCA77)])


def fingerprints(tree: Any) -> dict[str, int]:
  """{leaf path ('params/...'): 64-bit fingerprint of the array's bytes} of a tree of arrays.

  Computed where the arrays live (one jitted reduction per array; sharded arrays reduce across
  their devices), so it costs a read of the state, not a copy to the host, and it is the same on
  any mesh the arrays are laid out on. One computation per array, not one for the whole tree:
  XLA would keep every array's temporaries alive at once (12x the state on CPU for `base`).
  Each is waited for before the next starts: many collectives in flight at once can starve each
  other of the CPU backend's threads (the fake devices of tests and CPU runs)."""
  items = _leaf_items(tree)
  sums = [jax.device_get(_fingerprint_leaf(leaf)) for _, leaf in items]
  return {path: int(int(s[0]) << 32 | int(s[1])) for (path, _), s in zip(items, sums)}


def damaged_arrays(tree: Any, recorded: dict[str, int] | None) -> list[str]:
  """Paths of the arrays of `tree` whose fingerprint differs from `recorded` (those present)."""
  if not recorded:
    return []
  now = fingerprints(tree)
  return sorted(path for path, value in now.items()
                if path in recorded and int(recorded[path]) != value)


def abstract_like(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `state` carrying `shardings` (the target of a restore)."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


class CheckpointMismatchError(errors.UserError):
  """The checkpoint's arrays (names, shapes, dtypes) are not the ones the model expects."""


class UnreadableCheckpointError(errors.PlainError):
  """No checkpoint of a run can be restored (each one unreadable or damaged)."""


class _Unreadable(Exception):
  """This step cannot be read or is damaged (the restore falls back to an older one)."""


def _key_name(k) -> str:
  for attr in ('key', 'idx', 'name'):  # DictKey, SequenceKey, GetAttrKey
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _leaf_items(tree) -> list[tuple[str, Any]]:
  """(path, leaf) of each leaf, paths as 'a/b/0/mu/...' (namedtuples, lists and dicts alike, as
  orbax stores them)."""
  leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: x is None)
  return [('/'.join(_key_name(k) for k in path), leaf) for path, leaf in leaves
          if leaf is not None]


def _paths(tree) -> set[str]:
  return {path for path, _ in _leaf_items(tree)}


def _shapes(tree) -> dict[str, tuple[tuple[int, ...], str]]:
  """{path: (shape, dtype name)} of a tree of arrays, ShapeDtypeStructs or orbax metadata."""
  return {path: (tuple(leaf.shape), jnp.dtype(leaf.dtype).name)
          for path, leaf in _leaf_items(tree) if hasattr(leaf, 'shape')}


def _saved_state(mgr: ocp.CheckpointManager, step: int) -> Any:
  """The tree of the 'state' item's metadata at `step`; _Unreadable when it cannot be read."""
  try:
    metadata = mgr.item_metadata(step)
    saved = metadata['state'] if 'state' in metadata else metadata
  except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
    raise _Unreadable(f'its metadata cannot be read ({_first_line(e)})') from e
  saved = getattr(saved, 'tree', saved)
  if not saved:
    raise _Unreadable('its state/_METADATA is missing or empty')
  return saved


def check_structure(mgr: ocp.CheckpointManager, step: int, abstract_state: Any) -> None:
  """Raises naming every missing, extra and reshaped array: no silent partial restore."""
  _check_arrays(mgr, step, _shapes(_saved_state(mgr, step)), _shapes(abstract_state))


def _listed(names: list[str], limit: int = 8) -> str:
  return ', '.join(names[:limit]) + (f' and {len(names) - limit} more' if len(names) > limit
                                     else '')


def _check_arrays(mgr: ocp.CheckpointManager, step: int, have: dict, want: dict) -> None:
  """Raises CheckpointMismatchError naming what `want` (the model's arrays) lacks, adds and
  shapes otherwise than `have` (the checkpoint's)."""
  missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
  params_first = lambda p: (not p.startswith('params/'), p)
  missing, extra = sorted(missing, key=params_first), sorted(extra, key=params_first)
  reshaped = sorted((p for p in set(want) & set(have) if want[p] != have[p]), key=params_first)
  if missing or extra or reshaped:
    parts = [f'{len(missing)} missing ({_listed(missing)})' if missing else '',
             f'{len(extra)} extra ({_listed(extra)})' if extra else '',
             f'{len(reshaped)} of another shape or dtype (' + _listed(
                 [f'{p} {have[p][0]} {have[p][1]} saved, {want[p][0]} {want[p][1]} now'
                  for p in reshaped], 4) + ')' if reshaped else '']
    raise CheckpointMismatchError(
        f'checkpoint step {step} in {mgr.directory} holds another model than the config '
        f'describes: arrays {"; ".join(p for p in parts if p)}.')


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f'{type(e).__name__}: {text[0][:300] if text else ""}'


def restore(mgr: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, dict]:
  """Restores step `step` onto the shardings carried by `abstract_state`, verified against the
  fingerprints recorded at save time.

  Raises:
    CheckpointMismatchError: the arrays' names or shapes are not the model's.
    UnreadableCheckpointError: the step cannot be read, or its arrays are damaged.
  """
  try:
    return _restore(mgr, step, abstract_state)
  except _Unreadable as e:
    raise UnreadableCheckpointError(f'checkpoint step {step} in {mgr.directory}: {e}') from None


def _restore(mgr: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, dict]:
  check_structure(mgr, step, abstract_state)
  try:
    restored = mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
    raise _Unreadable(f'it cannot be read ({_first_line(e)})') from e
  state, meta = restored['state'], restored['meta'] or {}
  damaged = damaged_arrays(state, meta.get('fingerprint'))
  if damaged:
    raise _Unreadable(f'{len(damaged)} arrays differ from their fingerprint at save time '
                      f'({_listed(damaged, 4)})')
  return state, meta


def restore_params(mgr: ocp.CheckpointManager, step: int, abstract_params: Any) -> Any:
  """Only the 'params' subtree of step `step`'s state, onto the shardings of `abstract_params`.

  Reads no optimizer state, so it needs no optimizer: export and evaluation restore with the
  model's shapes alone (`train_state.abstract_params`). The parameters must match the saved ones
  exactly (`CheckpointMismatchError` names the difference).

  Args:
    mgr: a manager of the run's checkpoints (`manager`).
    step: the step to read.
    abstract_params: ShapeDtypeStructs with shardings, the tree of the model's parameters.

  Returns:
    The parameters as jax.Arrays laid out by the shardings of `abstract_params`.
  """
  try:
    saved = _saved_state(mgr, step)
  except _Unreadable as e:
    raise UnreadableCheckpointError(f'checkpoint step {step} in {mgr.directory}: {e}') from None
  saved_params = saved.get('params') if hasattr(saved, 'get') else None
  _check_arrays(mgr, step, _shapes({'params': saved_params}) if saved_params is not None else {},
                _shapes({'params': abstract_params}))
  target = {'params': abstract_params}
  restore_args = jax.tree_util.tree_map(
      lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype),
      target)
  # The state was saved with StandardSave, whose handler restores whole trees only; the same files
  # read with the PyTree handler allow a partial restore (the other items are never opened).
  reader = ocp.CheckpointManager(
      mgr.directory, options=ocp.CheckpointManagerOptions(read_only=True),
      item_handlers={'state': ocp.PyTreeCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()})
  try:
    restored = reader.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                     partial_restore=True),
        meta=ocp.args.JsonRestore()))
  except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
    raise UnreadableCheckpointError(
        f'checkpoint step {step} in {mgr.directory} cannot be read ({_first_line(e)})') from e
  finally:
    reader.close()
  damaged = damaged_arrays(restored['state'], (restored['meta'] or {}).get('fingerprint'))
  if damaged:
    raise UnreadableCheckpointError(
        f'checkpoint step {step} in {mgr.directory} is damaged: {len(damaged)} arrays differ from '
        f'their fingerprint at save time ({_listed(damaged, 4)}).')
  return restored['state']['params']


def restore_latest(mgr: ocp.CheckpointManager, abstract_state: Any, print_fn=logging.warning):
  """(state, meta, step) of the newest sound checkpoint, or None when the run has none.

  A checkpoint that cannot be read or is damaged is said in one line, set aside
  (`set_aside`) and the next older one is tried; when every one fails,
  UnreadableCheckpointError names each step and why (nothing was written). A structural mismatch
  (missing, extra or reshaped arrays: another model) raises CheckpointMismatchError, never
  skipped.
  """
  mgr.reload()
  steps = sorted(mgr.all_steps(), reverse=True)
  failures = []
  for step in steps:
    try:
      state, meta = _restore(mgr, step, abstract_state)
    except _Unreadable as e:
      failures.append(f'step {step}: {e}')
      print_fn(f'Checkpoint step {step} in {mgr.directory} is not usable: {e}; it is set aside '
               f'in {set_aside(mgr, step)}, trying an older one.')
      continue
    if failures:
      mgr.reload()
    return state, meta, step
  if failures:
    raise UnreadableCheckpointError(
        f'no checkpoint in {mgr.directory} can be restored ({"; ".join(failures)}). Nothing was '
        'deleted: the steps are in ' f'{_aside_dir(mgr)}. To start this run over, pass '
        '--config.train.fresh_start=True.')
  return None


def _aside_dir(mgr: ocp.CheckpointManager):
  return mgr.directory.parent / 'unreadable-checkpoints'


def set_aside(mgr: ocp.CheckpointManager, step: int):
  """Moves step `step`'s folder out of the run's checkpoints into `unreadable-checkpoints/`
  (process 0; kept for inspection, never deleted); returns where it went."""
  target = _aside_dir(mgr) / str(step)
  if jax.process_index() == 0:
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while target.exists():
      target, n = _aside_dir(mgr) / f'{step}.{n}', n + 1
    (mgr.directory / str(step)).rename(target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'amber_jax set aside checkpoint {step}')
  return target
