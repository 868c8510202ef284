"""Model performance options and packed rows: each is numerically the default path.

Positions/packing: a packed row (block-diagonal mask + restarted positions) encodes each text as if
it were alone. Options (remat, attention, dtype) give the default's loss and gradients.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from amber_jax.core import masking
from amber_jax.core import model as model_lib
from amber_jax.core import objectives, packing
from amber_jax.core.model import (CLS_ID, Encoder, EncoderConfig, init_params, MASK_ID,
                                  NUM_SPECIALS, PAD_ID, SEP_ID)

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
  mask = packing.packed_attention_mask(seq)
  positions = packing.packed_positions(seq)
  np.testing.assert_array_equal(
      np.asarray(positions[0, :len(a) + len(b)]), list(range(len(a))) + list(range(len(b))))
  params = _params()
  model = Encoder(TINY)
  hp = model.apply({'params': params}, packed, None, mask, positions)['hidden'][0]
  # `seq` builds that mask and those positions itself.
  np.testing.assert_array_equal(
      np.asarray(model.apply({'params': params}, packed, None, seq=seq)['hidden'][0]),
      np.asarray(hp))
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


# ----------------------------------------------------------------------------- options

def _batch(seed=0):
  import synthetic  # pylint: disable=import-outside-toplevel  (tests/ is on the path)
  return {k: jnp.asarray(v) for k, v in synthetic.random_batch(
      np.random.default_rng(seed), vocab=TINY.vocab_size, mono_rows=3, mono_length=16, pairs=3,
      sentence_length=12).items()}


def _ocfg():
  return ml_collections.ConfigDict(dict(
      mlm_weight=1.0, tlm_weight=1.0, sa_weight=1.0, wa_weight=1.0, mask_rate=0.15,
      sa_cosine=True, sa_temperature=0.1, sa_margin=0.0, sa_bidirectional=True, wa_mask='paper'))


@functools.lru_cache(maxsize=None)
def _default(seed: int, deterministic: bool = True):
  """The reference (TINY, default options) loss and gradients on `_batch(seed)`, computed once."""
  return _loss_and_grads(TINY, _params(), _batch(seed), deterministic)


def _loss_and_grads(cfg, params, batch, deterministic=True, seed=0):
  model = Encoder(cfg)
  fn = lambda p: objectives.amber_losses(model, p, batch, jax.random.key(seed), _ocfg(),
                                         deterministic=deterministic)
  (loss, metrics), grads = jax.jit(jax.value_and_grad(fn, has_aux=True))(params)
  return loss, metrics, grads


def _assert_trees_close(a, b, atol):
  flat_a = jax.tree_util.tree_leaves_with_path(a)
  flat_b = jax.tree_util.tree_leaves(b)
  assert len(flat_a) == len(flat_b)
  for (path, x), y in zip(flat_a, flat_b):
    np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), atol=atol,
                               rtol=1e-4, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize('options', [
    dict(remat='dots'), dict(remat='full'), dict(attention='dot_product'),
    dict(attention='auto', remat='full', attention_implementation='xla'),
    dict(scan_layers=True), dict(scan_layers=True, remat='dots', attention='auto')])
def test_option_gives_the_default_loss_and_gradients(options):
  params, batch = _params(), _batch()
  loss0, m0, g0 = _default(0)
  loss1, m1, g1 = _loss_and_grads(dataclasses.replace(TINY, **options), params, batch)
  for name in ('mlm_loss', 'tlm_loss', 'sa_loss', 'wa_loss'):
    np.testing.assert_allclose(float(m1[name]), float(m0[name]), rtol=1e-5, err_msg=name)
  np.testing.assert_allclose(float(loss1), float(loss0), rtol=1e-5)
  _assert_trees_close(g1, g0, atol=1e-5)


@pytest.mark.parametrize('options', [dict(remat='full'), dict(remat='dots'),
                                     dict(attention='auto')])
def test_option_with_dropout_draws_the_same_masks(options):
  """Training mode (dropout on): remat replays the same dropout masks; 'auto' keeps the explicit
  path where attention dropout applies."""
  cfg = dataclasses.replace(TINY, dropout_rate=0.1, attention_dropout_rate=0.1)
  params, batch = _params(cfg), _batch(1)
  loss0, _, g0 = _loss_and_grads(cfg, params, batch, deterministic=False)
  loss1, _, g1 = _loss_and_grads(dataclasses.replace(cfg, **options), params, batch,
                                 deterministic=False)
  np.testing.assert_allclose(float(loss1), float(loss0), rtol=1e-5)
  _assert_trees_close(g1, g0, atol=1e-5)


def test_dot_product_with_hidden_dropout_only_matches_explicit():
  cfg = dataclasses.replace(TINY, dropout_rate=0.1, attention_dropout_rate=0.0)
  params, batch = _params(cfg), _batch(2)
  loss0, _, g0 = _loss_and_grads(cfg, params, batch, deterministic=False)
  loss1, _, g1 = _loss_and_grads(dataclasses.replace(cfg, attention='dot_product'), params, batch,
                                 deterministic=False)
  np.testing.assert_allclose(float(loss1), float(loss0), rtol=1e-5)
  _assert_trees_close(g1, g0, atol=1e-5)


def test_scanned_layers_equal_unrolled_ones_at_every_layer():
  """Four layers: the scan runs all four (or three, and the last one outside it when the
  attention probabilities are asked for); every layer's output, the last probabilities and the
  gradients equal the unrolled path's."""
  cfg = dataclasses.replace(TINY, num_layers=4)
  params = _params(cfg)
  rng = np.random.default_rng(3)
  ids = jnp.asarray([_pad(_text(rng, 9), 16), _pad(_text(rng, 14), 16)], jnp.int32)
  outs = {}
  for scan in (False, True):
    model = Encoder(dataclasses.replace(cfg, scan_layers=scan))
    outs[scan] = model.apply({'params': params}, ids, return_all_hidden=True,
                             return_last_probs=True)
    outs[scan]['plain'] = model.apply({'params': params}, ids)['hidden']
  assert len(outs[True]['all_hidden']) == 5
  for a, b in zip(outs[True]['all_hidden'], outs[False]['all_hidden']):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  for name in ('last_probs', 'plain'):
    np.testing.assert_allclose(np.asarray(outs[True][name]), np.asarray(outs[False][name]),
                               atol=1e-5)
  loss0, _, g0 = _loss_and_grads(cfg, params, _batch(1))
  loss1, _, g1 = _loss_and_grads(dataclasses.replace(cfg, scan_layers=True), params, _batch(1))
  np.testing.assert_allclose(float(loss1), float(loss0), rtol=1e-5)
  _assert_trees_close(g1, g0, atol=1e-5)


def test_scanned_layers_with_dropout_train_and_depend_on_the_key():
  cfg = dataclasses.replace(TINY, num_layers=3, dropout_rate=0.1, attention_dropout_rate=0.1,
                            scan_layers=True)
  params, batch, model = _params(cfg), _batch(2), Encoder(cfg)
  step = jax.jit(jax.value_and_grad(lambda p, key: objectives.amber_losses(
      model, p, batch, key, _ocfg(), deterministic=False)[0]))  # compiled once, keys as inputs
  loss_a, grads = step(params, jax.random.key(0))
  loss_b, _ = step(params, jax.random.key(1))
  loss_a2, _ = step(params, jax.random.key(0))
  assert np.isfinite(float(loss_a)) and float(loss_a) == float(loss_a2)
  assert float(loss_a) != float(loss_b)  # the dropout masks come from the step's key
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))


def test_dot_product_refuses_attention_dropout():
  cfg = dataclasses.replace(TINY, attention='dot_product', attention_dropout_rate=0.1)
  with pytest.raises(ValueError, match='attention_dropout_rate'):
    _loss_and_grads(cfg, _params(cfg), _batch(), deterministic=False)


def test_unknown_option_values_fail():
  with pytest.raises(ValueError, match='remat'):
    dataclasses.replace(TINY, remat='some')
  with pytest.raises(ValueError, match='attention'):
    dataclasses.replace(TINY, attention='flash')


def test_options_keep_the_parameter_tree():
  """Checkpoints and the HF export (layer_{i} names) do not depend on the options."""
  shapes = lambda cfg: jax.tree_util.tree_map(
      lambda x: (x.shape, x.dtype), jax.eval_shape(lambda: _params(cfg)))
  base = shapes(TINY)
  for options in (dict(remat='full'), dict(attention='auto'), dict(dtype=jnp.bfloat16),
                  dict(scan_layers=True)):
    assert shapes(dataclasses.replace(TINY, **options)) == base


def test_bfloat16_loss_and_gradients_close_to_float32():
  params, batch = _params(), _batch(0)
  loss0, m0, g0 = _default(0)
  for options in (dict(), dict(attention='auto', remat='dots')):
    cfg = dataclasses.replace(TINY, dtype=jnp.bfloat16, **options)
    loss1, m1, g1 = _loss_and_grads(cfg, params, batch)
    for name in ('mlm_loss', 'tlm_loss', 'sa_loss', 'wa_loss', 'loss'):
      assert m1[name].dtype == jnp.float32, name
      np.testing.assert_allclose(float(m1[name]), float(m0[name]), rtol=3e-2, err_msg=name)
    for x, y in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g0)):
      assert x.dtype == jnp.float32
      x, y = np.asarray(x).ravel(), np.asarray(y).ravel()
      if np.linalg.norm(y) > 1e-6:
        cos = x @ y / (np.linalg.norm(x) * np.linalg.norm(y))
        assert cos > 0.98, cos


def test_bfloat16_train_step_end_to_end(tmp_path):
  """The jitted train step with bf16 compute and the options: finite, close to fp32, params fp32."""
  from amber_jax.data import inputs
  from amber_jax.training import train_state, train_step
  from configs import tiny  # pylint: disable=import-outside-toplevel

  def first_losses(**model):
    cfg = tiny.get_config()
    with cfg.unlocked():
      cfg.workdir = str(tmp_path)
      cfg.model.update(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                       intermediate_size=48, max_position_embeddings=32, dropout_rate=0.0,
                       attention_dropout_rate=0.0, **model)
      cfg.data.update(mono_batch_size=2, parallel_batch_size=2, mono_length=16,
                      sentence_length=12)
    s = train_state.setup(cfg)
    state = train_state.init_state(s, 0)
    step = train_step.make_train_step(s)
    batches = inputs.synthetic_batches(cfg)
    out = []
    for _ in range(2):
      state, metrics = step(state, next(batches))
      out.append(float(metrics['loss']))
    assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(state['params']))
    return np.asarray(out)

  ref = first_losses()
  fast = first_losses(dtype='bfloat16', remat='dots', attention='auto')
  assert np.all(np.isfinite(fast))
  np.testing.assert_allclose(fast, ref, rtol=3e-2)


def test_vocabulary_padding_changes_no_loss_and_no_gradient_of_a_real_row():
  padded_cfg = dataclasses.replace(TINY, vocab_multiple=128)
  assert padded_cfg.padded_vocab_size == 128 and padded_cfg.vocab_size == 64
  padded = model_lib.pad_vocab(_params(), padded_cfg)
  # Padding rows that are not zero: only the masking of their logits keeps them out.
  rng = np.random.default_rng(0)
  padded['embeddings']['word_embeddings'][64:] = rng.normal(size=(64, 32))
  padded['mlm_bias'][64:] = 5.0
  loss, metrics, grads = _default(0)
  loss_p, metrics_p, grads_p = _loss_and_grads(padded_cfg, padded, _batch(0))
  np.testing.assert_allclose(float(loss_p), float(loss), rtol=1e-6)
  np.testing.assert_allclose(float(metrics_p['mlm_accuracy']), float(metrics['mlm_accuracy']))
  stripped, cfg = model_lib.strip_vocab_padding(grads_p, padded_cfg)
  assert cfg.padded_vocab_size == 64
  _assert_trees_close(stripped, grads, atol=1e-6)
  for path in model_lib.VOCAB_ROWS:  # the padding rows learn nothing
    section, _, name = path.rpartition('/')
    rows = grads_p[section][name] if section else grads_p[name]
    assert not np.any(np.asarray(rows)[64:])


def test_base_pads_mbert_vocabulary_to_a_size_tensor_parallelism_divides():
  from amber_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = EncoderConfig.from_config(config_lib.load_preset('base').model)
  assert (cfg.vocab_size, cfg.padded_vocab_size) == (119_547, 119_552)
  assert all(cfg.padded_vocab_size % tensor == 0 for tensor in (2, 4, 8))
  # A run saved before the field existed (no vocab_multiple in its config.json) keeps its rows.
  old = dict(config_lib.load_preset('base').model)
  del old['vocab_multiple']
  assert EncoderConfig.from_config(old).padded_vocab_size == 119_547
