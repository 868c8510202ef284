"""Packed translation pairs (several per row) give the one-pair-per-row path's losses and
gradients for TLM, SA and WA; and how amber_jax.data.pairs chooses and lays out pairs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import synthetic
from amber_jax.core import masking, model as model_lib, objectives
from amber_jax.core.model import CLS_ID, Encoder, EncoderConfig, SEP_ID

VOCAB, LS, ROWS = 64, 12, 5
CFG = EncoderConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2,
                    intermediate_size=64, max_position_embeddings=2 * LS, dropout_rate=0.0,
                    attention_dropout_rate=0.0)


@pytest.fixture(scope='module')
def setup():
  model = Encoder(CFG)
  params = jax.device_get(model_lib.init_params(CFG, jax.random.key(0)))
  params = jax.tree.map(np.asarray, nn.meta.unbox(params))
  pairs = synthetic.random_pairs(np.random.default_rng(0), vocab=VOCAB, count=9,
                                 sentence_length=LS, short=True)
  packed, single = synthetic.pair_layouts(pairs, rows=ROWS, sentence_length=LS)
  return model, params, packed, single


def only(name, **kw):
  from configs import default  # pylint: disable=import-outside-toplevel
  ocfg = default.get_config().objectives
  for o in objectives.OBJECTIVES:
    setattr(ocfg, o.weight, 1.0 if o.name == name else 0.0)
  ocfg.update(kw)
  return ocfg


def loss_and_grads(model, params, batch, ocfg):
  def f(p):
    return objectives.amber_losses(model, p, {k: jnp.asarray(v) for k, v in batch.items()},
                                   jax.random.key(1), ocfg, deterministic=True)[0]
  return jax.value_and_grad(f)(params)


def assert_same(a, b):
  (la, ga), (lb, gb) = a, b
  np.testing.assert_allclose(la, lb, rtol=1e-6, atol=1e-6)
  for x, y in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_the_packed_rows_hold_several_pairs(setup):
  _, _, packed, single = setup
  assert packed['pair_ids'].shape == (ROWS, 2 * LS) and len(single['src_ids']) == 9
  assert packed['pair_seq'].max() >= 2  # some row holds two pairs or more
  assert np.count_nonzero(packed['pair_ids']) == np.count_nonzero(single['pair_ids'])
  assert np.count_nonzero(packed['sent_ids']) == np.count_nonzero(single['src_ids']) + \
      np.count_nonzero(single['tgt_ids'])


@pytest.mark.parametrize('kw', [{}, dict(sa_cosine=True, sa_temperature=0.05, sa_margin=0.2,
                                         sa_bidirectional=True)])
def test_sa_packed_equals_one_pair_per_row(setup, kw):
  model, params, packed, single = setup
  ocfg = only('sa', **kw)
  assert_same(loss_and_grads(model, params, packed, ocfg),
              loss_and_grads(model, params, single, ocfg))


@pytest.mark.parametrize('variant', ['paper', 'cross'])
def test_wa_packed_equals_one_pair_per_row(setup, variant):
  model, params, packed, single = setup
  ocfg = only('wa', wa_mask=variant)
  got, want = loss_and_grads(model, params, packed, ocfg), loss_and_grads(model, params, single,
                                                                          ocfg)
  assert 0 < float(want[0]) < 1
  assert_same(got, want)


def unit_starts(packed, single):
  """(row, start) of each pair of the one-per-row layout in the packed rows."""
  found = {}
  for r in range(ROWS):
    for k in range(1, packed['pair_seq'][r].max() + 1):
      start = int(np.flatnonzero(packed['pair_seq'][r] == k)[0])
      n = int((packed['pair_seq'][r] == k).sum())
      i = [i for i, row in enumerate(single['pair_ids'])
           if np.count_nonzero(row) == n and np.array_equal(row[:n], packed['pair_ids'][r, start:start + n])]
      found[i[0]] = (r, start)
  return [found[i] for i in range(len(single['pair_ids']))]


def test_tlm_packed_equals_one_pair_per_row_for_the_same_masked_tokens(setup):
  model, params, packed, single = setup
  m = masking.mask_tokens(jax.random.key(3), jnp.asarray(single['pair_ids']), vocab_size=VOCAB,
                          max_predictions=objectives.max_predictions(2 * LS, 0.15))
  ids, pos = np.array(packed['pair_ids']), np.asarray(m.positions)
  k = pos.shape[1] * objectives.max_pairs_per_row(2 * LS)
  where = np.zeros((ROWS, k), np.int32)
  labels, weights = np.zeros((ROWS, k), np.int32), np.zeros((ROWS, k), np.float32)
  fill = np.zeros(ROWS, int)
  for i, (r, start) in enumerate(unit_starts(packed, single)):
    for j in np.flatnonzero(np.asarray(m.weights)[i]):  # the same tokens masked the same way
      ids[r, start + pos[i, j]] = m.ids[i, pos[i, j]]
      where[r, fill[r]], labels[r, fill[r]], weights[r, fill[r]] = start + pos[i, j], m.labels[i, j], 1
      fill[r] += 1
  assert fill.sum() == np.asarray(m.weights).sum() > 0
  same = masking.Masked(jnp.asarray(ids), jnp.asarray(where), jnp.asarray(labels),
                        jnp.asarray(weights))

  def loss_grads(batch, masked, seq):
    def f(p):
      return objectives.masked_lm_pass(model, p, masked, jnp.asarray(batch['pair_segments']),
                                       jax.random.key(0), True, seq=seq)[0]
    return jax.value_and_grad(f)(params)

  want = loss_grads(single, m, None)
  assert float(want[0]) > 0
  assert_same(loss_grads(packed, same, jnp.asarray(packed['pair_seq'])), want)


def test_swap_index_moves_each_token_to_its_place_in_the_swap_row(setup):
  _, _, packed, _ = setup
  index = np.asarray(objectives.swap_index(*(jnp.asarray(packed[k]) for k in
                                             ('pair_seq', 'pair_segments', 'pair_ids'))))
  real = ~np.isin(packed['pair_ids'], [0, CLS_ID, SEP_ID])
  rows = np.arange(ROWS)[:, None]
  np.testing.assert_array_equal(packed['swap_ids'][rows, index][real], packed['pair_ids'][real])
  assert real.sum() > 0


MESH_SCRIPT = """
import json, sys
import jax, numpy as np
sys.path.insert(0, {tests!r})
import synthetic, test_train
from amber_jax.parallel import mesh as mesh_lib

cfg = test_train.small_config({workdir!r})
pairs = synthetic.random_pairs(np.random.default_rng(1), vocab=64, count=16, sentence_length=12,
                               short=True)
packed, single = synthetic.pair_layouts(pairs, rows=8, sentence_length=12)
out, params0 = {{}}, None
for name, shape, devices, batch, tlm in (
    ('single', dict(data=1, fsdp=1, tensor=1), jax.devices()[:1], single, 0.0),
    ('d2f2t2', dict(data=2, fsdp=2, tensor=2), None, packed, 0.0),
    ('packed_single', dict(data=1, fsdp=1, tensor=1), jax.devices()[:1], packed, 1.0),
    ('packed_d2f2t2', dict(data=2, fsdp=2, tensor=2), None, packed, 1.0)):
  with cfg.unlocked():
    cfg.data.pair_packing = name != 'single'
    cfg.data.parallel_batch_size = len(batch['pair_ids'])
    cfg.data.sentence_length = 12
    cfg.data.mono_batch_size = 0
    cfg.objectives.tlm_weight = tlm  # TLM's masks depend on the layout (tested above)
  _, params0, metrics, grads = test_train.mesh_loss_and_grads(
      cfg, mesh_lib.build(shape, devices=devices), batch, params0)
  out[name] = dict(metrics=metrics, grads=grads)
print('RESULT' + json.dumps(out))
"""


@pytest.mark.slow
def test_sa_and_wa_packed_on_a_data_fsdp_tensor_mesh_equal_one_pair_per_row_on_one_device(
    tmp_path):
  """SA and WA of packed rows on 8 devices against the unpacked rows on one (TLM's masking
  depends on the layout: its equality is checked above with the same masked tokens, and here
  packed on the mesh against packed on one device)."""
  import json, os, pathlib, subprocess, sys  # pylint: disable=import-outside-toplevel,multiple-imports
  import xla_env  # pylint: disable=import-outside-toplevel
  code = MESH_SCRIPT.format(tests=str(pathlib.Path(__file__).parent), workdir=str(tmp_path))
  env = dict(os.environ, XLA_FLAGS=xla_env.with_cpu_devices(8), JAX_PLATFORMS='cpu')
  run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                       timeout=600)
  assert run.returncode == 0, run.stderr[-4000:]
  got = json.loads([l for l in run.stdout.splitlines() if l.startswith('RESULT')][0][6:])
  ref, mesh = got['single'], got['d2f2t2']
  for k in ('sa_loss', 'wa_loss'):
    assert ref['metrics'][k] > 0
    np.testing.assert_allclose(mesh['metrics'][k], ref['metrics'][k], rtol=1e-5, err_msg=k)
  assert set(mesh['metrics']) == {'loss', 'sa_loss', 'wa_loss'}
  np.testing.assert_allclose(mesh['grads'], ref['grads'], rtol=1e-4, atol=1e-5)
  # TLM too, packed on the mesh against packed on one device (the same masks).
  one, eight = got['packed_single'], got['packed_d2f2t2']
  assert one['metrics']['tlm_loss'] > 0
  for k, v in one['metrics'].items():
    np.testing.assert_allclose(eight['metrics'][k], v, rtol=1e-5, err_msg=k)
  np.testing.assert_allclose(eight['grads'], one['grads'], rtol=1e-4, atol=1e-5)
