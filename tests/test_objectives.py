"""The registry of objectives: one entry is all the package needs to run, report, plot and tabulate
a loss, and the registry agrees with the config and the batch contract."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import synthetic
from amber_jax.core import objectives
from amber_jax.core.model import Encoder, EncoderConfig, init_params
from amber_jax.data import batches
from amber_jax.eval import plots
from amber_jax.experiments import demo
from amber_jax.export import runs
from configs import default, tiny

VOCAB = 64
SMALL = dict(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
             max_position_embeddings=64)
TOY_LOSS = 0.5


def _toy_fn(model, params, batch, keys, ocfg, deterministic):
  """A constant loss that checks what it is handed."""
  del model, params, ocfg, deterministic
  assert keys.mask is None and keys.dropout is not None  # it masks nothing: no masking key
  assert 'mono_ids' in batch
  loss = jnp.asarray(TOY_LOSS, jnp.float32)
  return loss, {'toy_loss': loss}


TOY = objectives.Objective('toy', 'toy_weight', ('mono_ids',), ('toy_loss',), _toy_fn)


@pytest.fixture
def toy(monkeypatch):
  """The registry with TOY appended, and a config whose objectives have toy_weight=2."""
  monkeypatch.setattr(objectives, 'OBJECTIVES', objectives.OBJECTIVES + (TOY,))
  config = tiny.get_config()
  with config.unlocked():
    config.objectives.toy_weight = 2.0
  return config


def _model_params_batch():
  cfg = EncoderConfig(**SMALL)
  params = nn.meta.unbox(init_params(cfg, jax.random.key(0)))
  batch = synthetic.random_batch(np.random.default_rng(0), vocab=VOCAB, mono_rows=3, pairs=3)
  return Encoder(cfg), params, {k: jnp.asarray(v) for k, v in batch.items()}


def test_a_registered_objective_is_run_weighted_and_logged(toy):
  model, params, batch = _model_params_batch()
  key = jax.random.key(3)
  base_cfg = tiny.get_config().objectives
  with pytest.MonkeyPatch.context() as m:
    m.setattr(objectives, 'OBJECTIVES', objectives.OBJECTIVES[:-1])  # without TOY
    base_total, base = objectives.amber_losses(model, params, batch, key, base_cfg, True)
  total, metrics = objectives.amber_losses(model, params, batch, key, toy.objectives, True)
  assert list(metrics) == list(base)[:-1] + ['toy_loss', 'loss']
  assert float(metrics['toy_loss']) == TOY_LOSS
  for name in base:  # the other losses draw the same masking keys: unchanged
    if name != 'loss':
      np.testing.assert_array_equal(metrics[name], base[name], err_msg=name)
  np.testing.assert_allclose(float(total), float(base_total) + 2.0 * TOY_LOSS, rtol=1e-6)

  with toy.unlocked():
    toy.objectives.toy_weight = 0.0  # weight 0: not run, not logged
  _, off = objectives.amber_losses(model, params, batch, key, toy.objectives, True)
  assert 'toy_loss' not in off
  toy.objectives.toy_weight = 2.0
  parallel_only = {k: v for k, v in batch.items() if not k.startswith('mono')}
  _, no_mono = objectives.amber_losses(model, params, parallel_only, key, toy.objectives, True)
  assert 'toy_loss' not in no_mono and 'mlm_loss' not in no_mono and 'tlm_loss' in no_mono


def test_the_model_card_plots_and_demo_table_read_the_registry(toy, tmp_path):
  card = runs.model_card(toy, 7)
  assert "'toy_weight': 2.0" in card and "'mlm_weight': 1.0" in card

  assert plots.loss_keys() == ('loss', 'mlm_loss', 'tlm_loss', 'sa_loss', 'wa_loss',
                               'guided_loss', 'toy_loss')
  path = tmp_path / 'metrics.jsonl'
  path.write_text('\n'.join(f'{{"step": {s}, "toy_loss": {1 / s}}}' for s in (1, 2, 3)) + '\n')
  assert plots.training_curves(path, tmp_path / 'curves.png').exists()

  history = [{'mlm_loss': 9.0, 'toy_loss': 0.5, 'other_loss': 1.0, 'loss': 10.0},
             {'mlm_loss': 7.0, 'toy_loss': 0.25, 'other_loss': 0.5, 'loss': 8.0}]
  assert demo.loss_table(history) == {'mlm_loss': (9.0, 7.0), 'toy_loss': (0.5, 0.25)}
  staged = [{'mlm_loss': 9.0, 'loss': 9.0}, {'mlm_loss': 8.0, 'toy_loss': 0.5, 'loss': 9.0},
            {'mlm_loss': 7.0, 'toy_loss': 0.25, 'loss': 8.0}]  # toy trains from the 2nd stage
  assert demo.loss_table(staged) == {'mlm_loss': (9.0, 7.0), 'toy_loss': (0.5, 0.25)}


def test_the_registry_names_every_weight_of_the_config():
  fields = {k for k in default.get_config().objectives if k.endswith('_weight')}
  assert [o.weight for o in objectives.OBJECTIVES] == ['mlm_weight', 'tlm_weight', 'sa_weight',
                                                       'wa_weight', 'guided_weight']
  assert {o.weight for o in objectives.OBJECTIVES} == fields
  names = [o.name for o in objectives.OBJECTIVES]
  assert len(set(names)) == len(names)
  # the four AMBER losses are on by default; guided alignment needs a teacher (configs/align.py)
  assert objectives.weights(default.get_config().objectives) == {
      f: 0.0 if f == 'guided_weight' else 1.0 for f in sorted(fields)}


@pytest.mark.parametrize('pair_packing', [False, True])
def test_each_objective_reads_keys_of_one_part_of_the_batch_contract(pair_packing):
  data = tiny.get_config().data
  with data.unlocked():
    data.packing = True  # mono_seq too
    data.pair_packing = pair_packing  # the packed pair keys, or src/tgt_ids
    data.align_pairs = '' if pair_packing else 'pairs.txt'  # the guide: one pair per row only
  spec = batches.batch_spec(data)
  layout = (batches.SENTENCE_KEYS + batches.GUIDE_KEYS if pair_packing
            else batches.PACKED_PAIR_KEYS)
  assert set(spec) == {k for keys in batches.PARTS.values() for k in keys} - set(layout)
  for o in objectives.OBJECTIVES:
    if pair_packing and o.name == 'guided':
      continue  # no packed layout: configs/align.py reads one pair per row
    keys = set(o.keys_of(spec)) | (set(o.optional_keys) & set(spec))
    assert keys <= set(spec), (o.name, keys - set(spec))
    assert any(keys <= set(part) for part in batches.PARTS.values()), o.name
  shapes = {k: shape for k, (shape, _) in spec.items()}
  assert all(o.keys_of(shapes) == (o.packed_keys if pair_packing and o.packed_keys else
                                   o.batch_keys) for o in objectives.OBJECTIVES)


def test_a_batch_missing_some_of_an_objectives_keys_is_named():
  model, params, batch = _model_params_batch()
  del batch['swap_ids']
  ocfg = tiny.get_config().objectives
  with pytest.raises(ValueError, match=r"'wa'.*lacks \['swap_ids'\].*wa_weight=0"):
    objectives.amber_losses(model, params, batch, jax.random.key(0), ocfg, True)
  ocfg.wa_weight = 0.0  # without WA the rest of the batch is enough
  _, metrics = objectives.amber_losses(model, params, batch, jax.random.key(0), ocfg, True)
  assert 'wa_loss' not in metrics and 'sa_loss' in metrics


def test_an_entry_and_its_function_must_agree_on_the_metrics(monkeypatch):
  with pytest.raises(ValueError, match="lacks its loss key 'bad_loss'"):
    objectives.Objective('bad', 'bad_weight', ('mono_ids',), ('bad_accuracy',), _toy_fn)
  liar = objectives.Objective('liar', 'mlm_weight', ('mono_ids',), ('liar_loss',), _toy_fn)
  monkeypatch.setattr(objectives, 'OBJECTIVES', (liar,))  # its function logs 'toy_loss'
  model, params, batch = _model_params_batch()
  with pytest.raises(ValueError, match=r"returned metrics \['toy_loss'\]"):
    objectives.amber_losses(model, params, batch, jax.random.key(0), tiny.get_config().objectives)


@pytest.mark.parametrize('wa_mask', ['paper', 'cross'])
def test_wa_gradient_reaches_the_attention_and_is_the_true_derivative(wa_mask):
  """WA trains the last layer's attention (its query and key), the layers below, and not the MLM
  head; along a random direction of the last query kernel the gradient equals a central finite
  difference of the loss, so what the optimizer sees is the derivative of L_WA."""
  model, params, batch = _model_params_batch()
  ocfg = tiny.get_config().objectives
  with ocfg.unlocked():
    ocfg.wa_mask = wa_mask

  def loss_fn(p):
    return objectives.word_alignment(model, p, batch, ocfg, jax.random.key(1), True)[0]

  grads = jax.grad(loss_fn)(params)
  norm = lambda tree: float(sum(jnp.abs(x).sum() for x in jax.tree_util.tree_leaves(tree)))
  for name in ('query', 'key'):
    assert norm(grads['layer_1']['attention'][name]['kernel']) > 1e-4
  assert norm(grads['layer_0']) > 1e-4 and norm(grads['embeddings']) > 1e-4
  assert norm(grads['layer_1']['intermediate']) == 0.0  # after the last probabilities
  assert norm({k: grads[k] for k in ('mlm_bias', 'mlm_transform', 'mlm_layer_norm')}) == 0.0
  query = params['layer_1']['attention']['query']['kernel']
  direction = jax.random.normal(jax.random.key(2), query.shape)
  direction = direction / jnp.linalg.norm(direction)

  def moved(eps):
    p = jax.tree_util.tree_map(lambda x: x, params)
    p['layer_1']['attention']['query']['kernel'] = query + eps * direction
    return float(loss_fn(p))

  # float32 losses: a step large enough for their rounding, small enough for the curvature.
  eps = 3e-2
  numeric = (moved(eps) - moved(-eps)) / (2 * eps)
  analytic = float((grads['layer_1']['attention']['query']['kernel'] * direction).sum())
  assert abs(analytic) > 1e-4
  assert analytic == pytest.approx(numeric, rel=2e-2)
