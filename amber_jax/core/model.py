"""A BERT-style encoder in Flax linen, with logical axis names on every parameter and activation.

The layout follows HuggingFace's `BertForMaskedLM` (post-LN, exact GELU, token + position + segment
embeddings, MLM head = dense transform + GELU + LayerNorm + decoder tied to the word embeddings +
bias), so that a checkpoint maps one-to-one onto it (see `amber_jax.export.hf`).

Attention can return its probabilities under any [batch, length, length] mask: the word-alignment
objective needs the last layer's probabilities under a special mask.

Performance options (EncoderConfig; the defaults are the reference path, and every option is tested
equal to it in tests/test_model_options.py):
  dtype      compute dtype ('bfloat16' on accelerators); parameters stay float32, and attention
             scores, softmax, LayerNorm statistics and the MLM logits are computed in float32.
  remat      'none' | 'dots' (keep only the weight matmuls' outputs of each layer and recompute the
             rest in the backward pass) | 'full' (keep nothing but each layer's input).
  attention  'explicit' (einsum + softmax) | 'dot_product' | 'splash' | 'auto': wherever the
             probabilities are not returned (all layers but the last of the WA passes),
             `jax.nn.dot_product_attention` or the TPU Pallas kernel (`amber_jax.core.splash`: where
             the mask is "same text, not padding"; interpreted off TPU); 'auto': splash on TPU,
             dot_product elsewhere. Neither has dropout on attention probabilities: 'auto' takes
             the explicit path when attention dropout is active, the others refuse it.
  attention_implementation  '' (JAX picks: XLA in jax 0.10), 'xla' or 'cudnn' (flash attention on
             NVIDIA GPUs; bfloat16/float16 only).
  scan_layers  run the layers as one `jax.lax.scan` over their stacked parameters (XLA compiles
             one layer body instead of num_layers copies: much shorter compile times for deep
             models). Parameters keep their per-layer names (`layer_<i>`), so checkpoints and HF
             export do not change; they are stacked inside the step. Without dropout the result
             equals the unrolled path; with dropout each layer draws from its own key of a
             split, not the unrolled path's stream. The last layer of a pass that returns its
             attention probabilities runs outside the scan.

Logical axes: 'batch', 'length', 'embed', 'heads', 'kv', 'mlp', 'vocab' (activations use the
'act_*' names so that a parameter's 'embed' and an activation's embedding axis can be sharded
differently; `amber_jax.parallel.partitioning` holds the one rules table).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from amber_jax.core import splash
from amber_jax.core.packing import packed_attention_mask, packed_positions

Array = jax.Array

# The fixed ids of the BERT specials in every vocabulary this project builds.
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
NUM_SPECIALS = 5


# remat option -> the jax.checkpoint policy of each layer (None: no remat).
REMAT_POLICIES = {
    'none': None,
    'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    'full': jax.checkpoint_policies.nothing_saveable,
}
ATTENTION_KINDS = ('explicit', 'dot_product', 'auto', 'splash')


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """The encoder's shape. Field names mirror HF's BertConfig where one exists."""

  vocab_size: int = 119_547
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2  # segment ids past the table use its last row (XLM-R has 1)
  position_offset: int = 0  # table rows before position 0 (XLM-R: padding_idx + 1 = 2)
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  dtype: Any = jnp.float32  # compute dtype (bf16 on accelerators); params stay float32.
  remat: str = 'none'  # 'none' | 'dots' | 'full' (see the module docstring)
  attention: str = 'explicit'  # 'explicit' | 'dot_product' | 'auto' | 'splash'
  attention_implementation: str = ''  # '' (JAX's default) | 'xla' | 'cudnn'
  scan_layers: bool = False  # one lax.scan over the layers (see the module docstring)
  # The embedding rows (and MLM logits) are padded to a multiple of this, so that 'vocab' shards
  # over tensor=2..8 (mBERT's 119,547 -> 119,552 with 128); padding ids are never predicted
  # (their logits are masked) and export drops their rows (`strip_vocab_padding`).
  vocab_multiple: int = 1

  def __post_init__(self):
    for field, allowed in (('remat', REMAT_POLICIES), ('attention', ATTENTION_KINDS),
                           ('attention_implementation', ('', 'xla', 'cudnn'))):
      if getattr(self, field) not in allowed:
        raise ValueError(f'{field}={getattr(self, field)!r}; expected one of {list(allowed)}.')
    if self.hidden_size % self.num_heads:
      raise ValueError(
          f'hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; '
          'choose a head count that divides the hidden size.')

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def padded_vocab_size(self) -> int:
    """Rows of the embedding table: vocab_size rounded up to a multiple of vocab_multiple."""
    return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

  @classmethod
  def from_config(cls, model_cfg) -> 'EncoderConfig':
    """Builds the dataclass from a `config.model` ConfigDict (unknown fields raise)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    given = dict(model_cfg)
    unknown = sorted(set(given) - fields)
    if unknown:
      raise ValueError(f'Unknown model config fields {unknown}; allowed: {sorted(fields)}')
    if isinstance(given.get('dtype'), str):
      given['dtype'] = jnp.dtype(given['dtype'])
    return cls(**given)


def _init(std):
  return nn.initializers.normal(stddev=std)


def _constrain(x, axes):
  """Pins an activation's layout. Every projection's output is pinned: without these, XLA's SPMD
  partitioner (jax 0.10.2, CPU) computed wrong gradients on a data x fsdp x tensor mesh (a dense
  layer followed by a nonlinearity, with fsdp/tensor-sharded kernels; tests/test_partitioning.py
  guards it)."""
  return nn.with_logical_constraint(x, axes)


class LayerNorm(nn.Module):
  """LayerNorm with logically annotated scale and bias (named as HF: weight/bias via hf.py)."""

  eps: float
  dtype: Any

  @nn.compact
  def __call__(self, x):
    return nn.LayerNorm(
        epsilon=self.eps, dtype=self.dtype, param_dtype=jnp.float32,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ('embed',)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)),
        name='ln')(x)


class Embeddings(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, ids, segments, deterministic: bool, positions=None):
    """ids, segments: int [batch, length]; positions: int [batch, length] or None (0..length-1).

    Returns [batch, length, embed] in the compute dtype."""
    cfg = self.cfg
    init = _init(cfg.initializer_range)
    word = self.param('word_embeddings',
                      nn.with_logical_partitioning(init, ('vocab', 'embed')),
                      (cfg.padded_vocab_size, cfg.hidden_size), jnp.float32)
    pos = self.param('position_embeddings',
                     nn.with_logical_partitioning(init, (None, 'embed')),
                     (cfg.max_position_embeddings + cfg.position_offset, cfg.hidden_size),
                     jnp.float32)
    seg = self.param('token_type_embeddings',
                     nn.with_logical_partitioning(init, (None, 'embed')),
                     (cfg.type_vocab_size, cfg.hidden_size), jnp.float32)
    length = ids.shape[1]
    if length > cfg.max_position_embeddings:
      raise ValueError(f'Sequence length {length} exceeds max_position_embeddings='
                       f'{cfg.max_position_embeddings}; truncate inputs or enlarge the model.')
    if positions is None:  # our position p is row p + position_offset of the table
      pos_emb = pos[None, cfg.position_offset:cfg.position_offset + length]  # [1, length, embed]
    else:
      pos_emb = jnp.take(pos, positions + cfg.position_offset, axis=0)  # [batch, length, embed]
    x = (jnp.take(word, ids, axis=0) + pos_emb + jnp.take(  # [batch, length, embed]
        seg, jnp.minimum(segments, cfg.type_vocab_size - 1), axis=0))
    x = _constrain(x.astype(cfg.dtype), ('act_batch', 'act_length', 'act_embed'))
    x = LayerNorm(cfg.layer_norm_eps, cfg.dtype, name='layer_norm')(x)
    return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class _Projection(nn.Module):
  """An einsum projection whose kernel is created in its final (multi-axis) shape."""

  cfg: EncoderConfig
  kernel_axes: tuple
  bias_axes: tuple
  kernel_shape: tuple

  @nn.compact
  def __call__(self, x, equation):
    kernel = self.param('kernel', nn.with_logical_partitioning(
        _init(self.cfg.initializer_range), self.kernel_axes), self.kernel_shape, jnp.float32)
    bias_shape = self.kernel_shape[-len(self.bias_axes):]
    bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, self.bias_axes),
                      bias_shape, jnp.float32)
    dtype = self.cfg.dtype
    return jnp.einsum(equation, x.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)


class SelfAttention(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x, mask, deterministic: bool, return_probs: bool, segment_ids=None):
    """x: [batch, length, embed]; mask: bool [batch, 1 or heads, q_length, kv_length]; segment_ids:
    int [batch, length] (i sees j iff equal) where they express the same mask, else None."""
    cfg = self.cfg

    def proj(name):
      with_bias = _Projection(cfg, ('embed', 'heads', 'kv'), ('heads', 'kv'),
                              (cfg.hidden_size, cfg.num_heads, cfg.head_dim), name=name)
      return with_bias(x, 'ble,ehd->blhd')  # [batch, length, heads, kv]

    q, k, v = proj('query'), proj('key'), proj('value')
    q = _constrain(q, ('act_batch', 'act_length', 'act_heads', 'act_kv'))
    k = _constrain(k, ('act_batch', 'act_length', 'act_heads', 'act_kv'))
    v = _constrain(v, ('act_batch', 'act_length', 'act_heads', 'act_kv'))
    probs = None
    kind = splash.choose(
        cfg.attention, dropout_rate=0.0 if deterministic else cfg.attention_dropout_rate,
        return_probs=return_probs, segment_ids=segment_ids, length=x.shape[1])
    if kind == 'splash':
      ctx = splash.splash_attention(q, k, v, segment_ids)  # [batch, q, heads, kv]
    elif kind == 'dot_product':
      ctx = jax.nn.dot_product_attention(
          q, k, v, mask=mask,
          implementation=cfg.attention_implementation or None)  # [batch, q, heads, kv]
    else:
      scores = jnp.einsum('bqhd,bkhd->bhqk', q, k, preferred_element_type=jnp.float32)
      scores = scores / jnp.sqrt(cfg.head_dim).astype(jnp.float32)
      big_neg = jnp.finfo(jnp.float32).min
      scores = jnp.where(mask, scores, big_neg)  # [batch, heads, q, k] float32
      probs = jax.nn.softmax(scores, axis=-1)
      dropped = nn.Dropout(cfg.attention_dropout_rate)(probs, deterministic=deterministic)
      ctx = jnp.einsum('bhqk,bkhd->bqhd', dropped.astype(cfg.dtype), v)  # [batch, q, heads, kv]
    ctx = _constrain(ctx, ('act_batch', 'act_length', 'act_heads', 'act_kv'))
    out = _Projection(cfg, ('heads', 'kv', 'embed'), ('embed',),
                      (cfg.num_heads, cfg.head_dim, cfg.hidden_size),
                      name='output')(ctx, 'bqhd,hde->bqe')  # [batch, length, embed]
    out = _constrain(out, ('act_batch', 'act_length', 'act_embed'))
    return out, (probs if return_probs else None)


class Layer(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x, mask, deterministic: bool, return_probs: bool, segment_ids=None):
    cfg = self.cfg
    init = _init(cfg.initializer_range)
    attn, probs = SelfAttention(cfg, name='attention')(x, mask, deterministic, return_probs,
                                                       segment_ids)
    attn = nn.Dropout(cfg.dropout_rate)(attn, deterministic=deterministic)
    x = LayerNorm(cfg.layer_norm_eps, cfg.dtype, name='attention_layer_norm')(x + attn)
    h = nn.Dense(cfg.intermediate_size, dtype=cfg.dtype, param_dtype=jnp.float32,
                 kernel_init=nn.with_logical_partitioning(init, ('embed', 'mlp')),
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('mlp',)),
                 name='intermediate')(x)  # [batch, length, mlp]
    h = _constrain(jax.nn.gelu(h, approximate=False), ('act_batch', 'act_length', 'act_mlp'))
    h = nn.Dense(cfg.hidden_size, dtype=cfg.dtype, param_dtype=jnp.float32,
                 kernel_init=nn.with_logical_partitioning(init, ('mlp', 'embed')),
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)),
                 name='output')(h)  # [batch, length, embed]
    h = _constrain(h, ('act_batch', 'act_length', 'act_embed'))
    h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
    x = LayerNorm(cfg.layer_norm_eps, cfg.dtype, name='output_layer_norm')(x + h)
    return _constrain(x, ('act_batch', 'act_length', 'act_embed')), probs


def padding_mask(ids: Array) -> Array:
  """Keys that are real tokens, as a [batch, 1, 1, length] bool mask (every query sees them)."""
  return (ids != PAD_ID)[:, None, None, :]


class Encoder(nn.Module):
  """The encoder with its MLM head.

  `__call__` runs the encoder; `mlm_logits` applies the head at chosen positions only, so
  vocabulary-sized logits are computed for the masked tokens and nothing else.
  """

  cfg: EncoderConfig

  def setup(self):
    cfg = self.cfg
    self.embeddings = Embeddings(cfg)
    policy = REMAT_POLICIES[cfg.remat]
    # Same module names with or without remat: parameters (and checkpoints, HF export) unchanged.
    # static_argnums count `self` as 0: (deterministic, return_probs).
    layer = Layer if policy is None else nn.remat(Layer, policy=policy, static_argnums=(3, 4))
    self.layers = [layer(cfg, name=f'layer_{i}') for i in range(cfg.num_layers)]
    init = _init(cfg.initializer_range)
    self.mlm_transform = nn.Dense(
        cfg.hidden_size, dtype=cfg.dtype, param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(init, ('embed', 'mlp')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('mlp',)))
    self.mlm_layer_norm = LayerNorm(cfg.layer_norm_eps, cfg.dtype)
    self.mlm_bias = self.param('mlm_bias',
                               nn.with_logical_partitioning(nn.initializers.zeros, ('vocab',)),
                               (cfg.padded_vocab_size,), jnp.float32)

  def __call__(self, ids, segments=None, attention_mask=None, positions=None, *,
               seq=None, deterministic: bool = True, return_last_probs: bool = False,
               return_all_hidden: bool = False):
    """Encodes token ids.

    Args:
      ids: int [batch, length]; PAD_ID marks padding.
      segments: int [batch, length] segment (token type) ids; zeros when None.
      attention_mask: bool [batch, length, length] (query, key) or None for "every query sees every
        real key". Keys that are padding are always masked.
      positions: int [batch, length] position ids, or None for 0..length-1 in every row (or,
        with `seq`, 0.. from the first token of each text).
      seq: int [batch, length] or None. Packed rows (several texts per row): which text of the
        row each token belongs to (1, 2, ...; 0 on padding). A token then attends only to the
        tokens of its own text (on top of `attention_mask`), and positions restart at each text,
        so each text is encoded exactly as it would be alone in its own row.
      deterministic: no dropout when True.
      return_last_probs: also return the last layer's attention probabilities.
      return_all_hidden: also return the embeddings' output and every layer's output.

    Returns:
      dict with 'hidden' [batch, length, embed]; 'last_probs' [batch, heads, length, length] and
      'all_hidden' (tuple of num_layers + 1 arrays) when asked for.
    """
    if segments is None:
      segments = jnp.zeros_like(ids)
    mask = padding_mask(ids)
    if seq is not None:
      mask = jnp.logical_and(mask, packed_attention_mask(seq)[:, None, :, :])
      positions = packed_positions(seq) if positions is None else positions
    if attention_mask is not None:
      mask = jnp.logical_and(mask, attention_mask[:, None, :, :])
    # The same mask as segment ids (splash attention) when it is "same text, not padding".
    segment_ids = (None if attention_mask is not None else
                   jnp.where(ids != PAD_ID, 1 if seq is None else seq, -1).astype(jnp.int32))
    x = self.embeddings(ids, segments, deterministic, positions)
    all_hidden = [x]
    probs = None
    layers = list(enumerate(self.layers))
    if self.cfg.scan_layers and not self.is_initializing():
      scanned = len(layers) - 1 if return_last_probs else len(layers)
      x, outputs = self._scan_layers(scanned, x, mask, segment_ids, deterministic)
      all_hidden += outputs
      layers = layers[scanned:]
    for i, layer in layers:
      want = return_last_probs and i == len(self.layers) - 1
      x, p = layer(x, mask, deterministic, want, segment_ids)
      if want:
        probs = p
      all_hidden.append(x)
    out = {'hidden': x}
    if return_last_probs:
      out['last_probs'] = probs
    if return_all_hidden:
      out['all_hidden'] = tuple(all_hidden)
    return out

  def _scan_layers(self, count: int, x, mask, segment_ids, deterministic: bool):
    """Layers 0..count-1 as one lax.scan over their stacked parameters: (output, [each output])."""
    if count == 0:
      return x, []
    cfg = self.cfg
    params = [nn.meta.unbox(self.layers[i].variables['params']) for i in range(count)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)
    keys = None if deterministic else jax.random.split(self.make_rng('dropout'), count)
    layer = Layer(cfg, parent=None)  # unbound: applied functionally inside the scan

    def body(h, xs):
      p, key = xs
      rngs = None if key is None else {'dropout': key}
      h, _ = layer.apply({'params': p}, h, mask, deterministic, False, segment_ids, rngs=rngs)
      return h, h

    policy = REMAT_POLICIES[cfg.remat]
    if policy is not None:
      body = jax.checkpoint(body, policy=policy)
    x, outputs = jax.lax.scan(body, x, (stacked, keys))
    return x, [outputs[i] for i in range(count)]

  def mlm_logits(self, hidden, positions=None):
    """MLM logits: [batch, k, vocab] at `positions` int [batch, k], or at every position if None."""
    if positions is not None:
      hidden = jnp.take_along_axis(hidden, positions[..., None], axis=1)  # [batch, k, embed]
    hidden = _constrain(hidden, ('act_batch', 'act_length', 'act_embed'))
    h = _constrain(self.mlm_transform(hidden), ('act_batch', 'act_length', 'act_embed'))
    h = self.mlm_layer_norm(jax.nn.gelu(h, approximate=False))
    word = self.embeddings.variables['params']['word_embeddings']
    word = nn.meta.unbox(word) if isinstance(word, nn.meta.AxisMetadata) else word
    logits = jnp.einsum('bke,ve->bkv', h, word.astype(self.cfg.dtype),
                        preferred_element_type=jnp.float32)
    logits = logits + self.mlm_bias  # [batch, k, vocab] float32
    if self.cfg.padded_vocab_size != self.cfg.vocab_size:  # padding ids are never predicted
      real = jnp.arange(self.cfg.padded_vocab_size) < self.cfg.vocab_size
      logits = jnp.where(real, logits, PADDING_LOGIT)
    return _constrain(logits, ('act_batch', 'act_length', 'act_vocab'))

  def encode_and_predict(self, ids, segments=None, positions=None, deterministic: bool = True):
    """Both at once (used at init so that every parameter is created)."""
    out = self(ids, segments, deterministic=deterministic)
    return out['hidden'], self.mlm_logits(out['hidden'], positions)


# The logit of a padding row of the vocabulary: far below any real one, finite (so that a
# cross-entropy's 0 * logit stays 0).
PADDING_LOGIT = -1e9
# Params indexed by vocabulary id (their rows: one per id).
VOCAB_ROWS = ('embeddings/word_embeddings', 'mlm_bias')


def _map_vocab_rows(params, fn):
  flat = traverse_util.flatten_dict(nn.meta.unbox(dict(params)), sep='/')
  for path in VOCAB_ROWS:
    if path in flat:
      flat[path] = fn(flat[path])
  return traverse_util.unflatten_dict(flat, sep='/')


def strip_vocab_padding(params, cfg: EncoderConfig):
  """(params with the vocabulary rows past cfg.vocab_size cut, cfg with vocab_multiple=1): the
  shapes HF's BertConfig(vocab_size) has. Only rows of exactly cfg.padded_vocab_size are cut
  (params without padding, or of another config, pass through for the caller's shape check)."""
  cut = lambda rows: rows[:cfg.vocab_size] if rows.shape[0] == cfg.padded_vocab_size else rows
  return _map_vocab_rows(params, cut), dataclasses.replace(cfg, vocab_multiple=1)


def pad_vocab(params, cfg: EncoderConfig):
  """Params of cfg.vocab_size vocabulary rows (e.g. imported from HF) grown with zero rows to
  cfg.padded_vocab_size (a padding id is never an input and never predicted)."""

  def grow(rows):
    rows = np.asarray(rows)
    if rows.shape[0] != cfg.vocab_size:
      raise ValueError(f'{rows.shape[0]} vocabulary rows; expected vocab_size={cfg.vocab_size}.')
    return np.pad(rows, [(0, cfg.padded_vocab_size - cfg.vocab_size)] + [(0, 0)] * (rows.ndim - 1))

  return _map_vocab_rows(params, grow)


def init_params(cfg: EncoderConfig, rng: Array, length: int = 8):
  """Parameters (boxed with their logical axis names) for a model of `cfg`."""
  model = Encoder(cfg)
  ids = jnp.full((1, length), CLS_ID, jnp.int32)
  return model.init(rng, ids, method=Encoder.encode_and_predict)['params']
