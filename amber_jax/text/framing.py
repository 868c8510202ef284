"""Token rows for evaluation: frame pieces as [CLS] x [SEP], pad rows into fixed-shape arrays.

The layout is the pipeline's (`amber_jax.data.pipeline`): a row is [CLS] pieces [SEP], cut so the
whole row fits `max_length`; a pair is [CLS] x [SEP] y [SEP]. Padding fills with [PAD] (id 0) up
to a width that is a multiple of 16 (few distinct shapes, so few compilations) or a given width,
and up to a fixed number of rows (a partial last batch keeps the batch shape). numpy only.

`tok` below is anything with `encode(list of texts) -> lists of our ids` (a SentencePiece
processor or `amber_jax.text.hf_tokenizer.HFTokenizer`, see `amber_jax.text.tokenizer`).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from amber_jax.core.model import CLS_ID, PAD_ID, SEP_ID

MULTIPLE = 16  # padded widths are multiples of this unless a width is given


def frame(pieces: Sequence[Sequence[int]], max_length: int | None = None) -> list[list[int]]:
  """[CLS] p [SEP] for each list of piece ids p, p cut so the row has at most max_length ids
  (None: no cut)."""
  if max_length is None:
    return [[CLS_ID, *p, SEP_ID] for p in pieces]
  if max_length < 2:
    raise ValueError(f'max_length={max_length}: a row needs room for [CLS] and [SEP]; pass >= 2.')
  return [[CLS_ID, *p[:max_length - 2], SEP_ID] for p in pieces]


def encode_framed(tok, texts: Sequence[str], max_length: int) -> list[list[int]]:
  """`frame` of each text's pieces: [CLS] pieces [SEP], at most max_length ids a row."""
  return frame(tok.encode(list(texts)), max_length)


def frame_pair(first: Sequence[int], second: Sequence[int]) -> list[int]:
  """[CLS] first [SEP] second [SEP] (no cut: cut the sides first)."""
  return [CLS_ID, *first, SEP_ID, *second, SEP_ID]


def frame_words(tok, words: Sequence[str], max_length: int) -> tuple[list[int], list[int]]:
  """[CLS] pieces [SEP] of whole words, and which word each position begins.

  Words are encoded one by one, so piece -> word is exact whatever the tokenizer; the first word
  whose pieces no longer fit max_length (with [SEP]) ends the row.

  Returns:
    (ids, starts): ids as `frame` lays them out; starts[i] is k when position i holds the first
    piece of words[k], else -1 ([CLS], [SEP], a word's later pieces). Same length.
  """
  ids, starts = [CLS_ID], [-1]
  for k, word in enumerate(words):
    pieces = tok.encode([word])[0]
    if len(ids) + len(pieces) > max_length - 1:
      break
    ids += pieces
    starts += [k] + [-1] * (len(pieces) - 1)
  return ids + [SEP_ID], starts + [-1]


def padded_width(rows: Sequence[Sequence[int]], multiple: int = MULTIPLE) -> int:
  """The longest row's length rounded up to a multiple of `multiple` (0 for no rows)."""
  longest = max((len(r) for r in rows), default=0)
  return -(-longest // multiple) * multiple


def pad_rows(rows: Sequence[Sequence[int]], n_rows: int | None = None, *,
             width: int | None = None, multiple: int = MULTIPLE, fill: int = PAD_ID
             ) -> np.ndarray:
  """Rows of ids in one int32 array, filled with `fill` past each row's end.

  Args:
    rows: lists of ids (or labels).
    n_rows: rows of the array (>= len(rows); the extra rows are all `fill`); None = len(rows).
    width: columns; None = `padded_width(rows, multiple)`.
    multiple: see `padded_width`.
    fill: the value of padded positions ([PAD]).

  Returns:
    int32 [n_rows, width].
  """
  n_rows = len(rows) if n_rows is None else n_rows
  width = padded_width(rows, multiple) if width is None else width
  if len(rows) > n_rows or any(len(r) > width for r in rows):
    raise ValueError(f'{len(rows)} rows of up to {max((len(r) for r in rows), default=0)} ids do '
                     f'not fit [{n_rows}, {width}]; cut the rows or give more rows or width.')
  out = np.full((n_rows, width), fill, np.int32)  # [n_rows, width]
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def length_sorted_batches(rows: Sequence[Sequence[int]], batch_size: int,
                          multiple: int = MULTIPLE) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Batches of rows in order of length (stable), each padded to batch_size rows.

  Yields:
    (index, ids): index int [b <= batch_size], the rows' positions in `rows`; ids int32
    [batch_size, width] (`pad_rows` of those rows, width a multiple of `multiple`).
  """
  order = np.argsort([len(r) for r in rows], kind='stable')
  for start in range(0, len(order), batch_size):
    index = order[start:start + batch_size]
    yield index, pad_rows([rows[i] for i in index], batch_size, multiple=multiple)
