"""The training state: optimizer, shardings, and a fresh state made directly in its layout.

The state is a plain dict {'step', 'params', 'opt_state', 'nonfinite_streak'} whose leaves are
global jax.Arrays laid out by `amber_jax.parallel.partitioning`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from amber_jax.core.model import Encoder, EncoderConfig, init_params
from amber_jax.parallel import mesh as mesh_lib
from amber_jax.parallel import partitioning
from amber_jax.training import checkpoint
from amber_jax.training.stages import stages

# {'step': int32 [], 'params': tree, 'opt_state': tree, 'nonfinite_streak': int32 []}
State = dict


def learning_rate_schedule(ocfg, total_steps: int) -> optax.Schedule:
  """Linear warmup to the peak, then linear decay to 0 at `total_steps` (BERT's schedule)."""
  warmup = max(1, min(ocfg.warmup_steps, total_steps))
  return optax.join_schedules([
      optax.linear_schedule(0.0, ocfg.learning_rate, warmup),
      optax.linear_schedule(ocfg.learning_rate, 0.0, max(1, total_steps - warmup)),
  ], [warmup])


def make_optimizer(ocfg, total_steps: int) -> optax.GradientTransformation:
  """AdamW with warmup + linear decay; no weight decay on biases and LayerNorm parameters."""
  decay_mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)
  chain = []
  if ocfg.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(ocfg.grad_clip_norm))
  chain.append(optax.adamw(learning_rate_schedule(ocfg, total_steps), b1=ocfg.b1, b2=ocfg.b2,
                           eps=ocfg.eps, weight_decay=ocfg.weight_decay, mask=decay_mask))
  return optax.chain(*chain)


@dataclasses.dataclass
class Setup:
  """Everything a run needs that follows from the config and the mesh."""

  config: Any
  mesh: jax.sharding.Mesh
  model: Encoder
  tx: optax.GradientTransformation
  state_shardings: Any
  abstract_state: Any  # ShapeDtypeStructs with shardings (restore target, AOT compile input)
  rules: partitioning.Rules = partitioning.RULE_SETS[partitioning.DEFAULT_RULES]  # config.mesh.rules


def setup(config, mesh=None) -> Setup:
  """Builds mesh, model, optimizer and the state's shardings (no arrays are allocated)."""
  mesh = mesh if mesh is not None else mesh_lib.build(config.mesh)
  rules = partitioning.config_rules(config.mesh)
  mcfg = EncoderConfig.from_config(config.model)
  model = Encoder(mcfg)
  tx = make_optimizer(config.optimizer, config.train.steps)
  for stage in stages(config):
    partitioning.check_batch_divisible(
        {'mono': stage.config.data.mono_batch_size,
         'parallel': stage.config.data.parallel_batch_size}, mesh)
  boxed = jax.eval_shape(lambda: init_params(mcfg, jax.random.key(0)))
  param_sh = partitioning.param_shardings(boxed, mesh, rules)
  params_abs = nn.meta.unbox(boxed)
  opt_abs = jax.eval_shape(tx.init, params_abs)
  # Optimizer moments follow their parameter's sharding; scalars (counts) are replicated.
  opt_sh = _opt_state_shardings(opt_abs, params_abs, param_sh, mesh)
  scalar_sh = partitioning.replicated(mesh)
  state_sh = {'step': scalar_sh, 'params': param_sh, 'opt_state': opt_sh,
              'nonfinite_streak': scalar_sh}
  state_abs = {'step': jax.ShapeDtypeStruct((), jnp.int32), 'params': params_abs,
               'opt_state': opt_abs, 'nonfinite_streak': jax.ShapeDtypeStruct((), jnp.int32)}
  return Setup(config, mesh, model, tx, state_sh, checkpoint.abstract_like(state_abs, state_sh),
               rules)


def abstract_params(config, mesh: jax.sharding.Mesh) -> Any:
  """The model's parameters as ShapeDtypeStructs carrying their shardings on `mesh`: a restore
  target for `checkpoint.restore_params` that builds no optimizer (export, evaluation). Only
  config.model is read."""
  mcfg = EncoderConfig.from_config(config.model)
  boxed = jax.eval_shape(lambda: init_params(mcfg, jax.random.key(0)))
  shardings = partitioning.param_shardings(boxed, mesh, partitioning.config_rules(config.mesh))
  return checkpoint.abstract_like(nn.meta.unbox(boxed), shardings)


def _opt_state_shardings(opt_abs, params_abs, param_sh, mesh):
  """Each optimizer leaf whose path ends with a parameter's path (and has its shape) gets that
  parameter's sharding (Adam's moments); everything else (counts) is replicated."""
  by_path = {}
  for (path, leaf), sh in zip(jax.tree_util.tree_leaves_with_path(params_abs),
                              jax.tree_util.tree_leaves(param_sh)):
    by_path[tuple(path)] = (leaf.shape, sh)

  def pick(path, leaf):
    for i in range(len(path)):
      hit = by_path.get(tuple(path[i:]))
      if hit is not None and hit[0] == getattr(leaf, 'shape', None):
        return hit[1]
    return partitioning.replicated(mesh)

  return jax.tree_util.tree_map_with_path(pick, opt_abs)


def init_state(s: Setup, seed: int) -> State:
  """A fresh state, created directly in its sharded layout."""

  def init():
    params = nn.meta.unbox(init_params(s.model.cfg, jax.random.key(seed)))
    return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': s.tx.init(params),
            'nonfinite_streak': jnp.zeros((), jnp.int32)}

  with partitioning.activation_rules(s.mesh, s.rules):
    return jax.jit(init, out_shardings=s.state_shardings)()
