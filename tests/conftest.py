"""Shared fixtures: the real Django corpus and a small vocabulary, each built once per session."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest  # pylint: disable=wrong-import-position

from xla_env import FAST_COMPILE  # pylint: disable=wrong-import-position

# Before JAX starts its backend; the caller's own XLA_FLAGS come first.
if FAST_COMPILE not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()


@pytest.fixture(scope='session')
def django_corpus(tmp_path_factory):
  """Folder of the Django catalog corpus built from the installed package (~3 s)."""
  from amber_jax.corpora import django_po  # pylint: disable=import-outside-toplevel
  out = tmp_path_factory.mktemp('corpora') / 'django'
  django_po.build_django_corpus(out)
  return out


@pytest.fixture(scope='session')
def django_vocab(django_corpus, tmp_path_factory):
  """Path of a 4,000-piece SentencePiece model trained on `django_corpus` with seed 0 (~3 s)."""
  from amber_jax.corpora import vocabulary  # pylint: disable=import-outside-toplevel
  return vocabulary.train_corpus_vocabulary(
      django_corpus, tmp_path_factory.mktemp('vocab') / 'django.model', vocab_size=4000, seed=0)


@pytest.fixture(scope='session')
def gcs(tmp_path_factory):
  """A running GCS emulator with the bucket gs://bkt, its variables set in this process
  (`gcs.env` for subprocesses); stopped at the end of the session."""
  import gcs_emulator  # pylint: disable=import-outside-toplevel
  emulator = gcs_emulator.start(tmp_path_factory.mktemp('gcs') / 'root')
  saved = {k: os.environ.get(k) for k in emulator.env}
  os.environ.update(emulator.env)
  yield emulator
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  emulator.stop()
