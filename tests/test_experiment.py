"""`amber-jax experiment ablation`: statistics, the results page, and an end-to-end smoke run."""

import json
import math

import numpy as np
import pytest

from amber_jax import cli
from amber_jax.experiments import ablation, results_page, statistics

LANGS = ['de', 'fr']
SECTIONS = ('## Results', '| MLM+TLM+WA+SA |', '![ablation](results/results_ablation.png)',
            '## Differences between consecutive objective sets', '## Per language',
            "## Did the paper's ordering hold?", '## Setup', 'Command: `', 'config sha256')


def fake_run(rng, quality: float, symmetry: float, n=40, layers=3):
  """One run's evaluate_run output with retrieval hits ~ Bernoulli(quality)."""
  hits = {l: rng.random((layers, 2, n)) < quality for l in LANGS}
  align = {l: {'agreement': np.clip(rng.normal(symmetry, 0.05, 10), 0, 1),
               'soft': np.clip(rng.normal(symmetry / 2, 0.02, 10), 0, 1)} for l in LANGS}
  return {'hits': hits, 'align': align, 'mlm_accuracy': 0.3 + quality / 10}


def fake_results(qualities, symmetries):
  rng = np.random.default_rng(0)
  return {p: {s: fake_run(rng, q, a) for s in (0, 1)}
          for p, q, a in zip(ablation.PRESETS, qualities, symmetries)}


def test_summary_orders_and_brackets_the_means():
  summary = statistics.summarize(fake_results([0.2, 0.3, 0.3, 0.9], [0.1, 0.1, 0.5, 0.5]),
                                 LANGS, replicates=200)
  p = summary['presets']
  for e in p.values():
    for name in ('last', 'best'):
      r = e['retrieval'][name]
      assert r['ci'][0] <= r['mean'] <= r['ci'][1]
      assert set(r['by_language']) == set(LANGS)
  assert p['mlm_tlm_wa_sa']['retrieval']['best']['mean'] > 0.8
  jump = summary['differences']['mlm_tlm_wa_sa - mlm_tlm_wa']['retrieval_best']
  assert jump['ci'][0] > 0.4
  held = {claim.split(' (')[0]: ok for claim, ok, _ in statistics.verdict(summary)}
  assert held == {'TLM helps retrieval': True, 'SA makes retrieval jump': True,
                  'WA helps alignment': True}


def test_verdict_says_when_the_ordering_fails():
  summary = statistics.summarize(fake_results([0.3, 0.3, 0.3, 0.3], [0.2, 0.2, 0.2, 0.2]),
                                 LANGS, replicates=200)
  assert not any(ok for _, ok, _ in statistics.verdict(summary))


def test_bootstrap_weights_resample_n_items():
  w = statistics.bootstrap_weights(7, 50, seed=1)
  assert w.shape == (50, 7) and np.all(w.sum(1) == 7)


def test_page_and_plot_have_every_section(tmp_path):
  summary = statistics.summarize(fake_results([0.2, 0.3, 0.35, 0.9], [0.1, 0.1, 0.5, 0.5]),
                                 LANGS, replicates=50)
  meta = {'date': 'today', 'machine': 'test', 'command': 'amber-jax experiment ablation',
          'stage1_steps': 2, 'stage2_steps': 3, 'eval_pairs': 40, 'align_pairs': 10,
          'mlm_sentences': 5, 'model': 'm', 'data': 'd', 'total_minutes': 1.0,
          'train_minutes': 0.5, 'eval_minutes': 0.5, 'json': 'results/results_ablation.json',
          'notes': '## Notes\n\nhand-written', 'runs': [
              {'preset': p, 'seed': 0, 'config_sha256': '0' * 64, 'stage1_seconds': 1.0,
               'stage2_seconds': 2.0, 'eval_seconds': 3.0} for p in ablation.PRESETS]}
  path = tmp_path / 'results' / 'results_ablation.json'
  path.parent.mkdir()
  path.write_text(json.dumps({'summary': summary, 'meta': meta}))
  page = ablation.render(path, tmp_path / 'RESULTS.md').read_text()
  for section in SECTIONS + ('hand-written',):
    assert section in page, section
  assert (tmp_path / 'results' / 'results_ablation.png').stat().st_size > 10_000
  ablation.render(path, tmp_path / 'RESULTS.md', notes='')
  assert 'hand-written' not in (tmp_path / 'RESULTS.md').read_text()
  kept = f'{results_page.KEEP_BELOW}\n\n# Another study\n\nIts figures.\n'
  (tmp_path / 'RESULTS.md').write_text(page + '\n' + kept)
  ablation.render(path, tmp_path / 'RESULTS.md')
  again = (tmp_path / 'RESULTS.md').read_text()
  assert again.endswith(kept) and again.count('# Another study') == 1
  assert again.startswith(page[:200])


def test_preset_configs_take_the_budget_and_overrides():
  settings = ablation.Settings(stage1_steps=3, stage2_steps=5, languages=['de'],
                                 overrides=['model.num_layers=1'])
  cfg = ablation.preset_config('mlm_tlm', settings, seed=7)
  assert (cfg.seed, cfg.train.steps, cfg.model.num_layers) == (7, 8, 1)
  assert [s['steps'] for s in cfg.train.stages] == [3, 5]
  assert list(cfg.data.languages) == ['de']
  with pytest.raises(SystemExit, match='model.num_layrs'):
    ablation.preset_config('mlm', ablation.Settings(overrides=['model.num_layrs=1']), 0)


def test_the_command_rejects_bad_arguments():
  with pytest.raises(SystemExit, match='--steps'):
    cli.main(['experiment', 'ablation', '--steps', 'a,b'])
  with pytest.raises(SystemExit, match='unexpected argument'):
    cli.main(['experiment', 'ablation', '--bogus'])


@pytest.mark.slow
def test_ablation_end_to_end_on_a_tiny_corpus(django_corpus, django_vocab, tmp_path):
  out = tmp_path / 'docs' / 'RESULTS.md'
  overrides = [f'data.corpus_dir={django_corpus}', f'data.vocab_path={django_vocab}',
               'data.task_prefix=django', f'data.cache_dir={tmp_path / "cache"}',
               'model.vocab_size=4000', 'model.hidden_size=32', 'model.num_layers=1',
               'model.num_heads=2', 'model.intermediate_size=64', 'data.mono_length=16',
               'data.sentence_length=16']
  argv = ['experiment', 'ablation', '--steps', '2,2', '--seeds', '0', '--languages', 'de,fr',
          '--out', str(out), '--runs-dir', str(tmp_path / 'runs'), '--eval-pairs', '20',
          '--align-pairs', '4', '--mlm-sentences', '8', '--bootstrap', '50',
          *[f'--config.{o}' for o in overrides]]
  cli.main(argv)
  page = out.read_text()
  for section in SECTIONS:
    assert section in page, section
  raw = json.loads((out.parent / 'results' / 'results_ablation.json').read_text())
  assert set(raw['per_run']) == set(ablation.PRESETS)
  assert raw['summary']['seeds'] == [0]
  assert (out.parent / 'results' / 'results_ablation.png').exists()
  # A second call reuses the finished runs (same configs): no training, the same numbers.
  cli.main(argv)
  again = json.loads((out.parent / 'results' / 'results_ablation.json').read_text())
  assert again['per_run'] == raw['per_run']


def test_demo_sample_marks_each_nearest_translation_and_counts_the_right_ones():
  from amber_jax.experiments import demo  # pylint: disable=g-import-not-at-top
  pairs = {'de': [(f'en {i}', f'de {i}') for i in range(6)],
           'fr': [(f'en {i}', f'fr {i}') for i in range(4)]}
  chosen = demo.sample_queries(pairs, 20)
  assert chosen == demo.sample_queries(pairs, 20)  # Fixed by the seed.
  assert {lang for lang, _ in chosen} == {'de', 'fr'}
  assert all(0 <= i < len(pairs[lang]) for lang, i in chosen)
  # An embedder that finds 'xx i' for 'en i' when i is even, and 'xx 0' when i is odd.
  def embed(sentences):
    rows = []
    for s in sentences:
      i = int(s.split()[-1])
      row = np.zeros(8)
      row[i if (s.startswith('en') and i % 2 == 0) or not s.startswith('en') else 0] = 1
      rows.append(row)
    return np.stack(rows)[None]
  lines = []
  result = demo.print_nearest(embed, pairs, lines.append, count=20)
  expected = sum(i % 2 == 0 for _, i in chosen)
  assert result == {'right': expected, 'count': 20}
  text = '\n'.join(lines)
  assert text.count('    right: ') == expected and text.count('    WRONG: ') == 20 - expected
  assert f'{expected} of 20 right (2 languages, 5 candidates each on average).' in text


def test_demo_minutes_become_steps_in_their_own_workdir(capsys):
  from amber_jax.experiments import demo  # pylint: disable=g-import-not-at-top
  from configs import tiny  # pylint: disable=g-import-not-at-top
  per_minute, overhead = demo.STEPS_PER_MINUTE, demo.OVERHEAD_MINUTES
  assert demo.steps_for_minutes(60) == (60 - overhead) * per_minute // 10 * 10
  config = demo.with_minutes(tiny.get_config(), 60)
  assert config.train.steps == demo.steps_for_minutes(60)
  assert config.train.checkpoint_every == config.train.steps // 4
  assert config.workdir.endswith('runs/demo-60min')
  from configs import demo as recipe  # pylint: disable=g-import-not-at-top
  config = demo.with_minutes(recipe.get_config(), 60)
  steps = [stage['steps'] for stage in config.train.stages]
  assert sum(steps) == config.train.steps
  assert steps[0] == int(config.train.steps * recipe.MLM_SA_SHARE) and 0 < steps[1] < steps[0]
  assert [stage['name'] for stage in config.train.stages] == ['mlm_sa', 'amber']
  with pytest.raises(SystemExit):
    cli.main(['demo', '--minutes', '2.5'])
  least = math.ceil(overhead + 50 / per_minute)
  assert f'demo: error: --minutes 2.5 leaves no time to train: give at least {least} minutes.' in \
      capsys.readouterr().err


def test_demo_rebuilds_an_out_of_date_corpus_and_starts_its_run_anew(tmp_path, monkeypatch,
                                                                      django_corpus):
  import shutil  # pylint: disable=g-import-not-at-top
  from amber_jax.corpora import django_po, vocabulary  # pylint: disable=g-import-not-at-top
  from amber_jax.experiments import demo  # pylint: disable=g-import-not-at-top
  from configs import tiny  # pylint: disable=g-import-not-at-top
  corpus, vocab = tmp_path / 'corpus', tmp_path / 'vocab.model'
  shutil.copytree(django_corpus, corpus)
  manifest = json.loads((corpus / 'manifest.json').read_text())
  (corpus / 'manifest.json').write_text(json.dumps(dict(manifest, heldout_apps=[])))  # hash split
  built, trained = [], []
  monkeypatch.setattr(django_po, 'build_django_corpus', lambda out: (
      built.append(out), shutil.copy(django_corpus / 'manifest.json', out / 'manifest.json')))
  monkeypatch.setattr(vocabulary, 'train_corpus_vocabulary', lambda *a, **k: trained.append(a))

  def prepare():
    config = tiny.get_config()
    with config.unlocked():
      config.data.update(corpus_dir=str(corpus), vocab_path=str(vocab))
    lines = []
    pairs = demo._prepare_data(config, lines.append)  # pylint: disable=protected-access
    return config, lines, pairs

  vocab.write_text('the old corpus\'s vocabulary')
  config, lines, pairs = prepare()
  assert built == [corpus] and len(trained) == 1 and not vocab.exists()
  assert config.train.fresh_start
  assert lines[0].startswith('Rebuilding the out-of-date Django-app catalog corpus (django, '
                             'wagtail) into')
  assert len(pairs) == len(manifest['languages'])
  vocab.write_text('a current vocabulary')
  config, lines, _ = prepare()  # Current: kept as it is.
  assert built == [corpus] and len(trained) == 1 and vocab.exists()
  assert not config.train.fresh_start and lines[0].startswith('Corpus: 95 languages')


def test_demo_steps_override_scales_the_recipe_stages(monkeypatch):
  from amber_jax.experiments import demo  # pylint: disable=g-import-not-at-top
  from configs import demo as recipe  # pylint: disable=g-import-not-at-top
  seen = []
  monkeypatch.setattr(demo, 'run', lambda config, hf_out: seen.append(config))
  cli.main(['demo', '--config.train.steps=100'])
  stages = seen[-1].train.stages
  assert seen[-1].train.steps == 100 and [s['steps'] for s in stages] == [
      int(100 * recipe.MLM_SA_SHARE), 100 - int(100 * recipe.MLM_SA_SHARE)]
  assert [s['name'] for s in stages] == ['mlm_sa', 'amber']
  cli.main(['demo'])  # the preset as it is
  assert [s['steps'] for s in seen[-1].train.stages] == [
      s['steps'] for s in recipe.get_config().train.stages]
