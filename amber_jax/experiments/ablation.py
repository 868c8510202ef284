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
import json
import os
import pathlib
import platform
import shutil
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from amber_jax import config as config_lib
from amber_jax import paths
from amber_jax.corpora import manpages, vocabulary
from amber_jax.data import inputs, preprocess, records
from amber_jax.eval import retrieval
from amber_jax.experiments.measures import evaluate_run, evaluation_pairs, validation_texts
from amber_jax.experiments.results_page import plot, write_page
from amber_jax.experiments.statistics import summarize, verdict
from amber_jax.export import runs
from amber_jax.text import tokenizer
from amber_jax.training import loop
from amber_jax.training import stages as stage_lib

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
  config_lib.validate(c)
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
    vocabulary.train_corpus_vocabulary(corpus, vocab_path, vocab_size=config.model.vocab_size,
                                       alpha=config.data.alpha, seed=0)
  digest = tokenizer.vocab_fingerprint(vocab_path)[:8]
  cache = (pathlib.Path(config.data.cache_dir) if config.data.cache_dir else
           paths.cache_dir() / 'tokens' /
           f'{config.data.task_prefix}-{"-".join(config.data.languages)}-{digest}')
  if not (cache / records.MANIFEST).exists():
    print_fn(f'Tokenizing the training tasks once into {cache} ...')
    preprocess.write_cache(config.data, cache, print_fn=print_fn)
  return {'corpus_dir': str(corpus), 'vocab_path': str(vocab_path), 'cache_dir': str(cache)}


def _with_data(config, data_paths: dict, workdir: pathlib.Path):
  with config.unlocked():
    config.data.update(data_paths)
    config.workdir = str(workdir)
  return config


def _latest_step(workdir: pathlib.Path) -> int | None:
  return max(runs.saved_steps(workdir), default=None)


def _same_config(workdir: pathlib.Path, config) -> bool:
  path = workdir / 'config.json'
  return path.exists() and json.loads(path.read_text()) == json.loads(config.to_json_best_effort())


# ---- the driver ----

def _machine() -> str:
  cpus = os.cpu_count()
  load = ', '.join(f'{v:.1f}' for v in os.getloadavg()) if hasattr(os, 'getloadavg') else '?'
  return (f'{platform.machine()}, {cpus} CPU cores, {jax.devices()[0].platform} JAX '
          f'{jax.__version__}, load average at the end {load}')


def run(settings: Settings, print_fn: Callable[[str], Any] = print) -> dict:
  """Trains and evaluates the ablation; writes the page, the PNG and the JSON. Returns the summary
  and metadata as written to the JSON."""
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
  sp = tokenizer.load_processor(data_paths['vocab_path'])
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
    if not _same_config(shared, s1_cfg):
      shutil.rmtree(shared, ignore_errors=True)  # this driver's run of other settings
    if _latest_step(shared) != settings.stage1_steps:  # new, or preempted: resumes
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
      if not _same_config(workdir, cfg):  # this driver's run of other settings, or none yet
        shutil.rmtree(workdir, ignore_errors=True)
        (workdir / 'checkpoints').mkdir(parents=True)
        step1 = str(settings.stage1_steps)
        shutil.copytree(shared / 'checkpoints' / step1, workdir / 'checkpoints' / step1)
      if _latest_step(workdir) != cfg.train.steps:  # new, or preempted: resumes
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
