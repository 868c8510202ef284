"""The shared vocabulary: SentencePiece training, the checked model, the HF tokenizer export.

One SentencePiece unigram model is the vocabulary everywhere: the pipeline reads it through seqio
and evaluation through the checked processor (both opened by `amber_jax.text.tokenizer`), users
through transformers (`export_hf_tokenizer`), and all give the ids the raw `sentencepiece`
processor gives. BERT's specials sit at fixed ids (`amber_jax.core.model`): [PAD]=0 [UNK]=1
[CLS]=2 [SEP]=3 [MASK]=4. [PAD], [CLS] and [SEP] are SentencePiece control pieces (never produced
from text); [MASK] is a user-defined piece, so the text "[MASK]" encodes to id 4.

Training takes the sentences from its caller ({lang: sentences}, e.g.
`amber_jax.corpora.layout.read_mono(corpus_dir, 'train')`): this module reads no corpus.
It imports without TensorFlow; transformers only inside `build_hf_tokenizer`.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import tempfile
import time
from typing import Any, Mapping, Sequence
import unicodedata

import numpy as np
from sentencepiece import sentencepiece_model_pb2
import sentencepiece as spm
from tokenizers import AddedToken, normalizers, processors

from amber_jax import errors
from amber_jax.core import model as model_lib

SPECIAL_PIECES = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')  # At ids 0..4, in this order.
# Sentences sampled for training when `total_sentences` is None: the corpus size, at most this.
MAX_TOTAL_SENTENCES = 200_000

_PIECE_TYPES = {  # SentencePiece ModelProto.SentencePiece.Type of each special.
    '[PAD]': 3, '[UNK]': 2, '[CLS]': 3, '[SEP]': 3, '[MASK]': 4}  # 2: UNKNOWN 3: CONTROL 4: USER


class VocabSizeError(errors.UserError, RuntimeError):
  """A vocab_size the text cannot fill (too large) or its characters do not fit in (too small);
  the message names the size that works. A RuntimeError too, as SentencePiece's failure is.

  Attributes:
    largest: for a size too large, the most pieces the text gives (else None).
  """

  def __init__(self, message: str, largest: int | None = None):
    super().__init__(message)
    self.largest = largest


def metadata_path(model_path: str | os.PathLike) -> pathlib.Path:
  """The json written next to a trained model: `<model_path>.json`."""
  model_path = pathlib.Path(model_path)
  return model_path.with_name(model_path.name + '.json')


def language_sample_sizes(sizes: dict[str, int], alpha: float, total: int) -> dict[str, int]:
  """Sentences to draw per language, with probability proportional to n_lang ** alpha.

  Args:
    sizes: {lang: number of sentences available}; languages with none get none.
    alpha: smoothing exponent; 1 keeps the natural distribution, 0 makes it uniform.
    total: sentences to draw in all (the result sums to about this, by rounding).

  Returns:
    {lang: sentences to draw}.
  """
  langs = sorted(lang for lang, n in sizes.items() if n > 0)
  if not langs:
    raise errors.UserError(f'no language has any sentence to train a vocabulary on: {sizes}')
  weights = np.array([sizes[lang] for lang in langs], dtype=np.float64) ** alpha  # [langs]
  probs = weights / weights.sum()
  return {lang: int(round(total * p)) for lang, p in zip(langs, probs)}


def sample_sentences(mono: dict[str, list[str]], *, alpha: float, seed: int,
                     total: int | None = None,
                     max_sentences_per_language: int | None = None,
                     ) -> tuple[list[str], dict[str, int]]:
  """A temperature-smoothed, seeded sample of monolingual sentences across languages.

  Each language first keeps at most `max_sentences_per_language` of its sentences (a seeded
  choice). A language drawn k times with n <= k sentences gives all n once plus k - n drawn with
  replacement (small languages are upsampled); one with n > k gives k distinct sentences. The
  sample is shuffled with the same seeded generator.

  Args:
    mono: {lang: sentences}.
    alpha: language sampling exponent (p_lang ∝ n_lang ** alpha).
    seed: numpy RNG seed; the same inputs and seed give the same sample.
    total: sample size; None = the (capped) corpus size, at most MAX_TOTAL_SENTENCES.
    max_sentences_per_language: cap on each language's pool before sampling; None = no cap.

  Returns:
    (sentences, {lang: sentences drawn}).
  """
  rng = np.random.default_rng(seed)
  pools = {}
  for lang in sorted(mono):
    pool = mono[lang]
    if max_sentences_per_language is not None and len(pool) > max_sentences_per_language:
      keep = np.sort(rng.choice(len(pool), max_sentences_per_language, replace=False))
      pool = [pool[i] for i in keep]
    pools[lang] = pool
  sizes = {lang: len(pool) for lang, pool in pools.items()}
  if total is None:
    total = min(sum(sizes.values()), MAX_TOTAL_SENTENCES)
  counts = language_sample_sizes(sizes, alpha, total)
  sample = []
  for lang, k in counts.items():
    pool = pools[lang]
    if k >= len(pool):
      picks = np.concatenate([np.arange(len(pool)), rng.integers(0, len(pool), k - len(pool))])
    else:
      picks = rng.choice(len(pool), k, replace=False)
    sample.extend(pool[i] for i in picks)
  order = rng.permutation(len(sample))
  return [sample[i] for i in order], counts


def _check_specials(sp: spm.SentencePieceProcessor, proto_pieces, where: str):
  """Raises unless [PAD] [UNK] [CLS] [SEP] [MASK] are ids 0..4 with the right piece types."""
  expected_ids = (model_lib.PAD_ID, model_lib.UNK_ID, model_lib.CLS_ID, model_lib.SEP_ID,
                  model_lib.MASK_ID)
  for piece, piece_id in zip(SPECIAL_PIECES, expected_ids):
    found = sp.id_to_piece(piece_id)
    found_type = proto_pieces[piece_id].type
    if found != piece or found_type != _PIECE_TYPES[piece]:
      raise RuntimeError(
          f'{where}: expected {piece} (type {_PIECE_TYPES[piece]}) at id {piece_id}, found '
          f'{found!r} (type {found_type}); the model must be trained by train_sentencepiece')
  found_ids = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
  if found_ids != expected_ids[:4]:
    raise RuntimeError(f'{where}: pad/unk/bos/eos ids are {found_ids}, expected '
                       f'{expected_ids[:4]}; the model must be trained by train_sentencepiece')


def _load_proto(model_bytes: bytes):
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(model_bytes)
  return proto


def unk_rate(sp: spm.SentencePieceProcessor, sentences: list[str]) -> float | None:
  """Share of [UNK] among the ids of `sentences`; None when there are no tokens."""
  ids = [i for ids in sp.encode(list(sentences)) for i in ids]
  if not ids:
    return None
  return float(np.mean(np.array(ids) == model_lib.UNK_ID))


def train_sentencepiece(train: Mapping[str, Sequence[str]], model_path: str | os.PathLike, *,
                        validation: Mapping[str, Sequence[str]],
                        source: Mapping[str, Any] | None = None,
                        vocab_size: int = 8000, alpha: float = 0.7, seed: int = 0,
                        max_sentences_per_language: int | None = None,
                        total_sentences: int | None = None,
                        character_coverage: float = 1.0,
                        num_threads: int = 2) -> pathlib.Path:
  """Trains the SentencePiece unigram vocabulary on monolingual text.

  Sentences come from `sample_sentences` (languages smoothed by `alpha`, seeded). Coverage 1.0
  keeps every character of the sample (CJK included: the Django corpus has ~2.4k distinct
  characters, so vocabularies below ~3k cannot hold them). Writes `model_path` (atomically) and
  `metadata_path(model_path)` (settings, per-language sample sizes, `source`, training seconds,
  [UNK] rate on `validation`). A corpus in the on-disk layout gives all three:

      train_sentencepiece(layout.read_mono(corpus_dir, 'train'), model_path,
                          validation=layout.read_mono(corpus_dir, 'validation'),
                          source=layout.provenance(corpus_dir))

  Args:
    train: {lang: sentences} to sample the training text from (a corpus's train split).
    model_path: where to write the `.model` file.
    validation: {lang: sentences} whose [UNK] rates the metadata records (the validation split).
    source: where the text came from, written into the metadata as is (for a corpus
      `amber_jax.corpora.layout.provenance`: its folder and manifest sha256).
    vocab_size: pieces in all, the 5 specials included.
    alpha: language sampling exponent.
    seed: seeds the sentence sample and SentencePiece; same seed + text -> same model bytes.
    max_sentences_per_language: cap on each language's pool; None = no cap.
    total_sentences: sentences to sample; None = corpus size, at most MAX_TOTAL_SENTENCES.
    character_coverage: SentencePiece's share of characters the vocabulary must cover.
    num_threads: SentencePiece trainer threads.

  Returns:
    `model_path` as a pathlib.Path.

  Raises:
    VocabSizeError: `vocab_size` is more pieces than the sample gives, or fewer than its
      characters and the specials need (the message names the size that works).
    errors.UserError: no language of `train` has a sentence.
  """
  model_path = pathlib.Path(model_path)
  source = dict(source or {})
  sentences, counts = sample_sentences(
      {lang: list(sents) for lang, sents in train.items()}, alpha=alpha, seed=seed,
      total=total_sentences, max_sentences_per_language=max_sentences_per_language)

  spm.set_random_generator_seed(seed)
  buffer = io.BytesIO()
  start = time.perf_counter()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buffer, model_type='unigram',
        vocab_size=vocab_size, character_coverage=character_coverage,
        input_sentence_size=0,  # Use every sampled sentence: the sample is already the budget.
        pad_id=model_lib.PAD_ID, unk_id=model_lib.UNK_ID, bos_id=model_lib.CLS_ID,
        eos_id=model_lib.SEP_ID, pad_piece='[PAD]', unk_piece='[UNK]', bos_piece='[CLS]',
        eos_piece='[SEP]', user_defined_symbols=['[MASK]'], num_threads=num_threads,
        minloglevel=2)
  except RuntimeError as error:  # E.g. a vocab_size the sample cannot fill; the message says.
    where = (f'{len(sentences)} sentences sampled from '
             f'{source.get("corpus_dir", "the given text")}')
    raise _size_error(str(error), vocab_size, where) or RuntimeError(
        f'SentencePiece training (vocab_size={vocab_size}) on {where} failed: {error}') from error
  seconds = time.perf_counter() - start
  model_bytes = buffer.getvalue()

  sp = spm.SentencePieceProcessor(model_proto=model_bytes)
  _check_specials(sp, _load_proto(model_bytes).pieces, f'trained model for {model_path}')
  per_language_unk = {lang: unk_rate(sp, sents) for lang, sents in validation.items()}
  metadata = {
      'vocab_size': vocab_size, 'model_type': 'unigram', 'alpha': alpha, 'seed': seed,
      'character_coverage': character_coverage,
      'max_sentences_per_language': max_sentences_per_language,
      'sentences_sampled': len(sentences), 'sentences_per_language': counts,
      **source,
      'sentencepiece': spm.__version__,
      'training_seconds': round(seconds, 2),
      'validation_unk_rate': unk_rate(sp, [s for sents in validation.values() for s in sents]),
      'validation_unk_rate_per_language': per_language_unk,
  }
  _write_atomic(model_path, model_bytes)
  _write_atomic(metadata_path(model_path),
                (json.dumps(metadata, indent=1, ensure_ascii=False) + '\n').encode('utf-8'))
  return model_path


def _size_error(message: str, vocab_size: int, where: str) -> VocabSizeError | None:
  """The VocabSizeError of a SentencePiece failure message, or None for another failure."""
  found = re.search(r'Vocabulary size too high.*value <= (\d+)', message)
  if found:
    return VocabSizeError(
        f'vocab_size={vocab_size} is too large for the {where}: they give at most '
        f'{found.group(1)} pieces. Decrease vocab_size to <= {found.group(1)} (amber-jax vocab '
        f'train --size {found.group(1)}), or give more text.', largest=int(found.group(1)))
  found = re.search(r'smaller than required_chars\. \d+ vs (\d+)', message)
  if found:
    return VocabSizeError(
        f'vocab_size={vocab_size} is too small for the {where}: their characters and the specials '
        f'need at least {found.group(1)} pieces. Increase vocab_size to >= {found.group(1)} '
        f'(amber-jax vocab train --size {found.group(1)}).')
  return None


def _write_atomic(path: pathlib.Path, data: bytes):
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a model is meant to be shared.
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


class NotAModelError(errors.UserError, FileNotFoundError):
  """No SentencePiece model at a path, or a file that is not one; the message names it."""


def require_model(model_path: str | os.PathLike) -> pathlib.Path:
  """`model_path` as a Path; raises NotAModelError, saying how to train one, if no file."""
  model_path = pathlib.Path(model_path)
  if not model_path.is_file():
    raise NotAModelError(
        f'no SentencePiece model at {model_path}; train one with '
        '`amber-jax vocab train` or amber_jax.text.vocab.train_sentencepiece')
  return model_path


def open_model(model_path: str | os.PathLike) -> tuple[spm.SentencePieceProcessor, bytes]:
  """(processor, the model's bytes) of a SentencePiece model file; NotAModelError when the file
  is missing or is not a SentencePiece model."""
  model_bytes = require_model(model_path).read_bytes()
  try:
    return spm.SentencePieceProcessor(model_proto=model_bytes), model_bytes
  except (RuntimeError, OSError) as e:
    raise NotAModelError(
        f'{model_path} is not a SentencePiece model ({" ".join(str(e).split())[:200]}); a '
        'vocabulary is a .model file from `amber-jax vocab train` or a HuggingFace tokenizer '
        'folder.') from None


def load_sentencepiece(model_path: str | os.PathLike) -> spm.SentencePieceProcessor:
  """The raw SentencePiece processor of a trained model, specials checked.

  The SentencePiece half of `amber_jax.text.tokenizer.load_processor`, which callers use (it also
  opens HF tokenizer folders).
  """
  sp, model_bytes = open_model(model_path)
  _check_specials(sp, _load_proto(model_bytes).pieces, str(model_path))
  return sp


def _composition_fixes(sp: spm.SentencePieceProcessor, charsmap: bytes) -> list[tuple[str, str]]:
  """(sequence, sentencepiece's normalization of it) where `tokenizers` normalizes otherwise.

  sentencepiece normalizes by longest match anywhere in the text; `tokenizers.Precompiled` looks
  up a whole grapheme only when it is under 6 UTF-8 bytes, else char by char. So multi-character
  entries of the charsmap inside a longer grapheme (Bengali/Tamil two-part vowels, decomposed
  kana, Devanagari nukta letters, stacked Latin/Greek accents) are missed. The candidates are the
  canonical decompositions of every code point; Hangul syllables (11,172 jamo sequences, found
  only in decomposed text) are left out, as one `Replace` each would slow every encode.

  Returns:
    Pairs, longest sequence first, to apply as `Replace` normalizers before `Precompiled`.
  """
  # pylint: disable=import-outside-toplevel
  # pylint: enable=import-outside-toplevel
  precompiled = normalizers.Precompiled(charsmap)
  prefix_sp, prefix_hf = sp.normalize('a'), precompiled.normalize_str('a')
  candidates = set()
  for code_point in range(0x110000):
    char = chr(code_point)
    if 0xAC00 <= code_point <= 0xD7A3 or unicodedata.category(char) in ('Cs', 'Cn'):
      continue
    decomposition = unicodedata.decomposition(char)
    keys = {unicodedata.normalize('NFD', char)}
    if decomposition and not decomposition.startswith('<'):
      keys.add(''.join(chr(int(part, 16)) for part in decomposition.split()))
    candidates.update(key for key in keys if len(key) > 1)
  fixes = []
  for key in sorted(candidates, key=lambda k: (-len(k), k)):
    # After a base letter, so the key sits inside a grapheme as it does in text.
    by_sp, by_hf = sp.normalize('a' + key), precompiled.normalize_str('a' + key)
    if not (by_sp.startswith(prefix_sp) and by_hf.startswith(prefix_hf)):
      continue  # The key merges into the letter before it; no Replace can say that.
    if by_sp[len(prefix_sp):] != by_hf[len(prefix_hf):]:
      fixes.append((key, by_sp[len(prefix_sp):]))
  return fixes


def build_hf_tokenizer(model_path: str | os.PathLike, model_max_length: int = 512):
  """A `transformers.PreTrainedTokenizerFast` that encodes as [CLS] + sentencepiece + [SEP].

  The `tokenizers` pipeline is transformers' own SentencePiece conversion
  (`SpmConverter.build_tokenizer_from_spm_proto`: Unigram pieces and scores, the precompiled
  normalizer, sentencepiece's whitespace rules, Metaspace), with `Replace` normalizers in front
  for the sequences `tokenizers` would normalize differently (`_composition_fixes`), plus BERT's
  template: single `[CLS] A [SEP]`, pair `[CLS] A [SEP] B [SEP]`, token types 0 up to the first
  [SEP] and 1 after.

  Known differences from sentencepiece, none in natural text: specials are added tokens, so
  "[CLS]" written in the text encodes to the special id (sentencepiece splits it), and "a [MASK]"
  drops the space before [MASK] (sentencepiece emits a lone "▁", where a masked training input
  has none); decomposed Hangul jamo are not composed; equal-score Unigram splits of a run of one
  repeated character may break the other way.

  Args:
    model_path: a model from `train_sentencepiece`.
    model_max_length: the tokenizer's `model_max_length` (truncation default).

  Returns:
    The fast tokenizer.
  """
  # pylint: disable=import-outside-toplevel
  from transformers import PreTrainedTokenizerFast
  from transformers.convert_slow_tokenizer import SpmConverter

  # pylint: enable=import-outside-toplevel

  sp = load_sentencepiece(model_path)  # Checks the file and the specials.
  proto = _load_proto(pathlib.Path(model_path).read_bytes())
  vocab = [(piece.piece, piece.score) for piece in proto.pieces]
  # legacy=True: the "always" Metaspace scheme plus the converter's dummy-prefix rule, which is
  # what matches sentencepiece when the start of the text is removed by normalization
  # (leading spaces, U+200F); "first" loses the prefix there.
  tokenizer = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=True)
  fixes = _composition_fixes(sp, proto.normalizer_spec.precompiled_charsmap)
  tokenizer.normalizer = normalizers.Sequence(
      [normalizers.Replace(key, value) for key, value in fixes] + [tokenizer.normalizer])
  cls, sep = SPECIAL_PIECES[2], SPECIAL_PIECES[3]
  tokenizer.post_processor = processors.TemplateProcessing(
      single=f'{cls}:0 $A:0 {sep}:0',
      pair=f'{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1',
      special_tokens=[(cls, model_lib.CLS_ID), (sep, model_lib.SEP_ID)])
  special = {name: AddedToken(piece, normalized=False, special=True)
             for name, piece in zip(('pad_token', 'unk_token', 'cls_token', 'sep_token',
                                     'mask_token'), SPECIAL_PIECES)}
  return PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, model_max_length=model_max_length, padding_side='right',
      model_input_names=['input_ids', 'token_type_ids', 'attention_mask'], **special)


def export_hf_tokenizer(model_path: str | os.PathLike, out_dir: str | os.PathLike,
                        model_max_length: int = 512) -> pathlib.Path:
  """Writes a fast tokenizer that `transformers.AutoTokenizer.from_pretrained(out_dir)` loads.

  Args:
    model_path: a model from `train_sentencepiece`.
    out_dir: folder to write tokenizer.json, tokenizer_config.json (and what else transformers
      writes); a BERT config.json may share it.
    model_max_length: the tokenizer's `model_max_length`.

  Returns:
    `out_dir` as a pathlib.Path.
  """
  out_dir = pathlib.Path(out_dir)
  build_hf_tokenizer(model_path, model_max_length).save_pretrained(str(out_dir))
  # transformers 5 writes its own name for the class, 'TokenizersBackend'; name the alias that
  # transformers 4 knows too, so the folder loads with either.
  config_path = out_dir / 'tokenizer_config.json'
  config = json.loads(config_path.read_text(encoding='utf-8'))
  config['tokenizer_class'] = 'PreTrainedTokenizerFast'
  config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + '\n', encoding='utf-8')
  return out_dir
