"""The ablation's statistics: paired bootstrap intervals, means over seeds, the paper's claims.

95% intervals come from a paired bootstrap over the evaluation pairs (the same resampled pairs
for every model and seed), of each model's mean over seeds and of the differences between
consecutive models; the spread over seeds is reported too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def bootstrap_weights(n: int, replicates: int, seed: int) -> np.ndarray:
  """Resampling counts of n items: float [replicates, n] (each row sums to n)."""
  rng = np.random.default_rng(seed)
  return rng.multinomial(n, np.full(n, 1.0 / n), size=replicates).astype(np.float64)


def interval(values: np.ndarray) -> list[float]:
  """The 95% percentile interval of bootstrap replicates."""
  return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def summarize(results: dict, languages: Sequence[str], replicates: int, seed: int = 0) -> dict:
  """Means over seeds, best layers, bootstrap intervals and paired differences.

  Args:
    results: {preset: {seed: evaluate_run(...) output}}; every run evaluated on the same pairs.
    languages: the evaluation languages.
    replicates: bootstrap replicates (the same resampled pairs for every model and seed).

  Returns:
    A JSON-able dict: per preset 'retrieval' {'last', 'best'} (each {'mean', 'ci', 'seed_std',
    'by_language' {lang: [en->xx, xx->en]}, 'layer'}), 'by_layer' (mean accuracy per layer),
    'alignment' {'agreement', 'soft'} ({'mean', 'ci', 'seed_std'}), 'mlm_accuracy' ({'mean',
    'seed_std', 'per_seed'}); and 'differences' between consecutive presets.
  """
  presets = list(results)
  seeds = sorted(next(iter(results.values())))
  ret_w = {lang: bootstrap_weights(len(results[presets[0]][seeds[0]]['hits'][lang][0, 0]),
                                   replicates, seed + i) for i, lang in enumerate(languages)}
  aln_w = {lang: bootstrap_weights(len(results[presets[0]][seeds[0]]['align'][lang]['soft']),
                                   replicates, seed + 100 + i) for i, lang in enumerate(languages)}
  out, reps = {}, {}
  for preset in presets:
    runs = [results[preset][s] for s in seeds]
    # hits: [seeds, langs, layers + 1, 2, n] -> accuracies and bootstrap replicates
    acc = np.array([[r['hits'][l].mean(-1) for l in languages] for r in runs])  # [S, L, Ly, 2]
    by_layer = acc.mean(axis=(0, 1))  # [Ly, 2]
    best = int(np.argmax(by_layer.mean(1)))
    rep = np.array([[np.einsum('ydn,bn->byd', r['hits'][l].astype(np.float64), ret_w[l])
                     / ret_w[l].shape[1] for l in languages] for r in runs])  # [S, L, B, Ly, 2]
    rep = rep.mean(axis=(0, 1))  # [B, Ly, 2]
    entry = {'by_layer': by_layer.tolist(), 'retrieval': {}}
    for name, layer in (('last', acc.shape[2] - 1), ('best', best)):
      per_seed = acc[:, :, layer].mean(axis=(1, 2))
      entry['retrieval'][name] = {
          'layer': layer, 'mean': float(acc[:, :, layer].mean()),
          'ci': interval(rep[:, layer].mean(1)), 'seed_std': float(per_seed.std()),
          'per_seed': per_seed.tolist(),
          'by_language': {l: acc[:, i, layer].mean(0).tolist() for i, l in enumerate(languages)}}
      reps[(preset, f'retrieval_{name}')] = rep[:, layer].mean(1)
    entry['alignment'] = {}
    for metric in ('agreement', 'soft'):
      vals = np.array([[r['align'][l][metric].mean() for l in languages] for r in runs])
      rep_a = np.array([[aln_w[l] @ r['align'][l][metric] / aln_w[l].shape[1]
                         for l in languages] for r in runs]).mean(axis=(0, 1))  # [B]
      entry['alignment'][metric] = {'mean': float(vals.mean()), 'ci': interval(rep_a),
                                    'seed_std': float(vals.mean(1).std()),
                                    'by_language': dict(zip(languages, vals.mean(0).tolist()))}
      reps[(preset, f'alignment_{metric}')] = rep_a
    mlm = np.array([r['mlm_accuracy'] for r in runs])
    entry['mlm_accuracy'] = {'mean': float(mlm.mean()), 'seed_std': float(mlm.std()),
                             'per_seed': mlm.tolist()}
    out[preset] = entry
  diffs = {}
  for a, b in zip(presets, presets[1:]):
    for metric in ('retrieval_last', 'retrieval_best', 'alignment_agreement', 'alignment_soft'):
      d = reps[(b, metric)] - reps[(a, metric)]
      point = (_point(out[b], metric) - _point(out[a], metric))
      diffs.setdefault(f'{b} - {a}', {})[metric] = {'mean': point, 'ci': interval(d)}
    diffs[f'{b} - {a}']['mlm_accuracy'] = {
        'mean': out[b]['mlm_accuracy']['mean'] - out[a]['mlm_accuracy']['mean']}
  return {'presets': out, 'differences': diffs, 'seeds': seeds, 'languages': list(languages),
          'bootstrap_replicates': replicates}


def _point(entry: dict, metric: str) -> float:
  kind, name = metric.split('_', 1)
  return entry[kind][name]['mean']


def format_interval(x: dict) -> str:
  """`mean [low, high]` of a {'mean', 'ci'} entry, 3 decimals."""
  return f'{x["mean"]:.3f} [{x["ci"][0]:.3f}, {x["ci"][1]:.3f}]'


def format_difference(x: dict) -> str:
  """`+mean [+low, +high]` of a difference entry, signed, 3 decimals."""
  return f'{x["mean"]:+.3f} [{x["ci"][0]:+.3f}, {x["ci"][1]:+.3f}]'


def verdict(summary: dict) -> list[tuple[str, bool | None, str]]:
  """The paper's three claims checked on the summary: [(claim, held (None: not testable), how)]."""
  p, d = summary['presets'], summary['differences']
  checks = []

  def get(a, b, metric):
    return d.get(f'{b} - {a}', {}).get(metric)

  tlm = get('mlm', 'mlm_tlm', 'retrieval_best')
  if tlm:
    checks.append(('TLM helps retrieval (MLM+TLM > MLM, best layer)', tlm['ci'][0] > 0,
                   f'difference {format_difference(tlm)}'))
  sa = get('mlm_tlm_wa', 'mlm_tlm_wa_sa', 'retrieval_best')
  if sa and tlm:
    others = [abs(x['mean']) for x in (tlm, get('mlm_tlm', 'mlm_tlm_wa', 'retrieval_best')) if x]
    jump = sa['ci'][0] > 0 and sa['mean'] > max(others)
    checks.append(('SA makes retrieval jump (+SA is the largest step, best layer)', jump,
                   f'+SA {format_difference(sa)} vs the other steps '
                   f'{", ".join(f"{o:.3f}" for o in others)}'))
  wa = get('mlm_tlm', 'mlm_tlm_wa', 'alignment_agreement')
  if wa:
    checks.append(('WA helps alignment (MLM+TLM+WA > MLM+TLM, attention agreement)',
                   wa['ci'][0] > 0, f'difference {format_difference(wa)}'))
  del p
  return checks
