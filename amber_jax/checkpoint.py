"""Orbax checkpointing: an async CheckpointManager that keeps N steps and restores onto any mesh.

A checkpoint holds two items: 'state' (step, params, opt_state: sharded arrays, restored onto the
shardings of the target) and 'meta' (JSON: the config and the data position).
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
  return ocp.CheckpointManager(path, options=options, item_names=('state', 'meta'))


def save(mgr: ocp.CheckpointManager, step: int, state: Any, meta: dict, *,
         force: bool = False) -> bool:
  """Starts an (async) save of `state` at `step`; returns whether a save was started."""
  return mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave(meta)), force=force)


def abstract_like(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `state` carrying `shardings` (the target of a restore)."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def restore(mgr: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, dict]:
  """Restores step `step` onto the shardings carried by `abstract_state`."""
  restored = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  return restored['state'], restored['meta']


def restore_latest(mgr: ocp.CheckpointManager, abstract_state: Any):
  """(state, meta, step) of the latest checkpoint, or None when there is none."""
  step = mgr.latest_step()
  if step is None:
    return None
  logging.info('Restoring checkpoint at step %d from %s', step, mgr.directory)
  state, meta = restore(mgr, step, abstract_state)
  return state, meta, step
