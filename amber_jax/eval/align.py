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
                method 'grow-diag-final-and': the two argmaxes symmetrised as statistical
                aligners' directions are (`amber_jax.data.teacher.symmetrize`): the intersection
                grown by neighbouring links of either direction; how configs/align.py's
                teacher links are made.
  'similarity'  awesome-align (Dou & Neubig 2021): x and y encoded separately, token states of one
                layer, S = h_x h_y^T; linked when softmax(S) over y (row) and softmax(S) over x
                (column) both exceed 1e-3.

A word pair is linked when any of their pieces are (awesome-align's rule).

  'guided'      for a run trained with a teacher (configs/align.py): the attention as word-level
                probabilities (`word_attention`) and the teacher's two directions on the same
                pairs vote (`vote_links`): a link needs both teacher directions, or one and the
                student's support, or the student's confidence both ways.

AER (Och & Ney 2003) against sure links S and possible links P (S ⊆ P; a gold line writes sure
links `i-j` and possible-only ones `i?j`, or the possible links come from a second file):
    AER = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|), summed over the corpus before dividing.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from amber_jax import errors
from amber_jax.core import masking
from amber_jax.core.model import Encoder, EncoderConfig
from amber_jax.data import aligned, teacher
from amber_jax.text import framing

Links = set[tuple[int, int]]
METHODS = ('attention', 'similarity', 'guided')
# The 'guided' vote (`vote_links`), chosen on the Romans verses of benchmarks/word_alignment.py's
# held-out books (its other books are the test): docs/EVAL.md.
VOTE_WEIGHT, VOTE_THRESHOLD = 0.5, 0.4
ATTENTION_RULES = ('argmax', 'product', 'grow-diag-final-and')


# ---- subwords -> words, Pharaoh files, AER (pure) ----

def words_from_pieces(piece_links: np.ndarray, src_words: Sequence[int],
                      tgt_words: Sequence[int]) -> Links:
  """Word links from piece links: (i, j) when any piece of word i is linked to any of word j.

  Args:
    piece_links: bool [n_src_pieces, n_tgt_pieces].
    src_words, tgt_words: `word_index` of each side.
  """
  rows, cols = np.nonzero(piece_links)
  return {(src_words[r], tgt_words[c]) for r, c in zip(rows, cols)}


# The Pharaoh format lives beside the teacher that writes it (the data layer reads it too).
to_pharaoh = teacher.to_pharaoh
parse_pharaoh = teacher.parse_pharaoh


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
  for number, line in enumerate(aligned.read_lines(path), start=1):
    try:
      out.append(parse_pharaoh(line))
    except ValueError as e:
      raise errors.UserError(f'{path}:{number}: {e}') from None
  return out


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
    rule: 'argmax' (both argmaxes agree), 'product' (A_x->y * A_y->x^T >= threshold) or
      'grow-diag-final-and' (the argmaxes symmetrised); rows are renormalised first.
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
  if rule == 'argmax':
    return fwd & bwd
  links = teacher.symmetrize(set(zip(*np.nonzero(fwd))), set(zip(*np.nonzero(bwd))), rule)
  out = np.zeros((n_x, n_y), bool)
  for i, j in links:
    out[i, j] = True
  return out


def word_attention(x2y: np.ndarray, y2x: np.ndarray, src_words: Sequence[int],
                   tgt_words: Sequence[int], n_src: int, n_tgt: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Word-level attention from the piece-level blocks: W_x->y [n_src, n_tgt] holds, for source
  word a, the mean over its pieces of the (row-renormalised) mass on target word b's pieces;
  W_y->x [n_tgt, n_src] likewise. Words past the pieces (cut) have zero rows and columns.

  Args:
    x2y, y2x: float [n_x, n_y], [n_y, n_x] piece blocks (`Aligner.attention`).
    src_words, tgt_words: `word_index` of each side's pieces.
    n_src, n_tgt: the words of each side.
  """
  def words(block, rows, cols, n_rows, n_cols):
    block = block / np.maximum(block.sum(axis=1, keepdims=True), 1e-12)
    to_words = np.zeros((len(rows), n_cols))
    np.add.at(to_words.T, np.asarray(cols), block.T)  # piece row -> mass on each word
    out = np.zeros((n_rows, n_cols))
    np.add.at(out, np.asarray(rows), to_words)
    return out / np.maximum(np.bincount(rows, minlength=n_rows), 1)[:, None]
  return (words(x2y, src_words, tgt_words, n_src, n_tgt),
          words(y2x, tgt_words, src_words, n_tgt, n_src))


def vote_links(w_x2y: np.ndarray, w_y2x: np.ndarray, forward: Links, reverse: Links, *,
               weight: float = VOTE_WEIGHT, threshold: float = VOTE_THRESHOLD) -> Links:
  """Links from the student's word attention and the teacher's two directions:
  score = weight (W_x->y + W_y->x^T) / 2 + (1 - weight) (F + R) / 2, linked above `threshold`.
  With the defaults: both teacher directions (0.5), or one and W_x->y + W_y->x^T > 0.6, or
  neither and W_x->y + W_y->x^T > 1.6."""
  score = weight * (w_x2y + w_y2x.T) / 2
  n, m = score.shape
  for links in (forward, reverse):
    for i, j in links:
      if i < n and j < m:
        score[i, j] += (1 - weight) / 2
  return {(int(i), int(j)) for i, j in zip(*np.nonzero(score > threshold))}


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
    wa_mask: the WA mask variant of the attention extractor ('paper', 'cross' or 'full').
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
    ids, pieces, index, _ = aligned.word_pieces(self.sp, words, self.max_pieces)
    return ids, pieces, index

  def attention(self, src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]]
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(A_x->y [n_x, n_y], A_y->x [n_y, n_x]) per pair: the two WA passes, mean over heads."""
    def probs(first, second):  # [CLS] first [SEP] second [SEP] -> [batch, L, L], mean of heads
      rows = [framing.frame_pair(a, b) for a, b in zip(first, second)]
      ids = framing.pad_rows(rows)  # [batch, L], L a multiple of 16
      segments = np.zeros_like(ids)
      for n, (a, b) in enumerate(zip(first, second)):
        segments[n, len(a) + 2:len(a) + len(b) + 3] = 1
      return np.asarray(self._wa_probs(self.params, ids, segments))

    def blocks(first, second, p):  # second-side queries (after [CLS] a [SEP]) over first's keys
      return [p[n, len(a) + 2:len(a) + 2 + len(b), 1:1 + len(a)]
              for n, (a, b) in enumerate(zip(first, second))]

    p_xy = probs(src_ids, tgt_ids)
    y2x = blocks(src_ids, tgt_ids, p_xy)  # [n_y, n_x] each
    if self.wa_mask == 'full':  # one pass holds both: x over y is y over x of p transposed
      x2y = [m.T for m in blocks(src_ids, tgt_ids, p_xy.transpose(0, 2, 1))]
    else:
      x2y = blocks(tgt_ids, src_ids, probs(tgt_ids, src_ids))  # [n_x, n_y] each
    return list(zip(x2y, y2x))

  def token_states(self, ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """States of each sentence's pieces ([CLS]/[SEP] dropped) at `layer`: [n, embed] each."""
    batch = framing.pad_rows(framing.frame(ids))  # [batch, L], L a multiple of 16
    h = np.asarray(self._states(self.params, batch))[self.layer]  # [batch, L, embed]
    return [h[n, 1:1 + len(r)] for n, r in enumerate(ids)]

  def align(self, pairs: Sequence[tuple[Sequence[str], Sequence[str]]], method: str = 'attention',
            *, rule: str = 'argmax', threshold: float | None = None, batch_size: int = 32,
            teacher_links: Sequence[tuple[Links, Links]] | None = None) -> list[Links]:
    """Word links of each (source words, target words) pair.

    Args:
      pairs: pre-tokenised sentence pairs.
      method: 'attention', 'similarity' or 'guided' (module docstring).
      rule: the attention rule, 'argmax', 'product' or 'grow-diag-final-and'.
      threshold: 'product' threshold (default 0.1), the similarity softmax threshold (1e-3) or the
        guided vote's (`VOTE_THRESHOLD`).
      batch_size: pairs per forward pass.
      teacher_links: 'guided': the teacher's (forward, reverse) links of each pair
        (`amber_jax.data.teacher.eflomal_directions`).
    """
    if method not in METHODS:
      raise ValueError(f'method={method!r}; allowed: {METHODS}.')
    if method == 'guided' and (teacher_links is None or len(teacher_links) != len(pairs)):
      raise ValueError("method='guided' needs the teacher's (forward, reverse) links of each pair")
    result = []
    for start in range(0, len(pairs), batch_size):
      chunk = pairs[start:start + batch_size]
      src = [self.pieces(s) for s, _ in chunk]
      tgt = [self.pieces(t) for _, t in chunk]
      if method == 'guided':
        mats = self.attention([s[0] for s in src], [t[0] for t in tgt])
        for (x2y, y2x), s, t, (x, y), (fwd, rev) in zip(
            mats, src, tgt, chunk, teacher_links[start:start + batch_size]):
          words = word_attention(x2y, y2x, s[2], t[2], len(x), len(y))
          result.append(vote_links(*words, fwd, rev, threshold=threshold or VOTE_THRESHOLD))
        continue
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
