"""TPU splash attention (the Pallas kernel of `jax.experimental.pallas.ops.tpu.splash_attention`)
and the choice of the attention path of each call (`choose`).

Splash attention is a flash-attention kernel for TPUs whose mask is a static per-head mask (here
`FullMask`: every query sees every key) and-ed with segment ids: a query sees a key iff their
segment ids are equal. The encoder's mask is of that form whenever no `attention_mask` is given:
the segment id of a token is its text (`seq`) in packed rows, 1 in plain rows, and a value of its
own on padding (pad queries see only pads: finite, and no real token reads them). It never returns
the probabilities and has no dropout on them.

Its tiles must divide the length and be multiples of 128 (the TPU's lanes): a length that is not
a multiple of 128 takes the dot_product path instead (`supports`).

A Pallas call is not partitioned by GSPMD: under a mesh (`jax.set_mesh`, as the train step runs)
the kernel runs in a `jax.shard_map` with the batch over the mesh axes the logical axis
'act_batch' maps to and the heads over those of 'act_heads' (the context's logical-axis rules),
which is the layout the projections are pinned to; the length and head dimensions stay whole.

"On TPU" means the context mesh's devices are TPUs (else JAX's default backend), so that an AOT
compile for a TPU topology from a CPU host gets the Mosaic kernel; off TPU the kernel runs in
Pallas' interpret mode (slow; for tests on CPU). The Pallas modules are imported where the kernel
is built: their paths move between jax releases, and a machine without them never needs them.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

Array = jax.Array

LANES = 128  # tiles are multiples of this
MAX_BLOCK = 512
# The logical axes of q, k, v and the output inside the kernel call: [batch, heads, length, kv].
AXES = ('act_batch', 'act_heads', 'act_length', 'act_kv')


def target_platform() -> str:
  """The platform being compiled for: the context mesh's devices' (an AOT compile for a TPU
  topology from a CPU host says 'tpu'), else JAX's default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else getattr(mesh, 'abstract_device', None)
  return getattr(device, 'platform', None) or jax.default_backend()


def supports(length: int) -> bool:
  """Whether the kernel takes rows of `length` tokens (a multiple of 128)."""
  return length % LANES == 0


def block_size(length: int) -> int:
  """The tile (queries and keys) for rows of `length`: all of it up to 512, else the largest of
  512, 256, 128 that divides it."""
  if length <= MAX_BLOCK:
    return length
  return next(b for b in (MAX_BLOCK, 256, LANES) if length % b == 0)


def choose(kind: str, *, dropout_rate: float, return_probs: bool, segment_ids,
           length: int) -> str:
  """The path of one attention call: 'explicit', 'dot_product' or 'splash'.

  Args:
    kind: EncoderConfig.attention ('explicit', 'dot_product', 'auto' or 'splash').
    dropout_rate: the rate of dropout on the attention probabilities in this call (0: none).
    return_probs: whether the call returns its probabilities (only the explicit path does).
    segment_ids: the layer's segment ids, or None when the mask is not expressible by them.
    length: the row length.

  Returns:
    'explicit' when asked for, when the probabilities are returned or when 'auto' meets
    attention dropout; 'splash' for 'splash' (or 'auto' on TPU) where the kernel applies;
    'dot_product' otherwise.

  Raises:
    ValueError: 'dot_product' or 'splash' with attention dropout (neither has it).
  """
  if kind == 'explicit' or return_probs:
    return 'explicit'
  if dropout_rate > 0:
    if kind == 'auto':
      return 'explicit'
    raise ValueError(
        f'attention={kind!r} has no dropout on attention probabilities, but this call trains '
        f'with attention_dropout_rate={dropout_rate}; set attention_dropout_rate=0 or '
        "attention='auto' (explicit attention where dropout applies).")
  fits = segment_ids is not None and supports(length)
  if kind == 'splash' or (kind == 'auto' and target_platform() == 'tpu'):
    return 'splash' if fits else 'dot_product'
  return 'dot_product'


def _local_attention(q, k, v, segment_ids, *, interpret: bool):
  """The kernel on one device's block: q, k, v [batch, heads, length, head_dim], segment_ids
  int32 [batch, length] -> [batch, heads, length, head_dim]."""
  # pylint: disable=import-outside-toplevel
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel_lib
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib
  _, heads, length, _ = q.shape
  block = block_size(length)
  sizes = kernel_lib.BlockSizes(
      block_q=block, block_kv=block, block_kv_compute=block,
      block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
      use_fused_bwd_kernel=True)
  mask = mask_lib.MultiHeadMask([mask_lib.FullMask((length, length))] * heads)
  kernel = kernel_lib.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                      interpret=interpret)
  return jax.vmap(kernel)(q, k, v, kernel_lib.SegmentIds(q=segment_ids, kv=segment_ids))


def _mesh_specs(mesh, shape) -> tuple[P, P]:
  """(spec of q/k/v/output [batch, heads, length, kv], spec of the segment ids [batch, length]):
  batch and heads over the mesh axes of the context's logical-axis rules, a dimension that they
  do not divide (or whose axes are manual here) whole."""
  free = set(mesh.axis_names) - set(mesh.manual_axes)
  dims = []
  for size, axes in zip(shape[:2], nn.logical_to_mesh_axes(AXES)[:2]):
    names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    fits = set(names) <= free and size % math.prod(mesh.shape[a] for a in names) == 0
    dims.append(axes if names and fits else None)
  return P(dims[0], dims[1], None, None), P(dims[0], None)


def splash_attention(q: Array, k: Array, v: Array, segment_ids: Array, *,
                     interpret: bool | None = None) -> Array:
  """Softmax attention of q over k, v where a query sees the keys of its own segment.

  Args:
    q, k, v: [batch, length, heads, head_dim] in the compute dtype (scores, softmax and the
      accumulation run in float32 inside the kernel; the output has q's dtype).
    segment_ids: int [batch, length]; query i sees key j iff their ids are equal (every row must
      see at least itself, which holds for self-attention).
    interpret: run Pallas' interpreter (None: off TPU).

  Returns:
    [batch, length, heads, head_dim], as `jax.nn.dot_product_attention` with the equivalent mask.
  """
  if interpret is None:
    interpret = target_platform() != 'tpu'
  scale = 1.0 / math.sqrt(q.shape[-1])  # the kernel does not scale the scores
  q = (q.astype(jnp.float32) * scale).astype(q.dtype)
  q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))  # [batch, heads, length, head_dim]
  segment_ids = segment_ids.astype(jnp.int32)
  fn = functools.partial(_local_attention, interpret=interpret)
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty and set(mesh.axis_names) - set(mesh.manual_axes):
    spec, segment_spec = _mesh_specs(mesh, q.shape)
    fn = jax.shard_map(fn, mesh=mesh, in_specs=(spec, spec, spec, segment_spec), out_specs=spec,
                       check_vma=False)
  return jnp.swapaxes(fn(q, k, v, segment_ids), 1, 2)  # [batch, length, heads, head_dim]
