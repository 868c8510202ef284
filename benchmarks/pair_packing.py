"""Packed translation pairs against one pair per row, on real corpora, side by side in one run.

  python benchmarks/pair_packing.py [--steps 5] [--batches 40] [--corpora django,manpages]

For each corpus (Django catalogs at sentence_length=64; the Debian man-page translations at 128,
when built: `amber-jax data build manpages`), batches come from the real input pipeline
(`amber_jax.data.pipeline`, the live seqio path, the corpus's own vocabulary), once with
config.data.pair_packing=False and once with True, the same parallel_batch_size (rows) and
sentence length either way:
  1. the padding share of the rows each parallel pass runs on (TLM and WA: pair_ids/swap_ids;
     SA: src_ids + tgt_ids, or packed sent_ids) over `--batches` batches, and the pairs per step;
  2. on the Django corpus, the full AMBER train step (MLM on packed mono rows + TLM + SA + WA) of
     the `tiny` preset (the demo's model, no dropout) on those batches: median ms per step, and
     non-pad tokens per second (mono + [x; y] tokens, as the training loop counts them). The two
     steps run in turns, one step each, so that drift of the machine hits both alike.
The run ends with `ratio (packed / unpacked useful tokens/s): X`; the goal is >= 1.8x on Django.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # pylint: disable=wrong-import-position

from amber_jax import paths  # pylint: disable=wrong-import-position
from amber_jax.data import pipeline  # pylint: disable=wrong-import-position
from amber_jax.training import metrics  # pylint: disable=wrong-import-position
from benchmarks import common  # pylint: disable=wrong-import-position
from configs import tiny  # pylint: disable=wrong-import-position

CORPORA = {'django': 64, 'manpages': 128}  # corpus -> sentence_length


def corpus_config(name: str, sentence_length: int, packed: bool, rows: int):
  """The tiny preset reading corpus `name` (its cache folders), pairs packed or not."""
  cfg = tiny.get_config()
  with cfg.unlocked():
    cfg.workdir = '/tmp/amber-bench'
    cfg.data.update(task_prefix=name, corpus_dir=str(paths.corpus_dir(name)),
                    vocab_path=str(paths.vocab_path(name)), sentence_length=sentence_length,
                    mono_length=2 * sentence_length, parallel_batch_size=rows,
                    mono_batch_size=rows // 2, packing=True, pair_packing=packed)
    cfg.model.update(dropout_rate=0.0, attention_dropout_rate=0.0,
                     max_position_embeddings=max(128, 2 * sentence_length))
  return cfg


def ensure_vocabulary(name: str) -> None:
  """The man-page corpus has no vocabulary of its own until one is trained (8k, ~1 min)."""
  if not paths.vocab_path(name).exists():
    from amber_jax.corpora import vocabulary  # pylint: disable=import-outside-toplevel
    vocabulary.train_corpus_vocabulary(paths.corpus_dir(name), paths.vocab_path(name),
                                       vocab_size=8000, seed=0)


def padding(batches: list[dict]) -> dict[str, float]:
  """Padding share of the rows of each parallel pass, and pairs per step."""
  def share(keys):
    total = sum(b[k].size for b in batches for k in keys)
    return 1 - sum(np.count_nonzero(b[k]) for b in batches for k in keys) / total

  sa = ('sent_ids',) if 'sent_ids' in batches[0] else ('src_ids', 'tgt_ids')
  return {'tlm_wa': share(('pair_ids', 'swap_ids')), 'sa': share(sa),
          'pairs': float(np.mean([common.count_pairs(b) for b in batches]))}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--corpora', default='django,manpages')
  p.add_argument('--rows', type=int, default=32, help='parallel rows per step (both layouts)')
  p.add_argument('--batches', type=int, default=40, help='batches for the padding shares')
  p.add_argument('--steps', type=int, default=5, help='timed steps per layout (median)')
  args = p.parse_args(argv)
  print(f'# pair_packing: {common.describe_machine()}; {args.rows} parallel rows per step in '
        f'both layouts, tiny preset (4 layers, 256 wide), fp32, no dropout')
  ratio = None
  for name in [c for c in args.corpora.split(',') if c]:
    length = CORPORA[name]
    if not (paths.corpus_dir(name) / 'manifest.json').exists():
      print(f'\n{name}: not built (amber-jax data build {name}); skipped')
      continue
    ensure_vocabulary(name)
    print(f'\n{name}, sentence_length={length} (pair rows {2 * length} tokens)')
    print(f'{"layout":<16}{"pairs/step":>11}{"pad TLM/WA":>11}{"pad SA":>8}')
    layouts = {}
    for packed in (False, True):
      cfg = corpus_config(name, length, packed, args.rows)
      it = pipeline.make_train_iterator(cfg.data, seed=0)
      got = [next(it) for _ in range(args.batches)]
      pad = padding(got)
      layouts[packed] = (cfg, got)
      print(f'{"packed" if packed else "one pair a row":<16}{pad["pairs"]:>11.1f}'
            f'{100 * pad["tlm_wa"]:>10.1f}%{100 * pad["sa"]:>7.1f}%')
    if name != 'django':
      continue
    steps = {packed: common.JaxStep(cfg) for packed, (cfg, _) in layouts.items()}
    times = {False: [], True: []}
    tokens = {packed: [metrics.count_tokens(b) for b in got]
              for packed, (_, got) in layouts.items()}
    for packed, step in steps.items():  # the first run of each compiled step, untimed
      step.batch = step_batch(step, layouts[packed][1][0])
      step.run()
    for r in range(args.steps):
      for packed in ((False, True) if r % 2 == 0 else (True, False)):
        step = steps[packed]
        step.batch = step_batch(step, layouts[packed][1][r % len(layouts[packed][1])])
        seconds, _ = common.median_seconds(step.run, 1, warmup=0)
        times[packed].append((seconds, tokens[packed][r % len(tokens[packed])]))
    print(f'\nfull AMBER step (MLM + TLM + SA + WA), median of {args.steps} steps each')
    print(f'{"layout":<16}{"ms/step":>9}{"non-pad tokens/step":>21}{"useful tokens/s":>17}')
    rate = {}
    for packed in (False, True):
      ms = np.median([t for t, _ in times[packed]]) * 1e3
      per_step = np.mean([n for _, n in times[packed]])
      rate[packed] = np.median([n / t for t, n in times[packed]])
      print(f'{"packed" if packed else "one pair a row":<16}{ms:>9.1f}{per_step:>21,.0f}'
            f'{rate[packed]:>17,.0f}')
    ratio = rate[True] / rate[False]
  if ratio is not None:
    print(f'\nratio (packed / unpacked useful tokens/s): {ratio:.2f} (goal >= 1.8 on Django)')


def step_batch(step, local: dict):
  """`local` (one process's batch) on the step's mesh."""
  from amber_jax.parallel import partitioning  # pylint: disable=import-outside-toplevel
  return partitioning.to_global(local, step.setup.mesh)


if __name__ == '__main__':
  main()
