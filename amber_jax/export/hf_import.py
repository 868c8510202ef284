"""A local HuggingFace BERT or XLM-R folder -> a run folder that `amber-jax train` continues.

  amber-jax import HF_DIR OUT_WORKDIR [--config=configs/tiny.py --config.a.b=V ...]

HF_DIR holds config.json (model_type 'bert' or 'xlm-roberta'), the weights (model.safetensors,
sharded safetensors, or pytorch_model.bin read with `torch.load(weights_only=True)`) and the
tokenizer (tokenizer.json, or vocab.txt / sentencepiece.bpe.model which transformers converts).
An XLM-R keeps its positions as HF numbers them (from padding_idx + 1: `position_offset`) and its
single token type (segment ids of pairs read it too). OUT_WORKDIR receives:
  config.json     the run config: the given config (data, objectives, optimizer, train) with the
                  model fields taken from HF's config.json, data.vocab_path -> tokenizer/
  config.py       `get_config()` reading config.json, for `amber-jax train --config=OUT/config.py`
  tokenizer/      the HF tokenizer (tokenizer.json, tokenizer_config.json ...)
  import.json     where it came from: the HF folder, its architecture, the Hub base model if known
  checkpoints/0   the orbax state at step 0 as `amber_jax.training.loop` lays it out: the imported params,
                  `opt_state` = the optimizer's init of them, counters at zero
`amber-jax train` resumes from the latest step of its workdir, so it continues from step 0.

The names go through `amber_jax.export.hf`'s table (head 'mlm' when the folder has `cls.predictions.*`,
else 'base' plus a freshly initialised MLM head, as sentence-embedding checkpoints have none); the
pooler, NSP head and position_ids buffer are dropped (`hf.HF_EXTRAS`). The word embeddings and
MLM bias are re-indexed so that the tokenizer's specials sit at our ids (`amber_jax.text.hf_tokenizer`);
`amber_jax.export.hf.export(..., hf_to_ours=...)` undoes it on the way out.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from amber_jax import config as config_lib
from amber_jax import errors
from amber_jax.core import model as model_lib
from amber_jax.core.model import EncoderConfig
from amber_jax.export import hf
from amber_jax.text import hf_tokenizer
from amber_jax.training import checkpoint, train_state

# Architectures whose weights are laid out like ours (BertForPreTraining adds a pooler and an NSP
# head, which are dropped).
BERT_ARCHITECTURES = ('BertForMaskedLM', 'BertModel', 'BertForPreTraining')
XLMR_ARCHITECTURES = ('XLMRobertaForMaskedLM', 'XLMRobertaModel')
# model_type -> the architectures we read (the model_type is also our arch name, `hf.ARCHS`).
MODEL_TYPES = {'bert': BERT_ARCHITECTURES, 'xlm-roberta': XLMR_ARCHITECTURES}
# The tokenizer files of a HF folder: tokenizer.json as it is, the others converted by transformers.
TOKENIZER_SOURCES = ('tokenizer.json', 'vocab.txt', 'sentencepiece.bpe.model')
IMPORT_FILE = 'import.json'
TOKENIZER_DIR = 'tokenizer'
# The weight files of a HF folder, in the order `load_hf_state_dict` looks for them.
WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin')
# EncoderConfig fields that come from HF's config.json (the compute dtype stays the run's).
# The fields an HF config.json sets; the run keeps its own compute dtype and vocabulary padding.
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(EncoderConfig)
                     if f.name not in ('dtype', 'vocab_multiple'))
# HF names of the MLM head that `init_mlm_head` creates, with how.
HEAD_INIT = {
    'cls.predictions.transform.dense.weight': 'normal(0, initializer_range)',
    'cls.predictions.transform.dense.bias': 'zeros',
    'cls.predictions.transform.LayerNorm.weight': 'ones',
    'cls.predictions.transform.LayerNorm.bias': 'zeros',
    'cls.predictions.bias': 'zeros',
}
# The same under XLM-R's names.
XLMR_HEAD_INIT = {x[1]: HEAD_INIT[b[1]] for b, x in zip(hf.MLM_HEAD_TABLE, hf.XLMR_MLM_HEAD_TABLE)}
RUN_CONFIG_PY = '''"""This run's config, written by `amber-jax import`: config.json, next to this.

  amber-jax train --config={config_py} --config.train.steps=N
"""

import json
import pathlib

import ml_collections


def get_config():
  path = pathlib.Path(__file__).with_name('config.json')
  config = ml_collections.ConfigDict(json.loads(path.read_text(encoding='utf-8')))
  config.lock()
  return config
'''


class NotAnHFFolderError(errors.UserError, FileNotFoundError):
  """The folder is not a HF model folder: no config.json, weights or tokenizer (named)."""


class ImportTargetError(errors.UserError, FileExistsError):
  """The run folder to import into already holds checkpoints."""


def load_hf_state_dict(hf_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads the weights of a HF model directory as {name: numpy array}.

  Looks for model.safetensors, then model.safetensors.index.json (shards), then pytorch_model.bin
  (read with `torch.load(weights_only=True)`, never unpickling code). bfloat16 safetensors come
  back as ml_dtypes bfloat16; bfloat16 torch tensors as float32 (exact); integer buffers (such as
  old checkpoints' position_ids) as they are.
  """
  path = pathlib.Path(hf_dir)
  single, index, pickle = (path / 'model.safetensors', path / 'model.safetensors.index.json',
                           path / 'pytorch_model.bin')
  if single.exists():
    return safetensors.numpy.load_file(str(single))
  if index.exists():
    shards = sorted(set(json.loads(index.read_text())['weight_map'].values()))
    out = {}
    for shard in shards:
      out.update(safetensors.numpy.load_file(str(path / shard)))
    return out
  if pickle.exists():
    import torch  # pylint: disable=g-import-not-at-top
    state = torch.load(pickle, map_location='cpu', weights_only=True)
    return {k: hf.weight_to_numpy(k, v) if v.dtype.is_floating_point else v.numpy()
            for k, v in state.items()}
  raise NotAnHFFolderError(
      f'No weights in {path}: expected {", ".join(WEIGHT_FILES[:-1])} or {WEIGHT_FILES[-1]}. '
      'Pass a directory written by save_pretrained or by amber_jax.export.hf.export.')


def encoder_config_from_hf(config: Mapping[str, Any], **overrides) -> EncoderConfig:
  """The EncoderConfig of a HF BERT or XLM-R config.json (a dict); `overrides` set our other fields.

  An XLM-R's position table keeps HF's rows: position_offset = pad_token_id + 1 rows come before
  position 0, and max_position_embeddings counts the positions a text can use (HF's less those).

  Raises:
    errors.UserError: a model that is not laid out like ours: model_type other than 'bert' or
      'xlm-roberta', an architecture outside BERT_ARCHITECTURES / XLMR_ARCHITECTURES, an activation
      other than exact 'gelu', or relative position embeddings; or a config without one of the
      shape fields.
  """
  model_type = config.get('model_type')
  archs = list(config.get('architectures') or [])
  known = MODEL_TYPES.get(model_type, ())
  bad_archs = [a for a in archs if a not in known]
  if not known or bad_archs:
    raise errors.UserError(
        f"Expected a BERT or XLM-R checkpoint (model_type 'bert' with architectures among "
        f"{list(BERT_ARCHITECTURES)}, or 'xlm-roberta' with {list(XLMR_ARCHITECTURES)}); found "
        f'model_type={model_type!r}, architectures={archs}. amber_jax.export.hf converts these '
        'layouts only (RoBERTa, GPT-2 etc. differ in names, vocabulary or embeddings).')
  if config.get('hidden_act', 'gelu') != 'gelu':
    raise errors.UserError(
        f"hidden_act={config['hidden_act']!r}; our encoder uses exact GELU ('gelu').")
  if config.get('position_embedding_type', 'absolute') != 'absolute':
    raise errors.UserError(f"position_embedding_type={config['position_embedding_type']!r}; our "
                           "encoder has absolute position embeddings only.")
  missing = [k for k in ('vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads',
                         'intermediate_size', 'max_position_embeddings') if k not in config]
  if missing:
    raise errors.UserError(f'the {model_type} config has no {", ".join(missing)}; a config.json '
                           'written by save_pretrained has them all.')
  xlmr = model_type == 'xlm-roberta'
  pad = config.get('pad_token_id')
  offset = hf.position_offset(model_type, 1 if pad is None else pad)  # XLM-R: padding_idx + 1
  fields = dict(
      vocab_size=config['vocab_size'],
      hidden_size=config['hidden_size'],
      num_layers=config['num_hidden_layers'],
      num_heads=config['num_attention_heads'],
      intermediate_size=config['intermediate_size'],
      max_position_embeddings=config['max_position_embeddings'] - offset,
      position_offset=offset,
      type_vocab_size=config.get('type_vocab_size', 1 if xlmr else 2),
      dropout_rate=config.get('hidden_dropout_prob', 0.1),
      attention_dropout_rate=config.get('attention_probs_dropout_prob', 0.1),
      layer_norm_eps=config.get('layer_norm_eps', 1e-5 if xlmr else 1e-12),
      initializer_range=config.get('initializer_range', 0.02),
  )
  fields.update(overrides)
  return dataclasses.replace(EncoderConfig(), **fields)


def init_mlm_head(cfg: EncoderConfig, seed: int) -> dict[str, Any]:
  """A new MLM head as `Encoder` initialises it (see HEAD_INIT); the decoder is the tied embedding.

  Returns:
    {'mlm_transform': {'kernel', 'bias'}, 'mlm_layer_norm': {'ln': {'scale', 'bias'}},
     'mlm_bias'} of float32 numpy arrays.
  """
  h = cfg.hidden_size
  kernel = nn.initializers.normal(stddev=cfg.initializer_range)(
      jax.random.key(seed), (h, h), jnp.float32)  # [embed, embed]
  zeros = np.zeros((h,), np.float32)
  return {'mlm_transform': {'kernel': np.asarray(kernel), 'bias': zeros.copy()},
          'mlm_layer_norm': {'ln': {'scale': np.ones((h,), np.float32), 'bias': zeros.copy()}},
          'mlm_bias': np.zeros((cfg.vocab_size,), np.float32)}


def params_from_hf(state_dict: Mapping[str, Any], cfg: EncoderConfig, seed: int = 0):
  """Our params from a BERT (or, for a cfg with a position offset, XLM-R) state dict, with or
  without the `bert.` (`roberta.`) prefix and MLM head.

  Returns:
    (params, HF names of the MLM head that were initialised (empty if the head was there),
     HF names dropped knowingly (pooler, NSP head, position_ids)).
  """
  arch = hf.arch_of(cfg)
  spec = hf.arch_spec(arch)
  extras = [re.compile(p) for p in spec.extras]
  dropped = sorted(k for k in state_dict if any(p.fullmatch(k) for p in extras))
  head_prefix = spec.head_table[0][1].split('.')[0] + '.'  # cls. / lm_head.
  if any(k.startswith(head_prefix) for k in state_dict):
    params = hf.from_hf_state_dict(state_dict, cfg, 'mlm', ignore=spec.extras, arch=arch)
    return params, [], dropped
  unprefixed = {k.removeprefix(spec.prefix): v for k, v in state_dict.items()}
  params = hf.from_hf_state_dict(unprefixed, cfg, 'base', ignore=spec.extras, arch=arch)
  params.update(init_mlm_head(cfg, seed))
  return params, list(HEAD_INIT if arch == 'bert' else XLMR_HEAD_INIT), dropped


def _check_folder(hf_dir: pathlib.Path) -> None:
  """Raises NotAnHFFolderError naming what `hf_dir` lacks of a HF model folder."""
  if not hf_dir.is_dir():
    raise NotAnHFFolderError(f'{hf_dir} is not a folder; pass a local HF model folder '
                             '(config.json, model.safetensors or pytorch_model.bin, tokenizer).')
  present = sorted(p.name for p in hf_dir.iterdir())
  if not (hf_dir / 'config.json').is_file():
    raise NotAnHFFolderError(f'No config.json in {hf_dir} (found {present}); a HF model folder '
                             'written by save_pretrained has one.')
  if not any((hf_dir / name).is_file() for name in WEIGHT_FILES):
    run = ('; it is a training run folder (checkpoints/), which `amber-jax train` continues as it '
           'is' if (hf_dir / 'checkpoints').is_dir() else '')
    raise NotAnHFFolderError(
        f'No weights in {hf_dir} (found {present}): expected {", ".join(WEIGHT_FILES[:-1])} or '
        f'{WEIGHT_FILES[-1]}, as save_pretrained writes them{run}.')
  if not any((hf_dir / name).is_file() for name in TOKENIZER_SOURCES):
    raise NotAnHFFolderError(
        f'No tokenizer in {hf_dir} (found {present}): expected one of '
        f'{", ".join(TOKENIZER_SOURCES)}. ' "Save the model's tokenizer into the folder "
        '(tokenizer.save_pretrained(folder)).')


def read_hf_config(hf_dir: pathlib.Path) -> EncoderConfig:
  """The EncoderConfig of `hf_dir`/config.json; errors.UserError naming the file when it is no
  JSON or not a BERT / XLM-R config we can load."""
  path = hf_dir / 'config.json'
  try:
    return encoder_config_from_hf(json.loads(path.read_text(encoding='utf-8')))
  except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
    raise errors.UserError(f'{path}: {e}') from None


def _write_tokenizer(hf_dir: pathlib.Path, out: pathlib.Path) -> hf_tokenizer.HFTokenizer:
  """Copies tokenizer.json (+ its config) into `out`, or converts a vocab.txt or a SentencePiece
  sentencepiece.bpe.model (XLM-R, with the fairseq ids) with transformers."""
  if hf_tokenizer.is_hf_tokenizer(hf_dir):
    hf_tokenizer.write_tokenizer(hf_dir, out)
  else:
    import transformers  # pylint: disable=import-outside-toplevel
    transformers.AutoTokenizer.from_pretrained(str(hf_dir)).save_pretrained(str(out))
  return hf_tokenizer.HFTokenizer(out)


def import_run(hf_dir: str | os.PathLike, workdir: str | os.PathLike, config, *,
               print_fn: Callable[[str], Any] = print,
               base_model: str | None = None) -> pathlib.Path:
  """Writes a run folder (see the module docstring) from a local HF BERT or XLM-R folder.

  Args:
    hf_dir: the HF folder.
    workdir: the run folder to create; it must hold no checkpoint yet.
    config: the run's config (e.g. configs/tiny.py with overrides); its model fields are replaced
      by HF's, data.vocab_path and workdir are set; config.seed seeds a missing MLM head.
    print_fn: where the report goes (initialised and dropped parameters, next command).
    base_model: the Hub id of the checkpoint (e.g. 'FacebookAI/xlm-roberta-base') for the
      exported model card's `base_model`; default: config.json's `_name_or_path` when it is no
      local path.

  Returns:
    The run folder.

  Raises:
    NotAnHFFolderError: a missing folder, config.json, weights or tokenizer.
    ImportTargetError: `workdir` already holds checkpoints.
    errors.UserError: not a BERT checkpoint, an embedding matrix that does not fit its
      config.json, a tokenizer with more ids than the embeddings have rows, or rows longer than
      the model's positions.
    ValueError: names or shapes that do not fit its config.json, or a tokenizer without one of
      the specials.
  """
  hf_dir, workdir = pathlib.Path(hf_dir), pathlib.Path(workdir).absolute()
  _check_folder(hf_dir)
  if (workdir / 'checkpoints').exists() and any((workdir / 'checkpoints').iterdir()):
    raise ImportTargetError(f'{workdir / "checkpoints"} is not empty; import into a new folder '
                            '(or continue that run with `amber-jax train`).')
  mcfg = read_hf_config(hf_dir)
  _check_lengths(config, mcfg)
  state_dict = load_hf_state_dict(hf_dir)
  prefix = hf.arch_spec(hf.arch_of(mcfg)).prefix
  rows = state_dict.get('embeddings.word_embeddings.weight',
                        state_dict.get(f'{prefix}embeddings.word_embeddings.weight'))
  if rows is not None and rows.shape[0] != mcfg.vocab_size:
    raise errors.UserError(
        f'{hf_dir}: config.json says vocab_size={mcfg.vocab_size} but the word embeddings have '
        f'{rows.shape[0]} rows; the config and the weights belong to different models.')
  params, initialised, dropped = params_from_hf(state_dict, mcfg, config.seed)
  tok = _write_tokenizer(hf_dir, workdir / TOKENIZER_DIR)
  if tok.size > mcfg.vocab_size:
    raise errors.UserError(
        f'{hf_dir}: the tokenizer has {tok.size} ids but the word embeddings only '
        f'{mcfg.vocab_size} rows; ids past them would index nothing. Pass the tokenizer that was '
        'trained with these weights.')
  params = hf.reorder_vocab(params, hf_tokenizer.special_order(tok.hf_specials, mcfg.vocab_size))

  with config.unlocked():
    config.model.update({f: getattr(mcfg, f) for f in MODEL_FIELDS})
    config.data.vocab_path = str(workdir / TOKENIZER_DIR)
    config.workdir = str(workdir)
  config_lib.resolve_paths(config)
  params = model_lib.pad_vocab(params, EncoderConfig.from_config(config.model))
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
  (workdir / 'config.py').write_text(RUN_CONFIG_PY.format(config_py=workdir / 'config.py'))
  if base_model is None:
    name = json.loads((hf_dir / 'config.json').read_text(encoding='utf-8')).get('_name_or_path')
    hub_id = isinstance(name, str) and re.fullmatch(r'[\w.-]+/[\w.-]+', name)
    base_model = name if hub_id and not pathlib.Path(name).exists() else None
  (workdir / IMPORT_FILE).write_text(json.dumps(
      {'hf_dir': str(hf_dir.absolute()), 'arch': hf.arch_of(mcfg), 'base_model': base_model},
      indent=2))
  _save_step_zero(config, params, {'imported_from': str(hf_dir.absolute())})

  n_params = sum(np.size(x) for x in jax.tree_util.tree_leaves(params))
  print_fn(f'Imported {hf_dir} ({hf.arch_of(mcfg)}, {mcfg.num_layers} layers, hidden '
           f'{mcfg.hidden_size}, vocabulary {mcfg.vocab_size}, {n_params / 1e6:.1f}M parameters) '
           f'into {workdir}')
  if initialised:
    print_fn('The checkpoint has no MLM head; initialised (decoder tied to the word embeddings):')
    for name in initialised:
      print_fn(f'  {name}: {(HEAD_INIT | XLMR_HEAD_INIT)[name]}')
  if dropped:
    print_fn(f'Dropped (no counterpart in our encoder): {", ".join(dropped)}')
  moved = {p: i for p, i in zip(tok.special_pieces.values(), tok.hf_specials)}
  print_fn('Tokenizer specials (HF id -> our id): '
           + ', '.join(f'{p} {i}->{j}' for j, (p, i) in enumerate(moved.items())))
  print_fn(f'Continue with: amber-jax train --config={workdir / "config.py"} '
           '--config.train.steps=N')
  return workdir


def _check_lengths(config, mcfg: EncoderConfig) -> None:
  longest = max(config.data.mono_length, 2 * config.data.sentence_length)
  if longest > mcfg.max_position_embeddings:
    raise errors.UserError(
        f'config.data asks for rows of {longest} tokens (mono_length={config.data.mono_length}, '
        f'2 x sentence_length={2 * config.data.sentence_length}) but the model has '
        f'{mcfg.max_position_embeddings} positions; lower them (--config.data.sentence_length=).')


def _save_step_zero(config, params, extra_meta: dict) -> None:
  """Saves the state `train_state.setup(config)` describes, laid out as it says: these params, the
  optimizer's `init` of them, and every other entry (the step, counters) zero as `init_state`
  makes it."""
  s = train_state.setup(config)
  params = jax.device_put(params, s.state_shardings['params'])
  state = {k: jax.device_put(jnp.zeros(v.shape, v.dtype), s.state_shardings[k])
           for k, v in s.abstract_state.items() if k not in ('params', 'opt_state')}
  state['params'] = params
  state['opt_state'] = jax.jit(s.tx.init, out_shardings=s.state_shardings['opt_state'])(params)
  mgr = checkpoint.manager(config.workdir, keep=config.train.keep_checkpoints,
                           every=config.train.checkpoint_every)
  meta = {'config': json.loads(config.to_json_best_effort()), 'step': 0, **extra_meta}
  checkpoint.save(mgr, 0, state, meta, force=True)
  mgr.wait_until_finished()
  mgr.close()
