"""Each AMBER loss against a slow, obvious numpy reference on random inputs with pads/specials."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amber_jax.core import losses
from amber_jax.core import masking
from amber_jax.core.model import CLS_ID, MASK_ID, NUM_SPECIALS, PAD_ID, SEP_ID


def _log_softmax(v):
  v = np.asarray(v, np.float64)
  m = v.max()
  return v - m - math.log(np.exp(v - m).sum())


# ----------------------------------------------------------------------------- MLM

def test_mlm_equals_mean_cross_entropy_over_masked_positions():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 11)).astype(np.float32)
  labels = rng.integers(0, 11, size=(3, 5))
  weights = (rng.random((3, 5)) < 0.6).astype(np.float32)
  weights[0, 0] = 1
  expected, n = 0.0, 0
  for b in range(3):
    for k in range(5):
      if weights[b, k]:
        expected -= _log_softmax(logits[b, k])[labels[b, k]]
        n += 1
  loss, _ = losses.masked_lm_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
  np.testing.assert_allclose(float(loss), expected / n, rtol=1e-5)


def test_mlm_ignores_unmasked_positions():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 4, 7)).astype(np.float32)
  labels = rng.integers(0, 7, size=(2, 4))
  weights = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], np.float32)
  base, _ = losses.masked_lm_loss(logits, labels, weights)
  logits2 = logits.copy()
  logits2[weights == 0] = rng.normal(size=(int((weights == 0).sum()), 7)) * 100
  labels2 = labels.copy()
  labels2[weights == 0] = (labels2[weights == 0] + 3) % 7
  changed, _ = losses.masked_lm_loss(logits2, labels2, weights)
  np.testing.assert_allclose(float(base), float(changed), rtol=1e-6)


# ----------------------------------------------------------------------------- SA

def _sa_reference(cx, cy, valid, cosine=False, temperature=1.0, margin=0.0, bidirectional=False):
  cx, cy = np.asarray(cx, np.float64), np.asarray(cy, np.float64)
  if cosine:
    cx = cx / np.linalg.norm(cx, axis=1, keepdims=True)
    cy = cy / np.linalg.norm(cy, axis=1, keepdims=True)

  def one_way(a, b):
    total, n = 0.0, 0
    for i in range(len(a)):
      if not valid[i]:
        continue
      scores = []
      for j in range(len(b)):
        if valid[j]:
          s = float(a[i] @ b[j]) - (margin if i == j else 0.0)
          scores.append((j, s / temperature))
      logz = math.log(sum(math.exp(s) for _, s in scores))
      total += logz - dict(scores)[i]
      n += 1
    return total / n

  loss = one_way(cx, cy)
  if bidirectional:
    loss = 0.5 * (loss + one_way(cy, cx))
  return loss


@pytest.mark.parametrize('kwargs', [
    {},
    dict(cosine=True, temperature=0.05),
    dict(cosine=True, temperature=0.1, margin=0.2, bidirectional=True),
])
def test_sa_equals_cross_entropy_over_in_batch_similarity(kwargs):
  rng = np.random.default_rng(2)
  cx = rng.normal(size=(6, 8)).astype(np.float32) * 0.3
  cy = rng.normal(size=(6, 8)).astype(np.float32) * 0.3
  valid = np.array([1, 1, 1, 0, 1, 1], np.float32)  # row 3 is padding: no query, no negative
  got = losses.sentence_alignment_loss(cx, cy, valid, **kwargs)
  np.testing.assert_allclose(float(got), _sa_reference(cx, cy, valid, **kwargs), rtol=1e-4)


def test_sa_is_low_when_translations_are_nearest():
  rng = np.random.default_rng(3)
  c = rng.normal(size=(5, 16)).astype(np.float32) * 3
  aligned = losses.sentence_alignment_loss(c, c)
  shuffled = losses.sentence_alignment_loss(c, c[::-1])
  assert float(aligned) < 0.1 < float(shuffled)


def test_mean_pool_ignores_pads():
  h = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
  mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
  np.testing.assert_allclose(losses.mean_pool(h, mask), [[1.0, 2.0], [6.0, 7.0]])


# ----------------------------------------------------------------------------- WA

def _wa_reference(a_x2y, a_y2x, nx, ny):
  """Per pair: 1 - (1/H) sum_h sum_{i<nx, j<ny} A_x2y[h,i,j] A_y2x[h,j,i] / min(nx, ny)."""
  out = []
  for b in range(a_x2y.shape[0]):
    heads = a_x2y.shape[1]
    acc = 0.0
    for h in range(heads):
      for i in range(nx[b]):
        for j in range(ny[b]):
          acc += a_x2y[b, h, i, j] * a_y2x[b, h, j, i]
    out.append(1.0 - acc / heads / min(nx[b], ny[b]))
  return np.array(out)


def _random_attention(rng, shape):
  logits = rng.normal(size=shape) * 2
  p = np.exp(logits)
  return (p / p.sum(-1, keepdims=True)).astype(np.float32)


def test_wa_matches_reference_and_lies_in_unit_interval():
  rng = np.random.default_rng(4)
  b, h, n = 4, 3, 6
  a_x2y = _random_attention(rng, (b, h, n, n))
  a_y2x = _random_attention(rng, (b, h, n, n))
  nx, ny = np.array([6, 3, 1, 4]), np.array([2, 6, 5, 4])
  x_mask = np.arange(n)[None] < nx[:, None]
  y_mask = np.arange(n)[None] < ny[:, None]
  loss, per_pair = losses.word_alignment_loss(a_x2y, a_y2x, x_mask, y_mask)
  ref = _wa_reference(a_x2y, a_y2x, nx, ny)
  np.testing.assert_allclose(np.asarray(per_pair), ref, rtol=1e-5)
  np.testing.assert_allclose(float(loss), ref.mean(), rtol=1e-5)
  assert np.all((ref >= 0) & (ref <= 1))


def test_wa_is_zero_for_symmetric_hard_alignment():
  perm = np.array([2, 0, 1])
  a_x2y = np.zeros((1, 1, 3, 3), np.float32)
  a_x2y[0, 0, np.arange(3), perm] = 1
  a_y2x = np.swapaxes(a_x2y, -1, -2).copy()
  mask = np.ones((1, 3), bool)
  loss, _ = losses.word_alignment_loss(a_x2y, a_y2x, mask, mask)
  assert abs(float(loss)) < 1e-6


# ----------------------------------------------------------------------------- masking

def _ids_with_pads_and_specials(rng, batch=8, length=40, vocab=50):
  ids = np.zeros((batch, length), np.int32)
  for b in range(batch):
    n = rng.integers(3, length - 1)
    ids[b, :n] = rng.integers(NUM_SPECIALS, vocab, size=n)
    ids[b, 0] = CLS_ID
    ids[b, n - 1] = SEP_ID
  return ids


def test_masking_picks_fifteen_percent_of_real_tokens_and_never_specials():
  rng = np.random.default_rng(5)
  ids = _ids_with_pads_and_specials(rng)
  m = masking.mask_tokens(jax.random.key(0), jnp.asarray(ids), vocab_size=50,
                          max_predictions=10)
  positions, weights = np.asarray(m.positions), np.asarray(m.weights)
  for b in range(ids.shape[0]):
    n_real = int(((ids[b] != PAD_ID) & (ids[b] != CLS_ID) & (ids[b] != SEP_ID)).sum())
    chosen = positions[b][weights[b] > 0]
    assert len(chosen) == min(10, max(1, round(0.15 * n_real)))
    assert len(set(chosen.tolist())) == len(chosen)
    assert np.all(~np.isin(ids[b, chosen], [PAD_ID, CLS_ID, SEP_ID]))
  np.testing.assert_array_equal(np.asarray(m.labels), np.take_along_axis(ids, positions, 1))
  untouched = np.ones_like(ids, bool)
  for b in range(ids.shape[0]):
    untouched[b, positions[b][weights[b] > 0]] = False
  np.testing.assert_array_equal(np.asarray(m.ids)[untouched], ids[untouched])


def test_masking_replacement_proportions():
  rng = np.random.default_rng(6)
  ids = _ids_with_pads_and_specials(rng, batch=256, length=64, vocab=1000)
  m = masking.mask_tokens(jax.random.key(1), jnp.asarray(ids), vocab_size=1000,
                          max_predictions=12)
  w = np.asarray(m.weights) > 0
  new = np.take_along_axis(np.asarray(m.ids), np.asarray(m.positions), 1)[w]
  orig = np.asarray(m.labels)[w]
  frac_mask = np.mean(new == MASK_ID)
  frac_kept = np.mean(new == orig)
  assert 0.75 < frac_mask < 0.85
  assert 0.06 < frac_kept < 0.15


def test_wa_paper_mask():
  # [CLS] x1 x2 [SEP] y1 y2 [SEP] [PAD]
  ids = np.array([[CLS_ID, 10, 11, SEP_ID, 12, 13, SEP_ID, PAD_ID]])
  seg = np.array([[0, 0, 0, 0, 1, 1, 1, 0]])
  m = np.asarray(masking.wa_attention_mask(ids, seg, 'paper'))[0].astype(int)
  expected = np.array([
      [1, 1, 1, 1, 0, 0, 0, 0],
      [1, 1, 1, 1, 0, 0, 0, 0],
      [1, 1, 1, 1, 0, 0, 0, 0],
      [1, 1, 1, 1, 0, 0, 0, 0],
      [1, 1, 1, 1, 0, 0, 0, 0],  # y1 sees x only (no y strictly before it)
      [1, 1, 1, 1, 1, 0, 0, 0],  # y2 sees x and y1
      [1, 1, 1, 1, 1, 1, 0, 0],
      [0, 0, 0, 0, 0, 0, 0, 0],  # pad
  ])
  np.testing.assert_array_equal(m, expected)


def test_wa_cross_mask_sees_only_the_other_side():
  ids = np.array([[CLS_ID, 10, SEP_ID, 12, 13, SEP_ID]])
  seg = np.array([[0, 0, 0, 1, 1, 1]])
  m = np.asarray(masking.wa_attention_mask(ids, seg, 'cross'))[0]
  assert m[1, 3] and m[1, 4] and not m[1, 1]     # x1 sees y, not itself
  assert m[3, 1] and not m[3, 4]                 # y1 sees x1, not y2
  with pytest.raises(ValueError, match='allowed'):
    masking.wa_attention_mask(ids, seg, 'diagonal')
