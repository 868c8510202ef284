"""The AMBER passes, the jitted step, checkpoint resume, and the TF-free training core."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import synthetic
from amber_jax.core import masking
from amber_jax.core import objectives
from amber_jax.training import loop
from amber_jax.training import train_state
from amber_jax.training import train_step
from amber_jax.core.model import Encoder, EncoderConfig, init_params
from configs import tiny

VOCAB = 64
SMALL = dict(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
             max_position_embeddings=64, dropout_rate=0.0, attention_dropout_rate=0.0)


def small_config(workdir, steps=4):
  cfg = tiny.get_config()
  with cfg.unlocked():
    cfg.workdir = str(workdir)
    cfg.model.update(SMALL)
    cfg.data.update(mono_batch_size=4, parallel_batch_size=4, mono_length=16,
                    sentence_length=12)
    cfg.train.update(steps=steps, log_every=2, checkpoint_every=2)
    cfg.optimizer.update(warmup_steps=2, learning_rate=1e-3)
  return cfg


def mesh_loss_and_grads(cfg, mesh, batch, params=None):
  """cfg's losses and their gradients on `batch` laid out on `mesh` (deterministic, key 1), for
  comparing layouts: (setup, host params used (`params`, or initialised from cfg), {metric:
  float}, every gradient flattened into one list)."""
  from amber_jax.parallel import partitioning  # pylint: disable=import-outside-toplevel
  s = train_state.setup(cfg, mesh)
  if params is None:
    params = jax.device_get(train_state.init_state(s, 0)['params'])
  placed = jax.device_put(params, s.state_shardings['params'])

  def loss(p, b):
    return objectives.amber_losses(s.model, p, b, jax.random.key(1), cfg.objectives,
                                   deterministic=True)

  with partitioning.activation_rules(mesh):
    (_, metrics), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        placed, partitioning.to_global(batch, mesh))
  flat = np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(jax.device_get(grads))])
  return s, params, {k: float(v) for k, v in metrics.items()}, flat.tolist()


def stream_of(rows):
  return synthetic.batches(0, vocab=VOCAB, mono_rows=rows, mono_length=16, pairs=rows,
                           sentence_length=12)


def stream():
  return stream_of(4)


def test_wa_loss_from_passes_matches_explicit_position_reference():
  cfg = EncoderConfig(**SMALL)
  model = Encoder(cfg)
  params = jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.key(0)))
  import flax.linen as nn
  params = nn.meta.unbox(params)
  batch = synthetic.random_batch(np.random.default_rng(1), vocab=VOCAB, mono_rows=0, pairs=3)
  ocfg = tiny.get_config().objectives
  loss, per_pair = objectives.word_alignment(model, params, batch, ocfg, jax.random.key(0), True)

  def probs(ids, segs):
    mask = masking.wa_attention_mask(jnp.asarray(ids), jnp.asarray(segs), 'paper')
    return np.asarray(model.apply({'params': params}, ids, segs, mask,
                                  return_last_probs=True)['last_probs'], np.float64)

  p1 = probs(batch['pair_ids'], batch['pair_segments'])
  p2 = probs(batch['swap_ids'], batch['swap_segments'])
  heads = cfg.num_heads
  for b in range(3):
    nx = int((batch['src_ids'][b] > 4).sum())
    ny = int((batch['tgt_ids'][b] > 4).sum())
    acc = 0.0
    for h in range(heads):
      for i in range(nx):
        for j in range(ny):
          a_y2x = p1[b, h, nx + 2 + j, 1 + i]   # y_j (query) -> x_i (key) in [x; y]
          a_x2y = p2[b, h, ny + 2 + i, 1 + j]   # x_i (query) -> y_j (key) in [y; x]
          acc += a_x2y * a_y2x
    expected = 1 - acc / heads / min(nx, ny)
    np.testing.assert_allclose(float(per_pair[b]), expected, rtol=1e-5, atol=1e-6)
  assert 0.0 <= float(loss) <= 1.0


def test_zero_weight_removes_the_loss(tmp_path):
  cfg = small_config(tmp_path)
  with cfg.unlocked():
    cfg.objectives.update(sa_weight=0.0, wa_weight=0.0)
  s = train_state.setup(cfg)
  state = train_state.init_state(s, 0)
  batch = next(stream()(0))
  _, metrics = train_step.make_train_step(s)(state, batch)
  assert set(metrics) >= {'mlm_loss', 'tlm_loss'} and not {'sa_loss', 'wa_loss'} & set(metrics)


def test_training_reduces_the_loss_on_a_repeated_batch(tmp_path):
  cfg = small_config(tmp_path)
  s = train_state.setup(cfg)
  state = train_state.init_state(s, 0)
  step = train_step.make_train_step(s)
  batch = next(stream()(0))
  first = None
  for _ in range(30):
    state, metrics = step(state, batch)
    first = first if first is not None else {k: float(v) for k, v in metrics.items()}
  assert float(metrics['sa_loss']) < first['sa_loss']
  assert float(metrics['loss']) < first['loss']


def test_killed_run_resumes_to_identical_parameters(tmp_path):
  full_cfg = small_config(tmp_path / 'full', steps=4)
  full, _ = loop.train(full_cfg, batches=stream(), print_fn=lambda *_: None)
  part_cfg = small_config(tmp_path / 'part', steps=2)
  loop.train(part_cfg, batches=stream(), print_fn=lambda *_: None)
  resumed_cfg = small_config(tmp_path / 'part', steps=4)  # same workdir: resumes at step 2
  lines = []
  resumed, _ = loop.train(resumed_cfg, batches=stream(), print_fn=lines.append)
  assert any('Resumed from step 2' in line for line in lines)
  for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_training_core_runs_with_tensorflow_blocked(tmp_path):
  code = textwrap.dedent(f"""
      import sys
      sys.modules['tensorflow'] = None   # any import of TF now raises ImportError
      sys.modules['seqio'] = None
      sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
      import amber_jax.core.model, amber_jax.core.losses, amber_jax.core.objectives, amber_jax.training.loop
      import test_train as t
      cfg = t.small_config({str(tmp_path)!r}, steps=2)
      state, history = amber_jax.training.loop.train(cfg, batches=t.stream(), print_fn=print)
      assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None
      print('OK', history[-1]['loss'])
  """)
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'OK' in out.stdout


def test_resume_with_another_vocabulary_fails_naming_both(tmp_path):
  first, other = tmp_path / 'first.model', tmp_path / 'other.model'
  first.write_bytes(b'pieces of the first vocabulary')
  other.write_bytes(b'pieces of another vocabulary')
  cfg = small_config(tmp_path / 'run', steps=2)
  with cfg.unlocked():
    cfg.data.vocab_path = str(first)
  loop.train(cfg, batches=stream(), print_fn=lambda *_: None)
  resumed = small_config(tmp_path / 'run', steps=4)
  with resumed.unlocked():
    resumed.data.vocab_path = str(other)
  with pytest.raises(ValueError, match='trained with the vocabulary') as e:
    loop.train(resumed, batches=stream(), print_fn=lambda *_: None)
  assert str(first) in str(e.value) and str(other) in str(e.value)
  with resumed.unlocked():
    resumed.data.vocab_path = str(first)  # the run's own vocabulary resumes
  state, _ = loop.train(resumed, batches=stream(), print_fn=lambda *_: None)
  assert int(state['step']) == 4
