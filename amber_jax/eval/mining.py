"""Bitext mining by ratio margin (Artetxe & Schwenk 2019, arXiv 1811.01136), BUCC-style scoring.

Given two unaligned sets of sentence embeddings X and Y (some x have a translation in Y, the rest
are noise), the ratio margin rescales cosine by how close each side is to its neighbourhood:

    margin(x, y) = cos(x, y) / (sum_{z in NN_k(x)} cos(x, z) / 2k
                                + sum_{z in NN_k(y)} cos(y, z) / 2k)

where NN_k(x) are the k nearest neighbours of x in Y and NN_k(y) those of y in X. A hub (close to
everything) gets a large denominator and so a smaller margin. Candidates:

  'forward'       each x with its best y by margin
  'backward'      each y with its best x
  'intersection'  the pairs found both ways
  'union'         the pairs found either way (a pair's score is its margin)

`threshold` keeps candidates whose margin is at least that; `best_threshold` picks the one that
maximises F1 against gold pairs, as BUCC does on its training split.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from amber_jax.eval import retrieval

MODES = ('forward', 'backward', 'intersection', 'union')


def cosine_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """float [n, m] cosines of x [n, d] and y [m, d]."""
  x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)
  y = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-9)
  return x @ y.T


def knn_mean(sim: np.ndarray, k: int) -> np.ndarray:
  """Mean of each row's k largest values: float [n] (k is capped at the row length)."""
  k = min(k, sim.shape[1])
  if k < 1:
    raise ValueError(f'k must be >= 1 and the other set non-empty; got k={k}, sim {sim.shape}.')
  return np.mean(-np.sort(-sim, axis=1)[:, :k], axis=1)


def margin_scores(x: np.ndarray, y: np.ndarray, k: int = 4) -> np.ndarray:
  """Ratio margin of every (x_i, y_j): float [n, m].

  Args:
    x: float [n, d] embeddings of one side.
    y: float [m, d] embeddings of the other.
    k: neighbourhood size (4 in Artetxe & Schwenk).
  """
  return margin_of_similarity(cosine_matrix(x, y), k)


def margin_of_similarity(sim: np.ndarray, k: int = 4) -> np.ndarray:
  """Ratio margin of every cell of a similarity matrix `sim` [n, m] (cosines of any kind)."""
  r_x = knn_mean(sim, k)               # [n]: mean cosine of x_i to its k nearest y
  r_y = knn_mean(sim.T, k)             # [m]: mean cosine of y_j to its k nearest x
  denom = (r_x[:, None] + r_y[None, :]) / 2
  return sim / np.where(np.abs(denom) < 1e-9, 1e-9, denom)


def candidates(scores: np.ndarray, mode: str = 'intersection') -> list[tuple[int, int, float]]:
  """Candidate pairs (i, j, score) from a score matrix [n, m], best score first.

  Args:
    scores: float [n, m], e.g. `margin_scores`.
    mode: one of MODES (see the module docstring).
  """
  if mode not in MODES:
    raise ValueError(f'mode={mode!r}; allowed: {MODES}.')
  if scores.size == 0:
    return []
  fwd = {(i, int(j)) for i, j in enumerate(scores.argmax(axis=1))}
  bwd = {(int(i), j) for j, i in enumerate(scores.argmax(axis=0))}
  chosen = {'forward': fwd, 'backward': bwd, 'intersection': fwd & bwd, 'union': fwd | bwd}[mode]
  found = [(i, j, float(scores[i, j])) for i, j in chosen]
  return sorted(found, key=lambda c: (-c[2], c[0], c[1]))


def mine(x: np.ndarray, y: np.ndarray, *, k: int = 4, mode: str = 'intersection',
         threshold: float | None = None) -> list[tuple[int, int, float]]:
  """Mined pairs (i, j, margin) of x [n, d] and y [m, d], margin >= threshold when given."""
  found = candidates(margin_scores(x, y, k), mode)
  return [c for c in found if threshold is None or c[2] >= threshold]


def precision_recall_f1(mined: Iterable[tuple], gold: Iterable[tuple[int, int]]
                        ) -> tuple[float, float, float]:
  """P, R, F1 of mined pairs ((i, j) or (i, j, score)) against the gold (i, j) pairs.

  An empty prediction has precision 0 (and so F1 0) unless the gold is empty too (all 1).
  """
  pred = {(int(c[0]), int(c[1])) for c in mined}
  gold = {(int(i), int(j)) for i, j in gold}
  if not pred and not gold:
    return 1.0, 1.0, 1.0
  hit = len(pred & gold)
  p = hit / len(pred) if pred else 0.0
  r = hit / len(gold) if gold else 0.0
  return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def best_threshold(found: Sequence[tuple[int, int, float]], gold: Iterable[tuple[int, int]]
                   ) -> tuple[float, tuple[float, float, float]]:
  """The threshold (one of the candidates' scores) that maximises F1, and its (P, R, F1).

  Keeping the candidates with score >= t for each t in turn: with them sorted best first, that is
  one pass over the list.
  """
  gold = {(int(i), int(j)) for i, j in gold}
  if not found:
    return float('inf'), precision_recall_f1([], gold)
  ordered = sorted(found, key=lambda c: -c[2])
  best_t, best = ordered[0][2], (-1.0, 0.0, 0.0)
  hits = 0
  for n, (i, j, score) in enumerate(ordered, start=1):
    hits += (i, j) in gold
    if n < len(ordered) and ordered[n][2] == score:
      continue  # a threshold keeps all candidates of equal score or none
    p, r = hits / n, (hits / len(gold) if gold else 0.0)
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    if f1 > best[2]:
      best_t, best = score, (p, r, f1)
  return best_t, best


def mining_task(pairs: Sequence[tuple[str, str]], *, paired_fraction: float = 0.5, seed: int = 0
                ) -> tuple[list[str], list[str], set[tuple[int, int]]]:
  """A BUCC-like task from aligned pairs: each side keeps `paired_fraction` of the pairs plus
  distinct unpaired sentences (sources whose target was dropped, targets whose source was).

  Args:
    pairs: (src, tgt) pairs, no sentence repeated on either side.
    paired_fraction: share of the pairs kept whole (the gold); the rest are split in two halves:
      the first keeps only its source, the second only its target.
    seed: shuffling seed.

  Returns:
    (sources, targets, gold {(source index, target index)}), both sides shuffled.
  """
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(pairs))
  n_gold = int(round(paired_fraction * len(pairs)))
  rest = order[n_gold:]
  src_only, tgt_only = rest[:len(rest) // 2], rest[len(rest) // 2:]
  src_rows = list(order[:n_gold]) + list(src_only)
  tgt_rows = list(order[:n_gold]) + list(tgt_only)
  src_perm, tgt_perm = rng.permutation(len(src_rows)), rng.permutation(len(tgt_rows))
  sources = [pairs[src_rows[p]][0] for p in src_perm]
  targets = [pairs[tgt_rows[p]][1] for p in tgt_perm]
  src_pos = {src_rows[p]: a for a, p in enumerate(src_perm)}
  tgt_pos = {tgt_rows[p]: b for b, p in enumerate(tgt_perm)}
  gold = {(src_pos[r], tgt_pos[r]) for r in order[:n_gold]}
  return sources, targets, gold


def evaluate_mining(embed, pairs: Mapping[str, Sequence[tuple[str, str]]], *, layer: int = -1,
                    k: int = 4, mode: str = 'intersection', threshold: float | None = None,
                    paired_fraction: float = 0.5, seed: int = 0) -> dict[str, dict[str, float]]:
  """Per language: mining P/R/F1 at `threshold` and at the best threshold (BUCC's oracle).

  Args:
    embed: an `retrieval.Embedder` (sentences -> [layers + 1, n, d]).
    pairs: {lang: [(src, tgt)]}; each language becomes a `mining_task`.
    layer: which layer's mean-pooled states to mine with (-1 = last).
    k, mode: see `margin_scores`, `candidates`.
    threshold: a fixed margin threshold (None: keep every candidate).
    paired_fraction, seed: see `mining_task`.

  Returns:
    {lang: {'n_src', 'n_tgt', 'n_gold', 'p', 'r', 'f1', 'best_threshold', 'best_p', 'best_r',
    'best_f1'}}.
  """
  result = {}
  for lang in sorted(pairs):
    sources, targets, gold = mining_task(retrieval.unique_pairs(pairs[lang]),
                                         paired_fraction=paired_fraction, seed=seed)
    x, y = embed(sources)[layer], embed(targets)[layer]
    found = candidates(margin_scores(x, y, k), mode)
    p, r, f1 = precision_recall_f1(
        [c for c in found if threshold is None or c[2] >= threshold], gold)
    t, (bp, br, bf) = best_threshold(found, gold)
    result[lang] = dict(n_src=len(sources), n_tgt=len(targets), n_gold=len(gold), p=p, r=r, f1=f1,
                        best_threshold=t, best_p=bp, best_r=br, best_f1=bf)
  return result


def format_mining_table(result: Mapping[str, Mapping[str, float]]) -> str:
  """The table printed by `amber-jax eval mining`."""
  lines = [f'{"lang":10s}{"src":>6s}{"tgt":>6s}{"gold":>6s}{"P":>8s}{"R":>8s}{"F1":>8s}'
           f'{"best t":>9s}{"best P":>8s}{"best R":>8s}{"best F1":>9s}']
  keys = ('p', 'r', 'f1', 'best_threshold', 'best_p', 'best_r', 'best_f1')
  for lang, m in sorted(result.items()):
    lines.append(f'{lang:10s}{m["n_src"]:6d}{m["n_tgt"]:6d}{m["n_gold"]:6d}{m["p"]:8.3f}'
                 f'{m["r"]:8.3f}{m["f1"]:8.3f}{m["best_threshold"]:9.3f}{m["best_p"]:8.3f}'
                 f'{m["best_r"]:8.3f}{m["best_f1"]:9.3f}')
  mean = {key: float(np.mean([m[key] for m in result.values()])) for key in keys}
  lines.append(f'{"mean":10s}{"":18s}{mean["p"]:8.3f}{mean["r"]:8.3f}{mean["f1"]:8.3f}'
               f'{mean["best_threshold"]:9.3f}{mean["best_p"]:8.3f}{mean["best_r"]:8.3f}'
               f'{mean["best_f1"]:9.3f}')
  return '\n'.join(lines)
