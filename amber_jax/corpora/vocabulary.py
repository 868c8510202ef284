"""A SentencePiece vocabulary for a built corpus folder: its monolingual train split sampled, its
validation split measured, its folder and manifest recorded (what `amber-jax vocab train` does)."""

from __future__ import annotations

import os
import pathlib

from amber_jax.corpora import layout
from amber_jax.text import vocab


def train_corpus_vocabulary(corpus_dir: str | os.PathLike, model_path: str | os.PathLike,
                            **kwargs) -> pathlib.Path:
  """`vocab.train_sentencepiece` on the corpus at `corpus_dir` (kwargs: vocab_size, alpha, seed...).

  Returns:
    The path of the written `.model` file.
  """
  return vocab.train_sentencepiece(
      layout.read_mono(corpus_dir, 'train'), model_path,
      validation=layout.read_mono(corpus_dir, 'validation'),
      source=layout.provenance(corpus_dir), **kwargs)
