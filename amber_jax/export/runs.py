"""A training run folder (config.json + checkpoints/) as something to load, evaluate and export.

Restores onto this machine's first device whatever mesh the run was saved from.
"""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
import numpy as np

from amber_jax import errors, storage
from amber_jax.core import model as model_lib
from amber_jax.core import objectives
from amber_jax.core.model import EncoderConfig
from amber_jax.eval import retrieval
from amber_jax.export import hf, hf_import
from amber_jax.export import model_card as card_lib
from amber_jax.parallel import mesh as mesh_lib
from amber_jax.text import hf_tokenizer, tokenizer
from amber_jax.training import checkpoint, train_state


class NotARunError(errors.UserError, FileNotFoundError):
  """A folder that is not a training run (no config.json), or a run without the checkpoint asked
  for (none at all, or not that step); the message names the folder and what it lacks."""


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """The run config (config.json) of a training run folder; NotARunError when it has none."""
  path = storage.path(workdir) / 'config.json'
  if not storage.path(workdir).is_dir():
    raise NotARunError(f'{workdir} is not a folder; give a training run folder (config.json and '
                       'checkpoints/ written by `amber-jax train`).')
  if not path.is_file():
    raise NotARunError(f'{workdir} is not a training run folder: it has no config.json '
                       '(expected config.json and checkpoints/ written by `amber-jax train`).')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def saved_steps(workdir: str | pathlib.Path) -> list[int]:
  """The steps of the finished checkpoints in a run folder's checkpoints/, sorted; read from the
  folder, without opening (or creating) it as a checkpoint manager.

  Locally orbax writes a step under a temporary name and renames it when done; a bucket has no
  rename, so there a step folder counts once orbax has written its commit_success.txt.
  """
  folder = storage.path(workdir) / 'checkpoints'
  if not folder.is_dir():
    return []
  steps = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
  if storage.is_url(workdir):
    steps = [p for p in steps if (p / 'commit_success.txt').exists()]
  return sorted(int(p.name) for p in steps)


def load_params(workdir: str | pathlib.Path, step: int | None = None):
  """(params as numpy, EncoderConfig, run config, step) of a run's checkpoint (default latest).

  Reads only the checkpoint's parameters: the run's optimizer is never built nor restored. The
  vocabulary padding of the run's embedding table (model.vocab_multiple) is dropped: the params
  have one row per id of the tokenizer, as HF's, and the EncoderConfig has vocab_multiple=1.

  Raises:
    NotARunError: `workdir` has no config.json, no checkpoint, or none at `step` (the message
      lists the steps there are).
  """
  config = load_config(workdir)
  if not saved_steps(workdir):  # said before a manager would create checkpoints/ in the folder
    raise NotARunError(f'{workdir} has no checkpoint (nothing in '
                       f'{storage.path(workdir) / "checkpoints"}); train it first '
                       '(`amber-jax train`).')
  mesh = mesh_lib.build({'data': 1, 'fsdp': 1, 'tensor': 1}, devices=jax.devices()[:1])
  target = train_state.abstract_params(config, mesh)  # model shapes only: no optimizer is built
  mgr = checkpoint.manager(workdir, keep=config.train.keep_checkpoints)
  steps = sorted(mgr.all_steps())
  if not steps or (step is not None and step not in steps):
    mgr.close()
    where = f'at step {step}' if step is not None else f'in {mgr.directory}'
    raise NotARunError(f'{workdir} has no checkpoint {where}; its steps are '
                       f'{", ".join(map(str, steps)) or "none (train it first)"}.')
  step = steps[-1] if step is None else step
  try:
    params = checkpoint.restore_params(mgr, step, target)
  finally:
    mgr.close()
  params, mcfg = model_lib.strip_vocab_padding(jax.tree_util.tree_map(np.asarray, params),
                                              EncoderConfig.from_config(config.model))
  return params, mcfg, config, step


def model_card(config, step: int, figures: dict | None = None, imported: dict | None = None) -> str:
  """The exported folder's README.md text: the run's objectives (every registered one's weight),
  data, batch and shape, what it was imported from (`imported`, the run's import.json), and
  `figures` ({name: value}) under '## Evaluation' when given."""
  o = config.objectives
  weights = objectives.weights(o)
  origin = []
  if imported:
    origin = [f"Continued from {imported.get('base_model') or imported.get('hf_dir')} "
              f"({imported.get('arch')}, imported with `amber-jax import`).", '']
  lines = [
      '# AMBER encoder (amber-jax export)', '',
      'A BERT-style multilingual encoder pretrained with the AMBER objectives '
      '(Hu et al., arXiv 2010.07972) by amber-jax.', '', *origin,
      f'- steps: {step}',
      f'- objectives (weights): {weights}',
      f'- sentence alignment: cosine={o.sa_cosine}, temperature={o.sa_temperature}, '
      f'margin={o.sa_margin}, bidirectional={o.sa_bidirectional}; word-alignment mask: {o.wa_mask}',
      f'- data: task module `{config.data.task_module}` (prefix `{config.data.task_prefix}`), '
      f'language sampling alpha={config.data.alpha}, languages: '
      f'{list(config.data.languages) or "all of the corpus"}',
      f'- batch: {config.data.mono_batch_size} monolingual rows + '
      f'{config.data.parallel_batch_size} pairs per step',
      f'- shape: {config.model.num_layers} layers, hidden {config.model.hidden_size}, '
      f'{config.model.num_heads} heads, vocabulary {config.model.vocab_size}',
  ]
  if figures:
    lines += ['', '## Evaluation', '']
    lines += [f'- {k}: {v}' for k, v in figures.items()]
  return '\n'.join(lines) + '\n'


def _languages(config) -> list[str]:
  """The run's languages: config.data.languages, else those of its (local) corpus's mono/."""
  if config.data.languages:
    return list(config.data.languages)
  mono = pathlib.Path(config.data.get('corpus_dir') or '.') / 'mono'
  return sorted(p.name for p in mono.iterdir() if p.is_dir()) if mono.is_dir() else []


def export_run(workdir, out_dir, *, step=None, head='mlm', dtype='float32',
               figures: dict | None = None, arch: str | None = None,
               license_id: str = card_lib.DEFAULT_LICENSE) -> pathlib.Path:
  """Writes a transformers folder (config, safetensors, tokenizer, model card with the Hub's
  metadata, sentence-transformers files) for a run.

  Args:
    arch: 'bert' or 'xlm-roberta'; default the one the run began as (`hf.arch_of`: XLM-R for a
      run imported from XLM-R, BERT for the others).
    license_id: the model card's license.
  """
  params, mcfg, config, step = load_params(workdir, step)
  arch = arch or hf.arch_of(mcfg)
  out = pathlib.Path(out_dir)
  vocab = storage.local(config.data.vocab_path)  # a gs:// vocabulary: this host's mirror
  import_file = storage.path(workdir) / hf_import.IMPORT_FILE
  imported = json.loads(import_file.read_text()) if import_file.exists() else None
  meta = card_lib.front_matter(
      languages=_languages(config), head=head, datasets=[config.data.task_prefix],
      base_model=(imported or {}).get('base_model'), license_id=license_id, tags=[arch])
  hf.export(params, mcfg, out, head=head, dtype=dtype, arch=arch,
            hf_to_ours=hf_tokenizer.hf_to_ours_order(vocab, mcfg.vocab_size),
            tokenizer_fn=lambda d: hf_tokenizer.write_tokenizer(
                vocab, d, model_max_length=mcfg.max_position_embeddings),
            model_card=meta + model_card(config, step, figures, imported))
  card_lib.write_sentence_transformers(out, hidden_size=mcfg.hidden_size,
                                       max_seq_length=mcfg.max_position_embeddings)
  return out


def _is_run(path) -> bool:
  folder = storage.path(path)
  return (folder / 'config.json').exists() and (folder / 'checkpoints').exists()


def load_encoder(path: str | pathlib.Path):
  """(params, EncoderConfig, tokenizer, run config or None) of a run folder (latest checkpoint) or
  of a HuggingFace BERT folder (weights imported into our encoder as `amber-jax import` does, the
  specials moved to our ids; the tokenizer speaks our ids). The tokenizer has `encode(list[str])`
  and `id_to_piece(id)`, like a SentencePiece processor."""
  if _is_run(path):
    params, cfg, config, _ = load_params(path)
    return params, cfg, tokenizer.load_processor(config.data.vocab_path), config
  path = storage.local(path)  # an HF folder in a bucket: this host's mirror
  if (path / 'config.json').exists():
    cfg = hf_import.read_hf_config(path)
    params, _, _ = hf_import.params_from_hf(hf_import.load_hf_state_dict(path), cfg)
    tok = hf_tokenizer.HFTokenizer(path)
    params = hf.reorder_vocab(params, hf_tokenizer.special_order(tok.hf_specials, cfg.vocab_size))
    return params, cfg, tok, None
  raise NotARunError(f'{path} is neither a training run folder (config.json + checkpoints/) nor a '
                     'HuggingFace folder (config.json + model.safetensors): it has no config.json.')


def embedder_for(path: str | pathlib.Path) -> retrieval.Embedder:
  """An embedder from a run folder (our encoder) or an exported HF folder (transformers)."""
  if _is_run(path):
    params, mcfg, sp, _ = load_encoder(path)
    return retrieval.jax_embedder(params, mcfg, sp, max_length=mcfg.max_position_embeddings)
  path = storage.local(path)
  if (path / 'config.json').exists():
    return retrieval.hf_embedder(str(path))
  raise NotARunError(f'{path} is neither a training run folder (config.json + checkpoints/) nor an '
                     'exported HuggingFace folder (config.json + model.safetensors): it has no '
                     'config.json.')
