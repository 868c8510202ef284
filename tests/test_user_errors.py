"""User errors end `amber-jax` in one line naming the file, folder, step, line or value, exit 2,
and no traceback: a run folder without (that) checkpoint, a folder that is no HF model, a
malformed pairs TSV, resuming with another vocabulary, a vocabulary size the text cannot fill,
and a config value outside its choices."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from amber_jax import cli, errors
from amber_jax import config as config_lib
from amber_jax.core import masking
from amber_jax.core import model
from amber_jax.export import hf_import
from amber_jax.parallel import mesh, partitioning
from amber_jax.training import loop
from test_train import small_config, stream


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv('AMBER_JAX_CACHE', str(tmp_path / 'cache'))


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
  """A 2-step run (synthetic input) recording the vocabulary file `vocab.model` beside it."""
  root = tmp_path_factory.mktemp('user_errors')
  vocab_file = root / 'vocab.model'
  vocab_file.write_bytes(b'pieces of the run vocabulary')
  cfg = small_config(root / 'run', steps=2)
  with cfg.unlocked():
    cfg.data.vocab_path = str(vocab_file)
  loop.train(cfg, batches=stream(), print_fn=lambda *_: None)
  return root / 'run'


def _fails_in_one_line(argv, capsys, match: str) -> str:
  """Runs `amber-jax ARGV`; asserts exit 2 with one line on stderr matching `match`, no
  traceback; returns that line."""
  capsys.readouterr()
  with pytest.raises(SystemExit, match=match) as info:
    cli.main(argv)
  assert info.value.code == errors.EXIT_USER == 2
  err = capsys.readouterr().err
  assert 'Traceback' not in err and err.count('\n') == 1, err
  return err


def test_export_of_a_folder_that_is_no_run_names_what_it_lacks(tmp_path, capsys):
  folder = tmp_path / 'not_a_run'
  folder.mkdir()
  _fails_in_one_line(['export', str(folder), str(tmp_path / 'out')], capsys,
                     f'{folder} is not a training run folder: it has no config.json')
  assert not (tmp_path / 'out').exists()


def test_export_of_a_run_without_checkpoints_says_so(trained_run, tmp_path, capsys):
  folder = tmp_path / 'no_checkpoints'
  folder.mkdir()
  shutil.copy(trained_run / 'config.json', folder / 'config.json')
  _fails_in_one_line(['export', str(folder), str(tmp_path / 'out')], capsys,
                     f'{folder} has no checkpoint')
  assert not (folder / 'checkpoints').exists()  # looking did not create one


def test_export_of_a_missing_step_lists_the_steps_there_are(trained_run, tmp_path, capsys):
  err = _fails_in_one_line(['export', str(trained_run), str(tmp_path / 'out'), '--step', '99'],
                           capsys, 'no checkpoint at step 99; its steps are .*2')
  assert 'Directory does not exist' not in err


@pytest.mark.parametrize('files, lacks', [
    ({}, 'No config.json in'),
    ({'config.json': json.dumps({'model_type': 'bert'}), 'vocab.txt': '[PAD]\n'}, 'No weights in'),
])
def test_import_of_a_folder_that_is_no_hf_model_names_what_it_lacks(files, lacks, tmp_path,
                                                                    capsys):
  folder = tmp_path / 'not_hf'
  folder.mkdir()
  for name, text in files.items():
    (folder / name).write_text(text)
  _fails_in_one_line(['import', str(folder), str(tmp_path / 'run')], capsys,
                     f'{lacks} {folder}')
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('text, line', [
    ('de\tHallo\tHello\nno tab on this line\n', 2),
    ('Hallo\tHello\n\nde\t\tHello\n', 3),
])
def test_eval_with_a_malformed_pairs_tsv_names_the_file_and_line(trained_run, text, line,
                                                                 tmp_path, capsys):
  pairs = tmp_path / 'pairs.tsv'
  pairs.write_text(text, encoding='utf-8')
  _fails_in_one_line(['eval', 'retrieval', str(trained_run), '--pairs', str(pairs)], capsys,
                     f'{pairs}:{line}: expected `lang<TAB>src<TAB>tgt`')


def test_eval_with_a_missing_pairs_file_names_it(trained_run, tmp_path, capsys):
  pairs = tmp_path / 'missing.tsv'
  _fails_in_one_line(['eval', 'retrieval', str(trained_run), '--pairs', str(pairs)], capsys,
                     f'the pairs file {pairs} does not exist')


def test_resuming_with_another_vocabulary_names_both(trained_run, tmp_path, capsys):
  run = tmp_path / 'run'
  shutil.copytree(trained_run, run)
  (run / 'config.py').write_text(hf_import.RUN_CONFIG_PY.format(config_py=run / 'config.py'))
  other = tmp_path / 'other.model'
  other.write_bytes(b'pieces of another vocabulary')
  before = (run / 'config.json').read_text()
  err = _fails_in_one_line(
      ['train', f'--config={run / "config.py"}', f'--config.workdir={run}',
       f'--config.data.vocab_path={other}', '--config.train.steps=4'], capsys,
      'trained with the vocabulary')
  assert str(trained_run.parent / 'vocab.model') in err and str(other) in err, err
  assert (run / 'config.json').read_text() == before  # nothing written


def _tiny_corpus(folder: pathlib.Path) -> pathlib.Path:
  """A corpus in the on-disk layout with 30 short English sentences (train) and 3 (validation)."""
  words = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'dog', 'ran']
  train = [' '.join(words[(i + j) % len(words)] for j in range(4)) for i in range(30)]
  for split, lines in (('train', train), ('validation', train[:3])):
    (folder / 'mono' / 'en').mkdir(parents=True, exist_ok=True)
    (folder / 'mono' / 'en' / f'{split}.txt').write_text('\n'.join(lines) + '\n')
  (folder / 'manifest.json').write_text(json.dumps({'mono': {'en': {}}, 'parallel': {}}))
  return folder


@pytest.mark.parametrize('size, says', [
    ('5000', r'vocab_size=5000 is too large for the 30 sentences sampled from .*corpus: they give '
             r'at most \d+ pieces'),
    ('8', r'vocab_size=8 is too small .* need at least \d+ pieces'),
])
def test_vocab_train_with_a_size_the_text_cannot_fill_says_what_works(size, says, tmp_path,
                                                                      capsys):
  corpus = _tiny_corpus(tmp_path / 'corpus')
  out = tmp_path / 'vocab' / 'v.model'
  _fails_in_one_line(['vocab', 'train', '--corpus', str(corpus), '--out', str(out), '--size',
                      size], capsys, says)
  assert not out.exists()


def test_vocab_train_at_the_largest_size_it_names_works(tmp_path, capsys):
  corpus = _tiny_corpus(tmp_path / 'corpus')
  out = tmp_path / 'v.model'
  err = _fails_in_one_line(['vocab', 'train', '--corpus', str(corpus), '--out', str(out),
                            '--size', '5000'], capsys, 'too large')
  largest = err.split('--size ')[1].split(')')[0]
  cli.main(['vocab', 'train', '--corpus', str(corpus), '--out', str(out), '--size', largest])
  assert out.exists()


@pytest.mark.parametrize('override, message', [
    ('--config.model.attention=fast',
     r"config.model.attention='fast' is not one of its choices: 'explicit', 'dot_product', "
     r"'auto', 'splash'"),
    ('--config.model.remat=some', r"config.model.remat='some' is not one of its choices"),
    ('--config.model.dtype=bf16', r"config.model.dtype='bf16' is not one of its choices"),
    ('--config.data.too_long=cut', r"config.data.too_long='cut' is not one of its choices"),
    ('--config.mesh.rules=tp', r"config.mesh.rules='tp' is not one of its choices"),
])
def test_a_config_value_outside_its_choices_fails_at_load(override, message, capsys):
  _fails_in_one_line(['train', '--config=tiny', override, '--config.train.steps=1'], capsys,
                     message)


def test_config_choices_are_the_ones_the_code_takes():
  choices = config_lib.CHOICES
  assert choices['model.remat'] == tuple(model.REMAT_POLICIES)
  assert choices['model.attention'] == model.ATTENTION_KINDS
  assert choices['mesh.dcn_axis'] == mesh.DCN_AXES
  assert set(choices['mesh.rules']) == set(partitioning.RULE_SETS)
  ids, segments = np.array([[2, 7, 3, 8, 3]]), np.array([[0, 0, 0, 1, 1]])
  for variant in choices['objectives.wa_mask']:
    masking.wa_attention_mask(ids, segments, variant)  # each choice is a mask it makes
  for value in choices['model.attention_implementation']:
    model.EncoderConfig(attention_implementation=value)
  for value in choices['model.dtype']:
    model.EncoderConfig.from_config({'dtype': value})
  for preset in ('tiny', 'base'):
    config_lib.load_config([f'--config={preset}'])  # the presets' own values pass


def test_a_vocab_path_that_is_no_sentencepiece_model_is_one_line(tmp_path, capsys):
  bogus = tmp_path / 'notes.model'
  bogus.write_text('not a model\n')
  with pytest.raises(SystemExit) as info:
    cli.main(['train', '--config=tiny', f'--config.data.vocab_path={bogus}',
              f'--config.workdir={tmp_path / "run"}', '--config.train.steps=1'])
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert f'{bogus} is not a SentencePiece model' in err and 'Traceback' not in err
