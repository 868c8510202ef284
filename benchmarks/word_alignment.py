"""Proxy word-alignment scores on held-out English-Spanish Bible books, for several aligners.

    python -m benchmarks.word_alignment [--cache DIR] [--pharaoh NAME=FILE ...] [--eflomal]
        [--json F] [--out DIR] [--train-limit 8000] [--rebuild]

The corpus (`amber_jax.corpora.bible`: WEB and RV1909 verses from Debian's SWORD packages; the
books `bible.HELDOUT_BOOKS` held out whole, 8,000 training verses) is built into DIR (default
`<cache>/corpora/bible-en-es`) or reused when it is there. The proxy gold
(`amber_jax.eval.proxy_gold`: unambiguous dictionary, number and name links) is written beside it
as `heldout.gold`. Rows:

- `diagonal`: word i -> round(i |y| / |x|);
- NAME: each `--pharaoh NAME=FILE`, one Pharaoh line per line of `heldout.txt` (e.g. from
  `amber-jax align RUN --pairs DIR/heldout.txt --out FILE`);
- `eflomal <symmetrization>` with `--eflomal`: eflomal (pip `eflomal`, via
  `amber_jax.data.teacher`) trained unsupervised on train + held-out pairs at once, scored on the
  held-out ones; its seconds are of the one run all four rows share.

Precision counts only predicted links on English words that have a gold link (see
`proxy_gold.score`): compare rows with each other, not with published AERs. Most gold links are
on frequent function words (`and`-`y`, `of`-`de`), so the table repeats the scores on the gold
links whose English word is not among the `FREQUENT` most frequent words of `train.txt`
(`content` columns).
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import time

import numpy as np

from amber_jax import paths
from amber_jax.corpora import bible
from amber_jax.data import aligned, teacher
from amber_jax.eval import align, proxy_gold
from amber_jax.experiments import statistics
from amber_jax.export import runs

CORPUS_NAME = 'bible-en-es'
EFLOMAL_SYMMETRIZATIONS = ('intersection', 'grow-diag-final-and', 'forward', 'reverse')
FREQUENT = 100
DEV_BOOK = 'Rom'  # the held-out book the guided vote's settings were chosen on (align.py)
HAND_GOLD = pathlib.Path(__file__).parent / 'data' / 'bible_manual_gold.tsv'


def content_gold(gold, heldout, train) -> list[proxy_gold.Links]:
  """The gold links whose English word is not among the `FREQUENT` most frequent of `train`."""
  counts = collections.Counter(w.lower() for src, _ in train for w in src)
  frequent = {w for w, _ in counts.most_common(FREQUENT)}
  return [{(i, j) for i, j in links if src[i].lower() not in frequent}
          for links, (src, _) in zip(gold, heldout)]


def corpus(out_dir: pathlib.Path, train_limit: int, rebuild: bool = False) -> dict:
  """The corpus manifest, building the corpus unless one with the same train_limit is there."""
  manifest_path = out_dir / 'manifest.json'
  if not rebuild and manifest_path.exists():
    manifest = json.loads(manifest_path.read_text(encoding='utf-8'))
    if (manifest.get('train_limit') == train_limit and (out_dir / 'heldout.txt').exists()
        and (out_dir / 'train.txt').exists()):
      return manifest
  return bible.build_bible_corpus(out_dir, train_limit=train_limit)


def eflomal_rows(train, heldout) -> tuple[dict[str, list[proxy_gold.Links]], list, float]:
  """{'eflomal <sym>': links of the held-out pairs}, their (forward, reverse) links, and the
  seconds eflomal took."""
  start = time.perf_counter()
  directions = teacher.pair_directions(heldout, learn_with=train)
  seconds = time.perf_counter() - start
  rows = {f'eflomal {sym}': [teacher.symmetrize(f, r, sym) for f, r in directions]
          for sym in EFLOMAL_SYMMETRIZATIONS}
  return rows, directions, seconds


def run_rows(run: str, heldout, directions) -> dict[str, list[proxy_gold.Links]]:
  """A training run's alignments of the held-out pairs, as `amber-jax align RUN` makes them:
  'attention' (the student alone) and, given the teacher's directions, 'guided'."""
  params, cfg, sp, config = runs.load_encoder(run)
  aligner = align.Aligner(params, cfg, sp, wa_mask=config.objectives.wa_mask)
  name = pathlib.Path(run).name
  rows = {f'{name} attention': aligner.align(heldout, 'attention')}
  if directions is not None:
    rows[f'{name} guided'] = aligner.align(heldout, 'guided', teacher_links=directions)
  return rows


def hand_aligned(rows, refs: list[str], path, baseline: str, replicates: int = 2000) -> dict:
  """AER on the hand-aligned verses (`ref<TAB>Pharaoh` lines; `i?j` possible), each row's 95%
  paired-bootstrap interval over verses, and its difference from `baseline`'s."""
  lines = pathlib.Path(path).read_text(encoding='utf-8').splitlines()
  where = {ref: k for k, ref in enumerate(refs)}
  index = [where[line.split('\t')[0]] for line in lines]
  gold = [align.parse_pharaoh(line.partition('\t')[2]) for line in lines]
  weights = statistics.bootstrap_weights(len(gold), replicates, seed=0)

  def counts(links):  # [verses, 4]: |A∩S|, |A∩P|, |A|, |S|
    return np.array([align.aer_counts(links[k], *g) for k, g in zip(index, gold)], float)

  def aer(c):  # c: [verses, 4] -> per replicate
    total = weights @ c
    return 1 - (total[:, 0] + total[:, 1]) / (total[:, 2] + total[:, 3])

  table = {}
  base = aer(counts(rows[baseline])) if baseline in rows else None
  for name, links in rows.items():
    c = counts(links)
    point = 1 - (c[:, 0].sum() + c[:, 1].sum()) / (c[:, 2].sum() + c[:, 3].sum())
    boot = aer(c)
    table[name] = {'aer': float(point), 'interval': statistics.interval(boot)}
    if base is not None and name != baseline:
      table[name]['minus_baseline'] = statistics.interval(boot - base)
  return {'verses': len(gold), 'baseline': baseline, 'rows': table}


def _fmt(value, spec='.3f') -> str:
  return '-' if value is None else format(value, spec)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--cache', default='',
                 help=f'corpus folder (default: <cache>/corpora/{CORPUS_NAME}); built if absent')
  p.add_argument('--train-limit', type=int, default=bible.TRAIN_LIMIT)
  p.add_argument('--rebuild', action='store_true', help='build the corpus even if it is there')
  p.add_argument('--pharaoh', action='append', default=[], metavar='NAME=FILE',
                 help='predicted links for heldout.txt, one Pharaoh line per pair')
  p.add_argument('--eflomal', action='store_true', help='also score eflomal (trained here)')
  p.add_argument('--run', action='append', default=[],
                 help="a training run (configs/align.py): its 'attention' rows and, with "
                 "--eflomal, 'guided' (the same eflomal sample as the teacher)")
  p.add_argument('--hand', default=str(HAND_GOLD),
                 help='hand-aligned verses, `ref<TAB>Pharaoh` lines (default: the 60 of '
                 'benchmarks/data)')
  p.add_argument('--out', default='', help='write the computed rows\' links here (Pharaoh)')
  p.add_argument('--json', default='', help='also write the figures here')
  args = p.parse_args(argv)

  out_dir = pathlib.Path(args.cache or paths.corpus_dir(CORPUS_NAME))
  start = time.perf_counter()
  manifest = corpus(out_dir, args.train_limit, args.rebuild)
  heldout = aligned.read_word_pairs(out_dir / 'heldout.txt')
  gold = proxy_gold.build_gold(heldout, bible.load_dictionary())
  proxy_gold.write_pharaoh(out_dir / 'heldout.gold', gold)
  setup_seconds = time.perf_counter() - start

  rows = {'diagonal': [proxy_gold.diagonal_links(len(s), len(t)) for s, t in heldout]}
  seconds = {'diagonal': 0.0}
  for spec in args.pharaoh:
    name, sep, path = spec.partition('=')
    name, path = (name, path) if sep else (pathlib.Path(spec).stem, spec)
    links = proxy_gold.read_pharaoh(path)
    if len(links) != len(heldout):
      raise SystemExit(f'{path} has {len(links)} lines but {out_dir / "heldout.txt"} has '
                       f'{len(heldout)} pairs: align exactly that file, one line per pair')
    rows[name], seconds[name] = links, None
  train = aligned.read_word_pairs(out_dir / 'train.txt')
  content = content_gold(gold, heldout, train)
  directions = None
  if args.eflomal:
    links, directions, took = eflomal_rows(train, heldout)
    rows.update(links)
    seconds.update({name: took for name in links})
  for run in args.run:
    start = time.perf_counter()
    links = run_rows(run, heldout, directions)
    rows.update(links)
    seconds.update({name: (time.perf_counter() - start) / len(links) for name in links})
  if args.out:
    pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
    for name, links in rows.items():
      proxy_gold.write_pharaoh(pathlib.Path(args.out) / f'{name.replace(" ", "_")}.pharaoh', links)

  src = [s for s, _ in heldout]
  scores = {name: proxy_gold.score(links, gold, src) for name, links in rows.items()}
  content_scores = {name: proxy_gold.score(links, content) for name, links in rows.items()}
  cover = scores['diagonal']
  counts = manifest['counts']
  print(f'{counts["heldout"]} held-out verse pairs ({", ".join(manifest["heldout_books"])}), '
        f'{counts["train"]} train pairs, in {out_dir}; corpus + gold {setup_seconds:.1f} s')
  print(f'proxy gold: {cover["gold"]} sure links, {cover["gold_per_verse"]:.2f} per verse, '
        f'{100 * cover["words_covered"]:.1f}% of English words covered; content: '
        f'{content_scores["diagonal"]["gold"]} links (English word not in the {FREQUENT} most '
        'frequent)')
  print(f'{"aligner":30s}{"P":>7s}{"R":>7s}{"AER":>7s}{"links":>7s}{"on gold":>8s}'
        f'{"content P":>10s}{"R":>7s}{"AER":>7s}{"s":>7s}')
  for name, result in scores.items():
    other = content_scores[name]
    print(f'{name[:30]:30s}{_fmt(result["precision"]):>7s}{_fmt(result["recall"]):>7s}'
          f'{_fmt(result["aer"]):>7s}{result["predicted"]:7d}{result["predicted_covered"]:8d}'
          f'{_fmt(other["precision"]):>10s}{_fmt(other["recall"]):>7s}{_fmt(other["aer"]):>7s}'
          f'{_fmt(seconds[name], ".1f"):>7s}')
  refs = (out_dir / 'heldout.refs').read_text(encoding='utf-8').split()
  test = [k for k, ref in enumerate(refs) if not ref.startswith(DEV_BOOK + '.')]
  test_scores = {name: proxy_gold.score([links[k] for k in test], [gold[k] for k in test])
                 for name, links in rows.items()}
  hand = hand_aligned(rows, refs, args.hand, 'eflomal grow-diag-final-and')
  print(f'\nproxy AER without {DEV_BOOK} (where the guided vote was tuned), and AER on '
        f'{hand["verses"]} hand-aligned verses (sure and possible links) with 95% bootstrap '
        f'intervals; last column: minus {hand["baseline"]}')
  print(f'{"aligner":30s}{"proxy":>7s}{"hand AER":>10s}{"interval":>17s}{"difference":>19s}')
  for name, row in hand['rows'].items():
    low, high = row['interval']
    diff = row.get('minus_baseline')
    diff = f'[{diff[0]:+.3f}, {diff[1]:+.3f}]' if diff else '-'
    print(f'{name[:30]:30s}{_fmt(test_scores[name]["aer"]):>7s}{row["aer"]:10.3f}'
          f'{f"[{low:.3f}, {high:.3f}]":>17s}{diff:>19s}')
  result = {'corpus': str(out_dir), 'manifest': manifest, 'rows': scores,
            'content_rows': content_scores, 'frequent': FREQUENT, 'seconds': seconds,
            'test_rows': test_scores, 'dev_book': DEV_BOOK, 'hand': hand}
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2, ensure_ascii=False)
  return result


if __name__ == '__main__':
  main()
