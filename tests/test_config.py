"""Config presets and overrides: a typo fails at start, naming the field."""

import subprocess
import sys

import jax.numpy as jnp
import pytest

from amber_jax import config as config_lib
from amber_jax.core.model import EncoderConfig


def test_override_from_the_shell():
  config, rest = config_lib.load_config(['--config=configs/tiny.py', '--config.train.steps=7',
                                  '--config.objectives.sa_weight=0'])
  assert config.train.steps == 7 and config.objectives.sa_weight == 0 and rest == []


def test_unknown_field_fails_naming_it():
  with pytest.raises(SystemExit, match='stpes'):
    config_lib.load_config(['--config=configs/tiny.py', '--config.train.stpes=7'])


def test_presets_build_valid_encoders():
  for name in ('tiny', 'base'):
    config, _ = config_lib.load_config([f'--config={name}'])
    cfg = EncoderConfig.from_config(config.model)
    assert cfg.hidden_size % cfg.num_heads == 0
  base, _ = config_lib.load_config(['--config=base'])
  assert (base.model.num_layers, base.model.hidden_size, base.model.num_heads,
          base.model.vocab_size, base.model.max_position_embeddings) == (12, 768, 12, 119547, 512)


def test_unknown_model_field_is_refused():
  config, _ = config_lib.load_config(['--config=tiny'])
  with config.unlocked():
    config.model.hiden_size = 3
  with pytest.raises(ValueError, match='hiden_size'):
    EncoderConfig.from_config(config.model)


def test_cli_typo_exits_nonzero_with_the_name():
  out = subprocess.run([sys.executable, '-m', 'amber_jax.cli', 'train', '--config=configs/tiny.py',
                        '--config.data.mono_batch_sise=4'], capture_output=True, text=True,
                       timeout=120)
  assert out.returncode != 0
  assert 'mono_batch_sise' in out.stderr + out.stdout


def test_vocabulary_larger_than_the_embedding_table_is_refused(django_vocab, tmp_path):
  from amber_jax.text import tokenizer
  config, _ = config_lib.load_config(['--config=tiny', '--config.model.vocab_size=100',
                               f'--config.data.vocab_path={django_vocab}'])
  with pytest.raises(ValueError, match='vocab_size is 100'):
    tokenizer.check_vocabulary(config)


def test_each_preset_has_its_own_default_workdir(monkeypatch, tmp_path):
  monkeypatch.setenv('AMBER_JAX_CACHE', str(tmp_path))
  workdirs = {}
  for name in ('tiny', 'base'):
    config, _ = config_lib.load_config([f'--config={name}'])
    assert config.preset == name
    config_lib.resolve_paths(config)
    workdirs[name] = config.workdir
  assert workdirs == {'tiny': str(tmp_path / 'runs' / 'tiny'),
                      'base': str(tmp_path / 'runs' / 'base')}
  explicit, _ = config_lib.load_config(['--config=tiny', f'--config.workdir={tmp_path / "mine"}'])
  config_lib.resolve_paths(explicit)
  assert explicit.workdir == str(tmp_path / 'mine')


@pytest.mark.parametrize('override, message', [
    ('--config.train.steps=-5', r"config.train.steps=-5 is out of range: it must be >= 1"),
    ('--config.train.steps=0', r"config.train.steps=0 is out of range"),
    ('--config.objectives.mask_rate=1.5', r"config.objectives.mask_rate=1.5 is out of range: "
     r"it must be in \[0.0, 1.0\]"),
    ('--config.data.parallel_batch_size=-1', r"config.data.parallel_batch_size=-1 is out"),
    ('--config.train.steps=3.5', r"'train.steps' is a int \(now 200\); could not read '3.5'"),
    ('--config.train.steps=True', r"could not read 'True'"),
])
def test_values_out_of_range_or_of_the_wrong_type_fail_at_load_naming_the_field(override,
                                                                                message):
  with pytest.raises(SystemExit, match=message):
    config_lib.load_config(['--config=tiny', override])


def test_integral_floats_are_read_as_ints():
  config, _ = config_lib.load_config(['--config=tiny', '--config.train.steps=300.0',
                                      '--config.optimizer.learning_rate=1'])
  assert config.train.steps == 300 and isinstance(config.train.steps, int)
  assert config.optimizer.learning_rate == 1.0 and isinstance(config.optimizer.learning_rate, float)


def test_the_accelerator_preset_computes_in_bfloat16_on_packed_pairs():
  from configs import base, default  # pylint: disable=import-outside-toplevel
  cfg = base.get_config()
  assert cfg.model.dtype == 'bfloat16' and default.get_config().model.dtype == 'float32'
  assert cfg.data.pair_packing and default.get_config().data.pair_packing
  assert EncoderConfig.from_config(cfg.model).dtype == jnp.bfloat16
