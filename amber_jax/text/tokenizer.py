"""One way to open a tokenizer: a SentencePiece model file or a HuggingFace tokenizer folder."""

from __future__ import annotations

import pathlib

import sentencepiece as spm

from amber_jax.text import hf_tokenizer


def load_processor(vocab_path):
  """A tokenizer with `encode(list of texts) -> lists of our ids`: an `HFTokenizer` for an HF
  tokenizer folder, else the checked SentencePiece processor of a model file."""
  return hf_tokenizer.load_processor(vocab_path)


def check_vocabulary(config) -> None:
  """The tokenizer's ids must fit the model's embedding table (else training silently NaNs)."""
  path = pathlib.Path(config.data.vocab_path)
  if not path.exists():
    raise FileNotFoundError(f'Vocabulary {path} not found; train one with `amber-jax vocab train` '
                            'or set config.data.vocab_path.')
  if path.is_file():  # a SentencePiece model: read without seqio/TensorFlow (TF-free hosts)
    size = spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()
  else:
    size = hf_tokenizer.load_vocabulary(path).vocab_size
  if size > config.model.vocab_size:
    raise ValueError(f'The vocabulary {path} has {size} pieces but config.model.vocab_size is '
                     f'{config.model.vocab_size}; set --config.model.vocab_size={size} or use the '
                     'vocabulary the checkpoint was trained with.')
