"""Mining at scale: faiss kNN + ratio margin (`eval/mine.py`) against the dense numpy path
(`eval/mining.py`), side by side in one run, on synthetic embeddings.

    python -m benchmarks.mining [--n 100000] [--dim 256] [--dense-n 20000]

Rows: faiss IVF and exact faiss at --n a side; exact faiss, IVF and numpy at --dense-n.

Each path runs in its own process, so that its peak resident memory (ru_maxrss) is its own: the
figure printed is that peak minus the resident memory once the embeddings are made ("RSS before":
the interpreter, numpy, faiss and the inputs, 2 * n * dim * 4 bytes). sentences/s = (n source +
n target sentences) / seconds of mining (search and margin; embedding is not timed). The
embeddings: n sources, and n targets of which half are a source plus noise (shuffled), half
unrelated; recall is the share of those planted pairs mined (intersection, threshold 1.06).

The dense path holds the n x n similarity (and its sorted copies): 4 * n^2 bytes each, 40 GB at
10^5; it runs at --dense-n (the largest that fits this machine), and its memory at n is
extrapolated from there (quadratic), said as such.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

THRESHOLD = 1.06


def embeddings(n: int, dim: int, seed: int = 0):
  """(x [n, dim], y [n, dim], planted {(i, j)}) float32."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, dim), dtype=np.float32)
  half = n // 2
  y = np.concatenate([x[:half] + 0.5 * rng.standard_normal((half, dim), dtype=np.float32),
                      rng.standard_normal((n - half, dim), dtype=np.float32)])
  perm = rng.permutation(n)
  where = np.argsort(perm)
  return x, y[perm], {(i, int(where[i])) for i in range(half)}


def _rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(path: str, n: int, dim: int) -> dict:
  """Runs one path in this process; returns its figures."""
  from amber_jax.eval import mine, mining  # pylint: disable=import-outside-toplevel
  x, y, planted = embeddings(n, dim)
  with open('/proc/self/status', encoding='ascii') as f:
    base = next(int(l.split()[1]) for l in f if l.startswith('VmRSS')) / 1024
  start = time.perf_counter()
  if path == 'numpy':
    found = mining.mine(x, y, k=4, mode='intersection', threshold=THRESHOLD)
  else:
    found = mine.mine(x, y, k=4, candidates=16, mode='intersection', threshold=THRESHOLD,
                      index=path.split('-')[1])
  seconds = time.perf_counter() - start
  hits = len({(i, j) for i, j, _ in found} & planted)
  return {'path': path, 'n': n, 'dim': dim, 'seconds': seconds,
          'sentences_per_s': 2 * n / seconds, 'peak_mb': _rss_mb() - base,
          'rss_before_mb': base, 'mined': len(found), 'recall': hits / len(planted),
          'precision': hits / max(len(found), 1)}


def run(path: str, n: int, dim: int) -> dict:
  out = subprocess.run([sys.executable, '-m', 'benchmarks.mining', '--child', path, '--n', str(n),
                        '--dim', str(dim)], capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(f'{path} at n={n} failed:\n{out.stderr[-2000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--n', type=int, default=100_000, help='sentences a side for faiss')
  p.add_argument('--dim', type=int, default=256, help='embedding width (the tiny model: 256)')
  p.add_argument('--dense-n', type=int, default=20_000, help='sentences a side for numpy')
  p.add_argument('--child', default='', help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    print(json.dumps(child(args.child, args.n, args.dim)))
    return
  rows = [run(path, n, args.dim) for n in dict.fromkeys([args.n, args.dense_n])
          for path in ('faiss-ivf', 'faiss-flat')] + [run('numpy', args.dense_n, args.dim)]
  print(f'{"path":12s}{"n a side":>10s}{"seconds":>9s}{"sent/s":>10s}{"peak MB":>9s}'
        f'{"RSS before":>11s}{"recall":>8s}{"precision":>10s}')
  for r in rows:
    print(f'{r["path"]:12s}{r["n"]:10,d}{r["seconds"]:9.1f}{r["sentences_per_s"]:10,.0f}'
          f'{r["peak_mb"]:9,.0f}{r["rss_before_mb"]:11,.0f}{r["recall"]:8.3f}'
          f'{r["precision"]:10.3f}')
  dense = rows[-1]
  scale = (args.n / dense['n']) ** 2
  print(f'numpy at n={args.n:,} (extrapolated, quadratic, not run): '
        f'~{dense["peak_mb"] * scale:,.0f} MB, ~{dense["seconds"] * scale:,.0f} s (one n x n '
        f'float32 matrix alone is {4 * args.n ** 2 / 2**20:,.0f} MB).')


if __name__ == '__main__':
  main()
