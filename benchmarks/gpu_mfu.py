"""Tokens/s and MFU of the `base` train step on one GPU (H100/H200), synthetic batches, no TF.

  python benchmarks/gpu_mfu.py                              (base, seq 128 and 512, bf16)
  python benchmarks/gpu_mfu.py --attention explicit,auto,cudnn --remat none,dots
  python benchmarks/gpu_mfu.py --tiny --steps 2 --warmup 1  (a CPU check of the script)
  bash benchmarks/gpu_check.sh                              (the prepared check: see there)

Rows: sequence length x step kind x packing x attention x remat.
  step 'mlm':   `rows` monolingual rows of `seq` tokens; the MLM loss only.
  step 'amber': rows/2 monolingual rows of `seq` tokens + rows/2 rows of translation pairs of
                seq/2 tokens a side ([x; y] is `seq` long); MLM + TLM + SA + WA (5 encoder passes:
                MLM on mono, TLM on [x; y], SA on x and y apart, WA on [x; y] and [y; x]).
  packing:      'packed' or 'unpacked'. For 'amber' it sets config.data.pair_packing (and
                config.data.packing for the mono rows): the same row counts either way, but a
                packed pair row holds as many pairs as fit and an unpacked one a single pair.
                The pairs are synthetic, their lengths log-normal around 15 pieces a side
                (`amber_jax.data.inputs.synthetic_batches`), so unpacked rows carry the padding
                real pairs do. For 'mlm' it sets config.data.packing: synthetic mono rows are
                full (one text each), so packed and unpacked hold the same tokens and 'packed'
                measures the cost of the segment-aware attention mask alone.
  attention:    'explicit' (einsum + softmax), 'auto' (jax.nn.dot_product_attention, XLA),
                'cudnn' ('auto' with implementation='cudnn': cuDNN flash attention; where JAX sees
                no GPU, as in a --tiny check on the CPU, it runs as 'auto' and the header says so).
Dropout is 0 (common.config), so 'auto'/'cudnn' apply in every layer but WA's last.

Columns: 'pairs' (translation pairs in the step), 'useful tok/s' (non-pad tokens of the mono rows
and the [x; y] rows per second: `amber_jax.training.metrics.count_tokens`, what the training loop
logs), 'fill' (those tokens over the positions of those rows). After the table: for each amber
sequence length the ratio of packed to unpacked useful tokens/s, and the MFU goals.

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

import jax

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


GOALS = {'mlm': 55.0, 'amber': 45.0}  # MFU (%) goals on H100/H200


def run_row(preset, step, seq, rows, attention, remat, dtype, warmup, steps, scan=False,
            packed=False) -> dict:
  """One configuration's figures: tokens (non-pad, per step), positions (per step), pairs,
  seconds (median step), flops (model FLOPs per step), xla_flops (XLA's count)."""
  half = rows // 2
  if step == 'mlm':
    cfg = common.config(preset, mono=rows, pairs=0, mono_length=seq, mlm_weight=1.0,
                        tlm_weight=0.0, sa_weight=0.0, wa_weight=0.0)
  else:
    cfg = common.config(preset, mono=half, pairs=half, mono_length=seq, sentence_length=seq // 2)
  impl = 'cudnn' if attention == 'cudnn' and jax.default_backend() == 'gpu' else ''
  with cfg.unlocked():
    cfg.model.update(dtype=dtype, remat=remat, attention_implementation=impl, scan_layers=scan,
                     attention='auto' if attention == 'cudnn' else attention)
    cfg.model.max_position_embeddings = max(cfg.model.max_position_embeddings, seq)
    cfg.data.update(packing=packed, pair_packing=packed)
  job = common.JaxStep(cfg)
  seconds, _ = common.median_seconds(job.run, repeats=steps, warmup=warmup)
  return dict(tokens=job.tokens, positions=job.positions, pairs=job.pairs, seconds=seconds,
              flops=model_flops(cfg), xla_flops=job.flops())


def summary(results: dict, peak: float | None) -> list[str]:
  """The lines after the table: packed / unpacked ratios of the amber rows, the MFU goals.

  Args:
    results: (seq, step, packing, attention, remat) -> run_row's dict, for the rows that ran.
    peak: peak FLOP/s of the device, None when unknown.
  """
  lines = []
  combos = sorted({key[3:] for key in results})
  for seq in sorted({key[0] for key in results}):
    for attention, remat in combos:
      packed = results.get((seq, 'amber', 'packed', attention, remat))
      unpacked = results.get((seq, 'amber', 'unpacked', attention, remat))
      if packed and unpacked:
        ratio = (packed['tokens'] / packed['seconds']) / (unpacked['tokens'] / unpacked['seconds'])
        where = f' ({attention}, remat {remat})' if len(combos) > 1 else ''
        lines.append(f'ratio (packed / unpacked useful tokens/s) at seq {seq}{where}: {ratio:.2f}x')
  for step, goal in GOALS.items():
    rows = [r for key, r in results.items() if key[1] == step]
    if not peak:
      best = 'MFU n/a here (unknown peak: --peak-tflops)'
    elif rows:
      mfu = max(100 * r['flops'] / r['seconds'] / peak for r in rows)
      best = f'best here {mfu:.1f}%: {"met" if mfu >= goal else "NOT met"}'
    else:
      best = 'no row ran'
    name = 'MLM/TLM step' if step == 'mlm' else 'full AMBER step'
    lines.append(f'MFU goal (H100/H200), {name}: >= {goal:.0f}%; {best}')
  return lines


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--tiny', action='store_true', help='the tiny preset (a CPU check)')
  p.add_argument('--seq', default='128,512', help='sequence lengths')
  p.add_argument('--tokens', type=int, default=0,
                 help='token positions per step: rows = tokens / seq (halved between mono and '
                 'pair rows); default 32,768 (1,024 with --tiny)')
  p.add_argument('--step', default='mlm,amber', help="'mlm', 'amber' or both")
  p.add_argument('--packing', default='packed,unpacked', help="'packed', 'unpacked' or both")
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
  packings = split(args.packing)
  unknown = set(packings) - {'packed', 'unpacked'}
  if unknown:
    p.error(f'--packing: unknown {sorted(unknown)}; allowed: packed, unpacked')
  preset = 'tiny' if args.tiny else 'base'
  seqs = [int(x) for x in split(args.seq)]
  if args.tiny:
    seqs = [min(s, 128) for s in seqs] if args.seq != '128,512' else [32, 64]
  args.tokens = args.tokens or (1024 if args.tiny else 32_768)
  peak = peak_flops(args.peak_tflops)
  peak_text = f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown (MFU n/a; --peak-tflops)'
  print(common.describe_machine())
  print(f'preset {preset}, dtype {args.dtype}, remat {args.remat}, scan_layers {args.scan}, '
        f'{args.tokens} token positions per step, warmup {args.warmup}, median of {args.steps} '
        f'steps; peak {peak_text}')
  if 'cudnn' in args.attention and jax.default_backend() != 'gpu':
    print(f"attention 'cudnn' runs as 'auto' with JAX's default implementation: no GPU "
          f'({jax.default_backend()})')
  print()
  header = (f'{"seq":>4} {"step":<6} {"packing":<8} {"attention":<9} {"remat":<5} {"rows":>5} '
            f'{"pairs":>5} {"ms/step":>9} {"useful tok/s":>12} {"fill":>5} {"model TF/step":>13} '
            f'{"XLA TF/step":>11} {"MFU":>6}')
  print(header)
  print('-' * len(header))
  sys.stdout.flush()
  results = {}
  for seq, step, packing, attention, remat in itertools.product(
      seqs, split(args.step), packings, split(args.attention), split(args.remat)):
    rows = max(2, args.tokens // seq // 2 * 2)
    lead = f'{seq:>4} {step:<6} {packing:<8} {attention:<9} {remat:<5} {rows:>5}'
    try:
      r = run_row(preset, step, seq, rows, attention, remat, args.dtype, args.warmup, args.steps,
                  args.scan, packed=packing == 'packed')
    except Exception as e:  # pylint: disable=broad-except  (OOM, cuDNN refusing a shape: a row)
      msg = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
      print(f'{lead} failed: {msg}')
      sys.stdout.flush()
      continue
    results[(seq, step, packing, attention, remat)] = r
    sec = r['seconds']
    mfu = f'{100 * r["flops"] / sec / peak:5.1f}%' if peak else '   n/a'
    print(f'{lead} {r["pairs"]:>5} {1e3 * sec:>9.1f} {r["tokens"] / sec:>12,.0f} '
          f'{r["tokens"] / r["positions"]:>5.2f} {r["flops"] / 1e12:>13.2f} '
          f'{r["xla_flops"] / 1e12:>11.2f} {mfu:>6}')
    sys.stdout.flush()
  print('\nuseful tok/s counts non-pad mono + [x; y] tokens (as the training loop logs them); '
        'MFU counts the model FLOPs of every pass (amber_jax.training.flops), not remat '
        'recomputation.')
  for line in summary(results, peak):
    print(line)


if __name__ == '__main__':
  main()
