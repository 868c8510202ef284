"""Orbax checkpointing: an async CheckpointManager that keeps N steps and restores onto any mesh.

A checkpoint holds two items: 'state' (step, params, opt_state: sharded arrays, restored onto the
shardings of the target) and 'meta' (JSON: the config and the data position). `restore_params`
reads only the state's 'params' (export, evaluation: no optimizer needed).
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


def manager(directory: str | pathlib.Path, *, keep: int, every: int = 1,
            async_save: bool = True) -> ocp.CheckpointManager:
  """A CheckpointManager for `directory`/checkpoints keeping the `keep` latest steps."""
  path = pathlib.Path(directory).absolute() / 'checkpoints'
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, save_interval_steps=every, enable_async_checkpointing=async_save,
      create=True)
  return ocp.CheckpointManager(
      path, options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'meta': ocp.JsonCheckpointHandler()})


def save(mgr: ocp.CheckpointManager, step: int, state: Any, meta: dict, *,
         force: bool = False) -> bool:
  """Starts an (async) save of `state` at `step`; returns whether a save was started."""
  return mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave(meta)), force=force)


def abstract_like(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `state` carrying `shardings` (the target of a restore)."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


class CheckpointMismatchError(ValueError):
  """The checkpoint's parameters are not the ones the model expects."""


def _key_name(k) -> str:
  for attr in ('key', 'idx', 'name'):  # DictKey, SequenceKey, GetAttrKey
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _paths(tree) -> set[str]:
  """Leaf paths as 'a/b/0/mu/...' (namedtuples, lists and dicts alike, as orbax stores them)."""
  leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: x is None)
  return {'/'.join(_key_name(k) for k in path) for path, leaf in leaves if leaf is not None}


def _saved_state(mgr: ocp.CheckpointManager, step: int) -> Any:
  """The tree of the 'state' item's metadata at `step`."""
  metadata = mgr.item_metadata(step)
  saved = metadata['state'] if 'state' in metadata else metadata
  return getattr(saved, 'tree', saved)


def check_structure(mgr: ocp.CheckpointManager, step: int, abstract_state: Any) -> None:
  """Raises naming every missing and extra array: no silent partial restore."""
  _check_paths(mgr, step, _paths(_saved_state(mgr, step)), _paths(abstract_state))


def _check_paths(mgr: ocp.CheckpointManager, step: int, have: set[str], want: set[str]) -> None:
  """Raises CheckpointMismatchError naming what `want` (the model's paths) lacks and adds."""
  if have != want:
    missing, extra = sorted(want - have), sorted(have - want)
    raise CheckpointMismatchError(
        f'Checkpoint step {step} in {mgr.directory} does not match the model: missing '
        f'{missing[:20]}{" ..." if len(missing) > 20 else ""} ({len(missing)}), extra '
        f'{extra[:20]}{" ..." if len(extra) > 20 else ""} ({len(extra)}). Use the config the run '
        'was trained with (its config.json), or import the weights explicitly.')


def restore(mgr: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, dict]:
  """Restores step `step` onto the shardings carried by `abstract_state`."""
  check_structure(mgr, step, abstract_state)
  restored = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  return restored['state'], restored['meta']


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
  saved = _saved_state(mgr, step)
  saved_params = saved.get('params') if hasattr(saved, 'get') else None
  _check_paths(mgr, step, _paths(saved_params) if saved_params is not None else set(),
               _paths(abstract_params))
  target = {'params': abstract_params}
  restore_args = jax.tree_util.tree_map(
      lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype),
      target)
  # The state was saved with StandardSave, whose handler restores whole trees only; the same files
  # read with the PyTree handler allow a partial restore (the other items are never opened).
  reader = ocp.CheckpointManager(
      mgr.directory, options=ocp.CheckpointManagerOptions(read_only=True),
      item_handlers={'state': ocp.PyTreeCheckpointHandler()})
  try:
    restored = reader.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True)))
  finally:
    reader.close()
  return restored['state']['params']


def restore_latest(mgr: ocp.CheckpointManager, abstract_state: Any, print_fn=logging.warning):
  """(state, meta, step) of the newest readable checkpoint, or None when there is none.

  A checkpoint that cannot be read (partial, corrupt) is reported and the next older one is
  tried; a structural mismatch (missing/extra parameters) is raised, never skipped.
  """
  for step in sorted(mgr.all_steps(read=True), reverse=True):
    try:
      state, meta = restore(mgr, step, abstract_state)
    except CheckpointMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
      print_fn(f'Checkpoint at step {step} in {mgr.directory} is unreadable '
               f'({type(e).__name__}: {str(e)[:200]}); falling back to an older one.')
      continue
    return state, meta, step
  return None
