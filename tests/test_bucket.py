"""Runs whose inputs and workdir are in a bucket (gs://), against a local GCS emulator the tests
start (`gcs` in conftest.py): the storage helpers, a token cache, training and export. The
two-host run that is killed and resumes from the bucket is in test_distributed.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from amber_jax import cli, storage
from amber_jax.data import inputs, pipeline, preprocess, records
from amber_jax.training import metrics
from test_data import corpus, make_cfg, vocab_path  # pylint: disable=unused-import


def test_mirror_fetches_a_changed_file_again_and_upload_copies_a_folder(gcs, tmp_path,
                                                                        monkeypatch):
  monkeypatch.setenv('AMBER_JAX_CACHE', str(tmp_path / 'cache'))
  folder = tmp_path / 'local'
  (folder / 'sub').mkdir(parents=True)
  (folder / 'a.txt').write_text('one')
  (folder / 'sub' / 'b.txt').write_text('two')
  storage.upload(folder, 'gs://bkt/mirror/f')
  mirror = storage.local('gs://bkt/mirror/f')
  assert mirror == tmp_path / 'cache' / 'mirror' / 'gs' / 'bkt' / 'mirror' / 'f'
  assert (mirror / 'sub' / 'b.txt').read_text() == 'two'
  storage.write_text('gs://bkt/mirror/f/a.txt', 'changed')
  assert (storage.local('gs://bkt/mirror/f') / 'a.txt').read_text() == 'changed'
  assert storage.local(str(folder)) == folder  # a local path is itself


def test_a_missing_bucket_is_named_and_not_created(gcs):
  with pytest.raises(FileNotFoundError, match='the bucket gs://no-such-bucket does not exist'):
    storage.makedirs('gs://no-such-bucket/run')
  assert not storage.path('gs://no-such-bucket').exists()


def test_a_cache_written_to_the_bucket_reads_like_a_local_one(gcs, corpus, vocab_path, tmp_path,
                                                              monkeypatch):
  monkeypatch.setenv('AMBER_JAX_CACHE', str(tmp_path / 'cache'))
  storage.upload(corpus, 'gs://bkt/small/corpus')
  storage.copy_file(vocab_path, 'gs://bkt/small/sp.model')
  quiet = lambda *_: None
  preprocess.write_cache(make_cfg(corpus, vocab_path), tmp_path / 'tokens', print_fn=quiet)
  remote = make_cfg('gs://bkt/small/corpus', 'gs://bkt/small/sp.model',
                    cache_dir='gs://bkt/small/tokens')
  preprocess.write_cache(remote, remote.cache_dir, print_fn=quiet)
  mirror = storage.local(remote.cache_dir)
  files = sorted(str(f.relative_to(mirror)) for f in mirror.rglob('*') if f.is_file())
  assert files == sorted(str(f.relative_to(tmp_path / 'tokens'))
                         for f in (tmp_path / 'tokens').rglob('*') if f.is_file())
  for rel in files:
    if rel != records.MANIFEST:
      assert (mirror / rel).read_bytes() == (tmp_path / 'tokens' / rel).read_bytes(), rel
  manifest = json.loads((mirror / records.MANIFEST).read_text())
  assert manifest['vocab']['path'] == 'gs://bkt/small/sp.model'
  local = pipeline.make_train_iterator(make_cfg(corpus, vocab_path,
                                                cache_dir=str(tmp_path / 'tokens')), seed=0)
  from_bucket = pipeline.make_train_iterator(inputs.mirrored(remote), seed=0)
  for _ in range(3):
    a, b = next(local), next(from_bucket)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_train_on_a_bucket_corpus_then_export_the_bucket_run_from_the_command_line(
    gcs, django_corpus, django_vocab, tmp_path, monkeypatch, capsys):
  """Corpus, vocabulary and workdir all in the bucket: the real input pipeline, periodic
  evaluation and `amber-jax export` read them from there (a small model keeps it cheap)."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv('AMBER_JAX_CACHE', str(tmp_path / 'cache'))
  storage.upload(django_corpus, 'gs://bkt/corpora/django')
  storage.copy_file(django_vocab, 'gs://bkt/vocab/django.model')
  run = 'gs://bkt/runs/cli'
  overrides = [f'workdir={run}', 'data.corpus_dir=gs://bkt/corpora/django',
               'data.vocab_path=gs://bkt/vocab/django.model', "data.languages=['de','fr']",
               'model.vocab_size=4000', 'model.hidden_size=32', 'model.num_layers=1',
               'model.num_heads=2', 'model.intermediate_size=64', 'train.steps=2',
               'train.eval_every=2']
  cli.main(['train', '--config=tiny', *[f'--config.{o}' for o in overrides]])
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])['step'] == 2
  assert 'eval/retrieval_mean' in metrics.logged(run)[-1]
  vocab = json.loads((storage.path(run) / 'vocab.json').read_text())
  assert vocab['path'] == 'gs://bkt/vocab/django.model'
  out = tmp_path / 'hf'
  export = subprocess.run([sys.executable, '-m', 'amber_jax.cli', 'export', run, str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, **gcs.env})
  assert export.returncode == 0, export.stdout[-3000:] + export.stderr[-3000:]
  assert (out / 'model.safetensors').is_file() and (out / 'tokenizer.json').is_file()
  assert json.loads((out / 'config.json').read_text())['hidden_size'] == 32
  assert not (tmp_path / 'gs:').exists()
