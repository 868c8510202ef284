"""Tokens/s and MFU of the `base` train step on one GPU (H100/H200), synthetic batches, no TF.

  python benchmarks/gpu_mfu.py                              (base, seq 128 and 512, bf16)
  python benchmarks/gpu_mfu.py --attention explicit,auto,cudnn --remat none,dots
  python benchmarks/gpu_mfu.py --tiny --steps 2 --warmup 1  (a CPU check of the script)

Rows: sequence length x step kind x attention x remat.
  step 'mlm':   `rows` monolingual rows of `seq` tokens; the MLM loss only.
  step 'amber': rows/2 monolingual rows of `seq` tokens + rows/2 translation pairs of seq/2 tokens a
                side ([x; y] is `seq` long); MLM + TLM + SA + WA (5 encoder passes: MLM on mono,
                TLM on [x; y], SA on x and y apart, WA on [x; y] and [y; x]).
  attention:    'explicit' (einsum + softmax), 'auto' (jax.nn.dot_product_attention, XLA),
                'cudnn' ('auto' with implementation='cudnn': cuDNN flash attention).
Dropout is 0 (common.config), so 'auto'/'cudnn' apply in every layer but WA's last.

Model FLOPs (what MFU counts; recomputation from remat is not counted) are
`amber_jax.training.flops.step_flops`, the count the training loop logs (its docstring has the
formula). MFU = model FLOPs per step / step seconds / peak, with peak = 989 TFLOP/s (H100 SXM and
H200, bf16 dense, NVIDIA's figure; the PCIe H100 is lower: pass --peak-tflops). XLA's own FLOP
count of the compiled step (cost_analysis, which includes remat recomputation) is printed beside
it as 'XLA TF/step'.
Timing: `--warmup` steps, then `--steps` steps, each ended by block_until_ready; the median step.
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


from amber_jax.data import batches  # pylint: disable=wrong-import-position
from amber_jax.training import flops  # pylint: disable=wrong-import-position
from benchmarks import common  # pylint: disable=wrong-import-position


def model_flops(cfg) -> float:
  """Model FLOPs of one train step of `cfg` (its batch layout and objective weights)."""
  shapes = {k: shape for k, (shape, _) in batches.batch_spec(cfg.data).items()}
  return flops.step_flops(cfg.model, cfg.objectives, shapes)


def peak_flops(override: float) -> float | None:
  return override * 1e12 if override else flops.peak_flops()


def run_row(preset, step, seq, rows, attention, remat, dtype, warmup, steps, scan=False):
  """(tokens per step, median seconds, model FLOPs, XLA FLOPs) of one configuration."""
  half = rows // 2
  if step == 'mlm':
    cfg = common.config(preset, mono=rows, pairs=0, mono_length=seq, mlm_weight=1.0,
                        tlm_weight=0.0, sa_weight=0.0, wa_weight=0.0)
  else:
    cfg = common.config(preset, mono=half, pairs=half, mono_length=seq, sentence_length=seq // 2)
  impl = 'cudnn' if attention == 'cudnn' else ''
  with cfg.unlocked():
    cfg.model.update(dtype=dtype, remat=remat, attention_implementation=impl, scan_layers=scan,
                     attention='auto' if attention == 'cudnn' else attention)
    cfg.model.max_position_embeddings = max(cfg.model.max_position_embeddings, seq)
  job = common.JaxStep(cfg)
  seconds, _ = common.median_seconds(job.run, repeats=steps, warmup=warmup)
  return job.tokens, seconds, model_flops(cfg), job.flops()


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--tiny', action='store_true', help='the tiny preset (a CPU check)')
  p.add_argument('--seq', default='128,512', help='sequence lengths')
  p.add_argument('--tokens', type=int, default=0,
                 help='tokens per step: rows = tokens / seq (halved between mono and pairs); '
                 'default 32,768 (1,024 with --tiny)')
  p.add_argument('--step', default='mlm,amber', help="'mlm', 'amber' or both")
  p.add_argument('--attention', default='explicit,auto,cudnn', help='explicit, auto, cudnn')
  p.add_argument('--remat', default='none', help='none, dots, full')
  p.add_argument('--scan', action='store_true',
                 help="model.scan_layers (XLA's FLOP count then covers one layer body only)")
  p.add_argument('--dtype', default='bfloat16')
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--peak-tflops', type=float, default=0.0,
                 help='peak FLOP/s of one device in TFLOP/s (default: 989 on H100/H200)')
  args = p.parse_args(argv)
  split = lambda s: [x for x in s.split(',') if x]
  preset = 'tiny' if args.tiny else 'base'
  seqs = [int(x) for x in split(args.seq)]
  if args.tiny:
    seqs = [min(s, 128) for s in seqs] if args.seq != '128,512' else [32, 64]
  args.tokens = args.tokens or (1024 if args.tiny else 32_768)
  peak = peak_flops(args.peak_tflops)
  print(common.describe_machine())
  print(f'preset {preset}, dtype {args.dtype}, {args.tokens} tokens per step, warmup '
        f'{args.warmup}, median of {args.steps} steps; peak '
        f'{"%.0f TFLOP/s" % (peak / 1e12) if peak else "unknown (MFU n/a; --peak-tflops)"}\n')
  header = (f'{"seq":>4} {"step":<6} {"attention":<9} {"remat":<5} {"rows":>5} {"ms/step":>9} '
            f'{"tokens/s":>10} {"model TF/step":>13} {"XLA TF/step":>11} {"MFU":>6}')
  print(header)
  print('-' * len(header))
  sys.stdout.flush()
  for seq, step, attention, remat in itertools.product(seqs, split(args.step),
                                                       split(args.attention), split(args.remat)):
    rows = max(2, args.tokens // seq // 2 * 2)
    try:
      tokens, sec, flops, xla_flops = run_row(preset, step, seq, rows, attention, remat,
                                              args.dtype, args.warmup, args.steps, args.scan)
    except Exception as e:  # pylint: disable=broad-except  (OOM, cuDNN refusing a shape: a row)
      msg = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
      print(f'{seq:>4} {step:<6} {attention:<9} {remat:<5} {rows:>5} failed: {msg}')
      sys.stdout.flush()
      continue
    mfu = f'{100 * flops / sec / peak:5.1f}%' if peak else '   n/a'
    print(f'{seq:>4} {step:<6} {attention:<9} {remat:<5} {rows:>5} {1e3 * sec:>9.1f} '
          f'{tokens / sec:>10,.0f} {flops / 1e12:>13.2f} {xla_flops / 1e12:>11.2f} {mfu:>6}')
    sys.stdout.flush()
  print('\ntokens/s counts non-pad mono + [x; y] tokens (as the training loop logs them); MFU counts the '
        'model FLOPs of every pass (amber_jax.training.flops), not remat recomputation.')


if __name__ == '__main__':
  main()
