"""amber_jax.text.framing against an obvious slow reference."""

from __future__ import annotations

import numpy as np
import pytest

from amber_jax.core.model import CLS_ID, PAD_ID, SEP_ID
from amber_jax.text import framing


class CharTokenizer:
  """One id per character (ord % 50 + 5, past the specials)."""

  def encode(self, texts):
    return [[ord(c) % 50 + 5 for c in text] for text in texts]


def slow_frame(pieces, max_length):
  row = [CLS_ID]
  for p in pieces:
    if len(row) + 1 >= max_length:  # keep room for [SEP]
      break
    row.append(p)
  return row + [SEP_ID]


def slow_pad(rows, n_rows, width, fill):
  out = [[fill] * width for _ in range(n_rows)]
  for i, row in enumerate(rows):
    for j, value in enumerate(row):
      out[i][j] = value
  return np.array(out, np.int32)


def random_rows(rng, n, longest):
  return [rng.integers(5, 100, rng.integers(0, longest + 1)).tolist() for _ in range(n)]


def test_frame_matches_the_reference():
  rng = np.random.default_rng(0)
  rows = random_rows(rng, 50, 40)
  for max_length in (2, 3, 8, 17, 64):
    assert framing.frame(rows, max_length) == [slow_frame(r, max_length) for r in rows]
    assert all(len(r) <= max_length for r in framing.frame(rows, max_length))
  assert framing.frame(rows) == [[CLS_ID] + r + [SEP_ID] for r in rows]
  with pytest.raises(ValueError, match='room for'):
    framing.frame(rows, 1)


def test_encode_framed_and_frame_pair():
  tok = CharTokenizer()
  texts = ['abc', '', 'a much longer text than eight']
  assert framing.encode_framed(tok, texts, 8) == [slow_frame(p, 8) for p in tok.encode(texts)]
  assert framing.frame_pair([7, 8], [9]) == [CLS_ID, 7, 8, SEP_ID, 9, SEP_ID]


def test_frame_words_keeps_whole_words():
  tok = CharTokenizer()
  ids, starts = framing.frame_words(tok, ['ab', 'c', 'defg', 'h'], max_length=6)
  # [CLS] a b c [SEP]: 'defg' does not fit in 6 with [SEP], so the row ends before it.
  assert ids == [CLS_ID] + tok.encode(['abc'])[0] + [SEP_ID]
  assert starts == [-1, 0, -1, 1, -1]
  ids, starts = framing.frame_words(tok, ['ab', 'c'], max_length=64)
  assert len(ids) == len(starts) == 5


def test_pad_rows_matches_the_reference():
  rng = np.random.default_rng(1)
  for n in (1, 5, 16):
    rows = random_rows(rng, n, 37)
    longest = max(len(r) for r in rows)
    width = -(-longest // 16) * 16
    assert framing.padded_width(rows) == width and width % 16 == 0 and width >= longest
    got = framing.pad_rows(rows)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, slow_pad(rows, n, width, PAD_ID))
    np.testing.assert_array_equal(framing.pad_rows(rows, n + 3, fill=-1),
                                  slow_pad(rows, n + 3, width, -1))
    np.testing.assert_array_equal(framing.pad_rows(rows, width=40), slow_pad(rows, n, 40, PAD_ID))
    np.testing.assert_array_equal(framing.pad_rows(rows, multiple=5),
                                  slow_pad(rows, n, -(-longest // 5) * 5, PAD_ID))
  with pytest.raises(ValueError, match='do not fit'):
    framing.pad_rows([[1, 2, 3]], width=2)
  with pytest.raises(ValueError, match='do not fit'):
    framing.pad_rows([[1], [2]], n_rows=1)


def test_length_sorted_batches_cover_every_row_once_shortest_first():
  rng = np.random.default_rng(2)
  rows = random_rows(rng, 37, 50)
  seen, previous_longest = [], -1
  for index, ids in framing.length_sorted_batches(rows, 8):
    assert ids.shape[0] == 8 and ids.shape[1] % 16 == 0 and len(index) <= 8
    lengths = [len(rows[i]) for i in index]
    assert lengths == sorted(lengths) and min(lengths) >= previous_longest
    previous_longest = max(lengths)
    np.testing.assert_array_equal(ids, slow_pad([rows[i] for i in index], 8, ids.shape[1], PAD_ID))
    assert ids.shape[1] == -(-max(lengths) // 16) * 16
    seen += index.tolist()
  assert sorted(seen) == list(range(len(rows)))
  # Ties keep their order (a stable sort): rows of equal length come in input order.
  same = [[5] * 3] * 10
  assert np.concatenate([i for i, _ in framing.length_sorted_batches(same, 4)]).tolist() == list(
      range(10))
