"""Save and restore of the `base` train state: a local folder vs a gs:// bucket, side by side.

  python benchmarks/checkpoint_storage.py            (8 fake CPU devices, fsdp=8; sets them itself)
  python benchmarks/checkpoint_storage.py --preset tiny --repeats 3

The bucket is the GCS emulator the tests use (fake-gcs-server on localhost, its objects on this
machine's disk), so the figures are what our code and the storage libraries cost over an HTTP
object store with no network in the way (gcsfs for the small files, tensorstore for the arrays),
not what a real bucket's bandwidth allows. Each figure is one `checkpoint.save` waited to the end
(orbax's async save, the fingerprints of every array, commit) or one `checkpoint.restore`
(structure check, read, fingerprint check), median of --repeats; the restored state is checked
bit-equal to the saved one.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'tests'))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from amber_jax.parallel import mesh as mesh_lib  # pylint: disable=wrong-import-position
from amber_jax.training import checkpoint, train_state  # pylint: disable=wrong-import-position
from benchmarks import common  # pylint: disable=wrong-import-position
import gcs_emulator  # pylint: disable=wrong-import-position


def _bytes(state) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state))


def _measure(where: str, state, abstract, repeats: int) -> tuple[float, float]:
  saves, restores = [], []
  for i in range(repeats):
    mgr = checkpoint.manager(f'{where}/{i}', keep=1)
    t, _ = common.median_seconds(lambda: (checkpoint.save(mgr, 1, state, {}, force=True),
                                          mgr.wait_until_finished()), repeats=1, warmup=0)
    saves.append(t)
    restored = []
    t, _ = common.median_seconds(
        lambda: restored.append(jax.block_until_ready(checkpoint.restore(mgr, 1, abstract)[0])),
        repeats=1, warmup=0)
    restores.append(t)
    mgr.close()
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored[0])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  return float(np.median(saves)), float(np.median(restores))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--preset', default='base', choices=sorted(common.PRESETS))
  p.add_argument('--repeats', type=int, default=2)
  args = p.parse_args()
  cfg = common.config(args.preset, mono=8, pairs=8)
  with cfg.unlocked():
    cfg.mesh.update(data=1, fsdp=len(jax.devices()), tensor=1)
  mesh = mesh_lib.build(cfg.mesh)
  s = train_state.setup(cfg, mesh)
  state = jax.block_until_ready(train_state.init_state(s, 0))
  abstract = checkpoint.abstract_like(state, s.state_shardings)
  print(f'{args.preset} train state: {_bytes(state) / 2**20:,.1f} MiB over {len(jax.devices())} '
        f'devices (fsdp={len(jax.devices())}); median of {args.repeats}')
  with tempfile.TemporaryDirectory(prefix='amber-ckpt-bench-') as tmp:
    emulator = gcs_emulator.start(pathlib.Path(tmp) / 'gcs')
    os.environ.update(emulator.env)
    try:
      _measure(f'{tmp}/warmup', state, abstract, 1)  # compiles the fingerprints: timed by neither
      rows = [('local folder', _measure(f'{tmp}/local', state, abstract, args.repeats)),
              ('gs:// (emulator)', _measure('gs://bkt/bench', state, abstract, args.repeats))]
    finally:
      emulator.stop()
  mib = _bytes(state) / 2**20
  print(f'{"where":18s} {"save s":>8s} {"MiB/s":>8s} {"restore s":>10s} {"MiB/s":>8s}')
  for name, (save, restore) in rows:
    print(f'{name:18s} {save:8.2f} {mib / save:8.0f} {restore:10.2f} {mib / restore:8.0f}')


if __name__ == '__main__':
  main()
