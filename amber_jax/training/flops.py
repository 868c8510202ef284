"""Model FLOPs of a train step, and the MFU they give on the device that runs it.

Model FLOPs count what the model must compute, not what XLA runs: recomputation (remat) is not
counted, and a scanned stack counts every layer (XLA's cost analysis of a scanned step sees one
layer body). Per encoder pass over B rows of length L, forward + backward = 3 x forward:

  6 * P_layers * B * L          P_layers = layers * (4 H^2 + 2 H I), the layers' matmul weights
  + 12 * layers * H * L^2 * B   Q K^T and P V: 2 * 2 * H * L^2 per layer forward
  + 6 * (H^2 + H * V) * B * k   the MLM head on k = max_predictions(L, mask_rate) positions a row
                                (masked passes only: MLM, TLM)

and a step runs the passes each active objective declares (`Objective.passes`: MLM one over the
mono rows, TLM one over [x; y], SA one over x and y stacked, WA two over [x; y] and [y; x]).
Embedding look-ups, LayerNorm, softmax, GELU and the losses are not counted.

MFU = model FLOPs per step / step seconds / (devices x the device's peak). Peaks are the vendors'
dense bf16 figures per chip (`PEAK_TFLOPS`); a device not in the table logs FLOP/s but no MFU.
"""

from __future__ import annotations

from typing import Mapping

import jax

from amber_jax.core import objectives

# Dense bf16 peak TFLOP/s per chip (vendors' figures), matched against jax's device_kind in this
# order: the first name contained in it wins.
PEAK_TFLOPS = (
    ('TPU v6 lite', 918.0),   # v6e (Trillium)
    ('TPU v6e', 918.0),
    ('TPU v5 lite', 197.0),   # v5e
    ('TPU v5e', 197.0),
    ('TPU v5p', 459.0),
    ('TPU v5', 459.0),        # v5p reports 'TPU v5'
    ('TPU v4', 275.0),
    ('H200', 989.0),          # H100/H200 SXM; the PCIe H100 is lower (756)
    ('H100', 989.0),
    ('A100', 312.0),
)


def encoder_pass_flops(mcfg, rows: int, length: int, masked: bool, mask_rate: float) -> float:
  """Forward + backward model FLOPs of one encoder pass (the module's formula)."""
  h, layers, inter, vocab = (mcfg.hidden_size, mcfg.num_layers, mcfg.intermediate_size,
                             mcfg.vocab_size)
  p_layers = layers * (4 * h * h + 2 * h * inter)
  flops = 6 * p_layers * rows * length + 12 * layers * h * length**2 * rows
  if masked:
    flops += 6 * (h * h + h * vocab) * rows * objectives.max_predictions(length, mask_rate)
  return float(flops)


def step_flops(mcfg, ocfg, shapes: Mapping[str, tuple[int, ...]]) -> float:
  """Model FLOPs of one train step on a batch of these shapes ({key: shape}, e.g.
  `amber_jax.data.batches.batch_spec`'s), over the objectives whose weight is not 0."""
  total = 0.0
  for o in objectives.OBJECTIVES:
    if not getattr(ocfg, o.weight) or not all(k in shapes for k in o.keys_of(shapes)):
      continue
    for rows, length, masked in o.passes(shapes):
      if rows:
        total += encoder_pass_flops(mcfg, rows, length, masked, ocfg.mask_rate)
  return total


def peak_flops(device: jax.Device | None = None) -> float | None:
  """Peak dense bf16 FLOP/s of one `device` (default: the first), None when not in the table."""
  kind = (device or jax.devices()[0]).device_kind
  for name, tflops in PEAK_TFLOPS:
    if name in kind:
      return tflops * 1e12
  return None


def peak_memory_bytes() -> float | None:
  """The most memory any local device has held (bytes), None where the backend does not say
  (CPU)."""
  peaks = []
  for device in jax.local_devices():
    stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
    if stats and 'peak_bytes_in_use' in stats:
      peaks.append(stats['peak_bytes_in_use'])
  return float(max(peaks)) if peaks else None


def throughput(flops_per_step: float, steps_per_s: float, tokens_per_s: float) -> dict:
  """The scalars a log step records: tokens/s and model FLOP/s per device, MFU when the device's
  peak is known, and the peak device memory when the backend reports it."""
  devices = jax.device_count()
  per_device = flops_per_step * steps_per_s / devices
  scalars = {'perf/model_tflops_per_step': flops_per_step / 1e12,
             'perf/tokens_per_s_per_device': tokens_per_s / devices,
             'perf/model_tflops_per_s_per_device': per_device / 1e12}
  peak = peak_flops()
  if peak:
    scalars['perf/mfu'] = per_device / peak
  memory = peak_memory_bytes()
  if memory is not None:
    scalars['perf/peak_memory_gib'] = memory / 2**30
  return scalars
