"""Export to and import from HuggingFace transformers: one name table, read both ways.

Our encoder is shaped exactly like `BertForMaskedLM` (see `amber_jax.core.model`), so conversion is a
renaming plus a few reshapes. `ENCODER_TABLE` and `MLM_HEAD_TABLE` hold one row per parameter:
(our path, HF name, transform), with `{i}` standing for the layer index. Export reads a row left to
right (`transform.to_hf`), import right to left (`transform.from_hf`); nothing else knows a name.
XLM-RoBERTa has the same encoder under `roberta.` and its own head (`XLMR_MLM_HEAD_TABLE`;
`ARCH_SPECS` holds both); its positions start at padding_idx + 1 (`position_offset`).

Two heads:
  'mlm'  -> `BertForMaskedLM` (`XLMRobertaForMaskedLM`): encoder names under `bert.` (`roberta.`)
            plus the head. The decoder is tied to the word embeddings and its bias to the head's
            bias, so (as `save_pretrained` does in transformers 5.x) it is not written.
  'base' -> `BertModel` (`XLMRobertaModel`) without a pooler (we never train one). Load it with
            `AutoModel.from_pretrained(path, add_pooling_layer=False)` (no missing or unexpected
            keys); a plain `from_pretrained(path)` reports `pooler.dense.*` as newly initialised.

Any name that the table does not account for, either way, raises a ValueError listing the missing
and the unexpected names: there is no silent partial conversion. Names one knowingly drops on
import (a pooler, an NSP head) are passed as `ignore` patterns, e.g. `HF_EXTRAS`.

Token-indexed rows (`VOCAB_ROWS`: the word embeddings and the MLM bias) can be re-ordered with
`reorder_vocab`: a run on an imported HF tokenizer keeps its specials at our ids (see
`amber_jax.text.hf_tokenizer`), and `export(..., hf_to_ours=...)` writes the rows back in HF's order.
Reading a HF folder (files, config.json, tokenizer) into a run is `amber_jax.export.hf_import`.

transformers and torch are imported only inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Any, Callable, Iterable, Mapping, NamedTuple

from flax import traverse_util
import flax.linen as nn
import jax
import ml_dtypes
import numpy as np
import safetensors.numpy

from amber_jax.core import model as model_lib
from amber_jax.core.model import EncoderConfig, init_params, PAD_ID, strip_vocab_padding

HEADS = ('mlm', 'base')
EXPORT_DTYPES = ('float32', 'bfloat16')
# HF names that are in many published BERT checkpoints but have no counterpart here: the pooler,
# the next-sentence head and the position_ids buffer of older checkpoints.
HF_EXTRAS = (r'(bert\.)?pooler\..*', r'cls\.seq_relationship\..*',
             r'(bert\.)?embeddings\.position_ids')


class Transform(NamedTuple):
  """An invertible map between our array and HF's (both functions get the EncoderConfig).

  The functions use only `.T` and `.reshape`, so they run on numpy arrays and on jax tracers
  (`jax.eval_shape` computes the expected HF shapes from them).
  """

  name: str
  to_hf: Callable[[Any, EncoderConfig], Any]
  from_hf: Callable[[Any, EncoderConfig], Any]


IDENTITY = Transform('identity', lambda x, cfg: x, lambda x, cfg: x)
# Dense kernel [in, out] <-> Linear weight [out, in].
TRANSPOSE = Transform('transpose', lambda x, cfg: x.T, lambda x, cfg: x.T)
# q/k/v kernel [embed, heads, head_dim] <-> Linear weight [heads * head_dim, embed].
SPLIT_HEADS_KERNEL = Transform(
    'split_heads_kernel',
    lambda x, cfg: x.reshape(cfg.hidden_size, cfg.num_heads * cfg.head_dim).T,
    lambda x, cfg: x.T.reshape(cfg.hidden_size, cfg.num_heads, cfg.head_dim))
# q/k/v bias [heads, head_dim] <-> [heads * head_dim].
SPLIT_HEADS_BIAS = Transform(
    'split_heads_bias',
    lambda x, cfg: x.reshape(cfg.num_heads * cfg.head_dim),
    lambda x, cfg: x.reshape(cfg.num_heads, cfg.head_dim))
# attention output kernel [heads, head_dim, embed] <-> Linear weight [embed, heads * head_dim].
MERGE_HEADS_KERNEL = Transform(
    'merge_heads_kernel',
    lambda x, cfg: x.reshape(cfg.num_heads * cfg.head_dim, cfg.hidden_size).T,
    lambda x, cfg: x.T.reshape(cfg.num_heads, cfg.head_dim, cfg.hidden_size))

# (our path, HF name without the 'bert.' prefix, transform); `{i}` is the layer index.
ENCODER_TABLE = (
    ('embeddings/word_embeddings', 'embeddings.word_embeddings.weight', IDENTITY),
    ('embeddings/position_embeddings', 'embeddings.position_embeddings.weight', IDENTITY),
    ('embeddings/token_type_embeddings', 'embeddings.token_type_embeddings.weight', IDENTITY),
    ('embeddings/layer_norm/ln/scale', 'embeddings.LayerNorm.weight', IDENTITY),
    ('embeddings/layer_norm/ln/bias', 'embeddings.LayerNorm.bias', IDENTITY),
    ('layer_{i}/attention/query/kernel', 'encoder.layer.{i}.attention.self.query.weight',
     SPLIT_HEADS_KERNEL),
    ('layer_{i}/attention/query/bias', 'encoder.layer.{i}.attention.self.query.bias',
     SPLIT_HEADS_BIAS),
    ('layer_{i}/attention/key/kernel', 'encoder.layer.{i}.attention.self.key.weight',
     SPLIT_HEADS_KERNEL),
    ('layer_{i}/attention/key/bias', 'encoder.layer.{i}.attention.self.key.bias',
     SPLIT_HEADS_BIAS),
    ('layer_{i}/attention/value/kernel', 'encoder.layer.{i}.attention.self.value.weight',
     SPLIT_HEADS_KERNEL),
    ('layer_{i}/attention/value/bias', 'encoder.layer.{i}.attention.self.value.bias',
     SPLIT_HEADS_BIAS),
    ('layer_{i}/attention/output/kernel', 'encoder.layer.{i}.attention.output.dense.weight',
     MERGE_HEADS_KERNEL),
    ('layer_{i}/attention/output/bias', 'encoder.layer.{i}.attention.output.dense.bias',
     IDENTITY),
    ('layer_{i}/attention_layer_norm/ln/scale',
     'encoder.layer.{i}.attention.output.LayerNorm.weight', IDENTITY),
    ('layer_{i}/attention_layer_norm/ln/bias',
     'encoder.layer.{i}.attention.output.LayerNorm.bias', IDENTITY),
    ('layer_{i}/intermediate/kernel', 'encoder.layer.{i}.intermediate.dense.weight', TRANSPOSE),
    ('layer_{i}/intermediate/bias', 'encoder.layer.{i}.intermediate.dense.bias', IDENTITY),
    ('layer_{i}/output/kernel', 'encoder.layer.{i}.output.dense.weight', TRANSPOSE),
    ('layer_{i}/output/bias', 'encoder.layer.{i}.output.dense.bias', IDENTITY),
    ('layer_{i}/output_layer_norm/ln/scale', 'encoder.layer.{i}.output.LayerNorm.weight',
     IDENTITY),
    ('layer_{i}/output_layer_norm/ln/bias', 'encoder.layer.{i}.output.LayerNorm.bias', IDENTITY),
)
# The MLM head (head='mlm' only); HF names are complete.
MLM_HEAD_TABLE = (
    ('mlm_transform/kernel', 'cls.predictions.transform.dense.weight', TRANSPOSE),
    ('mlm_transform/bias', 'cls.predictions.transform.dense.bias', IDENTITY),
    ('mlm_layer_norm/ln/scale', 'cls.predictions.transform.LayerNorm.weight', IDENTITY),
    ('mlm_layer_norm/ln/bias', 'cls.predictions.transform.LayerNorm.bias', IDENTITY),
    ('mlm_bias', 'cls.predictions.bias', IDENTITY),
)
# HF names tied to another HF name (head='mlm'): not written on export; accepted on import only
# when equal to the name they are tied to (our model has no separate decoder).
MLM_TIED = {
    'cls.predictions.decoder.weight': 'bert.embeddings.word_embeddings.weight',
    'cls.predictions.decoder.bias': 'cls.predictions.bias',
}
# XLM-RoBERTa's MLM head (`XLMRobertaForMaskedLM`: lm_head.*), its ties and its droppable names.
XLMR_MLM_HEAD_TABLE = (
    ('mlm_transform/kernel', 'lm_head.dense.weight', TRANSPOSE),
    ('mlm_transform/bias', 'lm_head.dense.bias', IDENTITY),
    ('mlm_layer_norm/ln/scale', 'lm_head.layer_norm.weight', IDENTITY),
    ('mlm_layer_norm/ln/bias', 'lm_head.layer_norm.bias', IDENTITY),
    ('mlm_bias', 'lm_head.bias', IDENTITY),
)
XLMR_TIED = {'lm_head.decoder.weight': 'roberta.embeddings.word_embeddings.weight',
             'lm_head.decoder.bias': 'lm_head.bias'}
XLMR_EXTRAS = (r'(roberta\.)?pooler\..*', r'(roberta\.)?embeddings\.(position|token_type)_ids')


class Arch(NamedTuple):
  """An HF architecture's names: encoder prefix (MLM), head rows, ties, extras, class per head."""

  prefix: str
  head_table: tuple
  tied: Mapping[str, str]
  extras: tuple
  classes: Mapping[str, str]


ARCH_SPECS = {
    'bert': Arch('bert.', MLM_HEAD_TABLE, MLM_TIED, HF_EXTRAS,
                 {'mlm': 'BertForMaskedLM', 'base': 'BertModel'}),
    'xlm-roberta': Arch('roberta.', XLMR_MLM_HEAD_TABLE, XLMR_TIED, XLMR_EXTRAS,
                        {'mlm': 'XLMRobertaForMaskedLM', 'base': 'XLMRobertaModel'}),
}
ARCHS = tuple(ARCH_SPECS)
VOCAB_ROWS = model_lib.VOCAB_ROWS  # the params indexed by vocabulary id


def _check_head(head: str) -> None:
  if head not in HEADS:
    raise ValueError(f'head={head!r} is not supported; use one of {HEADS} '
                     "('mlm' -> BertForMaskedLM, 'base' -> BertModel).")


def arch_spec(arch: str) -> Arch:
  """The Arch of 'bert' or 'xlm-roberta'; ValueError naming the supported ones otherwise."""
  if arch not in ARCH_SPECS:
    raise ValueError(f'arch={arch!r} is not supported; use one of {ARCHS}.')
  return ARCH_SPECS[arch]


def position_offset(arch: str, pad_token_id: int) -> int:
  """Rows before position 0 in `arch`'s table: XLM-R counts from padding_idx + 1, BERT from 0."""
  return pad_token_id + 1 if arch == 'xlm-roberta' else 0


def arch_of(cfg: EncoderConfig) -> str:
  """The architecture a model of `cfg` began as: 'xlm-roberta' when its positions start at an
  offset (only an imported XLM-R has one), else 'bert'."""
  return 'xlm-roberta' if cfg.position_offset else 'bert'


def name_table(cfg: EncoderConfig, head: str = 'mlm',
               arch: str = 'bert') -> list[tuple[str, str, Transform]]:
  """The table expanded for `cfg`, `head` and `arch`: (our path, full HF name, transform) rows."""
  _check_head(head)
  spec = arch_spec(arch)
  prefix = spec.prefix if head == 'mlm' else ''
  rows = []
  for ours, theirs, transform in ENCODER_TABLE:
    layers = range(cfg.num_layers) if '{i}' in ours else [None]
    for i in layers:
      rows.append((ours.format(i=i), prefix + theirs.format(i=i), transform))
  if head == 'mlm':
    rows.extend(spec.head_table)
  return rows


def _mismatch_error(what: str, missing: Iterable[str], unexpected: Iterable[str],
                    hint: str) -> ValueError:
  return ValueError(
      f'{what} do not match the conversion table: missing {sorted(missing)}, unexpected '
      f'{sorted(unexpected)}. {hint}')


def _our_shapes(cfg: EncoderConfig) -> dict[str, tuple[int, ...]]:
  """Our parameter shapes for `cfg` by path, computed abstractly (no arrays are made)."""
  boxed = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0), length=1))
  flat = traverse_util.flatten_dict(nn.meta.unbox(boxed), sep='/')
  return {path: tuple(leaf.shape) for path, leaf in flat.items()}


def _hf_shape(transform: Transform, shape: tuple[int, ...], cfg: EncoderConfig):
  out = jax.eval_shape(lambda x: transform.to_hf(x, cfg), jax.ShapeDtypeStruct(shape, np.float32))
  return tuple(out.shape)


def _to_numpy(path: str, x) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    raise ValueError(
        f'Parameter {path} is a jax.Array not fully addressable from this process; gather it '
        'first (e.g. jax.experimental.multihost_utils.process_allgather) and export from one '
        'process.')
  return np.asarray(jax.device_get(x))


def to_hf_state_dict(params: Mapping[str, Any], cfg: EncoderConfig, head: str = 'mlm',
                     arch: str = 'bert') -> dict[str, np.ndarray]:
  """Our params -> a HF state dict of contiguous float32 numpy arrays.

  Args:
    params: the encoder's params (boxed or not; jax Arrays, possibly sharded, or numpy). For
      head='base' the MLM-head params may be present and are dropped.
    cfg: the EncoderConfig the params were built with.
    head: 'mlm' (BertForMaskedLM names) or 'base' (BertModel names, no pooler).
    arch: 'bert' or 'xlm-roberta' (XLMRobertaForMaskedLM / XLMRobertaModel names).

  Returns:
    {HF name: float32 array}, without the tied decoder entries.

  Raises:
    ValueError: a parameter the table does not know, one the table needs but `params` lacks, or
      a shape that does not fit `cfg`.
  """
  params, cfg = strip_vocab_padding(params, cfg)  # HF's rows: one per id of the vocabulary
  rows = name_table(cfg, head, arch)
  flat = traverse_util.flatten_dict(nn.meta.unbox(dict(params)), sep='/')
  expected = {ours for ours, _, _ in rows}
  allowed = expected | ({ours for ours, _, _ in MLM_HEAD_TABLE} if head == 'base' else set())
  missing, unexpected = expected - set(flat), set(flat) - allowed
  if missing or unexpected:
    raise _mismatch_error('Params', missing, unexpected,
                          'Pass the encoder params tree (the "params" collection of Encoder).')
  shapes = _our_shapes(cfg)
  out = {}
  for ours, theirs, transform in rows:
    x = _to_numpy(ours, flat[ours])
    if x.shape != shapes[ours]:
      raise ValueError(f'Parameter {ours} has shape {x.shape}, expected {shapes[ours]} for {cfg}; '
                       'pass the EncoderConfig the params were built with.')
    out[theirs] = np.ascontiguousarray(transform.to_hf(x.astype(np.float32), cfg))
  return out


def from_hf_state_dict(state_dict: Mapping[str, Any], cfg: EncoderConfig, head: str = 'mlm', *,
                       ignore: Iterable[str] = (), arch: str = 'bert') -> dict[str, Any]:
  """A HF state dict -> our params (an unboxed nested dict of float32 numpy arrays).

  Args:
    state_dict: {HF name: array} (numpy, or torch tensors), e.g. from `load_hf_state_dict`.
    cfg: the EncoderConfig to build (e.g. from `encoder_config_from_hf`).
    head: 'mlm' (BertForMaskedLM names; returns every parameter) or 'base' (BertModel names;
      returns the encoder without the `mlm_*` head parameters).
    ignore: regular expressions (full match) of HF names to drop knowingly, e.g. `HF_EXTRAS`.
    arch: 'bert' or 'xlm-roberta', whose names `state_dict` has.

  Returns:
    The params tree shaped like `nn.unbox(init_params(cfg, rng))` (less the MLM head for 'base').

  Raises:
    ValueError: an HF name neither in the table nor ignored, a name the table needs that is
      missing, a shape that does not fit `cfg`, or a tied decoder that differs from its source.
  """
  rows = name_table(cfg, head, arch)
  patterns = [re.compile(p) for p in ignore]
  given = {k: v for k, v in state_dict.items() if not any(p.fullmatch(k) for p in patterns)}
  spec = arch_spec(arch)
  tied = spec.tied if head == 'mlm' else {}
  expected = {theirs for _, theirs, _ in rows}
  missing, unexpected = expected - set(given), set(given) - expected - set(tied)
  if missing or unexpected:
    raise _mismatch_error(
        'HF names', missing, unexpected,
        f"Check head={head!r} ('mlm' wants {spec.prefix}* and the MLM head, 'base' wants "
        f'unprefixed {spec.classes["base"]} names), or pass ignore= patterns for names to drop '
        '(see HF_EXTRAS).')
  arrays = {k: weight_to_numpy(k, v) for k, v in given.items()}
  for name, source in tied.items():
    if name in arrays and not np.array_equal(arrays[name], arrays[source]):
      raise ValueError(f'{name} differs from {source}, to which our model ties it; this '
                       'checkpoint has an untied decoder and cannot be imported as is.')
  shapes = _our_shapes(cfg)
  flat = {}
  for ours, theirs, transform in rows:
    want = _hf_shape(transform, shapes[ours], cfg)
    if arrays[theirs].shape != want:
      raise ValueError(f'{theirs} has shape {arrays[theirs].shape}, expected {want} for {cfg}; '
                       'build cfg with hf_import.encoder_config_from_hf(config.json).')
    flat[ours] = np.ascontiguousarray(transform.from_hf(arrays[theirs].astype(np.float32), cfg))
  return traverse_util.unflatten_dict(flat, sep='/')


def reorder_vocab(params: Mapping[str, Any], order) -> dict[str, Any]:
  """`params` with each token-indexed row r replaced by row `order[r]` (numpy arrays out).

  Args:
    params: an (unboxed) params tree; `VOCAB_ROWS` present in it are re-ordered, the MLM bias
      may be absent (head='base'); other leaves are passed through untouched.
    order: int [vocab_size], a permutation: new row r = old row order[r].

  Returns:
    A new tree; `reorder_vocab(reorder_vocab(p, order), np.argsort(order))` gives p back exactly.
  """
  order = np.asarray(order)
  flat = traverse_util.flatten_dict(nn.meta.unbox(dict(params)), sep='/')
  if 'embeddings/word_embeddings' not in flat:
    raise ValueError('No embeddings/word_embeddings in params; pass the encoder params tree.')
  for path in VOCAB_ROWS:
    if path in flat:
      rows = _to_numpy(path, flat[path])
      if rows.shape[0] != order.shape[0] or sorted(order.tolist()) != list(range(len(order))):
        raise ValueError(f'order must be a permutation of the {rows.shape[0]} rows of {path}; got '
                         f'{order.shape[0]} entries. Build it for this vocab_size.')
      flat[path] = rows[order]
  return traverse_util.unflatten_dict(flat, sep='/')


def weight_to_numpy(name: str, x) -> np.ndarray:
  """numpy view of an HF array; torch tensors go through float32 when numpy lacks their dtype."""
  if hasattr(x, 'detach'):  # a torch tensor
    x = x.detach().cpu()
    if not x.dtype.is_floating_point:
      raise ValueError(f'{name} has dtype {x.dtype}; expected a floating-point weight.')
    return x.float().numpy()
  return np.asarray(x)


def shift_positions(params: Mapping[str, Any], cfg: EncoderConfig, offset: int):
  """(params, cfg) with `offset` position rows (zeros where new) before the rows of positions 0..,
  which are kept: the table as `arch` reads it when offset is `position_offset(arch, pad)`."""
  if offset == cfg.position_offset:
    return params, cfg
  flat = traverse_util.flatten_dict(nn.meta.unbox(dict(params)), sep='/')
  path = 'embeddings/position_embeddings'
  rows = _to_numpy(path, flat[path])[cfg.position_offset:]  # the rows of positions 0..
  flat[path] = np.pad(rows, [(offset, 0), (0, 0)])  # zeros before
  cfg = dataclasses.replace(cfg, position_offset=offset)
  return traverse_util.unflatten_dict(flat, sep='/'), cfg


def hf_config(cfg: EncoderConfig, arch: str = 'bert', **extra):
  """The `transformers.BertConfig` (or XLMRobertaConfig) of `cfg`; `extra` sets or overrides
  fields (e.g. architectures, the XLM-R bos/eos ids).

  Activation 'gelu' is HF's exact (erf) GELU, as ours; pad_token_id is our PAD_ID unless given.
  `cfg.position_offset` must be `position_offset(arch, pad_token_id)` (see `shift_positions`).
  """
  import transformers  # pylint: disable=g-import-not-at-top
  fields = dict(
      vocab_size=cfg.vocab_size,
      hidden_size=cfg.hidden_size,
      num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads,
      intermediate_size=cfg.intermediate_size,
      max_position_embeddings=cfg.max_position_embeddings + cfg.position_offset,
      type_vocab_size=cfg.type_vocab_size,
      hidden_act='gelu',
      layer_norm_eps=cfg.layer_norm_eps,
      hidden_dropout_prob=cfg.dropout_rate,
      attention_probs_dropout_prob=cfg.attention_dropout_rate,
      initializer_range=cfg.initializer_range,
      pad_token_id=PAD_ID,
      tie_word_embeddings=True,
      architectures=[arch_spec(arch).classes['mlm']],
  )
  fields.update(extra)
  want = position_offset(arch, fields['pad_token_id'])
  if cfg.position_offset != want:
    raise ValueError(f'position_offset={cfg.position_offset} but {arch} reads position 0 at row '
                     f'{want}; lay the table out with shift_positions(params, cfg, {want}).')
  if arch == 'xlm-roberta':
    return transformers.XLMRobertaConfig(**fields)
  return transformers.BertConfig(**fields)


def export(params: Mapping[str, Any], cfg: EncoderConfig, out_dir: str | os.PathLike, *,
           head: str = 'mlm', dtype: str = 'float32',
           tokenizer_fn: Callable[[pathlib.Path], Any] | None = None,
           model_card: str | None = None, hf_to_ours=None, arch: str = 'bert') -> pathlib.Path:
  """Writes a directory that `transformers` loads with `from_pretrained`.

  Args:
    params: the encoder's params (see `to_hf_state_dict`).
    cfg: the EncoderConfig the params were built with.
    out_dir: the directory to write (created if needed).
    head: 'mlm' -> BertForMaskedLM (load with AutoModelForMaskedLM); 'base' -> BertModel without
      a pooler (load with `AutoModel.from_pretrained(out_dir, add_pooling_layer=False)`).
    dtype: 'float32' or 'bfloat16', the stored weights' dtype (also written as config `dtype`).
    tokenizer_fn: called as `tokenizer_fn(out_dir)` to write the tokenizer files.
    model_card: text of README.md, written when given.
    hf_to_ours: int [vocab_size], our row of each HF id (`amber_jax.text.hf_tokenizer.hf_to_ours_order`)
      for a run on a re-indexed HF tokenizer; None keeps the rows as they are.
    arch: 'bert' or 'xlm-roberta' (the classes `ARCH_SPECS` names), positions laid out as it reads.

  Returns:
    The output directory: config.json, model.safetensors (+ README.md, tokenizer files).
  """
  if dtype not in EXPORT_DTYPES:
    raise ValueError(f'dtype={dtype!r} is not supported for export; use one of {EXPORT_DTYPES}.')
  np_dtype = np.float32 if dtype == 'float32' else ml_dtypes.bfloat16
  params, cfg = strip_vocab_padding(params, cfg)
  order = np.arange(cfg.vocab_size) if hf_to_ours is None else np.asarray(hf_to_ours)
  params = params if hf_to_ours is None else reorder_vocab(params, order)
  pad, cls, sep = (int(np.flatnonzero(order == i)[0]) for i in (PAD_ID, model_lib.CLS_ID,
                                                                 model_lib.SEP_ID))
  extra = {'bos_token_id': cls, 'eos_token_id': sep} if arch == 'xlm-roberta' else {}
  params, cfg = shift_positions(params, cfg, position_offset(arch, pad))
  state = to_hf_state_dict(params, cfg, head, arch)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  hf_config(cfg, arch, architectures=[arch_spec(arch).classes[head]], dtype=dtype,
            pad_token_id=pad, **extra).save_pretrained(out)
  safetensors.numpy.save_file(
      {k: np.ascontiguousarray(v.astype(np_dtype)) for k, v in state.items()},
      str(out / 'model.safetensors'), metadata={'format': 'pt'})
  if model_card is not None:
    (out / 'README.md').write_text(model_card, encoding='utf-8')
  if tokenizer_fn is not None:
    tokenizer_fn(out)
  return out
