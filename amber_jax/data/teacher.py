"""A statistical word aligner as a teacher: eflomal's links and their symmetrisation.

Guided alignment (Garg et al. 2019, "Jointly Learning to Align and Translate") trains attention
to reproduce the links of a statistical aligner; `configs/align.py` does that with eflomal
(Östling & Tiedemann 2016: IBM1 + HMM + fertility, Bayesian, sampled), which aligns thousands of
sentence pairs in seconds on a CPU. This module runs it and combines its two directions.

Sentences are lists of words; links are 0-based (source word i, target word j), as in
`amber_jax.eval.align`. eflomal is an optional dependency (pip `eflomal`, in the `align` and
`test` extras); it is imported only when `eflomal_links` runs.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterable, Sequence

from amber_jax import errors

Links = set[tuple[int, int]]
SYMMETRIZATIONS = ('intersection', 'union', 'grow-diag-final-and', 'grow-diag', 'forward',
                   'reverse')
_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def symmetrize(forward: Links, reverse: Links, method: str = 'grow-diag-final-and') -> Links:
  """One set of links from the two directions (Koehn et al. 2003's heuristics, as Moses' and
  fast_align's `atools` apply them).

  Args:
    forward: links of the source -> target model (each target word has at most one source).
    reverse: links of the target -> source model, in (source, target) order too.
    method: one of `SYMMETRIZATIONS`. 'grow-diag' starts from the intersection and adds union
      links that neighbour a link (diagonals included) and touch a word not yet aligned, until
      nothing changes; 'grow-diag-final-and' then adds union links whose words are both still
      unaligned.
  """
  if method not in SYMMETRIZATIONS:
    raise ValueError(f'unknown symmetrization {method!r}; expected one of {SYMMETRIZATIONS}')
  if method == 'forward':
    return set(forward)
  if method == 'reverse':
    return set(reverse)
  union = forward | reverse
  if method == 'union':
    return set(union)
  links = forward & reverse
  if method == 'intersection':
    return links
  src_done = {i for i, _ in links}
  tgt_done = {j for _, j in links}
  grew = True
  while grew:
    grew = False
    for i, j in sorted(links):
      for di, dj in _NEIGHBOURS:
        candidate = (i + di, j + dj)
        if (candidate in union and candidate not in links
            and (candidate[0] not in src_done or candidate[1] not in tgt_done)):
          links.add(candidate)
          src_done.add(candidate[0])
          tgt_done.add(candidate[1])
          grew = True
  if method == 'grow-diag-final-and':
    for direction in (forward, reverse):
      for i, j in sorted(direction):
        if i not in src_done and j not in tgt_done:
          links.add((i, j))
          src_done.add(i)
          tgt_done.add(j)
  return links


def to_pharaoh(links: Iterable[tuple[int, int]]) -> str:
  """'0-0 1-2 ...' (Pharaoh) sorted by source then target."""
  return ' '.join(f'{i}-{j}' for i, j in sorted(links))


def parse_pharaoh(line: str) -> tuple[Links, Links]:
  """(sure, possible) of one Pharaoh line: `i-j` is sure (and so possible), `i?j` possible only.

  Raises:
    ValueError: a token that is neither, with 0-based word indices.
  """
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


def eflomal_directions(src: Sequence[Sequence[str]], tgt: Sequence[Sequence[str]], *,
                       model: int = 3, samplers: int = 2) -> tuple[list[Links], list[Links]]:
  """eflomal's forward and reverse links of every pair, both in (source, target) order.

  Args:
    src, tgt: the pairs' words, one list per sentence; the same number of sentences. An empty
      sentence gets no links.
    model: 1 (IBM1), 2 (+ HMM distortion) or 3 (+ fertility), eflomal's default.
    samplers: independent samplers averaged (eflomal's `--n-samplers`).

  Raises:
    ValueError: the two sides have different numbers of sentences.
  """
  if len(src) != len(tgt):
    raise ValueError(f'{len(src)} source sentences but {len(tgt)} target sentences')
  try:
    import eflomal  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise errors.UserError("the word-alignment teacher needs eflomal: pip install -e '.[align]' "
                           '(or pip install eflomal==2.0.0; it builds with a C compiler).'
                           ) from None

  aligner = eflomal.Aligner(model=model, n_samplers=samplers)
  with tempfile.TemporaryDirectory(prefix='amber-eflomal-') as tmp:
    fwd_path, rev_path = os.path.join(tmp, 'fwd'), os.path.join(tmp, 'rev')
    aligner.align([' '.join(words) + '\n' for words in src],
                  [' '.join(words) + '\n' for words in tgt],
                  links_filename_fwd=fwd_path, links_filename_rev=rev_path, quiet=True)
    forward = _read_links(fwd_path, len(src))
    reverse = _read_links(rev_path, len(src))
  return forward, reverse


def pair_directions(pairs: Sequence[tuple[Sequence[str], Sequence[str]]],
                    learn_with: Sequence[tuple[Sequence[str], Sequence[str]]] = ()
                    ) -> list[tuple[Links, Links]]:
  """eflomal's (forward, reverse) links of each (source words, target words) pair, learnt
  together with the `learn_with` pairs (whose own links are not returned)."""
  both = list(learn_with) + list(pairs)
  forward, reverse = eflomal_directions([s for s, _ in both], [t for _, t in both])
  return list(zip(forward[len(learn_with):], reverse[len(learn_with):]))


def _read_links(path: str, count: int) -> list[Links]:
  with open(path, encoding='utf-8') as f:
    links = [parse_pharaoh(line)[0] for line in f.read().splitlines()]
  if len(links) != count:
    raise RuntimeError(f'eflomal wrote {len(links)} lines of links for {count} sentence pairs')
  return links


def eflomal_links(src: Sequence[Sequence[str]], tgt: Sequence[Sequence[str]], *,
                  symmetrization: str = 'grow-diag-final-and', **kwargs) -> list[Links]:
  """eflomal's links of every pair, its two directions combined by `symmetrize`."""
  forward, reverse = eflomal_directions(src, tgt, **kwargs)
  return [symmetrize(f, r, symmetrization) for f, r in zip(forward, reverse)]
