"""Word alignment from the encoder: the WA-trained attention and awesome-align's similarities,
mapped from subwords to words, written in Pharaoh format and scored by AER.

Inputs are pre-tokenised: a sentence is a list of words (whitespace-split), joined by single
spaces before SentencePiece sees it, so every word starts at a piece beginning with '▁'
(`word_index`). Links are 0-based (source word i, target word j), written `i-j` (Pharaoh).

Two extractors, both returning piece-level bool [n_src_pieces, n_tgt_pieces]:

  'attention'   The word-alignment passes of training (AMBER, arXiv 2010.07972, §2): [CLS] x [SEP] y [SEP] under
                the WA mask gives A_y->x (y queries over x keys, last layer, mean over heads),
                [CLS] y [SEP] x [SEP] gives A_x->y. Each row is renormalised over the other side's
                real tokens (the mask lets a y row also see [CLS], [SEP] and earlier y tokens).
                method 'argmax' (default): (i, j) is linked when j is i's best in A_x->y and i is
                j's best in A_y->x (the intersection of the two argmaxes).
                method 'product': linked when A_x->y[i, j] * A_y->x[j, i] >= threshold (0.1:
                e.g. both ~0.32), which can link one word to several.
  'similarity'  awesome-align (Dou & Neubig 2021): x and y encoded separately, token states of one
                layer, S = h_x h_y^T; linked when softmax(S) over y (row) and softmax(S) over x
                (column) both exceed 1e-3.

A word pair is linked when any of their pieces are (awesome-align's rule).

AER (Och & Ney 2003) against sure links S and possible links P (S ⊆ P; a gold line writes sure
links `i-j` and possible-only ones `i?j`, or the possible links come from a second file):
    AER = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|), summed over the corpus before dividing.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from amber_jax import errors
from amber_jax.core import masking
from amber_jax.core.model import Encoder, EncoderConfig
from amber_jax.text import framing

Links = set[tuple[int, int]]
METHODS = ('attention', 'similarity')
ATTENTION_RULES = ('argmax', 'product')
WORD_START = '\u2581'  # SentencePiece's '▁'


# ---- subwords -> words, Pharaoh files, AER (pure) ----

def word_index(pieces: Sequence[str]) -> list[int]:
  """The word each piece belongs to: a piece starting with '▁' starts a new word.

  The first piece always starts word 0 (with or without '▁'). A lone '▁' piece starts a word
  whose text is in the following pieces.
  """
  index, word = [], -1
  for n, piece in enumerate(pieces):
    if n == 0 or piece.startswith(WORD_START):
      word += 1
    index.append(word)
  return index


def words_from_pieces(piece_links: np.ndarray, src_words: Sequence[int],
                      tgt_words: Sequence[int]) -> Links:
  """Word links from piece links: (i, j) when any piece of word i is linked to any of word j.

  Args:
    piece_links: bool [n_src_pieces, n_tgt_pieces].
    src_words, tgt_words: `word_index` of each side.
  """
  rows, cols = np.nonzero(piece_links)
  return {(src_words[r], tgt_words[c]) for r, c in zip(rows, cols)}


def to_pharaoh(links: Iterable[tuple[int, int]]) -> str:
  """'0-0 1-2 ...' sorted by source then target."""
  return ' '.join(f'{i}-{j}' for i, j in sorted(links))


def parse_pharaoh(line: str) -> tuple[Links, Links]:
  """(sure, possible) of one gold line: `i-j` is sure (and so possible), `i?j` possible only."""
  sure, possible = set(), set()
  for token in line.split():
    sep = '-' if '-' in token else '?'
    parts = token.split(sep)
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
      raise ValueError(f'bad link {token!r} in {line!r}: expected `i-j` (sure) or `i?j` '
                       '(possible) with 0-based word indices.')
    link = (int(parts[0]), int(parts[1]))
    possible.add(link)
    if sep == '-':
      sure.add(link)
  return sure, possible


def read_gold(path: str | pathlib.Path, possible_path: str | pathlib.Path | None = None
              ) -> list[tuple[Links, Links]]:
  """(sure, possible) per line of a gold file; `possible_path` adds possible links line by line.

  S ⊆ P always holds: sure links are added to the possible ones.
  """
  gold = _parsed(path)
  if possible_path is not None:
    extra = _parsed(possible_path)
    if len(extra) != len(gold):
      raise errors.UserError(
          f'{possible_path} has {len(extra)} lines, {path} has {len(gold)}; the sure and '
          'possible files must have one line per sentence pair each.')
    gold = [(s, p | more) for (s, p), (_, more) in zip(gold, extra)]
  return gold


def _parsed(path) -> list[tuple[Links, Links]]:
  """`parse_pharaoh` of each line of a file; errors.UserError names the file and line of a bad
  link."""
  out = []
  for number, line in enumerate(_lines(path), start=1):
    try:
      out.append(parse_pharaoh(line))
    except ValueError as e:
      raise errors.UserError(f'{path}:{number}: {e}') from None
  return out


def _lines(path) -> list[str]:
  """The lines of a text file (a final newline ends the last line; blank lines are kept)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise errors.UserError(f'the file {path} does not exist (or is not a file).')
  try:
    text = path.read_text(encoding='utf-8')
  except UnicodeDecodeError as e:
    raise errors.UserError(f'{path} is not UTF-8 text ({e.reason}); save it as UTF-8.') from None
  lines = text.split('\n')
  return lines[:-1] if lines and lines[-1] == '' else lines


def aer_counts(predicted: Links, sure: Links, possible: Links) -> np.ndarray:
  """int [4]: |A ∩ S|, |A ∩ P|, |A|, |S| of one sentence pair (P is taken as P ∪ S)."""
  possible = possible | sure
  return np.array([len(predicted & sure), len(predicted & possible), len(predicted), len(sure)])


def aer(predicted: Sequence[Links], gold: Sequence[tuple[Links, Links]]) -> float:
  """Corpus AER = 1 - (|A∩S| + |A∩P|) / (|A| + |S|), with counts summed over sentence pairs."""
  if len(predicted) != len(gold):
    raise ValueError(f'{len(predicted)} predicted alignments for {len(gold)} gold ones; give one '
                     'line per sentence pair on both sides.')
  a_s, a_p, a, s = sum((aer_counts(p, *g) for p, g in zip(predicted, gold)), np.zeros(4, int))
  if a + s == 0:
    return 0.0
  return 1.0 - (a_s + a_p) / (a + s)


# ---- piece-level extractors (pure) ----

def similarity_links(src_states: np.ndarray, tgt_states: np.ndarray,
                     threshold: float = 1e-3) -> np.ndarray:
  """awesome-align: bool [n, m], softmax of S = src tgt^T over each axis, both > threshold.

  Args:
    src_states: float [n, d] token states of the source pieces.
    tgt_states: float [m, d] of the target pieces.
    threshold: 1e-3 in awesome-align.
  """
  sim = src_states.astype(np.float64) @ tgt_states.astype(np.float64).T  # [n, m]
  def softmax(a, axis):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
  return (softmax(sim, 1) > threshold) & (softmax(sim, 0) > threshold)


def attention_links(a_x2y: np.ndarray, a_y2x: np.ndarray, rule: str = 'argmax',
                    threshold: float = 0.1) -> np.ndarray:
  """Links from the two WA attention blocks: bool [n_x, n_y].

  Args:
    a_x2y: float [n_x, n_y], x queries over y keys.
    a_y2x: float [n_y, n_x], y queries over x keys.
    rule: 'argmax' (both argmaxes agree) or 'product' (A_x->y * A_y->x^T >= threshold); rows are
      renormalised first.
    threshold: for 'product'.
  """
  if rule not in ATTENTION_RULES:
    raise ValueError(f'rule={rule!r}; allowed: {ATTENTION_RULES}.')
  x2y = a_x2y / np.maximum(a_x2y.sum(axis=1, keepdims=True), 1e-12)  # [n_x, n_y]
  y2x = a_y2x / np.maximum(a_y2x.sum(axis=1, keepdims=True), 1e-12)  # [n_y, n_x]
  if rule == 'product':
    return x2y * y2x.T >= threshold
  n_x, n_y = x2y.shape
  fwd = np.zeros((n_x, n_y), bool)
  fwd[np.arange(n_x), x2y.argmax(axis=1)] = True
  bwd = np.zeros((n_x, n_y), bool)
  bwd[y2x.argmax(axis=1), np.arange(n_y)] = True
  return fwd & bwd


# ---- the model side ----

@functools.lru_cache(maxsize=8)
def _apply_fns(cfg: EncoderConfig, variant: str):
  model = Encoder(cfg)

  @jax.jit
  def wa_probs(params, ids, segments):  # -> [batch, length, length], mean over heads
    mask = masking.wa_attention_mask(ids, segments, variant)
    out = model.apply({'params': params}, ids, segments, mask, return_last_probs=True)
    return out['last_probs'].mean(axis=1)

  @jax.jit
  def states(params, ids):  # -> [layers + 1, batch, length, embed]
    out = model.apply({'params': params}, ids, return_all_hidden=True)
    return jnp.stack([h.astype(jnp.float32) for h in out['all_hidden']])

  return wa_probs, states


class Aligner:
  """Word alignments of pre-tokenised sentence pairs from our encoder's params.

  Attributes:
    params, cfg, sp: the encoder and its tokenizer (`encode`, `id_to_piece`).
    wa_mask: the WA mask variant of the attention extractor ('paper' or 'cross').
    layer: the layer of the similarity extractor (0 = embeddings); default 2/3 of the depth, as
      awesome-align's layer 8 of mBERT's 12.
  """

  def __init__(self, params, cfg: EncoderConfig, sp, *, wa_mask: str = 'paper',
               layer: int | None = None, max_pieces: int | None = None):
    self.params, self.cfg, self.sp, self.wa_mask = params, cfg, sp, wa_mask
    self.layer = round(2 * cfg.num_layers / 3) if layer is None else layer
    # [CLS] x [SEP] y [SEP] must fit the positions.
    self.max_pieces = max_pieces or (cfg.max_position_embeddings - 3) // 2
    self._wa_probs, self._states = _apply_fns(cfg, wa_mask)

  def pieces(self, words: Sequence[str]) -> tuple[list[int], list[str], list[int]]:
    """(ids, pieces, word index of each piece) of a word list, truncated to max_pieces."""
    full = self.sp.encode([' '.join(words)])[0]
    ids = full[:self.max_pieces]
    pieces = [self.sp.id_to_piece(i) for i in ids]
    index = word_index(pieces)
    starts = index[-1] + 1 if ids else 0
    if starts > len(words) or (len(full) == len(ids) and starts != len(words)):
      raise ValueError(f'{len(words)} words gave {starts} word starts (pieces {pieces}): every '
                       "word must begin a piece with '▁'; pass whitespace-split words without "
                       'empty or invisible ones.')
    return ids, pieces, index

  def attention(self, src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]]
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(A_x->y [n_x, n_y], A_y->x [n_y, n_x]) per pair: the two WA passes, mean over heads."""
    def blocks(first, second):
      rows = [framing.frame_pair(a, b) for a, b in zip(first, second)]
      ids = framing.pad_rows(rows)  # [batch, L], L a multiple of 16
      segments = np.zeros_like(ids)
      for n, (a, b) in enumerate(zip(first, second)):
        segments[n, len(a) + 2:len(a) + len(b) + 3] = 1
      probs = np.asarray(self._wa_probs(self.params, ids, segments))  # [batch, L, L]
      # second-side queries (after [CLS] a [SEP]) over first-side keys (after [CLS]).
      return [probs[n, len(a) + 2:len(a) + 2 + len(b), 1:1 + len(a)]
              for n, (a, b) in enumerate(zip(first, second))]
    y2x = blocks(src_ids, tgt_ids)  # [n_y, n_x] each
    x2y = blocks(tgt_ids, src_ids)  # [n_x, n_y] each
    return list(zip(x2y, y2x))

  def token_states(self, ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """States of each sentence's pieces ([CLS]/[SEP] dropped) at `layer`: [n, embed] each."""
    batch = framing.pad_rows(framing.frame(ids))  # [batch, L], L a multiple of 16
    h = np.asarray(self._states(self.params, batch))[self.layer]  # [batch, L, embed]
    return [h[n, 1:1 + len(r)] for n, r in enumerate(ids)]

  def align(self, pairs: Sequence[tuple[Sequence[str], Sequence[str]]], method: str = 'attention',
            *, rule: str = 'argmax', threshold: float | None = None, batch_size: int = 32
            ) -> list[Links]:
    """Word links of each (source words, target words) pair.

    Args:
      pairs: pre-tokenised sentence pairs.
      method: 'attention' or 'similarity' (module docstring).
      rule: the attention rule, 'argmax' or 'product'.
      threshold: 'product' threshold (default 0.1) or the similarity softmax threshold (1e-3).
      batch_size: pairs per forward pass.
    """
    if method not in METHODS:
      raise ValueError(f'method={method!r}; allowed: {METHODS}.')
    result = []
    for start in range(0, len(pairs), batch_size):
      chunk = pairs[start:start + batch_size]
      src = [self.pieces(s) for s, _ in chunk]
      tgt = [self.pieces(t) for _, t in chunk]
      if method == 'attention':
        mats = self.attention([s[0] for s in src], [t[0] for t in tgt])
        links = [attention_links(x2y, y2x, rule, 0.1 if threshold is None else threshold)
                 for x2y, y2x in mats]
      else:
        hs = self.token_states([s[0] for s in src])
        ht = self.token_states([t[0] for t in tgt])
        links = [similarity_links(a, b, 1e-3 if threshold is None else threshold)
                 for a, b in zip(hs, ht)]
      result += [words_from_pieces(l, s[2], t[2]) for l, s, t in zip(links, src, tgt)]
    return result

  def matrices(self, src_words: Sequence[str], tgt_words: Sequence[str]) -> dict:
    """What a heatmap shows for one pair: pieces and the piece-level matrices [n_x, n_y].

    Returns:
      {'src_pieces', 'tgt_pieces', 'attention' (A_x->y * A_y->x^T after row renormalisation,
      the symmetric agreement the WA loss rewards), 'similarity' (awesome-align's
      softmax_x->y * softmax_y->x)}.
    """
    (s_ids, s_pieces, _), (t_ids, t_pieces, _) = self.pieces(src_words), self.pieces(tgt_words)
    (x2y, y2x), = self.attention([s_ids], [t_ids])
    x2y = x2y / np.maximum(x2y.sum(1, keepdims=True), 1e-12)
    y2x = y2x / np.maximum(y2x.sum(1, keepdims=True), 1e-12)
    hs, = self.token_states([s_ids])
    ht, = self.token_states([t_ids])
    sim = hs.astype(np.float64) @ ht.astype(np.float64).T
    fwd = np.exp(sim - sim.max(1, keepdims=True))
    bwd = np.exp(sim - sim.max(0, keepdims=True))
    similarity = (fwd / fwd.sum(1, keepdims=True)) * (bwd / bwd.sum(0, keepdims=True))
    return {'src_pieces': s_pieces, 'tgt_pieces': t_pieces, 'attention': x2y * y2x.T,
            'similarity': similarity}


def read_word_pairs(path: str | pathlib.Path) -> list[tuple[list[str], list[str]]]:
  """Pre-tokenised pairs, one a line: `src words<TAB>tgt words` or `src words ||| tgt words`
  (awesome-align's input); words are split on whitespace."""
  pairs = []
  for number, line in enumerate(_lines(path), start=1):
    sep = '\t' if '\t' in line else ' ||| '
    parts = line.split(sep)
    if len(parts) != 2 or not parts[0].split() or not parts[1].split():
      raise errors.UserError(f'{path}:{number}: expected `source words<TAB>target words` (or '
                             f'`src ||| tgt`), both non-empty; found {line[:80]!r}.')
    pairs.append((parts[0].split(), parts[1].split()))
  return pairs
