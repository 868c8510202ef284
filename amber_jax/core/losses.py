"""The AMBER losses as pure array functions (formulas: Hu et al., arXiv 2010.07972).

Each function takes arrays and returns a scalar (plus, where useful, per-example values); none
knows about the model. `tests/test_losses.py` checks each against a slow numpy reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def masked_lm_loss(logits: Array, labels: Array, weights: Array) -> tuple[Array, Array]:
  """Cross-entropy over the masked positions only (MLM on mono text, TLM on pairs).

  Args:
    logits: float [batch, k, vocab], the logits at the k candidate positions of each row.
    labels: int [batch, k], the original token at each position.
    weights: float [batch, k], 1 where the position was masked, 0 where it is a filler.

  Returns:
    (mean loss over masked positions, accuracy over masked positions).
  """
  logits = logits.astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]  # [batch, k]
  denom = jnp.maximum(weights.sum(), 1.0)
  loss = (nll * weights).sum() / denom
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return loss, (correct * weights).sum() / denom


def mean_pool(hidden: Array, mask: Array) -> Array:
  """Mean of the token states over the positions where mask is true: [batch, embed]."""
  mask = mask.astype(hidden.dtype)[..., None]  # [batch, length, 1]
  return (hidden * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)


def sentence_alignment_loss(c_x: Array, c_y: Array, valid: Array | None = None, *,
                            cosine: bool = False, temperature: float = 1.0,
                            margin: float = 0.0, bidirectional: bool = False) -> Array:
  """In-batch softmax over translation pairs: L = -log softmax_y'(s(c_x, c_y'))[y].

  The paper's form is the default: dot product, no temperature, no margin, x->y only.

  Args:
    c_x: float [batch, embed], pooled source sentences.
    c_y: float [batch, embed], pooled translations (row i translates row i of c_x).
    valid: float [batch] (1 for real pairs; padding rows are neither queries nor negatives).
    cosine: score with cosine similarity instead of the dot product.
    temperature: scores are divided by it.
    margin: subtracted from the positive's score before the temperature (additive margin).
    bidirectional: average the x->y and y->x losses.

  Returns:
    scalar loss, averaged over valid rows.
  """
  c_x = c_x.astype(jnp.float32)
  c_y = c_y.astype(jnp.float32)
  if valid is None:
    valid = jnp.ones(c_x.shape[0], jnp.float32)
  if cosine:
    # max(|c|, 1e-6), written so that an all-zero row (an empty slot of a packed batch) has a
    # zero gradient, not the NaN of d|c|/dc at 0.
    norm = lambda c: jnp.sqrt(jnp.maximum((c * c).sum(axis=-1, keepdims=True), 1e-12))
    c_x, c_y = c_x / norm(c_x), c_y / norm(c_y)
  scores = c_x @ c_y.T  # [batch (x), batch (y)]
  n = scores.shape[0]
  scores = (scores - margin * jnp.eye(n)) / temperature
  col_ok = valid[None, :] > 0
  big_neg = jnp.finfo(jnp.float32).min

  def one_way(s):
    s = jnp.where(col_ok, s, big_neg)
    nll = -jnp.diagonal(jax.nn.log_softmax(s, axis=-1))  # [batch]
    return (nll * valid).sum() / jnp.maximum(valid.sum(), 1.0)

  loss = one_way(scores)
  if bidirectional:
    loss = 0.5 * (loss + one_way(scores.T))
  return loss


def word_alignment_loss(a_x2y: Array, a_y2x: Array, x_mask: Array, y_mask: Array,
                        valid: Array | None = None) -> tuple[Array, Array]:
  """Attention symmetry: L = 1 - (1/H) sum_h sum_ij A_x2y[h,i,j] A_y2x[h,j,i] / min(|x|, |y|).

  Args:
    a_x2y: float [batch, heads, nx, ny], attention of x tokens (queries) over y tokens (keys).
    a_y2x: float [batch, heads, ny, nx], attention of y tokens over x tokens.
    x_mask: bool [batch, nx], real x tokens (no pads, no specials).
    y_mask: bool [batch, ny], real y tokens.
    valid: float [batch], 1 for real pairs.

  Returns:
    (scalar loss averaged over valid pairs, per-pair loss [batch]). Each pair's loss is in [0, 1].
  """
  xm = x_mask.astype(jnp.float32)
  ym = y_mask.astype(jnp.float32)
  pair = xm[:, None, :, None] * ym[:, None, None, :]  # [batch, 1, nx, ny]
  a_x2y = a_x2y.astype(jnp.float32) * pair
  a_y2x_t = jnp.swapaxes(a_y2x.astype(jnp.float32), -1, -2) * pair  # [batch, heads, nx, ny]
  agreement = (a_x2y * a_y2x_t).sum(axis=(-1, -2)).mean(axis=-1)  # [batch]
  shorter = jnp.maximum(jnp.minimum(xm.sum(-1), ym.sum(-1)), 1.0)
  per_pair = 1.0 - agreement / shorter
  if valid is None:
    valid = jnp.ones(per_pair.shape, jnp.float32)
  valid = valid * (jnp.minimum(xm.sum(-1), ym.sum(-1)) > 0)
  return (per_pair * valid).sum() / jnp.maximum(valid.sum(), 1.0), per_pair


def guided_alignment_loss(a_x2y: Array, a_y2x: Array, guide: Array, x_mask: Array,
                          y_mask: Array) -> Array:
  """Cross-entropy of the attention against a teacher's links (Garg et al. 2019), both ways.

  Each linked token's attention over the other side (mean over heads, renormalised over that
  side's real tokens, as `amber_jax.eval.align` reads it) is pulled towards the uniform
  distribution over the tokens it is linked to:
    L = mean over linked x tokens i of -sum_j g_ij / |g_i| log A_x2y[i, j], plus the same for y.

  Args:
    a_x2y: float [batch, heads, nx, ny], x queries over y keys.
    a_y2x: float [batch, heads, ny, nx], y queries over x keys.
    guide: [batch, nx, ny], 1 where x token i and y token j are linked.
    x_mask, y_mask: bool [batch, nx], [batch, ny], the real tokens.

  Returns:
    the scalar loss: (mean over linked x tokens + mean over linked y tokens) / 2.
  """
  pair = x_mask[:, :, None] & y_mask[:, None, :]  # [batch, nx, ny]
  guide = guide.astype(jnp.float32) * pair

  def one_way(attention, g, keys):  # attention [b, h, q, k], g [b, q, k], keys [b, k]
    probs = attention.astype(jnp.float32).mean(axis=1) * keys[:, None, :]
    probs = probs / jnp.maximum(probs.sum(-1, keepdims=True), 1e-9)
    links = g.sum(-1)  # [b, q]
    target = g / jnp.maximum(links, 1.0)[..., None]
    nll = -(target * jnp.log(jnp.maximum(probs, 1e-9))).sum(-1)  # [b, q]
    linked = (links > 0).astype(jnp.float32)
    return (nll * linked).sum() / jnp.maximum(linked.sum(), 1.0)

  to_y = one_way(a_x2y, guide, y_mask.astype(jnp.float32))
  to_x = one_way(a_y2x, jnp.swapaxes(guide, 1, 2), x_mask.astype(jnp.float32))
  return 0.5 * (to_y + to_x)
