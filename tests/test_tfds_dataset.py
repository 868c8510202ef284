"""A built corpus -> a local TFDS dataset, read back by name in a process that never imports it."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from amber_jax import cli
from amber_jax.corpora import files, layout, tfds_export

SPLITS = ('train', 'validation')

# Sentences written for these tests.
EN = ['The old lighthouse still shines every night.', 'We baked bread with our grandmother.',
      'The train to the coast leaves at nine.', 'Children were laughing in the garden.',
      'Her letter arrived three weeks late.', 'A quiet street leads to the harbour.']
DE = ['Der alte Leuchtturm leuchtet noch jede Nacht.', 'Wir haben mit unserer Oma Brot gebacken.',
      'Der Zug zur Küste fährt um neun.', 'Im Garten lachten Kinder.',
      'Ihr Brief kam drei Wochen zu spät.', 'Eine ruhige Straße führt zum Hafen.']
PT = ['O velho farol ainda brilha todas as noites.', 'Fizemos pão com a nossa avó.',
      'O trem para o litoral sai às nove.']


@pytest.fixture(scope='module')
def corpus(tmp_path_factory) -> pathlib.Path:
  """A small corpus with en-de and en-pt-br pairs and Swahili text, built by ingest.files."""
  src = tmp_path_factory.mktemp('src')
  (src / 'c.en').write_text('\n'.join(EN) + '\n', encoding='utf-8')
  (src / 'c.de').write_text('\n'.join(DE) + '\n', encoding='utf-8')
  (src / 'pt.tsv').write_text(''.join(f'{e}\t{p}\n' for e, p in zip(EN, PT)), encoding='utf-8')
  (src / 'sw.txt').write_text('Mvua itanyesha kesho.\nNinapenda kusoma vitabu.\n', encoding='utf-8')
  out = tmp_path_factory.mktemp('corpora') / 'mine'
  files.build_files_corpus(out, [f'de:{src / "c.en"},{src / "c.de"}', f'pt-br:{src / "pt.tsv"}'],
                           [f'sw:{src / "sw.txt"}'], validation_fraction=0.4)
  return out


@pytest.fixture(scope='module')
def data_dir(corpus, tmp_path_factory) -> tuple[pathlib.Path, list[str]]:
  data = tmp_path_factory.mktemp('tfds')
  return data, tfds_export.build_tfds(corpus, data)


def test_names_and_config_names(corpus, data_dir):
  _, names = data_dir
  manifest = layout.load_manifest(corpus)
  assert manifest['pairs']['en-de']['validation'] > 0  # both splits are exercised
  assert names == ['amber_corpus/para_en_de:1.0.0', 'amber_corpus/para_en_pt_br:1.0.0',
                   'amber_corpus/mono_de:1.0.0', 'amber_corpus/mono_en:1.0.0',
                   'amber_corpus/mono_pt_br:1.0.0', 'amber_corpus/mono_sw:1.0.0']


_READER = r'''
import json, os, sys
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'
import seqio, tensorflow_datasets as tfds
data_dir = sys.argv[1]
assert 'amber_jax.corpora.tfds_export' not in sys.modules
def rows(ds):
  return [{k: v.decode('utf-8') for k, v in ex.items()} for ex in ds.as_numpy_iterator()]
out = {}
for name in ['amber_corpus/para_en_de:1.0.0', 'amber_corpus/para_en_pt_br:1.0.0',
             'amber_corpus/mono_sw:1.0.0']:
  for split in ['train', 'validation']:
    source = seqio.TfdsDataSource(tfds_name=name, tfds_data_dir=data_dir, read_only=True)
    if split not in source.splits:
      continue
    out[f'{name} {split}'] = rows(source.get_dataset(split=split, shuffle=False))
name = 'amber_corpus/para_en_de:1.0.0'
out['seqio default'] = rows(seqio.TfdsDataSource(tfds_name=name, tfds_data_dir=data_dir)
                            .get_dataset(split='train', shuffle=False))
out['tfds.builder'] = rows(tfds.builder(name, data_dir=data_dir).as_dataset(split='train'))
out['from_directory'] = rows(tfds.builder_from_directory(
    os.path.join(data_dir, 'amber_corpus', 'para_en_de', '1.0.0')).as_dataset(split='train'))
out['modules'] = sorted(m for m in sys.modules if m.startswith('amber_jax'))
print('RESULT ' + json.dumps(out))
'''


def test_read_by_name_in_another_process(corpus, data_dir):
  data, _ = data_dir
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='')
  result = subprocess.run([sys.executable, '-c', _READER, str(data)], capture_output=True,
                          text=True, env=env, timeout=120, cwd=data, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(next(line for line in result.stdout.splitlines()
                        if line.startswith('RESULT '))[len('RESULT '):])
  assert out['modules'] == []
  for lang, config in [('de', 'para_en_de'), ('pt-br', 'para_en_pt_br')]:
    for split in SPLITS:
      expected = [{'src': e, 'tgt': x} for e, x in layout.read_pairs(corpus, split, [lang])[lang]]
      assert out.get(f'amber_corpus/{config}:1.0.0 {split}', []) == expected, (config, split)
  train_de = [{'src': e, 'tgt': x} for e, x in layout.read_pairs(corpus, 'train', ['de'])['de']]
  assert out['seqio default'] == out['tfds.builder'] == out['from_directory'] == train_de
  sw = [{'text': t} for split in SPLITS for t in layout.read_mono(corpus, split, ['sw'])['sw']]
  assert (out.get('amber_corpus/mono_sw:1.0.0 train', [])
          + out.get('amber_corpus/mono_sw:1.0.0 validation', [])) == sw


def test_existing_dataset_needs_overwrite_and_main_prints_names(corpus, data_dir, capsys):
  data, names = data_dir
  with pytest.raises(FileExistsError, match='already exists; pass overwrite=True'):
    tfds_export.build_tfds(corpus, data)
  with pytest.raises(SystemExit, match='amber-jax data tfds: .*already exists'):
    cli.main(['data', 'tfds', str(corpus), '--out', str(data)])
  cli.main(['data', 'tfds', str(corpus), '--out', str(data), '--name', 'mine_v2'])
  printed = capsys.readouterr().out
  assert 'mine_v2/para_en_pt_br:1.0.0' in printed and 'read_only=True' in printed
  assert tfds_export.build_tfds(corpus, data, 'mine_v2', overwrite=True) == [
      n.replace('amber_corpus/', 'mine_v2/') for n in names]
  assert sorted(p.name for p in data.iterdir()) == ['amber_corpus', 'mine_v2']  # no leftovers


def test_overwrite_replaces_and_bad_names(corpus, tmp_path):
  (tmp_path / 'amber_corpus').mkdir()
  (tmp_path / 'amber_corpus' / 'notes.txt').write_text('mine')
  with pytest.raises(FileExistsError, match='does not look like a TFDS dataset'):
    tfds_export.build_tfds(corpus, tmp_path, overwrite=True)
  assert (tmp_path / 'amber_corpus' / 'notes.txt').exists()
  with pytest.raises(ValueError, match="dataset name 'Amber-Corpus' must be lowercase"):
    tfds_export.build_tfds(corpus, tmp_path, name='Amber-Corpus')
  with pytest.raises(FileNotFoundError, match='no manifest.json'):
    tfds_export.build_tfds(tmp_path / 'nothing', tmp_path / 'tfds')


def test_files_corpus_is_accepted_by_the_corpus_tasks(corpus):
  from tasks import corpus as corpus_tasks  # pylint: disable=import-outside-toplevel
  manifest = corpus_tasks._read_manifest(corpus)  # pylint: disable=protected-access
  assert corpus_tasks._chosen_languages(manifest, [], corpus) == ['de', 'pt-br', 'sw']  # sw: mono only; pylint: disable=protected-access
