"""Configs: load a preset, apply `--config.a.b=V` overrides, fill default paths, hash.

A preset is a Python file with `get_config()` returning an `ml_collections.ConfigDict` (big_vision
style): a path, or the name of one in the installed `configs` package (`tiny`, `base`). The CLI,
the experiments and the data tools all load configs through `load_config`; a misspelled field, or
a value of the wrong type, fails here naming it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import pathlib

from amber_jax import paths, storage

DEFAULT_PRESET = 'configs/tiny.py'


class ConfigError(SystemExit):
  """A config that cannot be loaded as given (unknown field, bad value, missing file)."""


def load_config(argv: list[str], default: str = DEFAULT_PRESET):
  """Parses --config=FILE and --config.a.b=VALUE overrides; returns (locked config, other args).

  FILE is a Python file with get_config() (a path, or a preset name such as `tiny`). The preset's
  name (the file's stem) goes into config.preset, which names the default workdir.
  """
  path, overrides, rest = split_config_args(argv)
  return load_preset(path or default, overrides), rest


def load_preset(path: str, overrides=(), **kwargs):
  """The locked config of preset `path` (get_config(**kwargs)) with `overrides` [(a.b, TEXT)]."""
  found = find_file(path)
  config = load_file(found, **kwargs)
  if 'preset' in config:
    with config.unlocked():
      config.preset = pathlib.Path(found).stem
  for name, value in overrides:
    override(config, name, value)
  validate(config)
  config.lock()
  return config


# The numeric fields with a range: (lowest, highest), None = unbounded; both ends allowed.
RANGES = {
    'train.steps': (1, None), 'train.log_every': (1, None), 'train.checkpoint_every': (1, None),
    'train.keep_checkpoints': (1, None), 'train.eval_every': (0, None),
    'train.max_nonfinite_steps': (1, None),
    'data.mono_batch_size': (0, None), 'data.parallel_batch_size': (0, None),
    'data.mono_length': (0, None), 'data.sentence_length': (0, None),
    'data.shuffle_buffer': (1, None), 'data.input_threads': (0, None), 'data.alpha': (0.0, None),
    'model.vocab_size': (1, None), 'model.vocab_multiple': (1, None), 'model.hidden_size': (1, None), 'model.num_layers': (1, None),
    'model.num_heads': (1, None), 'model.intermediate_size': (1, None),
    'model.max_position_embeddings': (1, None), 'model.dropout_rate': (0.0, 1.0),
    'model.attention_dropout_rate': (0.0, 1.0),
    'objectives.mlm_weight': (0.0, None), 'objectives.tlm_weight': (0.0, None),
    'objectives.sa_weight': (0.0, None), 'objectives.wa_weight': (0.0, None),
    'objectives.mask_rate': (0.0, 1.0),
    'optimizer.learning_rate': (0.0, None), 'optimizer.warmup_steps': (0, None),
    'optimizer.weight_decay': (0.0, None), 'optimizer.grad_clip_norm': (0.0, None),
}


# The string fields with a fixed set of values. This module sits below the ones that read them, so
# the sets are written out here; tests/test_user_errors.py checks them against their sources
# (amber_jax.core.model.REMAT_POLICIES / ATTENTION_KINDS, amber_jax.core.masking,
# amber_jax.data.pipeline, amber_jax.parallel.mesh.DCN_AXES / partitioning.RULE_SETS).
CHOICES = {
    'model.dtype': ('float32', 'bfloat16', 'float16'),
    'model.remat': ('none', 'dots', 'full'),
    'model.attention': ('explicit', 'dot_product', 'auto', 'splash'),
    'model.attention_implementation': ('', 'xla', 'cudnn'),
    'objectives.wa_mask': ('paper', 'cross', 'full'),
    'data.too_long': ('truncate', 'drop'),
    'mesh.dcn_axis': ('auto', 'data', 'fsdp'),
    'mesh.rules': ('fsdp_tensor', 'fsdp', 'data_parallel'),
}


def _field(config, dotted: str):
  """(True, config.<dotted>), or (False, None) when the config has no such field (a preset or an
  older run's config without it)."""
  section, _, field = dotted.partition('.')
  if section not in config or field not in config[section]:
    return False, None
  return True, config[section][field]


def validate(config) -> None:
  """Raises ConfigError naming the first field in RANGES whose value is out of its range, or in
  CHOICES whose value is not one of its choices."""
  for dotted, (low, high) in RANGES.items():
    present, value = _field(config, dotted)
    if not present:
      continue
    if (low is not None and value < low) or (high is not None and value > high):
      allowed = (f'>= {low}' if high is None else f'in [{low}, {high}]')
      raise ConfigError(f'amber-jax: config.{dotted}={value!r} is out of range: it must be '
                        f'{allowed}.')
  for dotted, allowed in CHOICES.items():
    present, value = _field(config, dotted)
    if present and value not in allowed:
      raise ConfigError(f'amber-jax: config.{dotted}={value!r} is not one of its choices: '
                        f'{", ".join(repr(a) for a in allowed)}.')


def split_config_args(argv: list[str]) -> tuple[str | None, list[tuple[str, str]], list[str]]:
  """(FILE of --config=FILE or None, [(a.b, VALUE) of each --config.a.b=VALUE], other args)."""
  path, overrides, rest = None, [], []
  for arg in argv:
    if arg.startswith('--config='):
      path = arg[len('--config='):]
    elif arg.startswith('--config.'):
      name, sep, value = arg[len('--config.'):].partition('=')
      if not sep:
        raise ConfigError(f'amber-jax: override {arg!r} needs a value: --config.{name}=VALUE')
      overrides.append((name, value))
    else:
      rest.append(arg)
  return path, overrides, rest


def load_file(path: str, **kwargs):
  """get_config(**kwargs) of the Python file at `path` (unlocked)."""
  if not pathlib.Path(path).exists():
    raise ConfigError(f'amber-jax: config file {path!r} not found; give a path or a preset name '
                      '(tiny, base).')
  spec = importlib.util.spec_from_file_location(f'amber_config_{pathlib.Path(path).stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(**kwargs)


def override(config, dotted: str, text: str) -> None:
  """Sets config.<dotted> from its text, typed like the field's current value."""
  *parents, leaf = dotted.split('.')
  node = config
  for i, part in enumerate(parents + [leaf]):
    if part not in node:
      where = '.'.join(parents[:i]) or 'config'
      raise ConfigError(f'amber-jax: unknown config field {dotted!r} ({part!r} is not in {where}; '
                        f'it has: {sorted(node.keys())})')
    if i < len(parents):
      node = node[part]
  current = node[leaf]
  try:
    if isinstance(current, bool):
      if text.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(text)
      value = text.lower() in ('true', '1')
    elif isinstance(current, (int, float)) and not isinstance(current, bool):
      value = ast.literal_eval(text)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or (
          isinstance(current, int) and value != int(value)):
        raise ValueError(text)  # '3.5' is no int: never cut to 3
      value = type(current)(value)
    elif isinstance(current, str):
      value = text
    else:
      value = ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise ConfigError(f'amber-jax: config field {dotted!r} is a {type(current).__name__} '
                      f'(now {current!r}); could not read {text!r} as one.') from e
  with config.unlocked():
    node[leaf] = value


def find_file(path: str) -> str:
  """A path as given, else a preset of the installed `configs` package (`tiny`, `tiny.py`)."""
  if pathlib.Path(path).exists():
    return path
  spec = importlib.util.find_spec('configs')
  for folder in (spec.submodule_search_locations or []) if spec else []:
    for candidate in (pathlib.Path(folder) / pathlib.Path(path).name,
                      pathlib.Path(folder) / f'{path}.py'):
      if candidate.exists():
        return str(candidate)
  return path


def resolve_paths(config) -> None:
  """Fills the config's '' paths with their defaults under the cache folder (in place): the
  corpus and vocabulary of config.data.task_prefix, and the workdir <cache>/runs/<preset>."""
  with config.unlocked():
    if not config.data.corpus_dir:
      config.data.corpus_dir = str(paths.corpus_dir(config.data.task_prefix))
    pairs = config.data.get('align_pairs') and storage.path(config.data.align_pairs)
    if not config.data.vocab_path and pairs and pairs.is_file():  # trained on the pairs
      digest = hashlib.sha256(pairs.read_bytes()).hexdigest()
      name = f'align-{digest[:12]}-{config.model.vocab_size}'
      config.data.vocab_path = str(paths.vocab_path(name))
    if not config.data.vocab_path:
      config.data.vocab_path = str(paths.vocab_path(config.data.task_prefix))
    if not config.workdir:
      config.workdir = str(paths.cache_dir() / 'runs' / config.get('preset', 'default'))


def config_hash(config) -> str:
  """sha256 of the config's JSON (sorted keys)."""
  text = json.dumps(json.loads(config.to_json_best_effort()), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()
