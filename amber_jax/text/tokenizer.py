"""The one way to open a vocabulary: a SentencePiece model file or a HuggingFace tokenizer folder.

`config.data.vocab_path` is either kind; everything outside `amber_jax.text` opens it here:
  `load_processor`     encode texts to our ids ([PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4), TF-free;
  `load_vocabulary`    the seqio vocabulary the pipeline tokenizes with (imports seqio and TF);
  `vocab_size`         its number of ids, TF-free;
  `check_vocabulary`   its ids fit config.model.vocab_size;
  `vocab_fingerprint`  the sha256 that ties a run or a token cache to the vocabulary's bytes.
The kinds themselves live in `amber_jax.text.vocab` (SentencePiece: training, the checked model,
the conversion to an HF tokenizer) and `amber_jax.text.hf_tokenizer` (an HF tokenizer re-indexed
to our specials). A `gs://` vocab_path is read from this host's mirror of it (`storage.local`).
"""

from __future__ import annotations

import hashlib
import os

from amber_jax import storage
from amber_jax.text import hf_tokenizer, vocab


def load_processor(vocab_path: str | os.PathLike):
  """A tokenizer with `encode(list of texts) -> lists of our ids` (and `id_to_piece`).

  Returns:
    `hf_tokenizer.HFTokenizer` for an HF tokenizer folder (or its tokenizer.json), else the
    SentencePiece processor of a model file, its specials checked (`vocab.load_sentencepiece`).
  """
  vocab_path = storage.local(vocab_path)
  if hf_tokenizer.is_hf_tokenizer(vocab_path):
    return hf_tokenizer.HFTokenizer(vocab_path)
  return vocab.load_sentencepiece(vocab_path)


def load_vocabulary(vocab_path: str | os.PathLike):
  """The seqio vocabulary of either kind (no extra ids); imports seqio (and TensorFlow).

  Returns:
    `hf_tokenizer.HFTokenizerVocabulary` for an HF tokenizer folder, else a
    `seqio.SentencePieceVocabulary`; both encode to the ids `load_processor` gives.
  """
  vocab_path = storage.local(vocab_path)
  if hf_tokenizer.is_hf_tokenizer(vocab_path):
    return hf_tokenizer.HFTokenizerVocabulary(vocab_path)
  model_path = vocab.require_model(vocab_path)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import seqio  # pylint: disable=import-outside-toplevel
  return seqio.SentencePieceVocabulary(str(model_path), extra_ids=0)


def vocab_size(vocab_path: str | os.PathLike) -> int:
  """Number of ids of either kind (added tokens included), read without seqio/TensorFlow."""
  vocab_path = storage.local(vocab_path)
  if hf_tokenizer.is_hf_tokenizer(vocab_path):
    return hf_tokenizer.HFTokenizer(vocab_path).size
  return vocab.open_model(vocab_path)[0].get_piece_size()


def check_vocabulary(config) -> None:
  """The tokenizer's ids must fit the model's embedding table (else training silently NaNs)."""
  path = config.data.vocab_path
  if not storage.path(path).exists():
    raise FileNotFoundError(f'Vocabulary {path} not found; train one with `amber-jax vocab train` '
                            'or set config.data.vocab_path.')
  size = vocab_size(path)
  if size > config.model.vocab_size:
    raise ValueError(f'The vocabulary {path} has {size} pieces but config.model.vocab_size is '
                     f'{config.model.vocab_size}; set --config.model.vocab_size={size} or use the '
                     'vocabulary the checkpoint was trained with.')


def file_sha256(path: str | os.PathLike) -> str:
  """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def vocab_fingerprint(vocab_path: str | os.PathLike) -> str:
  """sha256 of a vocabulary: of the SentencePiece model file, or of every file (name and bytes)
  of a HuggingFace tokenizer folder."""
  path = storage.local(vocab_path)
  if path.is_file():
    return file_sha256(path)
  digest = hashlib.sha256()
  for f in sorted(p for p in path.rglob('*') if p.is_file()):
    digest.update(f'{f.relative_to(path)}\0{file_sha256(f)}\0'.encode())
  return digest.hexdigest()
