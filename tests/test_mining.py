"""Ratio-margin bitext mining: the formula against a loop, the hub it exists to fix, BUCC scores."""

import numpy as np
import pytest

from amber_jax.eval import mining


def margin_loop(x, y, k):
  """margin(x, y) = cos(x, y) / (sum_{z in NN_k(x)} cos(x, z) / 2k + sum_{z in NN_k(y)} cos(y, z) / 2k)."""
  cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
  out = np.zeros((len(x), len(y)))
  for i, a in enumerate(x):
    nn_x = sorted((cos(a, z) for z in y), reverse=True)[:k]
    for j, b in enumerate(y):
      nn_y = sorted((cos(b, z) for z in x), reverse=True)[:k]
      out[i, j] = cos(a, b) / (sum(nn_x) / (2 * k) + sum(nn_y) / (2 * k))
  return out


def test_margin_scores_match_the_formula_written_as_loops():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(5, 8)), rng.normal(size=(7, 8))
  np.testing.assert_allclose(mining.margin_scores(x, y, k=3), margin_loop(x, y, 3), rtol=1e-6)


# x0, x1 = e0, e1. y0 is x0's translation (cos 0.5), y1 = x1's (cos 1). The hub h is the nearest
# y of x0 by cosine (0.55 > 0.5) but sits closer still to x1 (0.8): the margin discounts it.
HUB_X = np.array([[1.0, 0, 0], [0, 1, 0]])
HUB_Y = np.array([[0.5, 0, np.sqrt(0.75)], [0, 1, 0], [0.55, 0.8, np.sqrt(0.0575)]])


def test_margin_fixes_the_hub_that_cosine_retrieves():
  assert mining.cosine_matrix(HUB_X, HUB_Y).argmax(axis=1).tolist() == [2, 1]
  scores = mining.margin_scores(HUB_X, HUB_Y, k=1)
  # By hand: margin(x0, y0) = 0.5 / ((0.55 + 0.5) / 2), margin(x0, h) = 0.55 / ((0.55 + 0.8) / 2).
  np.testing.assert_allclose(scores[0, 0], 0.5 / 0.525)
  np.testing.assert_allclose(scores[0, 2], 0.55 / 0.675)
  assert scores.argmax(axis=1).tolist() == [0, 1]


def test_candidate_modes():
  scores = np.array([[0.9, 0.1, 0.0],
                     [0.8, 0.2, 0.7]])  # x1's best is y0, whose best is x0
  assert {(i, j) for i, j, _ in mining.candidates(scores, 'forward')} == {(0, 0), (1, 0)}
  assert {(i, j) for i, j, _ in mining.candidates(scores, 'backward')} == {(0, 0), (1, 1), (1, 2)}
  assert {(i, j) for i, j, _ in mining.candidates(scores, 'intersection')} == {(0, 0)}
  assert len(mining.candidates(scores, 'union')) == 4
  with pytest.raises(ValueError, match='allowed'):
    mining.candidates(scores, 'both')


def test_mine_recovers_planted_translations_among_noise():
  rng = np.random.default_rng(1)
  base = rng.normal(size=(20, 32))
  x = np.concatenate([base, rng.normal(size=(10, 32))])          # 20 paired + 10 unpaired
  perm = rng.permutation(30)
  y_rows = np.concatenate([base + 0.1 * rng.normal(size=base.shape), rng.normal(size=(10, 32))])
  y = y_rows[perm]                                               # shuffled target side
  gold = {(i, int(np.where(perm == i)[0][0])) for i in range(20)}
  found = mining.mine(x, y, k=4, mode='intersection')
  t, (p, r, f1) = mining.best_threshold(found, gold)
  assert (p, r, f1) == (1.0, 1.0, 1.0)
  assert {(i, j) for i, j, _ in mining.mine(x, y, k=4, threshold=t)} == gold


def test_precision_recall_f1_known_answer():
  p, r, f1 = mining.precision_recall_f1([(0, 0, 1.5), (1, 2, 1.2), (2, 2, 1.1)], {(0, 0), (1, 1)})
  assert (p, r) == (1 / 3, 1 / 2)
  assert f1 == pytest.approx(0.4)
  assert mining.precision_recall_f1([], {(0, 0)}) == (0.0, 0.0, 0.0)


def test_best_threshold_known_answer():
  found = [(0, 0, 0.9), (1, 1, 0.8), (2, 5, 0.7), (3, 3, 0.6)]
  # t=.9: F1 .5; t=.8: .8; t=.7: 2/3; t=.6: P 3/4, R 1, F1 6/7.
  t, (p, r, f1) = mining.best_threshold(found, {(0, 0), (1, 1), (3, 3)})
  assert t == 0.6 and (p, r) == (0.75, 1.0) and f1 == pytest.approx(6 / 7)


def test_mining_task_keeps_gold_pairs_aligned():
  pairs = [(f'src {i}', f'tgt {i}') for i in range(10)]
  sources, targets, gold = mining.mining_task(pairs, paired_fraction=0.6, seed=3)
  assert len(gold) == 6 and len(sources) == 8 and len(targets) == 8
  assert all(sources[i][4:] == targets[j][4:] for i, j in gold)
  unpaired_src = {s[4:] for s in sources} - {targets[j][4:] for _, j in gold}
  assert unpaired_src.isdisjoint({t[4:] for t in targets})


def test_evaluate_mining_with_an_oracle_embedder_is_perfect():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(40, 16))
  embed = lambda sents: table[[int(s.split()[1]) for s in sents]][None]  # [1 layer, n, 16]
  pairs = {'de': [(f'en {i}', f'de {i}') for i in range(40)]}
  result = mining.evaluate_mining(embed, pairs, k=4)
  assert result['de']['n_gold'] == 20 and result['de']['best_f1'] == 1.0
  assert 'mean' in mining.format_mining_table(result)
