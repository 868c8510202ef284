"""Per-device memory of the `base` train step under several meshes, from XLA's compiled analysis.

  python benchmarks/memory.py                   (8 fake CPU devices; sets them itself)
  python benchmarks/memory.py --mono 256 --pairs 256 --dtype bfloat16

Each row AOT-compiles the real jitted step (`amber_jax.training.aot.compile_train_step`) for one mesh over 8
host CPU devices and prints what one device holds: its shards of the parameters and of the Adam
state (exact, from the shardings), and XLA's buffer assignment: temporaries (activations kept
for the backward pass, gradients, scratch) and the estimated peak (arguments + outputs not
aliased + temporaries + code). CPU buffer assignment is a fair picture of the activation memory
but not of an accelerator's (layouts, fusion); nothing is executed, so no memory is allocated.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from amber_jax.training import aot  # pylint: disable=wrong-import-position

MIB = 2**20

# (label, mesh, model overrides)
# Unrolled layers without remat is the reference path; `base` itself runs scan + remat=dots.
REF = dict(scan_layers=False, remat='none')
ROWS = (
    ('data=8', dict(data=8, fsdp=1, tensor=1), REF),
    ('fsdp=8', dict(data=1, fsdp=8, tensor=1), REF),
    ('fsdp=4 x tensor=2', dict(data=1, fsdp=4, tensor=2), REF),
    ('fsdp=8 + remat=dots', dict(data=1, fsdp=8, tensor=1), dict(REF, remat='dots')),
    ('fsdp=8 + remat=full', dict(data=1, fsdp=8, tensor=1), dict(REF, remat='full')),
    ('fsdp=8 + scan', dict(data=1, fsdp=8, tensor=1), dict(REF, scan_layers=True)),
    ('fsdp=8 + scan + dots', dict(data=1, fsdp=8, tensor=1), dict(scan_layers=True, remat='dots')),
    ('fsdp=8 + scan + full', dict(data=1, fsdp=8, tensor=1), dict(scan_layers=True, remat='full')),
    ('fsdp=4 x tensor=2 + scan + dots', dict(data=1, fsdp=4, tensor=2),
     dict(scan_layers=True, remat='dots')),
)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--mono', type=int, default=None, help='global mono rows (default: base, 2048)')
  p.add_argument('--pairs', type=int, default=None, help='global pairs (default: base, 2048)')
  p.add_argument('--vocab', type=int, default=119_547,
                 help="vocabulary size (default: mBERT's 119,547; the model pads its rows to a "
                 'multiple of model.vocab_multiple=128, 119,552, which the tensor axis divides)')
  p.add_argument('--dtype', default='float32', help="compute dtype ('float32', 'bfloat16')")
  p.add_argument('--only', default='', help='comma-separated row labels to run (default: all)')
  args = p.parse_args(argv)
  aot.use_cpu_devices(8)
  import jax  # pylint: disable=import-outside-toplevel
  from configs import base  # pylint: disable=import-outside-toplevel

  rows = [r for r in ROWS if not args.only or r[0] in args.only.split(',')]
  cfg0 = base.get_config()
  mono = args.mono if args.mono is not None else cfg0.data.mono_batch_size
  pairs = args.pairs if args.pairs is not None else cfg0.data.parallel_batch_size
  print(f'base config: {cfg0.model.num_layers} layers x {cfg0.model.hidden_size}, vocab '
        f'{args.vocab:,} (base: {cfg0.model.vocab_size:,}); step = {mono} mono rows x {cfg0.data.mono_length} + {pairs} '
        f'pairs x 2 x {cfg0.data.sentence_length} (MLM+TLM+SA+WA), dtype {args.dtype}, '
        f'dropout {cfg0.model.dropout_rate}')
  print(f'{len(jax.devices())} x {jax.devices()[0].device_kind} (cpu), jax {jax.__version__}; '
        'MiB per device\n')
  header = (f'{"layout":<22} {"params":>9} {"adam":>9} {"args":>9} {"temps":>10} {"peak":>10} '
            f'{"compile s":>9}')
  print(header)
  print('-' * len(header))
  sys.stdout.flush()
  for label, mesh_shape, model in rows:
    cfg = base.get_config()
    with cfg.unlocked():
      cfg.workdir = '/tmp/amber-bench'
      cfg.mesh.update(mesh_shape)
      cfg.model.update(dtype=args.dtype, vocab_size=args.vocab, **model)
      cfg.data.update(mono_batch_size=mono, parallel_batch_size=pairs)
    t = time.perf_counter()
    mesh = aot.topology_mesh(cfg, 'cpu:8')
    r, _ = aot.compile_train_step(cfg, mesh, 'cpu:8')
    print(f'{label:<22} {r.params_bytes / MIB:>9,.1f} {r.opt_state_bytes / MIB:>9,.1f} '
          f'{r.argument_bytes / MIB:>9,.1f} {r.temp_bytes / MIB:>10,.1f} '
          f'{r.peak_bytes / MIB:>10,.1f} {time.perf_counter() - t:>9.1f}')
    sys.stdout.flush()
  print('\nparams/adam: this device\'s shards (exact); args: state + batch; temps: XLA temporaries '
        '(activations, gradients); peak: args + unaliased outputs + temps + code.')


if __name__ == '__main__':
  main()
