"""An HF tokenizer as the pipeline's vocabulary, re-indexed so that its specials sit at our ids.

Every vocabulary a run trains with has [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4
(`amber_jax.core.model`): the batcher frames with them, masking writes [MASK] and never picks
[PAD]/[CLS]/[SEP]. A BERT WordPiece tokenizer has them elsewhere ([PAD]=0 [UNK]=100 [CLS]=101
[SEP]=102 [MASK]=103), XLM-R's SentencePiece with the fairseq ids elsewhere again (<s>=0 <pad>=1
</s>=2 <unk>=3, <mask> last). Rather than thread configurable ids through data, masking,
objectives and evaluation, a foreign tokenizer is re-indexed at the boundary by a permutation of
the ids (`special_order`) that swaps its five specials into 0..4 and the tokens that sat there
into the specials' old places (BERT: our ids 100..103 are HF's [unused0]..[unused3]; XLM-R: the
first piece, HF 4, moves to <mask>'s id); every other id keeps its number. Inside a run
everything uses our ids (batches, the checkpoint's embedding rows and MLM bias); HF's ids appear
only at the boundary:
  text     `HFTokenizer` / `HFTokenizerVocabulary` map the tokenizer's ids to ours;
  import   `amber_jax.export.hf_import` takes the embedding rows and the MLM bias in our order;
  export   `amber_jax.export.hf.export(..., hf_to_ours=hf_to_ours_order(...))` puts them back,
           so the exported model runs with the unchanged HF tokenizer.
A tokenizer whose specials already sit at 0..4 (one exported by `amber_jax.text.vocab`) has the
identity order. Parameters of an imported run used with the raw HF tokenizer's ids would be wrong:
go through this module (or export).

A `vocab_path` is opened by `amber_jax.text.tokenizer` (`load_processor`, `load_vocabulary`): a
SentencePiece `.model` file goes to `amber_jax.text.vocab`, a folder with `tokenizer.json`
(written by `save_pretrained`, as `amber-jax import` does; `is_hf_tokenizer`) to this module.

This module imports neither TensorFlow nor transformers: `tokenizers` does the work, and the seqio
class `HFTokenizerVocabulary` is built on first use (seqio imports TensorFlow).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil
import types
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

from amber_jax.core import model as model_lib
from amber_jax.text import vocab

TOKENIZER_FILE = 'tokenizer.json'
# The files of a tokenizer folder that `write_tokenizer` copies next to an exported model.
# (an XLM-R folder's sentencepiece.bpe.model travels too, for code that reads the SentencePiece).
TOKENIZER_FILES = (TOKENIZER_FILE, 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt',
                   'sentencepiece.bpe.model')
# transformers' names of the specials, in the order of our ids 0..4; then the fallbacks that
# SentencePiece-style tokenizers use when they name no [CLS]/[SEP] (<s>, </s>).
SPECIAL_NAMES = ('pad_token', 'unk_token', 'cls_token', 'sep_token', 'mask_token')
_FALLBACK_NAMES = {'cls_token': 'bos_token', 'sep_token': 'eos_token'}
_BERT_PIECES = dict(zip(SPECIAL_NAMES, ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')))
OUR_SPECIAL_IDS = (model_lib.PAD_ID, model_lib.UNK_ID, model_lib.CLS_ID, model_lib.SEP_ID,
                   model_lib.MASK_ID)


def special_order(hf_specials: Sequence[int], size: int) -> np.ndarray:
  """The permutation that puts HF's specials at our ids: `order[our id] = HF id`.

  Args:
    hf_specials: HF ids of [PAD], [UNK], [CLS], [SEP], [MASK], in this order (distinct).
    size: number of ids (the tokenizer's, or the embedding rows when there are more).

  Returns:
    int64 [size]; `order[i]` for i in 0..4 is `hf_specials[i]`; each HF id that sat at one of
    0..4 moves to a vacated special's id; every other id maps to itself.
  """
  hf_specials = [int(i) for i in hf_specials]
  if len(set(hf_specials)) != len(hf_specials) or len(hf_specials) != len(OUR_SPECIAL_IDS):
    raise ValueError(f'Expected 5 distinct special ids ([PAD] [UNK] [CLS] [SEP] [MASK]); got '
                     f'{hf_specials}. A tokenizer that shares one id between two specials cannot '
                     'be re-indexed; give it distinct tokens.')
  bad = [i for i in hf_specials if not 0 <= i < size]
  if bad:
    raise ValueError(f'Special ids {bad} are outside the {size} ids; the tokenizer does not fit.')
  order = np.arange(size)  # order[our id] = HF id
  where = np.arange(size)  # where[HF id] = our id
  for ours, hf_id in zip(OUR_SPECIAL_IDS, hf_specials):
    r, displaced = where[hf_id], order[ours]
    order[ours], order[r] = hf_id, displaced
    where[hf_id], where[displaced] = ours, r
  return order


def is_hf_tokenizer(path: str | os.PathLike) -> bool:
  """True for a folder holding tokenizer.json, or a tokenizer.json file itself."""
  path = pathlib.Path(path)
  return (path.is_dir() and (path / TOKENIZER_FILE).is_file()) or (
      path.is_file() and path.name == TOKENIZER_FILE)


def _special_pieces(folder: pathlib.Path) -> dict[str, str]:
  """{name: piece} of the specials from tokenizer_config.json / special_tokens_map.json."""
  found = {}
  for name in ('special_tokens_map.json', 'tokenizer_config.json'):  # the latter wins
    if (folder / name).is_file():
      data = json.loads((folder / name).read_text(encoding='utf-8'))
      for key, value in data.items():
        if key.endswith('_token') and value is not None:
          found[key] = value['content'] if isinstance(value, dict) else value
  for name, fallback in _FALLBACK_NAMES.items():
    if name not in found and fallback in found:
      found[name] = found[fallback]
  return {name: found.get(name, _BERT_PIECES[name]) for name in SPECIAL_NAMES}


class HFTokenizer:
  """A `tokenizers` fast tokenizer that speaks our ids (TF-free; sentencepiece-like `encode`).

  Attributes:
    tokenizer: the `tokenizers.Tokenizer` (truncation and padding switched off).
    folder: the folder it was read from.
    special_pieces: {'pad_token': '[PAD]', ...} as the folder names them.
    hf_specials: HF ids of [PAD] [UNK] [CLS] [SEP] [MASK].
    size: number of ids, added tokens included.
    ours_to_hf: int64 [size], the HF id of each of our ids (`special_order`).
    hf_to_ours: int64 [size], its inverse.
  """

  def __init__(self, path: str | os.PathLike):
    path = pathlib.Path(path)
    if not is_hf_tokenizer(path):
      raise FileNotFoundError(
          f'No {TOKENIZER_FILE} at {path}: expected a folder written by a transformers fast '
          "tokenizer's save_pretrained (or by `amber-jax import`, which converts a vocab.txt-only "
          'folder), or the tokenizer.json file itself.')
    self.folder = path if path.is_dir() else path.parent
    self.tokenizer = Tokenizer.from_file(str(self.folder / TOKENIZER_FILE))
    self.tokenizer.no_truncation()  # the batcher truncates, after framing
    self.tokenizer.no_padding()
    self.size = self.tokenizer.get_vocab_size(with_added_tokens=True)
    self.special_pieces = _special_pieces(self.folder)
    ids = {name: self.tokenizer.token_to_id(piece) for name, piece in self.special_pieces.items()}
    missing = {name: self.special_pieces[name] for name, i in ids.items() if i is None}
    if missing:
      raise ValueError(
          f'The tokenizer in {self.folder} has no token for {missing}: training needs [PAD], '
          '[UNK], [CLS], [SEP] and [MASK] (named in tokenizer_config.json as pad_token, '
          'unk_token, cls_token, sep_token, mask_token). Add the missing tokens to the tokenizer.')
    self.hf_specials = tuple(ids[name] for name in SPECIAL_NAMES)
    self.ours_to_hf = special_order(self.hf_specials, self.size)
    self.hf_to_ours = np.argsort(self.ours_to_hf)

  def encode(self, text: str | Sequence[str]) -> list[int] | list[list[int]]:
    """Our ids of a text (a list of ints) or of each of a list of texts, without [CLS]/[SEP]."""
    if isinstance(text, str):
      return self.encode([text])[0]
    encodings = self.tokenizer.encode_batch(list(text), add_special_tokens=False)
    return [self.hf_to_ours[np.asarray(e.ids, np.int64)].tolist() for e in encodings]

  def decode(self, ids: Sequence[int]) -> str:
    """The text of our ids; specials are dropped (as sentencepiece drops control pieces)."""
    hf_ids = self.ours_to_hf[np.asarray(list(ids), np.int64)]
    return self.tokenizer.decode(hf_ids.tolist(), skip_special_tokens=True)

  def id_to_piece(self, our_id: int) -> str:
    return self.tokenizer.id_to_token(int(self.ours_to_hf[our_id]))

  def piece_to_id(self, piece: str) -> int | None:
    hf_id = self.tokenizer.token_to_id(piece)
    return None if hf_id is None else int(self.hf_to_ours[hf_id])


@functools.lru_cache(maxsize=8)
def _cached_tokenizer(folder: str) -> HFTokenizer:
  return HFTokenizer(folder)


def hf_to_ours_order(vocab_path: str | os.PathLike, vocab_size: int) -> np.ndarray | None:
  """For export: `order[HF id] = our id` over `vocab_size` embedding rows; None for SentencePiece.

  Rows beyond the tokenizer's size (embeddings padded to a round number) keep their place.
  """
  if not is_hf_tokenizer(vocab_path):
    return None
  tok = _cached_tokenizer(str(pathlib.Path(vocab_path)))
  if tok.size > vocab_size:
    raise ValueError(f'The tokenizer at {vocab_path} has {tok.size} ids but the model only '
                     f'{vocab_size} embedding rows; pass the tokenizer of this model.')
  return np.argsort(special_order(tok.hf_specials, vocab_size))


def write_tokenizer(vocab_path: str | os.PathLike, out_dir: str | os.PathLike,
                    model_max_length: int = 512) -> pathlib.Path:
  """Writes the tokenizer of `vocab_path` into an export folder (either kind).

  An HF tokenizer folder is copied as is (its own ids: pair it with `hf_to_ours_order` on the
  weights); a SentencePiece model is converted by `amber_jax.text.vocab.export_hf_tokenizer`.
  """
  out_dir = pathlib.Path(out_dir)
  if not is_hf_tokenizer(vocab_path):
    return vocab.export_hf_tokenizer(vocab_path, out_dir, model_max_length=model_max_length)
  folder = pathlib.Path(vocab_path)
  folder = folder if folder.is_dir() else folder.parent
  out_dir.mkdir(parents=True, exist_ok=True)
  for name in TOKENIZER_FILES:
    if (folder / name).is_file():
      shutil.copyfile(folder / name, out_dir / name)
  return out_dir


# PEP 562: `hf_tokenizer.HFTokenizerVocabulary` builds the class on first use.
def __getattr__(name):
  if name == 'HFTokenizerVocabulary':
    return _vocabulary_class()
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


@functools.cache
def _vocabulary_class():
  """Defines `HFTokenizerVocabulary` (a `seqio.Vocabulary`); seqio is imported here."""
  # pylint: disable=import-outside-toplevel
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import seqio
  import tensorflow as tf

  # pylint: enable=import-outside-toplevel

  class HFTokenizerVocabulary(seqio.Vocabulary):
    """seqio vocabulary over an HF fast tokenizer, in our ids (see the module docstring).

    Encodes without [CLS]/[SEP] (`amber_jax.data.pipeline` frames the tokens); pad 0, unk 1,
    bos ([CLS]) 2, eos ([SEP]) 3, [MASK] 4, whatever ids the tokenizer gives them. The TensorFlow
    methods run the Python tokenizer through `tf.py_function`: fine in tf.data on one host (the
    work holds the GIL, so parallel map calls do not speed it up), not serialisable into a
    SavedModel graph.
    """

    def __init__(self, path: str | os.PathLike):
      self._path = str(path)
      self._tok = HFTokenizer(path)
      self._key = self._tok.tokenizer.to_str()
      super().__init__(extra_ids=0)

    @property
    def tokenizer(self) -> HFTokenizer:
      return self._tok

    @property
    def _base_vocab_size(self) -> int:
      return self._tok.size

    @property
    def pad_id(self) -> int:
      return model_lib.PAD_ID

    @property
    def bos_id(self) -> int:
      return model_lib.CLS_ID

    @property
    def eos_id(self) -> int:
      return model_lib.SEP_ID

    @property
    def unk_id(self) -> int:
      return model_lib.UNK_ID

    @property
    def mask_id(self) -> int:
      return model_lib.MASK_ID

    def _encode(self, s: str) -> list[int]:
      return self._tok.encode(s)

    def _decode(self, ids) -> str:
      return self._tok.decode([int(i) for i in ids])

    def _encode_tf(self, s):
      """string [] -> int32 [n]; string [b] -> int32 RaggedTensor [b, None]."""
      if s.shape.rank == 0:
        ids = tf.py_function(
            lambda t: np.asarray(self._encode(t.numpy().decode('utf-8')), np.int32), [s],
            tf.int32)
        ids.set_shape([None])
        return ids
      if s.shape.rank == 1:
        def batch(t):
          rows = self._tok.encode([x.decode('utf-8') for x in t.numpy()])
          values = np.asarray([i for row in rows for i in row], np.int32)
          return values, np.asarray([len(row) for row in rows], np.int64)
        values, lengths = tf.py_function(batch, [s], (tf.int32, tf.int64))
        values.set_shape([None])
        lengths.set_shape([None])
        return tf.RaggedTensor.from_row_lengths(values, lengths)
      raise ValueError(f'encode_tf takes a string scalar or vector; got shape {s.shape}.')

    @property
    def tf_tokenizer(self):
      """`tokenize(strings)` -> ids, as the tf_text tokenizer of a SentencePieceVocabulary."""
      return types.SimpleNamespace(tokenize=self._encode_tf)

    def _decode_tf(self, ids):
      """int [..., n] -> string [...]."""
      def decode(t):
        arr = t.numpy()
        flat = arr.reshape(-1, arr.shape[-1])  # [rows, n]
        texts = [self._decode(row).encode('utf-8') for row in flat]
        return np.asarray(texts, dtype=object).reshape(arr.shape[:-1])
      out = tf.py_function(decode, [ids], tf.string)
      out.set_shape(ids.shape[:-1])
      return out

    def __eq__(self, other) -> bool:
      return isinstance(other, HFTokenizerVocabulary) and self._key == other._key

    def __hash__(self) -> int:
      return hash(self._key)

    def __str__(self) -> str:
      return f'HFTokenizerVocabulary(path={self._path}, size={self.vocab_size})'

  return HFTokenizerVocabulary
