"""Splash attention (the TPU Pallas kernel; here in Pallas' interpret mode on CPU): the encoder's
outputs and gradients with attention='splash' equal the explicit path's, for plain and packed rows,
with and without a mesh; it falls back where it cannot apply, and 'auto' off TPU is unchanged."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xla_env

from amber_jax.core import model as model_lib
from amber_jax.core import splash
from amber_jax.core.model import CLS_ID, Encoder, EncoderConfig, NUM_SPECIALS, PAD_ID, SEP_ID

LENGTH = 128
TINY = EncoderConfig(vocab_size=64, hidden_size=64, num_layers=2, num_heads=2,
                     intermediate_size=96, max_position_embeddings=LENGTH, dropout_rate=0.0,
                     attention_dropout_rate=0.0)


def _params(cfg=TINY):
  return nn.meta.unbox(model_lib.init_params(cfg, jax.random.key(0)))


def _rows(packed: bool, seed: int = 0, length: int = LENGTH):
  """(ids, seq or None): two rows of [CLS] text [SEP] runs, padded; packed rows hold 2-3 texts."""
  rng = np.random.default_rng(seed)
  sizes = [[40, 25, 30], [50, 44]] if packed else [[90], [61]]
  ids, seq = np.full((2, length), PAD_ID), np.zeros((2, length), int)
  for r, texts in enumerate(sizes):
    at = 0
    for t, n in enumerate(texts):
      ids[r, at:at + n] = [CLS_ID] + list(rng.integers(NUM_SPECIALS, 64, n - 2)) + [SEP_ID]
      seq[r, at:at + n] = t + 1
      at += n
  return jnp.asarray(ids, jnp.int32), (jnp.asarray(seq, jnp.int32) if packed else None)


def _hidden_and_grads(cfg, params, ids, seq, **kw):
  """The hidden states and the gradients of a fixed projection of the real tokens' states (pad
  queries see only pads under splash: finite, unused, and not compared)."""
  real = (ids != PAD_ID)[..., None]
  weights = 0.01 * jax.random.normal(jax.random.key(1), ids.shape + (cfg.hidden_size,))
  model = Encoder(cfg)

  def loss(p):
    hidden = model.apply({'params': p}, ids, seq=seq, **kw)['hidden']
    return jnp.sum(jnp.where(real, hidden * weights, 0.0)), hidden

  (_, hidden), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return np.where(np.asarray(real), np.asarray(hidden), 0.0), grads


def _assert_close(a, b, atol=1e-5):
  hidden_a, grads_a = a
  hidden_b, grads_b = b
  np.testing.assert_allclose(hidden_a, hidden_b, atol=atol, rtol=1e-5)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(grads_a),
                          jax.tree_util.tree_leaves(grads_b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-4,
                               err_msg=jax.tree_util.keystr(path))


@pytest.fixture
def kernel_calls(monkeypatch):
  """Counts the layers (traced) that run the splash kernel."""
  calls = []
  real = splash.splash_attention

  def spy(*args, **kw):
    calls.append(args[0].shape)
    return real(*args, **kw)

  monkeypatch.setattr(splash, 'splash_attention', spy)
  return calls


@pytest.mark.parametrize('packed, options', [
    (False, {}), (True, {}), (False, dict(remat='full')),
    (True, dict(scan_layers=True, remat='dots'))])
def test_splash_equals_explicit_outputs_and_gradients(packed, options, kernel_calls):
  params = _params()
  ids, seq = _rows(packed)
  ref = _hidden_and_grads(dataclasses.replace(TINY, **options), params, ids, seq)
  assert not kernel_calls
  out = _hidden_and_grads(dataclasses.replace(TINY, attention='splash', **options), params, ids,
                          seq)
  assert kernel_calls, 'the kernel did not run'
  _assert_close(out, ref)


def test_packed_rows_need_the_texts_segment_ids(kernel_calls):
  """Guard of the test above: splash on packed rows without `seq` is a different model."""
  params = _params()
  ids, seq = _rows(True)
  ref = _hidden_and_grads(TINY, params, ids, seq)
  out = _hidden_and_grads(dataclasses.replace(TINY, attention='splash'), params, ids, None)
  assert kernel_calls
  assert np.abs(out[0] - ref[0]).max() > 1e-2


def test_auto_off_tpu_is_the_dot_product_path(kernel_calls):
  params = _params()
  ids, seq = _rows(True)
  model = lambda kind: Encoder(dataclasses.replace(TINY, attention=kind))
  auto = model('auto').apply({'params': params}, ids, seq=seq)['hidden']
  dot = model('dot_product').apply({'params': params}, ids, seq=seq)['hidden']
  assert not kernel_calls
  np.testing.assert_array_equal(np.asarray(auto), np.asarray(dot))
  assert splash.target_platform() != 'tpu'


def test_splash_falls_back_where_it_cannot_apply(kernel_calls):
  """An attention_mask (not segment ids), the probabilities asked for, a length that is not a
  multiple of 128: the dot_product or explicit path, with the explicit path's results."""
  params = _params()
  ids, seq = _rows(True)
  splash_model = Encoder(dataclasses.replace(TINY, attention='splash'))
  mask = jnp.ones(ids.shape + (ids.shape[1],), bool)
  a = splash_model.apply({'params': params}, ids, None, mask, seq=seq)['hidden']
  b = Encoder(TINY).apply({'params': params}, ids, None, mask, seq=seq)['hidden']
  assert not kernel_calls
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  short, _ = _rows(False, length=96)
  splash_model.apply({'params': params}, short)
  assert not kernel_calls
  out = splash_model.apply({'params': params}, ids, seq=seq, return_last_probs=True)
  assert len(kernel_calls) == TINY.num_layers - 1  # the last layer returns its probabilities
  ref = Encoder(TINY).apply({'params': params}, ids, seq=seq, return_last_probs=True)
  real_queries = np.asarray(ids != PAD_ID)[:, None, :, None]
  np.testing.assert_allclose(np.where(real_queries, np.asarray(out['last_probs']), 0.0),
                             np.where(real_queries, np.asarray(ref['last_probs']), 0.0),
                             atol=1e-6)


def test_splash_refuses_attention_dropout():
  cfg = dataclasses.replace(TINY, attention='splash', attention_dropout_rate=0.1)
  ids, _ = _rows(False)
  with pytest.raises(ValueError, match="attention='splash'.*attention_dropout_rate=0.1"):
    Encoder(cfg).apply({'params': _params(cfg)}, ids, deterministic=False,
                       rngs={'dropout': jax.random.key(0)})


@pytest.mark.parametrize('kind, platform, dropout, probs, segments, length, path', [
    ('auto', 'tpu', 0.0, False, True, 512, 'splash'),
    ('auto', 'tpu', 0.0, False, False, 512, 'dot_product'),  # a WA pass's attention_mask
    ('auto', 'tpu', 0.0, True, True, 512, 'explicit'),
    ('auto', 'tpu', 0.1, False, True, 512, 'explicit'),
    ('auto', 'tpu', 0.0, False, True, 200, 'dot_product'),
    ('auto', 'gpu', 0.0, False, True, 512, 'dot_product'),
    ('auto', 'cpu', 0.0, False, True, 512, 'dot_product'),
    ('splash', 'cpu', 0.0, False, True, 256, 'splash'),
    ('splash', 'tpu', 0.0, False, False, 256, 'dot_product'),
    ('splash', 'tpu', 0.0, True, True, 256, 'explicit'),
    ('dot_product', 'tpu', 0.0, False, True, 256, 'dot_product'),
    ('explicit', 'tpu', 0.0, False, True, 256, 'explicit'),
])
def test_the_path_of_each_call(monkeypatch, kind, platform, dropout, probs, segments, length,
                               path):
  monkeypatch.setattr(splash, 'target_platform', lambda: platform)
  assert splash.choose(kind, dropout_rate=dropout, return_probs=probs,
                       segment_ids=jnp.ones((1, length)) if segments else None,
                       length=length) == path


def test_block_sizes_divide_the_length():
  assert [splash.block_size(n) for n in (128, 384, 512, 640, 1024, 1536)] == [
      128, 384, 512, 128, 512, 512]
  assert splash.supports(256) and not splash.supports(200)


MESH_SCRIPT = textwrap.dedent("""
    import json, sys
    import dataclasses
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {tests!r})
    import test_splash_attention as t
    from amber_jax.core import splash
    from amber_jax.parallel import mesh as mesh_lib
    from amber_jax.parallel import partitioning

    params = t._params()
    ids, seq = t._rows(True)
    ids, seq = jnp.concatenate([ids, ids[::-1]]), jnp.concatenate([seq, seq[::-1]])  # 4 rows
    ref = t._hidden_and_grads(t.TINY, params, ids, seq)
    cfg = dataclasses.replace(t.TINY, attention='splash')
    mesh = mesh_lib.build(dict(data=2, fsdp=2, tensor=2))
    with partitioning.activation_rules(mesh):
      out = t._hidden_and_grads(cfg, params, ids, seq)
      jaxpr = str(jax.make_jaxpr(lambda p: t.Encoder(cfg).apply({{'params': p}}, ids, seq=seq))(
          params))
    t._assert_close(out, ref)
    spec = "P(('data', 'fsdp'), 'tensor', None, None)"
    print('RESULT' + json.dumps(dict(shard_maps=jaxpr.count('shard_map['),
                                     in_specs=jaxpr.count(spec))))
""")


def test_splash_under_a_mesh_runs_in_shard_map_and_equals_explicit(tmp_path):
  """8 CPU devices (a subprocess: the count is fixed when JAX starts), data=fsdp=tensor=2 under the
  default rules: the kernel runs per device in a shard_map (batch over data x fsdp, heads over
  tensor), and the outputs and gradients equal the single-device explicit path's."""
  code = MESH_SCRIPT.format(tests=str(pathlib.Path(__file__).parent))
  env = dict(os.environ, XLA_FLAGS=xla_env.with_cpu_devices(8), JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                       timeout=300, cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-4000:]
  result = json.loads([l for l in out.stdout.splitlines() if l.startswith('RESULT')][0][6:])
  assert result['shard_maps'] == TINY.num_layers, result
  assert result['in_specs'] >= TINY.num_layers, result
