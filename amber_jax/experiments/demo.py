"""The demo: Django-app catalogs -> corpus -> SentencePiece -> AMBER (configs/demo.py) ->
retrieval on held-out apps against char 3-grams -> HF export -> 20 translations found.

Everything runs on this machine's CPU from data that pip installed (the translation catalogs of
Django and Wagtail); nothing is fetched from a hub. Prints a final table and writes
demo_summary.json.

The demo's run is a run like any other: a rerun resumes it (after a preemption, which stops the
demo before it evaluates anything), and a finished one is evaluated again without training;
--config.train.fresh_start=True trains it anew.
"""

from __future__ import annotations

import json
import math
import pathlib
import time

import jax
import numpy as np

from amber_jax import config as config_lib
from amber_jax import paths
from amber_jax.core import objectives
from amber_jax.corpora import django_po, layout, vocabulary
from amber_jax.data import inputs
from amber_jax.eval import retrieval
from amber_jax.export import runs
from amber_jax.text import tokenizer
from amber_jax.training import loop, metrics, train_state

PRESET = 'demo'  # configs/demo.py: the recipe the demo trains

# The demo recipe's pace on the 2-core reference machine (850 steps in 9.4 min on 2026-12-04, with
# one input thread: 90 a minute, compilation included; a longer run goes a little faster), and
# what the demo spends outside training (corpus, vocabulary, evaluation, export): what `--minutes`
# turns into steps.
STEPS_PER_MINUTE = 90
OVERHEAD_MINUTES = 2.0


def steps_for_minutes(minutes: float) -> int:
  """Training steps that fill a demo of `minutes` on the reference machine (install excluded)."""
  steps = int((minutes - OVERHEAD_MINUTES) * STEPS_PER_MINUTE) // 10 * 10
  if steps < 50:
    least = math.ceil(OVERHEAD_MINUTES + 50 / STEPS_PER_MINUTE)
    raise ValueError(f'--minutes {minutes:g} leaves no time to train: give at least {least} '
                     'minutes.')
  return steps


def with_minutes(config, minutes: float):
  """The config trained for `steps_for_minutes(minutes)`, in its own workdir (`demo-<N>min`), its
  checkpoints every quarter of the run."""
  steps = steps_for_minutes(minutes)
  config = with_steps(config, steps)
  with config.unlocked():
    config.train.checkpoint_every = max(steps // 4, 1)
    config.train.log_every = max(steps // 20, 1)
    if not config.workdir:
      config.workdir = str(paths.cache_dir() / 'runs' / f'demo-{minutes:g}min')
  return config


def with_steps(config, steps: int):
  """The config trained for `steps`, each of its stages keeping its share of the stages' steps
  (`--config.train.steps=N` or `--minutes` on a staged preset)."""
  with config.unlocked():
    if config.train.stages:
      total = sum(stage['steps'] for stage in config.train.stages)
      counts = [int(steps * stage['steps'] / total) for stage in config.train.stages[:-1]]
      config.train.stages = [dict(stage, steps=n) for stage, n in
                             zip(config.train.stages, counts + [steps - sum(counts)])]
    config.train.steps = steps
  return config


def _prepare_data(config, print_fn):
  """Builds the corpus and vocabulary the demo reads unless they are there and current (a corpus
  from other catalogs or another split is rebuilt, and its vocabulary and run start anew);
  returns the validation pairs."""
  corpus = pathlib.Path(config.data.corpus_dir)
  manifest = layout.load_manifest(corpus) if (corpus / 'manifest.json').exists() else None
  if manifest is None or not django_po.is_current(manifest):
    stale = manifest is not None
    print_fn(f'{"Rebuilding the out-of-date" if stale else "Building the"} Django-app catalog '
             f'corpus ({", ".join(django_po.PACKAGES)}) into {corpus} ...')
    django_po.build_django_corpus(corpus)
    if stale:
      pathlib.Path(config.data.vocab_path).unlink(missing_ok=True)
      with config.unlocked():
        config.train.fresh_start = True  # a run on the old corpus moves to discarded-<time>/
  manifest = layout.load_manifest(corpus)
  n_train = sum(v['train'] for v in manifest['pairs'].values())
  n_val = sum(v['validation'] for v in manifest['pairs'].values())
  print_fn(f'Corpus: {len(manifest["languages"])} languages paired with English, {n_train} train '
           f'and {n_val} validation pairs; skipped entries: {manifest["skipped"]}')
  vocab_path = pathlib.Path(config.data.vocab_path)
  if not vocab_path.exists():
    print_fn(f'Training SentencePiece ({config.model.vocab_size} pieces) into {vocab_path} ...')
    vocabulary.train_corpus_vocabulary(corpus, vocab_path, vocab_size=config.model.vocab_size,
                                       alpha=config.data.alpha, seed=config.seed)
  return layout.read_pairs(corpus, 'validation')


def _eval_pairs(pairs, min_pairs: int):
  return {lang: p for lang, p in pairs.items() if len(p) >= min_pairs}


def run(config, hf_out: str = 'amber-demo-hf', print_fn=print, min_pairs: int = 30) -> dict:
  """Runs the whole demo; returns the summary it prints."""
  t0 = time.time()
  with config.unlocked():
    if not config.workdir:
      config.workdir = str(paths.cache_dir() / 'runs' / 'demo')
  config_lib.resolve_paths(config)
  pairs = _eval_pairs(_prepare_data(config, print_fn), min_pairs)
  sp = tokenizer.load_processor(config.data.vocab_path)

  s = train_state.setup(config)
  params0 = jax.device_get(train_state.init_state(s, config.seed)['params'])
  mcfg = s.model.cfg
  before = retrieval.retrieval(retrieval.jax_embedder(params0, mcfg, sp), pairs)
  print_fn(f'Retrieval before training (en->xx, mean over {len(pairs)} languages): '
           f'{retrieval.mean_accuracy(before)[0]:.3f}')

  active = ' + '.join(o.name.upper() for o in objectives.OBJECTIVES
                      if getattr(config.objectives, o.weight))
  print_fn(f'Training {config.model.num_layers}-layer AMBER for {config.train.steps} steps '
           f'({active}) in {config.workdir} ...')
  t_train = time.time()
  # A preemption raises here (errors.Preempted): nothing below runs on a half-trained model.
  state, trained = loop.train(config, batches=inputs.config_input(config), print_fn=print_fn,
                              eval_fn=retrieval.periodic_eval_fn(config))
  train_minutes = (time.time() - t_train) / 60
  if not trained:
    print_fn(f'The run in {config.workdir} is already trained to step {config.train.steps}; '
             'evaluating it (--config.train.fresh_start=True trains it anew).')
  history = metrics.logged(config.workdir)  # the whole run's, resumed parts included
  params = jax.device_get(state['params'])
  ours = retrieval.jax_embedder(params, mcfg, sp)
  after = retrieval.retrieval(ours, pairs)

  figures = {
      'retrieval en->xx (validation, mean)': round(retrieval.mean_accuracy(after)[0], 4),
      'retrieval xx->en (validation, mean)': round(retrieval.mean_accuracy(after)[1], 4),
  }
  out = runs.export_run(config.workdir, hf_out, figures=figures)
  hf_embed = retrieval.hf_embedder(str(out))
  hf_after = retrieval.retrieval(hf_embed, pairs)

  summary = {
      'validation': _validation_source(config.data.corpus_dir),
      'steps': config.train.steps,
      'train_minutes': round(train_minutes, 2),
      'losses': loss_table(history),
      'retrieval_before': retrieval.mean_accuracy(before),
      'retrieval_after': retrieval.mean_accuracy(after),
      'retrieval_after_hf_export': retrieval.mean_accuracy(hf_after),
      'retrieval_char_3gram': retrieval.char_ngram_accuracy(pairs, 3),
      'languages': len(pairs),
      'tokens_per_s': float(np.median([h['tokens_per_s'] for h in history[1:]] or [0])),
      'hf_export': str(out.absolute()),
  }
  _print_table(summary, print_fn)
  summary['sample'] = print_nearest(hf_embed, pairs, print_fn)
  summary['total_minutes'] = round((time.time() - t0) / 60, 2)
  (pathlib.Path(config.workdir) / 'demo_summary.json').write_text(json.dumps(summary, indent=2))
  print_fn(f'Done in {summary["total_minutes"]} min. Summary: '
           f'{pathlib.Path(config.workdir) / "demo_summary.json"}')
  return summary


def _validation_source(corpus_dir) -> str:
  manifest = layout.load_manifest(corpus_dir)
  if manifest.get('heldout_apps'):
    names = [app.removeprefix('django.contrib.') for app in manifest['heldout_apps']]
    return 'the held-out apps (' + ', '.join(names) + ')'
  return 'the validation split'


def loss_table(history: list[dict]) -> dict[str, tuple[float, float]]:
  """{loss key: (first logged value, last)} of each registered objective the run logged; with
  stages, an objective's first value is that of the first step that trained it."""
  table = {}
  for o in objectives.OBJECTIVES:
    values = [h[o.loss_key] for h in history if o.loss_key in h]
    if values:
      table[o.loss_key] = (values[0], values[-1])
  return table


def _print_table(summary, print_fn):
  print_fn('')
  print_fn(f'{"":36s}{"start":>10s}{"end":>10s}')
  for name, (start, end) in summary['losses'].items():
    print_fn(f'{name:36s}{start:10.4f}{end:10.4f}')
  b, a, h, c = (summary['retrieval_before'], summary['retrieval_after'],
                summary['retrieval_after_hf_export'], summary['retrieval_char_3gram'])
  print_fn(f'Retrieval on {summary["validation"]}, never trained on, {summary["languages"]} '
           'languages:')
  print_fn(f'{"":36s}{"before":>10s}{"after":>10s}{"HF export":>11s}{"char 3-gram":>13s}')
  for i, name in enumerate(('retrieval en->xx', 'retrieval xx->en')):
    print_fn(f'{name:36s}{b[i]:10.3f}{a[i]:10.3f}{h[i]:11.3f}{c[i]:13.3f}')
  print_fn(f'trained {summary["steps"]} steps in {summary["train_minutes"]} min, '
           f'~{summary["tokens_per_s"]:.0f} non-pad tokens/s; HF model: {summary["hf_export"]}')


def sample_queries(pairs, count: int, seed: int = 0) -> list[tuple[str, int]]:
  """`count` (language, pair index) drawn evenly over the languages, fixed by `seed`."""
  rng = np.random.default_rng(seed)
  langs = sorted(pairs)
  chosen = rng.choice(len(langs), size=count, replace=count > len(langs))
  return [(langs[i], int(rng.integers(len(pairs[langs[i]])))) for i in chosen]


def print_nearest(embed, pairs, print_fn, count: int = 20) -> dict:
  """Prints `count` validation sentences with the nearest translation the exported model finds
  among their language's validation sentences, each marked right or wrong; returns the count."""
  print_fn('')
  print_fn(f'Nearest translation of {count} validation sentences, found by the exported model '
           '(transformers) among all of their language\'s validation sentences:')
  right = 0
  for lang, index in sample_queries(pairs, count):
    lang_pairs = retrieval.unique_pairs(pairs[lang])
    index %= len(lang_pairs)
    candidates = [xx for _, xx in lang_pairs]
    (query, found, cos), = retrieval.nearest_translations(
        embed, [lang_pairs[index][0]], candidates)
    ok = found == candidates[index]
    right += ok
    print_fn(f'  [{lang}] {query}\n    {"right" if ok else "WRONG"}: {found}  (cos {cos:.2f}'
             + (')' if ok else f'; the translation: {candidates[index]})'))
  print_fn(f'{right} of {count} right ({len(pairs)} languages, '
           f'{np.mean([len(p) for p in pairs.values()]):.0f} candidates each on average).')
  return {'right': right, 'count': count}
