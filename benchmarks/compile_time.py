"""Compile time of the `base` train step (lower + XLA compile), default path vs model options.

  python benchmarks/compile_time.py                  (1 CPU device)
  python benchmarks/compile_time.py --devices 8      (fake CPU devices, the config's data mesh)

Each row builds the real jitted step (`amber_jax.training.aot.compile_train_step`) from shapes only and
times `jit(...).lower(...)` and `.compile()`. Figures depend heavily on the machine and its load;
compare rows of one run, not runs. Rows with scan_layers compile one layer body inside a
`lax.scan` instead of 12 unrolled copies. --mono/--pairs shrink the global batch (the graph, and
so most of the compile work, does not depend on it) for a quicker run on a busy machine.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from amber_jax.training import aot  # pylint: disable=wrong-import-position

# Unrolled layers without remat is the reference path ('default' below; `base` itself runs
# scan_layers + remat=dots, the 'scan + dots' row).
REF = dict(scan_layers=False, remat='none')
VARIANTS = (
    ('default', REF),
    ('remat=dots', dict(REF, remat='dots')),
    ('remat=full', dict(REF, remat='full')),
    ('attention=auto', dict(REF, attention='auto')),
    ('bf16 + auto + dots', dict(REF, dtype='bfloat16', attention='auto', remat='dots')),
    ('scan + dots', dict(scan_layers=True, remat='dots')),
    ('scan_layers', dict(REF, scan_layers=True)),
    ('scan + bf16 auto dots', dict(scan_layers=True, dtype='bfloat16', attention='auto',
                                   remat='dots')),
)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--devices', type=int, default=1, help='host CPU devices (data mesh over them)')
  p.add_argument('--only', default='', help='comma-separated variant labels (default: all)')
  p.add_argument('--mono', type=int, default=0, help='global mono rows (default: base)')
  p.add_argument('--pairs', type=int, default=0, help='global pairs (default: base)')
  args = p.parse_args(argv)
  aot.use_cpu_devices(args.devices)
  import jax  # pylint: disable=import-outside-toplevel
  from configs import base  # pylint: disable=import-outside-toplevel

  def config():
    cfg = base.get_config()
    with cfg.unlocked():
      cfg.workdir = '/tmp/amber-bench'
      cfg.data.mono_batch_size = args.mono or cfg.data.mono_batch_size
      cfg.data.parallel_batch_size = args.pairs or cfg.data.parallel_batch_size
    return cfg

  cfg0 = config()
  print(f'base train step: {cfg0.data.mono_batch_size} mono x {cfg0.data.mono_length} + '
        f'{cfg0.data.parallel_batch_size} pairs x 2 x {cfg0.data.sentence_length}, all four '
        f'objectives; {args.devices} x cpu, jax {jax.__version__}\n')
  header = f'{"variant":<22} {"lower s":>8} {"compile s":>10} {"total s":>8}'
  print(header)
  print('-' * len(header))
  sys.stdout.flush()
  for label, model in VARIANTS:
    if args.only and label not in args.only.split(','):
      continue
    cfg = config()
    with cfg.unlocked():
      cfg.model.update(model)
    mesh = aot.topology_mesh(cfg, f'cpu:{args.devices}')
    r, _ = aot.compile_train_step(cfg, mesh, f'cpu:{args.devices}')
    print(f'{label:<22} {r.lower_s:>8.1f} {r.compile_s:>10.1f} {r.lower_s + r.compile_s:>8.1f}')
    sys.stdout.flush()


if __name__ == '__main__':
  main()
