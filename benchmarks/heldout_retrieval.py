"""Held-out retrieval of several runs side by side, against the char 3-gram baseline.

    python -m benchmarks.heldout_retrieval RUN [RUN ...] [--corpus DIR] [--min-pairs 30]

RUN is a run folder or an exported HF folder (NAME=PATH names it). The pairs are the corpus's
validation split: for the Django corpus, the held-out apps (`django_po.HELDOUT_APPS`), never seen
in training. Every figure is the mean over languages of en->xx and xx->en nearest-neighbour
accuracy at the last layer, with a 95% paired bootstrap interval over the pairs (the same
resampled pairs for every row), and its difference from the first run and from the baseline.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from amber_jax import paths
from amber_jax.corpora import layout
from amber_jax.eval import retrieval
from amber_jax.experiments import statistics
from amber_jax.export import runs


def _hits(path: str, pairs) -> dict[str, np.ndarray]:
  """{lang: bool [2, n]} at the last layer."""
  hits = retrieval.retrieval_hits(runs.embedder_for(path), pairs)
  return {lang: h[-1] for lang, h in hits.items()}


def _replicates(hits: dict[str, np.ndarray], weights: dict[str, np.ndarray]) -> np.ndarray:
  """The mean accuracy (both directions, languages averaged) under each bootstrap resample: [B]."""
  return np.mean([np.einsum('dn,bn->b', h.astype(np.float64), weights[lang])
                  / (2 * h.shape[1]) for lang, h in hits.items()], axis=0)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('runs', nargs='+', help='run or HF folders, optionally NAME=PATH')
  p.add_argument('--corpus', default='', help='corpus folder (default: <cache>/corpora/django)')
  p.add_argument('--min-pairs', type=int, default=30,
                 help='languages with fewer pairs are left out')
  p.add_argument('--replicates', type=int, default=1000)
  p.add_argument('--json', default='', help='also write the figures here')
  args = p.parse_args(argv)
  corpus = args.corpus or str(paths.corpus_dir('django'))
  pairs = {lang: retrieval.unique_pairs(p)
           for lang, p in layout.read_pairs(corpus, 'validation').items()}
  pairs = {lang: p for lang, p in sorted(pairs.items()) if len(p) >= args.min_pairs}
  weights = {lang: statistics.bootstrap_weights(len(p), args.replicates, seed=i)
             for i, (lang, p) in enumerate(pairs.items())}
  rows = {'char 3-gram': {k: h[0] for k, h in retrieval.char_ngram_hits(pairs, 3).items()}}
  for spec in args.runs:
    name, _, path = spec.rpartition('=')
    rows[name or path] = _hits(path, pairs)
  reps = {name: _replicates(h, weights) for name, h in rows.items()}
  first = list(rows)[1]
  print(f'{len(pairs)} languages, {np.mean([len(p) for p in pairs.values()]):.0f} pairs each on '
        f'average (validation split of {corpus}); last layer, mean of en->xx and xx->en; '
        f'95% paired bootstrap intervals over the pairs ({args.replicates} replicates)')
  print(f'{"run":28s}{"en->xx":>8s}{"xx->en":>8s}{"mean [95%]":>22s}{"vs " + first[:14]:>26s}'
        f'{"vs char 3-gram":>26s}')
  means = {name: np.mean([h.mean() for h in hits.values()]) for name, hits in rows.items()}
  out = {}
  for name, hits in rows.items():
    fwd, bwd = np.mean([h.mean(-1) for h in hits.values()], axis=0)
    ci = statistics.interval(reps[name])
    out[name] = {'en->xx': fwd, 'xx->en': bwd, 'mean': means[name], 'ci': ci}
    cells = []
    for key, other in (('vs_first', first), ('vs_char_3gram', 'char 3-gram')):
      diff = [means[name] - means[other], *statistics.interval(reps[name] - reps[other])]
      out[name][key] = diff
      cells.append(f'{diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}]')
    print(f'{name[:28]:28s}{fwd:8.3f}{bwd:8.3f}'
          f'{f"{means[name]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]":>22s}{cells[0]:>26s}{cells[1]:>26s}')
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump({'corpus': corpus, 'languages': list(pairs), 'rows': out}, f, indent=2,
                default=float)
  return out


if __name__ == '__main__':
  main()
