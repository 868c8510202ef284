"""Model performance options and packed rows: each is numerically the default path.

Positions/packing: a packed row (block-diagonal mask + restarted positions) encodes each text as if
it were alone. Options (remat, attention, dtype) give the default's loss and gradients.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from amber_jax import masking, objectives
from amber_jax.model import (CLS_ID, MASK_ID, NUM_SPECIALS, PAD_ID, SEP_ID, Encoder,
                             EncoderConfig, init_params)

TINY = EncoderConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                     intermediate_size=48, max_position_embeddings=32, dropout_rate=0.0,
                     attention_dropout_rate=0.0)


def _params(cfg=TINY, seed=0):
  return nn.meta.unbox(init_params(cfg, jax.random.key(seed)))


def _text(rng, n):
  """[CLS] n random real tokens [SEP]."""
  return [CLS_ID] + list(rng.integers(NUM_SPECIALS, TINY.vocab_size, size=n)) + [SEP_ID]


def _pad(row, length):
  return row + [PAD_ID] * (length - len(row))


# ----------------------------------------------------------------------------- positions, packing

def test_positions_none_equals_explicit_arange():
  params = _params()
  ids = jnp.asarray(np.random.default_rng(0).integers(NUM_SPECIALS, 64, size=(2, 12)), jnp.int32)
  model = Encoder(TINY)
  a = model.apply({'params': params}, ids)['hidden']
  b = model.apply({'params': params}, ids,
                  positions=jnp.broadcast_to(jnp.arange(12), ids.shape))['hidden']
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_packed_row_encodes_each_text_as_if_alone():
  rng = np.random.default_rng(1)
  a, b = _text(rng, 3), _text(rng, 5)   # 5 and 7 tokens
  length = 16
  packed = jnp.asarray([_pad(a + b, length)], jnp.int32)
  seq = jnp.asarray([_pad([1] * len(a) + [2] * len(b), length)], jnp.int32)
  mask = objectives.packed_attention_mask(seq)
  positions = objectives.packed_positions(seq)
  np.testing.assert_array_equal(
      np.asarray(positions[0, :len(a) + len(b)]), list(range(len(a))) + list(range(len(b))))
  params = _params()
  model = Encoder(TINY)
  hp = model.apply({'params': params}, packed, None, mask, positions)['hidden'][0]
  ha = model.apply({'params': params}, jnp.asarray([_pad(a, length)]))['hidden'][0]
  hb = model.apply({'params': params}, jnp.asarray([_pad(b, length)]))['hidden'][0]
  np.testing.assert_allclose(np.asarray(hp[:len(a)]), np.asarray(ha[:len(a)]), atol=1e-5)
  np.testing.assert_allclose(np.asarray(hp[len(a):len(a) + len(b)]), np.asarray(hb[:len(b)]),
                             atol=1e-5)


def _fixed_masking(monkeypatch, chosen):
  """Replaces BERT masking by [MASK] at the positions `chosen(ids)` -> bool [batch, length]."""

  def mask_tokens(rng, ids, *, vocab_size, max_predictions, rate=0.15, **kw):
    del rng, vocab_size, rate, kw
    pick = chosen(ids)
    k = max_predictions
    order = jnp.argsort(~pick, axis=1, stable=True)[:, :k]  # chosen positions first
    weights = jnp.take_along_axis(pick, order, axis=1).astype(jnp.float32)
    labels = jnp.take_along_axis(ids, order, axis=1)
    new = jnp.where(pick, MASK_ID, ids)
    return masking.Masked(new, order, labels, weights)

  monkeypatch.setattr(objectives.masking, 'mask_tokens', mask_tokens)


def test_packed_mlm_loss_equals_unpacked(monkeypatch):
  rng = np.random.default_rng(2)
  texts = [_text(rng, n) for n in (3, 5, 4, 2)]
  length = 16
  packed_rows = [texts[0] + texts[1], texts[2] + texts[3]]
  packed_seq = [[1] * len(texts[0]) + [2] * len(texts[1]),
                [1] * len(texts[2]) + [2] * len(texts[3])]
  # [MASK] on the 2nd real token of every text, in either layout.

  def chosen_packed(ids):
    pick = np.zeros(ids.shape, bool)
    for r, seq in enumerate(packed_seq):
      starts = [0, seq.index(2)]
      for s in starts:
        pick[r, s + 2] = True
    return jnp.asarray(pick)

  def chosen_single(ids):
    pick = np.zeros(ids.shape, bool)
    pick[:, 2] = True
    return jnp.asarray(pick)

  ocfg = ml_collections.ConfigDict(dict(mlm_weight=1.0, mask_rate=0.3))
  params = _params()
  model = Encoder(TINY)
  _fixed_masking(monkeypatch, chosen_packed)
  packed = {'mono_ids': jnp.asarray([_pad(r, length) for r in packed_rows], jnp.int32),
            'mono_segments': jnp.zeros((2, length), jnp.int32),
            'mono_seq': jnp.asarray([_pad(s, length) for s in packed_seq], jnp.int32)}
  lp, mp = objectives.amber_losses(model, params, packed, jax.random.key(0), ocfg,
                                   deterministic=True)
  _fixed_masking(monkeypatch, chosen_single)
  single = {'mono_ids': jnp.asarray([_pad(t, length) for t in texts], jnp.int32),
            'mono_segments': jnp.zeros((4, length), jnp.int32)}
  ls, ms = objectives.amber_losses(model, params, single, jax.random.key(0), ocfg,
                                   deterministic=True)
  np.testing.assert_allclose(float(lp), float(ls), rtol=1e-5)
  np.testing.assert_allclose(float(mp['mlm_accuracy']), float(ms['mlm_accuracy']))
  # Without mono_seq the packed rows' texts see each other: a different loss.
  del packed['mono_seq']
  _fixed_masking(monkeypatch, chosen_packed)
  lx, _ = objectives.amber_losses(model, params, packed, jax.random.key(0), ocfg,
                                  deterministic=True)
  assert abs(float(lx) - float(ls)) > 1e-4
