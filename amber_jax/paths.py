"""Where built corpora, vocabularies and runs live: a cache folder outside git.

`AMBER_JAX_CACHE` overrides the default `~/.cache/amber-jax`.
"""

from __future__ import annotations

import os
import pathlib


def cache_dir() -> pathlib.Path:
  """The root of everything this project builds from downloaded or installed data."""
  return pathlib.Path(os.environ.get('AMBER_JAX_CACHE', '~/.cache/amber-jax')).expanduser()


def corpus_dir(name: str) -> pathlib.Path:
  """Folder of a built corpus (manifest.json, parallel/, mono/)."""
  return cache_dir() / 'corpora' / name


def vocab_path(name: str) -> pathlib.Path:
  """Path of a SentencePiece model file built for corpus `name`."""
  return cache_dir() / 'vocab' / f'{name}.model'
