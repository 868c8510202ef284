"""Model FLOPs of a step against a hand count and against XLA's own count; MFU and throughput in
the logs of a run."""

import json
import math

import pytest

from amber_jax.training import flops, loop
from test_train import small_config, stream


def _shapes(cfg):
  d = cfg.data
  bm, lm, bp, ls = d.mono_batch_size, d.mono_length, d.parallel_batch_size, d.sentence_length
  return {'mono_ids': (bm, lm), 'mono_segments': (bm, lm), 'src_ids': (bp, ls),
          'tgt_ids': (bp, ls), 'pair_ids': (bp, 2 * ls), 'pair_segments': (bp, 2 * ls),
          'swap_ids': (bp, 2 * ls), 'swap_segments': (bp, 2 * ls)}


def test_step_flops_is_the_sum_of_the_passes_counted_by_hand(tmp_path):
  cfg = small_config(tmp_path)  # 2 layers of 32, MLP 64, vocabulary 64; 4x16 mono, 4 pairs of 12
  h, layers, inter, vocab = 32, 2, 64, 64
  weights = layers * (4 * h * h + 2 * h * inter)

  def encoder(rows, length):
    return 6 * weights * rows * length + 12 * layers * h * length**2 * rows

  def head(rows, length):
    k = min(length, math.ceil(0.15 * length) + 1)  # max_predictions
    return 6 * (h * h + h * vocab) * rows * k

  mlm = encoder(4, 16) + head(4, 16)
  tlm = encoder(4, 24) + head(4, 24)
  sa = encoder(8, 12)
  wa = 2 * encoder(4, 24)
  assert flops.step_flops(cfg.model, cfg.objectives, _shapes(cfg)) == mlm + tlm + sa + wa
  with cfg.unlocked():
    cfg.objectives.update(sa_weight=0.0, wa_weight=0.0)
  assert flops.step_flops(cfg.model, cfg.objectives, _shapes(cfg)) == mlm + tlm
  assert flops.step_flops(cfg.model, cfg.objectives,
                          {k: v for k, v in _shapes(cfg).items() if 'mono' not in k}) == tlm
  # Packed pairs: 4 rows of 24 in every parallel pass, SA's sentences included.
  packed = {k: v for k, v in _shapes(cfg).items() if k not in ('src_ids', 'tgt_ids')}
  packed.update({k: (4, 24) for k in ('pair_seq', 'sent_ids', 'sent_seq')})
  with cfg.unlocked():
    cfg.objectives.update(sa_weight=1.0, wa_weight=1.0)
  assert flops.step_flops(cfg.model, cfg.objectives, packed) == mlm + tlm + encoder(4, 24) + wa


@pytest.mark.parametrize('pair_packing', [False, True])
def test_model_flops_match_xlas_count_of_the_unscanned_step(tmp_path, pair_packing):
  from amber_jax.data import batches  # pylint: disable=g-import-not-at-top
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  cfg = small_config(tmp_path)
  with cfg.unlocked():
    cfg.model.update(dropout_rate=0.0, attention_dropout_rate=0.0)
    cfg.data.pair_packing = pair_packing
  xla = common.JaxStep(cfg).flops()
  shapes = {k: shape for k, (shape, _) in batches.batch_spec(cfg.data).items()}
  assert ('sent_ids' in shapes) == pair_packing
  ours = flops.step_flops(cfg.model, cfg.objectives, shapes)
  # XLA also counts LayerNorm, softmax, GELU and the optimizer; it must not count far less.
  assert 0.9 < xla / ours < 1.2, (xla, ours)


@pytest.mark.parametrize('kind, tflops', [
    ('TPU v4', 275.0), ('TPU v5 lite', 197.0), ('TPU v5p', 459.0), ('TPU v5', 459.0),
    ('TPU v6 lite', 918.0), ('NVIDIA H100 80GB HBM3', 989.0), ('NVIDIA H200', 989.0),
    ('NVIDIA A100-SXM4-80GB', 312.0), ('cpu', None)])
def test_peak_flops_by_device_kind(kind, tflops):
  device = type('Device', (), {'device_kind': kind})()
  assert flops.peak_flops(device) == (tflops * 1e12 if tflops else None)


def test_a_run_logs_model_flops_throughput_and_mfu(tmp_path, monkeypatch):
  monkeypatch.setattr(flops, 'peak_flops', lambda device=None: 1e12)  # as if on a known chip
  cfg = small_config(tmp_path, steps=4)
  lines = []
  loop.train(cfg, batches=stream(), print_fn=lines.append)
  records = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  expected = flops.step_flops(cfg.model, cfg.objectives, _shapes(cfg)) / 1e12
  for r in records:
    assert r['perf/model_tflops_per_step'] == pytest.approx(expected)
    per_device = r['perf/model_tflops_per_s_per_device']
    assert per_device == pytest.approx(expected * r['steps_per_s'])  # one CPU device
    assert r['perf/mfu'] == pytest.approx(per_device)  # against a peak of 1 TFLOP/s
    assert r['perf/tokens_per_s_per_device'] == pytest.approx(r['tokens_per_s'])
  assert any(' mfu=' in l for l in lines if l.startswith('step 4/'))
