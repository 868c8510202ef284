"""Cost of the full AMBER step (TLM + SA + WA) against a TLM-only step on the same pairs.

Four forward passes are inherent (TLM, SA on x and y, two WA passes): the goal is <= 4.2x the
TLM-only step, in XLA FLOPs (cost_analysis) and in wall time.

  python benchmarks/objective_cost.py [--preset tiny] [--pairs 32] [--sentence-length 40]
"""

import argparse
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # pylint: disable=wrong-import-position


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--preset', default='tiny', choices=sorted(common.PRESETS))
  p.add_argument('--pairs', type=int, default=32)
  p.add_argument('--sentence-length', type=int, default=40)
  p.add_argument('--repeats', type=int, default=5)
  args = p.parse_args()
  variants = {
      'TLM only': dict(mlm_weight=0.0, tlm_weight=1.0, sa_weight=0.0, wa_weight=0.0),
      'TLM + SA': dict(mlm_weight=0.0, tlm_weight=1.0, sa_weight=1.0, wa_weight=0.0),
      'TLM + SA + WA (AMBER)': dict(mlm_weight=0.0, tlm_weight=1.0, sa_weight=1.0, wa_weight=1.0),
  }
  print(f'# objective_cost: {common.describe_machine()}; preset {args.preset}, {args.pairs} pairs '
        f'x {args.sentence_length} tokens per side')
  rows = {}
  for name, weights in variants.items():
    cfg = common.config(args.preset, mono=0, pairs=args.pairs,
                        sentence_length=args.sentence_length, **weights)
    step = common.JaxStep(cfg)
    seconds, _ = common.median_seconds(step.run, args.repeats)
    rows[name] = (step.flops(), seconds, step.compile_seconds)
  base_flops, base_s, _ = rows['TLM only']
  print(f'{"step":24s}{"GFLOP":>10s}{"x TLM":>8s}{"ms (median)":>13s}{"x TLM":>8s}{"compile s":>11s}')
  for name, (flops, seconds, compile_s) in rows.items():
    print(f'{name:24s}{flops / 1e9:10.2f}{flops / base_flops:8.2f}{seconds * 1e3:13.1f}'
          f'{seconds / base_s:8.2f}{compile_s:11.1f}')
  flops_ratio = rows['TLM + SA + WA (AMBER)'][0] / base_flops
  time_ratio = rows['TLM + SA + WA (AMBER)'][1] / base_s
  print(f'AMBER / TLM: {flops_ratio:.2f}x FLOPs, {time_ratio:.2f}x wall time (goal <= 4.2x)')


if __name__ == '__main__':
  main()
