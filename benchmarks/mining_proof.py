"""Mining with hidden alignment: precision, recall and F1 of `amber-jax mine` against the truth.

    python -m benchmarks.mining_proof prepare --corpus DIR --languages de,fr --out SETS
    python -m benchmarks.mining_proof evaluate MODEL --sets SETS [--json FILE]
    python -m benchmarks.mining_proof score --sets SETS --mined MINED_DIR

`prepare` turns each language's pairs into a BUCC-like task (`mining.mining_task`: half of the
pairs kept whole, the other half split into English sentences without their translation and
translations without their English, both sides shuffled): SETS/test/<xx>/{en.txt, xx.txt,
gold.tsv} from the train split, SETS/dev/<xx>/... from the validation split (for the Django
corpus: the held-out apps). gold.tsv holds the hidden `english<TAB>translation` pairs.

`evaluate` mines every set with the model (faiss kNN + ratio margin, `eval/mine.py`, its
defaults) and with the char 3-gram margin miner (`mine.char_ngram_candidates`). Each miner's
threshold is the one that maximises its mean F1 over the dev sets' languages; the table gives
P/R/F1 on the test sets at that threshold, and the best F1 any threshold would give (BUCC's
oracle). `score` gives P/R/F1 of the pairs.tsv that `amber-jax mine` wrote into MINED_DIR/<xx>/.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from amber_jax.corpora import layout
from amber_jax.eval import mine, mining, retrieval
from amber_jax.export import runs


def prepare(corpus: str, langs: list[str], out: str, seed: int = 0) -> None:
  for part, split in (('test', 'train'), ('dev', 'validation')):
    pairs = layout.read_pairs(corpus, split, langs)
    for lang in langs:
      sources, targets, gold = mining.mining_task(retrieval.unique_pairs(pairs[lang]), seed=seed)
      folder = pathlib.Path(out) / part / lang
      layout.write_lines(folder / 'en.txt', sources)
      layout.write_lines(folder / f'{lang}.txt', targets)
      layout.write_lines(folder / 'gold.tsv', sorted(f'{sources[i]}\t{targets[j]}'
                                                     for i, j in gold))
      print(f'{part} {lang}: {len(sources)} English, {len(targets)} {lang}, {len(gold)} hidden '
            f'pairs -> {folder}')


def load_set(folder: pathlib.Path) -> tuple[list[str], list[str], set[tuple[int, int]]]:
  """(English sentences, translations, gold index pairs) of one prepared set."""
  lang = folder.name
  sources = mine.read_sentences(folder / 'en.txt')
  targets = mine.read_sentences(folder / f'{lang}.txt')
  at_s, at_t = {s: i for i, s in enumerate(sources)}, {t: j for j, t in enumerate(targets)}
  gold = set()
  for line in (folder / 'gold.tsv').read_text(encoding='utf-8').splitlines():
    s, t = line.split('\t')
    gold.add((at_s[s], at_t[t]))
  return sources, targets, gold


def prf_at(found, gold, threshold: float) -> tuple[float, float, float]:
  return mining.precision_recall_f1([c for c in found if c[2] >= threshold], gold)


def choose_threshold(per_lang: dict[str, tuple[list, set]]) -> tuple[float, float]:
  """The threshold (one of the candidates' scores) maximising the mean F1 over languages."""
  best = (-1.0, float('inf'))
  for t in sorted({c[2] for found, _ in per_lang.values() for c in found}):
    f1 = float(np.mean([prf_at(found, gold, t)[2] for found, gold in per_lang.values()]))
    if f1 > best[0]:
      best = (f1, t)
  return best[1], best[0]


def _miners(model: str):
  embed = runs.embedder_for(model)

  def model_miner(sources, targets):
    x, y = embed(sources)[-1], embed(targets)[-1]
    return mine.margin_candidates(x, y)

  return {'model': model_miner, 'char3': mine.char_ngram_candidates}


def evaluate(model: str, sets: str) -> dict:
  root = pathlib.Path(sets)
  miners = _miners(model)
  result = {}
  for name, miner in miners.items():
    found = {part: {} for part in ('dev', 'test')}
    for part in found:
      for folder in sorted((root / part).iterdir()):
        sources, targets, gold = load_set(folder)
        found[part][folder.name] = (miner(sources, targets), gold)
    t, dev_f1 = choose_threshold(found['dev'])
    rows = {}
    for lang, (cands, gold) in found['test'].items():
      p, r, f1 = prf_at(cands, gold, t)
      rows[lang] = {'p': p, 'r': r, 'f1': f1, 'best_f1': mining.best_threshold(cands, gold)[1][2],
                    'gold': len(gold)}
    result[name] = {'threshold': t, 'dev_mean_f1': dev_f1, 'languages': rows}
  return result


def format_table(result: dict) -> str:
  names = list(result)
  langs = sorted(result[names[0]]['languages'])
  head = ''.join(f'{n + " P/R/F1 (best F1)":>32s}' for n in names)
  lines = [f'{"lang":9s}{"gold":>5s}{head}']
  for lang in langs + ['mean']:
    cells = ''
    for n in names:
      rows = result[n]['languages']
      m = ({k: float(np.mean([rows[x][k] for x in langs])) for k in ('p', 'r', 'f1', 'best_f1')}
           if lang == 'mean' else rows[lang])
      cells += f'{m["p"]:.3f}/{m["r"]:.3f}/{m["f1"]:.3f} ({m["best_f1"]:.3f})'.rjust(32)
    gold = sum(result[names[0]]['languages'][x]['gold'] for x in langs) if lang == 'mean' else \
        result[names[0]]['languages'][lang]['gold']
    lines.append(f'{lang:9s}{gold:5d}{cells}')
  lines.append('thresholds (chosen on the dev sets): ' + ', '.join(
      f'{n} {result[n]["threshold"]:.4f} (dev mean F1 {result[n]["dev_mean_f1"]:.3f})'
      for n in names))
  return '\n'.join(lines)


def score(sets: str, mined: str) -> dict:
  """P/R/F1 of MINED/<xx>/pairs.tsv against SETS/test/<xx>/gold.tsv."""
  rows = {}
  for folder in sorted((pathlib.Path(sets) / 'test').iterdir()):
    sources, targets, gold = load_set(folder)
    at_s, at_t = {s: i for i, s in enumerate(sources)}, {t: j for j, t in enumerate(targets)}
    text = (pathlib.Path(mined) / folder.name / 'pairs.tsv').read_text(encoding='utf-8')
    found = [(at_s[s], at_t[t]) for _, s, t in (line.split('\t') for line in text.splitlines())]
    p, r, f1 = mining.precision_recall_f1(found, gold)
    rows[folder.name] = {'mined': len(found), 'gold': len(gold), 'p': p, 'r': r, 'f1': f1}
    print(f'{folder.name:9s} mined {len(found):4d} gold {len(gold):4d}  P {p:.3f} R {r:.3f} '
          f'F1 {f1:.3f}')
  mean = {k: float(np.mean([v[k] for v in rows.values()])) for k in ('p', 'r', 'f1')}
  print(f'{"mean":9s} {"":19s}  P {mean["p"]:.3f} R {mean["r"]:.3f} F1 {mean["f1"]:.3f}')
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('command', choices=['prepare', 'evaluate', 'score'])
  p.add_argument('model', nargs='?', default='')
  p.add_argument('--corpus', default='')
  p.add_argument('--languages', default='')
  p.add_argument('--out', default='')
  p.add_argument('--sets', default='')
  p.add_argument('--mined', default='')
  p.add_argument('--json', default='')
  args = p.parse_args(argv)
  if args.command == 'prepare':
    prepare(args.corpus, args.languages.split(','), args.out)
  elif args.command == 'evaluate':
    result = evaluate(args.model, args.sets)
    print(format_table(result))
    if args.json:
      pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + '\n')
  else:
    score(args.sets, args.mined)


if __name__ == '__main__':
  main()
