"""`amber-jax experiment ablation`: the paper's objective ablation on real parallel text.

Trains the four presets of configs/ablation.py (MLM, MLM+TLM, MLM+TLM+WA, MLM+TLM+WA+SA) with the
same budget and seeds on the man-page translations, evaluates each on validation pairs it never
saw, and writes a results page (markdown table, PNG, raw JSON):

  retrieval   en->xx and xx->en accuracy per language (cosine of mean-pooled states among the
              language's evaluation pairs), at the last layer and at the best layer (chosen per
              model on the mean over languages, directions and seeds);
  MLM         masked-token accuracy on validation monolingual text (fixed masks);
  alignment   symmetry of the WA attention passes (align.Aligner.attention) on validation pairs:
              'agreement' = |argmax links x->y  ∩  argmax links y->x| / min(|x|, |y|) (1: every
              word of the shorter side is a mutual best match), 'soft' = sum_ij A_x->y[i, j]
              A_y->x[j, i] / min(|x|, |y|) (1 - L_WA with heads averaged first).

Uncertainty: 95% intervals from a paired bootstrap over the evaluation pairs (the same resampled
pairs for every model and seed), of each model's mean over seeds and of the differences between
consecutive models; the spread over seeds is reported too.

Stage 1 (MLM only) is the same for the four presets, so it is trained once per seed and each
preset's stage 2 resumes from its checkpoint (bit-identical to training each preset from step 0:
same config for stage 1, same data stream, same keys). Finished runs are reused when their
config is unchanged, so an interrupted experiment continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import os
import pathlib
import platform
import shutil
import time
import types
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from amber_jax import config as config_lib
from amber_jax import paths
from amber_jax.training import stages as stage_lib
from amber_jax.training import loop
from amber_jax.data import inputs
from amber_jax.data import token_cache
from amber_jax.text import vocab
from amber_jax.eval import retrieval
from amber_jax.corpora import django_po
from amber_jax.core.model import CLS_ID, PAD_ID, SEP_ID, EncoderConfig
from amber_jax.core import objectives
from amber_jax.core.model import Encoder
from amber_jax.eval import align
from amber_jax.export import runs
from amber_jax.text import hf_tokenizer
from amber_jax.corpora import manpages
from amber_jax.data import mixtures

PRESETS = ('mlm', 'mlm_tlm', 'mlm_tlm_wa', 'mlm_tlm_wa_sa')


@dataclasses.dataclass
class Settings:
  """What one ablation run does.

  Attributes:
    stage1_steps, stage2_steps: the budget of each stage (the same for every preset).
    seeds: training seeds; every preset is trained once per seed.
    languages: languages paired with English (training and evaluation).
    out: the results page (markdown); the PNG goes to <out's folder>/results/, the JSON next to it.
    runs_dir: where the runs go ('' = <cache>/runs/ablation).
    eval_pairs: evaluation pairs per language (a seeded sample of the unique validation pairs).
    align_pairs: pairs per language for the alignment figures.
    mlm_sentences: validation sentences per language (English included) for MLM accuracy.
    bootstrap: bootstrap replicates.
    overrides: `a.b=VALUE` config overrides applied to every preset (e.g. model.num_layers=2).
    command: the command line, as written on the page.
    presets: the presets to train (default all four, in the paper's order).
    notes: markdown added to the page after the verdict (e.g. a discussion of the results).
  """

  stage1_steps: int = 250
  stage2_steps: int = 500
  seeds: Sequence[int] = (0, 1, 2)
  languages: Sequence[str] = ('de', 'es', 'fr', 'ja', 'pl', 'ru')
  out: str = 'docs/RESULTS.md'
  runs_dir: str = ''
  eval_pairs: int = 300
  align_pairs: int = 64
  mlm_sentences: int = 100
  bootstrap: int = 1000
  overrides: Sequence[str] = ()
  command: str = ''
  presets: Sequence[str] = PRESETS
  notes: str = ''


def preset_config(preset: str, settings: Settings, seed: int):
  """The locked config of one preset and seed with the experiment's budget and overrides."""
  c = config_lib.load_file(config_lib.find_file('ablation'), preset=preset,
                           stage1_steps=settings.stage1_steps, stage2_steps=settings.stage2_steps)
  with c.unlocked():
    c.preset = f'ablation_{preset}'
    c.seed = seed
    c.data.languages = list(settings.languages)
  for item in settings.overrides:
    name, sep, value = item.partition('=')
    if not sep:
      raise ValueError(f'override {item!r} needs a value: a.b=VALUE')
    config_lib.override(c, name, value)
  c.lock()
  return c


# ---- data: corpus, vocabulary, token cache ----

def prepare_data(config, print_fn=print) -> dict:
  """Builds what is missing (man-page corpus, SentencePiece, token cache); returns their paths.

  The config's corpus_dir/vocab_path ('' = the cache folder defaults) are filled in; the token
  cache goes to <cache>/tokens/<prefix>-<languages>-<vocab sha256[:8]>.
  """
  config_lib.resolve_paths(config)
  corpus = pathlib.Path(config.data.corpus_dir)
  if not (corpus / 'manifest.json').exists():
    if config.data.task_prefix != 'manpages':
      raise FileNotFoundError(f'No corpus at {corpus} (config.data.corpus_dir); build it first.')
    print_fn(f'Building the man-page corpus into {corpus} ...')
    manpages.build_manpages_corpus(corpus)
  vocab_path = pathlib.Path(config.data.vocab_path)
  if not vocab_path.exists():
    print_fn(f'Training SentencePiece ({config.model.vocab_size} pieces) into {vocab_path} ...')
    vocab.train_sentencepiece(corpus, vocab_path, vocab_size=config.model.vocab_size,
                              alpha=config.data.alpha, seed=0)
  digest = token_cache.vocab_fingerprint(vocab_path)[:8]
  cache = (pathlib.Path(config.data.cache_dir) if config.data.cache_dir else
           paths.cache_dir() / 'tokens' /
           f'{config.data.task_prefix}-{"-".join(config.data.languages)}-{digest}')
  if not (cache / 'cache.json').exists():
    print_fn(f'Tokenizing the training tasks once into {cache} ...')
    mixtures.write_cache(config.data, cache, print_fn=print_fn)
  return {'corpus_dir': str(corpus), 'vocab_path': str(vocab_path), 'cache_dir': str(cache)}


def _with_data(config, data_paths: dict, workdir: pathlib.Path):
  with config.unlocked():
    config.data.update(data_paths)
    config.workdir = str(workdir)
  return config


def _latest_step(workdir: pathlib.Path) -> int | None:
  folder = workdir / 'checkpoints'
  steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.exists() else []
  return max(steps) if steps else None


def _same_config(workdir: pathlib.Path, config) -> bool:
  path = workdir / 'config.json'
  return path.exists() and json.loads(path.read_text()) == json.loads(config.to_json_best_effort())


# ---- evaluation ----

def evaluation_pairs(corpus_dir, languages, count: int, seed: int = 0) -> dict[str, list]:
  """A seeded sample of `count` unique validation pairs per language: {lang: [(en, xx)]}."""
  pairs = django_po.read_pairs(corpus_dir, 'validation')
  result = {}
  for lang in languages:
    unique = retrieval.unique_pairs(pairs.get(lang, []))
    if not unique:
      raise ValueError(f'No validation pair for language {lang!r} in {corpus_dir}.')
    order = np.random.default_rng([seed, len(unique)]).permutation(len(unique))[:count]
    result[lang] = [unique[i] for i in sorted(order)]
  return result


def validation_texts(corpus_dir, languages, count: int, seed: int = 0) -> dict[str, list[str]]:
  """A seeded sample of `count` validation sentences per language, English included."""
  mono = vocab.read_mono_split(corpus_dir, 'validation')
  result = {}
  for lang in ['en'] + [l for l in languages if l != 'en']:
    texts = mono.get(lang, [])
    if texts:
      order = np.random.default_rng([seed, len(texts)]).permutation(len(texts))[:count]
      result[lang] = [texts[i] for i in sorted(order)]
  return result


def retrieval_hits(params, mcfg, sp, pairs) -> dict[str, np.ndarray]:
  """`retrieval.retrieval_hits` of this model: {lang: bool [layers + 1, 2 (en->xx, xx->en), n]}."""
  return retrieval.retrieval_hits(retrieval.jax_embedder(params, mcfg, sp), pairs)


def mlm_accuracy(params, config, sp, texts: dict[str, list[str]], batch_size: int = 32) -> float:
  """Masked-token accuracy on validation text: rows of config.data.mono_length, fixed masks
  (seed 0), no dropout; the mean over all masked tokens."""
  length = config.data.mono_length
  rows = [[CLS_ID] + ids[:length - 2] + [SEP_ID]
          for lang in sorted(texts) for ids in sp.encode(texts[lang])]
  accuracy = _mlm_accuracy_fn(EncoderConfig.from_config(config.model),
                              float(config.objectives.mask_rate))
  correct = total = 0.0
  for n, start in enumerate(range(0, len(rows), batch_size)):
    chunk = rows[start:start + batch_size]
    ids = np.full((batch_size, length), PAD_ID, np.int32)
    for r, row in enumerate(chunk):
      ids[r, :len(row)] = row
    weight = float(np.sum(ids > SEP_ID))  # ~ masked tokens are proportional to real tokens
    correct += float(accuracy(params, ids, jax.random.key(n))) * weight
    total += weight
  return correct / max(total, 1e-9)


@functools.lru_cache(maxsize=4)
def _mlm_accuracy_fn(mcfg, mask_rate: float):
  """One jitted (params, ids [b, L], key) -> MLM accuracy per model shape (compiled once)."""
  model = Encoder(mcfg)
  ocfg = types.SimpleNamespace(mlm_weight=1.0, mask_rate=mask_rate)

  @jax.jit
  def accuracy(params, ids, key):
    batch = {'mono_ids': ids, 'mono_segments': jnp.zeros_like(ids)}
    _, metrics = objectives.amber_losses(model, params, batch, key, ocfg, deterministic=True)
    return metrics['mlm_accuracy']

  return accuracy


def alignment_symmetry(params, mcfg, sp, pairs, wa_mask: str, max_pieces: int = 32
                       ) -> dict[str, dict[str, np.ndarray]]:
  """Per language, per pair: {'agreement': float [n], 'soft': float [n]} (module docstring)."""
  aligner = align.Aligner(params, mcfg, sp, wa_mask=wa_mask, max_pieces=max_pieces)
  result = {}
  for lang, p in pairs.items():
    src = [ids[:max_pieces] for ids in sp.encode([s for s, _ in p])]
    tgt = [ids[:max_pieces] for ids in sp.encode([t for _, t in p])]
    keep = [i for i in range(len(p)) if src[i] and tgt[i]]
    agreement, soft = [], []
    for start in range(0, len(keep), 32):
      chunk = keep[start:start + 32]
      for x2y, y2x in aligner.attention([src[i] for i in chunk], [tgt[i] for i in chunk]):
        x2y = x2y / np.maximum(x2y.sum(1, keepdims=True), 1e-12)  # [n_x, n_y]
        y2x = y2x / np.maximum(y2x.sum(1, keepdims=True), 1e-12)  # [n_y, n_x]
        shorter = min(x2y.shape)
        best_y = x2y.argmax(1)                           # [n_x]
        mutual = y2x[best_y].argmax(1) == np.arange(len(best_y))
        agreement.append(mutual.sum() / shorter)
        soft.append(float(np.sum(x2y * y2x.T)) / shorter)
    result[lang] = {'agreement': np.array(agreement), 'soft': np.array(soft)}
  return result


def evaluate_run(workdir, config, sp, pairs, align_pairs, texts) -> dict:
  """All figures of one trained run: per-pair arrays (for the bootstrap) and MLM accuracy."""
  params, mcfg, _, _ = runs.load_params(workdir)
  return {'hits': retrieval_hits(params, mcfg, sp, pairs),
          'align': alignment_symmetry(params, mcfg, sp, align_pairs, config.objectives.wa_mask),
          'mlm_accuracy': mlm_accuracy(params, config, sp, texts)}


# ---- statistics ----

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


# ---- the page ----

def _ci(x: dict) -> str:
  return f'{x["mean"]:.3f} [{x["ci"][0]:.3f}, {x["ci"][1]:.3f}]'


def _diff(x: dict) -> str:
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
                   f'difference {_diff(tlm)}'))
  sa = get('mlm_tlm_wa', 'mlm_tlm_wa_sa', 'retrieval_best')
  if sa and tlm:
    others = [abs(x['mean']) for x in (tlm, get('mlm_tlm', 'mlm_tlm_wa', 'retrieval_best')) if x]
    jump = sa['ci'][0] > 0 and sa['mean'] > max(others)
    checks.append(('SA makes retrieval jump (+SA is the largest step, best layer)', jump,
                   f'+SA {_diff(sa)} vs the other steps {", ".join(f"{o:.3f}" for o in others)}'))
  wa = get('mlm_tlm', 'mlm_tlm_wa', 'alignment_agreement')
  if wa:
    checks.append(('WA helps alignment (MLM+TLM+WA > MLM+TLM, attention agreement)',
                   wa['ci'][0] > 0, f'difference {_diff(wa)}'))
  del p
  return checks


def write_page(summary: dict, meta: dict, out_md: pathlib.Path, png: pathlib.Path) -> None:
  """docs/RESULTS.md: the table, the plot, the differences, the verdict, how to re-run."""
  from configs import ablation  # pylint: disable=import-outside-toplevel
  p = summary['presets']
  langs = summary['languages']
  label = lambda k: ablation.LABELS.get(k, k)
  lines = [
      '# Objective ablation on the man-page translations',
      '',
      f'Generated by `amber-jax experiment ablation` on {meta["date"]} ({meta["machine"]}); '
      f'{len(summary["seeds"])} seed{"s" * (len(summary["seeds"]) > 1)} '
      f'({", ".join(map(str, summary["seeds"]))}) per objective set, {meta["eval_pairs"]} held-out validation pairs per language '
      f'({", ".join(langs)}, each paired with English). 95% intervals: paired bootstrap over the '
      f'evaluation pairs ({summary["bootstrap_replicates"]} replicates) of the mean over seeds; '
      '"seed sd" is the spread of that mean across seeds.',
      '',
      '## Results',
      '',
      '| objectives | retrieval, last layer | retrieval, best layer (layer) | seed sd (best) '
      '| attention agreement | soft symmetry | MLM accuracy |',
      '|---|---|---|---|---|---|---|',
  ]
  for k, e in p.items():
    r = e['retrieval']
    lines.append(
        f'| {label(k)} | {_ci(r["last"])} | {_ci(r["best"])} ({r["best"]["layer"]}) | '
        f'{r["best"]["seed_std"]:.3f} | {_ci(e["alignment"]["agreement"])} | '
        f'{_ci(e["alignment"]["soft"])} | {e["mlm_accuracy"]["mean"]:.3f} '
        f'± {e["mlm_accuracy"]["seed_std"]:.3f} |')
  lines += [
      '',
      'Retrieval: accuracy of the nearest neighbour (cosine of mean-pooled states) among the '
      'language\'s evaluation pairs, mean of en->xx and xx->en over languages and seeds. Layer 0 '
      'is the embeddings; the best layer is chosen on these same pairs (optimistic). Attention '
      'agreement: share of the shorter side\'s tokens whose argmax link x->y is also the argmax '
      'link y->x in the two word-alignment passes (last layer, heads averaged); soft symmetry: '
      '1 - L_WA on held-out pairs. MLM accuracy: masked tokens of validation text (± seed sd).',
      '',
      f'![ablation]({os.path.relpath(png, out_md.parent)})',
      '',
      '## Differences between consecutive objective sets',
      '',
      '| step | retrieval, last | retrieval, best | attention agreement | soft symmetry '
      '| MLM accuracy |',
      '|---|---|---|---|---|---|',
  ]
  for name, e in summary['differences'].items():
    b, a = name.split(' - ')
    lines.append(f'| {label(a)} -> {label(b)} | {_diff(e["retrieval_last"])} | '
                 f'{_diff(e["retrieval_best"])} | {_diff(e["alignment_agreement"])} | '
                 f'{_diff(e["alignment_soft"])} | {e["mlm_accuracy"]["mean"]:+.3f} |')
  lines += ['', '## Per language (en->xx / xx->en, mean over seeds)', '']
  head = ' | '.join(f'{label(k)} last | {label(k)} best' for k in p)
  lines += [f'| lang | {head} |', '|---|' + '---|' * (2 * len(p))]
  for lang in langs:
    cells = ' | '.join(
        f'{"%.2f/%.2f" % tuple(e["retrieval"]["last"]["by_language"][lang])} | '
        f'{"%.2f/%.2f" % tuple(e["retrieval"]["best"]["by_language"][lang])}' for e in p.values())
    lines.append(f'| {lang} | {cells} |')
  lines += ['', '## Did the paper\'s ordering hold?', '']
  for claim, held, how in verdict(summary):
    state = {True: 'held', False: 'did not hold', None: 'not testable'}[held]
    lines.append(f'- **{claim}: {state}** ({how}).')
  if meta.get('notes'):
    lines += ['', meta['notes'].strip()]
  lines += [
      '', '## Setup', '',
      f'- Command: `{meta["command"]}`',
      f'- Budget per run: stage 1 (MLM only) {meta["stage1_steps"]} steps, stage 2 (the objectives '
      f'under test) {meta["stage2_steps"]} steps; the learning-rate schedule spans both. Stage 1 '
      'is identical for the four objective sets, so it is trained once per seed and forked.',
      f'- Model: {meta["model"]}. Data: {meta["data"]}.',
      f'- Evaluation: {meta["eval_pairs"]} retrieval pairs, {meta["align_pairs"]} alignment pairs '
      f'and {meta["mlm_sentences"]} MLM sentences per language (English too), sampled with a '
      'fixed seed from the validation split, which shares no English sentence with training.',
      f'- Total wall time {meta["total_minutes"]:.1f} min '
      f'(training {meta["train_minutes"]:.1f}, evaluation {meta["eval_minutes"]:.1f}).',
      f'- Raw numbers: `{meta["json"]}`.',
      '', '| objectives | seed | config sha256 | stage 1 (s) | stage 2 (s) | eval (s) |',
      '|---|---|---|---|---|---|',
  ]
  for row in meta['runs']:
    lines.append(f'| {label(row["preset"])} | {row["seed"]} | `{row["config_sha256"][:16]}` | '
                 f'{row["stage1_seconds"]:.0f} | {row["stage2_seconds"]:.0f} | '
                 f'{row["eval_seconds"]:.0f} |')
  lines += ['', 'Stage 1 seconds are those of the shared stage-1 run of that seed. Hashes are of '
            'the full config JSON (sorted keys) of each run; they differ across seeds only in '
            '`seed`.', '']
  out_md.parent.mkdir(parents=True, exist_ok=True)
  out_md.write_text('\n'.join(lines), encoding='utf-8')


def plot(summary: dict, png: pathlib.Path) -> pathlib.Path:
  """Three panels: retrieval (last and best layer), retrieval by layer, alignment and MLM."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from configs import ablation  # pylint: disable=import-outside-toplevel
  p = summary['presets']
  names = [ablation.LABELS.get(k, k) for k in p]
  x = np.arange(len(p))
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))

  def bars(ax, entries, offset, width, label):
    means = np.array([e['mean'] for e in entries])
    lo = means - np.array([e['ci'][0] for e in entries])
    hi = np.array([e['ci'][1] for e in entries]) - means
    ax.bar(x + offset, means, width, yerr=[lo, hi], capsize=3, label=label)

  ax = axes[0]
  bars(ax, [e['retrieval']['last'] for e in p.values()], -0.2, 0.4, 'last layer')
  bars(ax, [e['retrieval']['best'] for e in p.values()], 0.2, 0.4, 'best layer')
  ax.set_xticks(x, names, rotation=15)
  ax.set_ylabel('retrieval accuracy (mean of both directions)')
  ax.set_title('Sentence retrieval, held-out pairs (95% CI)')
  ax.legend()
  ax = axes[1]
  for name, e in zip(names, p.values()):
    layer = np.array(e['by_layer']).mean(1)
    ax.plot(np.arange(len(layer)), layer, marker='o', label=name)
  ax.set_xticks(np.arange(len(p[next(iter(p))]['by_layer'])))
  ax.set_xlabel('layer (0 = embeddings)')
  ax.set_ylabel('retrieval accuracy')
  ax.set_title('Retrieval by layer (mean over seeds)')
  ax.legend()
  ax = axes[2]
  bars(ax, [e['alignment']['agreement'] for e in p.values()], -0.27, 0.27, 'attention agreement')
  bars(ax, [e['alignment']['soft'] for e in p.values()], 0.0, 0.27, 'soft symmetry')
  mlm = [e['mlm_accuracy'] for e in p.values()]
  ax.bar(x + 0.27, [m['mean'] for m in mlm], 0.27, yerr=[m['seed_std'] for m in mlm], capsize=3,
         label='MLM accuracy (± seed sd)')
  ax.set_xticks(x, names, rotation=15)
  ax.set_title('Alignment symmetry and MLM accuracy')
  ax.legend(fontsize=8)
  fig.tight_layout()
  png.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(png, dpi=110)
  plt.close(fig)
  return png


# ---- the driver ----

def _machine() -> str:
  cpus = os.cpu_count()
  load = ', '.join(f'{v:.1f}' for v in os.getloadavg()) if hasattr(os, 'getloadavg') else '?'
  return (f'{platform.machine()}, {cpus} CPU cores, {jax.devices()[0].platform} JAX '
          f'{jax.__version__}, load average at the end {load}')


def run(settings: Settings, print_fn: Callable[[str], Any] = print) -> dict:
  """Trains and evaluates the ablation; writes the page, the PNG and the JSON. Returns the summary
  and metadata as written to the JSON."""
  # pylint: disable=import-outside-toplevel
  t0 = time.time()
  out_md = pathlib.Path(settings.out)
  stem = out_md.stem.lower()
  png = out_md.parent / 'results' / f'{stem}_ablation.png'
  json_path = out_md.parent / 'results' / f'{stem}_ablation.json'
  runs_dir = pathlib.Path(settings.runs_dir or paths.cache_dir() / 'runs' / 'ablation')
  presets = list(settings.presets)
  unknown = sorted(set(presets) - set(PRESETS))
  if unknown:
    raise ValueError(f'unknown presets {unknown}; choose from {PRESETS}.')
  first = preset_config(presets[0], settings, settings.seeds[0])
  data_paths = prepare_data(first, print_fn)
  sp = hf_tokenizer.load_processor(data_paths['vocab_path'])
  pairs = evaluation_pairs(data_paths['corpus_dir'], settings.languages, settings.eval_pairs)
  align_pairs = {l: p[:settings.align_pairs] for l, p in pairs.items()}
  texts = validation_texts(data_paths['corpus_dir'], settings.languages, settings.mlm_sentences)
  print_fn(f'Evaluation: {sum(map(len, pairs.values()))} retrieval pairs over '
           f'{len(pairs)} languages; {sum(map(len, texts.values()))} MLM sentences')
  results, rows = {p: {} for p in presets}, []
  train_seconds = eval_seconds = 0.0
  for seed in settings.seeds:
    shared = runs_dir / f'seed{seed}' / 'stage1'
    s1_cfg = _with_data(preset_config(presets[0], settings, seed), data_paths, shared)
    t = time.time()
    if not (_same_config(shared, s1_cfg) and _latest_step(shared) == settings.stage1_steps):
      shutil.rmtree(shared, ignore_errors=True)
      print_fn(f'== seed {seed}: stage 1 (MLM, shared by the presets), '
               f'{settings.stage1_steps} steps')
      loop.train(s1_cfg, batches=inputs.config_input(s1_cfg), print_fn=print_fn,
                 eval_fn=retrieval.periodic_eval_fn(s1_cfg), stop_at=settings.stage1_steps)
    stage1_seconds = time.time() - t
    train_seconds += stage1_seconds
    for preset in presets:
      workdir = runs_dir / f'seed{seed}' / preset
      cfg = _with_data(preset_config(preset, settings, seed), data_paths, workdir)
      t = time.time()
      if not (_same_config(workdir, cfg) and _latest_step(workdir) == cfg.train.steps):
        shutil.rmtree(workdir, ignore_errors=True)
        (workdir / 'checkpoints').mkdir(parents=True)
        step1 = str(settings.stage1_steps)
        shutil.copytree(shared / 'checkpoints' / step1, workdir / 'checkpoints' / step1)
        print_fn(f'== seed {seed}: {preset}, stage 2 ({settings.stage2_steps} steps) from the '
                 f'stage-1 checkpoint')
        loop.train(cfg, batches=inputs.config_input(cfg), print_fn=print_fn,
                   eval_fn=retrieval.periodic_eval_fn(cfg))
      stage2_seconds = time.time() - t
      train_seconds += stage2_seconds
      t = time.time()
      results[preset][seed] = evaluate_run(workdir, cfg, sp, pairs, align_pairs, texts)
      seconds = time.time() - t
      eval_seconds += seconds
      r = results[preset][seed]
      print_fn(f'   {preset} seed {seed}: retrieval last layer '
               f'{np.mean([h[-1].mean() for h in r["hits"].values()]):.3f}, MLM accuracy '
               f'{r["mlm_accuracy"]:.3f} (eval {seconds:.0f} s)')
      rows.append({'preset': preset, 'seed': seed, 'config_sha256': config_lib.config_hash(cfg),
                   'stage1_seconds': stage1_seconds, 'stage2_seconds': stage2_seconds,
                   'eval_seconds': seconds, 'workdir': str(workdir)})
  summary = summarize(results, list(settings.languages), settings.bootstrap)
  m = first.model
  last = preset_config(presets[-1], settings, settings.seeds[0])
  meta = {
      'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
      'machine': _machine(), 'command': settings.command or '(called from Python)',
      'stage1_steps': settings.stage1_steps, 'stage2_steps': settings.stage2_steps,
      'eval_pairs': settings.eval_pairs, 'align_pairs': settings.align_pairs,
      'mlm_sentences': settings.mlm_sentences,
      'model': (f'{m.num_layers} layers, hidden {m.hidden_size}, {m.num_heads} heads, vocabulary '
                f'{m.vocab_size} (SentencePiece on the corpus)'),
      'data': (f'`{first.data.task_prefix}` corpus, languages {", ".join(settings.languages)} '
               f'(+ English monolingual text), stage 1 batches '
               f'{_batches(stage_lib.stages(first)[0].config)}, stage 2 batches '
               f'{_batches(stage_lib.stages(last)[1].config)} (MLM: '
               f'{_batches(stage_lib.stages(first)[1].config)}), {first.data.sentence_length} tokens '
               f'a sentence ({first.data.too_long} longer ones), SA cosine='
               f'{first.objectives.sa_cosine} temperature={first.objectives.sa_temperature} '
               f'bidirectional={first.objectives.sa_bidirectional}, lr '
               f'{first.optimizer.learning_rate} (warmup {first.optimizer.warmup_steps})'),
      'runs': rows, 'train_minutes': train_seconds / 60, 'eval_minutes': eval_seconds / 60,
      'total_minutes': (time.time() - t0) / 60, 'json': os.path.relpath(json_path, out_md.parent),
      'overrides': list(settings.overrides), 'notes': settings.notes,
  }
  raw = {'summary': summary, 'meta': meta,
         'per_run': {p: {str(s): _raw(r) for s, r in by_seed.items()}
                     for p, by_seed in results.items()}}
  json_path.parent.mkdir(parents=True, exist_ok=True)
  json_path.write_text(json.dumps(raw, indent=1))
  render(json_path, out_md)
  print_fn(f'Wrote {out_md}, {png} and {json_path} in {meta["total_minutes"]:.1f} min')
  for claim, held, how in verdict(summary):
    print_fn(f'  {claim}: {"held" if held else "did not hold"} ({how})')
  return raw


def render(json_path, out_md, notes: str | None = None) -> pathlib.Path:
  """(Re)writes the page and the PNG from the JSON a run wrote; `notes` (markdown) replaces the
  notes it holds (None: keep them). Returns the page's path."""
  json_path, out_md = pathlib.Path(json_path), pathlib.Path(out_md)
  raw = json.loads(json_path.read_text())
  if notes is not None:
    raw['meta']['notes'] = notes
    json_path.write_text(json.dumps(raw, indent=1))
  png = out_md.parent / 'results' / f'{out_md.stem.lower()}_ablation.png'
  plot(raw['summary'], png)
  write_page(raw['summary'], raw['meta'], out_md, png)
  return out_md


def _batches(config) -> str:
  d = config.data
  return f'{d.mono_batch_size} mono + {d.parallel_batch_size} pairs'


def _raw(r: dict) -> dict:
  """One run's figures for the JSON: accuracies per language and layer, per-pair symmetry means."""
  return {'retrieval_by_layer': {l: h.mean(-1).tolist() for l, h in r['hits'].items()},
          'alignment': {l: {k: float(v.mean()) for k, v in a.items()}
                        for l, a in r['align'].items()},
          'mlm_accuracy': r['mlm_accuracy']}
