"""A run's mixtures: their per-task rates (`amber-jax data rates`), and pretokenizing them once
(`amber-jax data cache`).

  amber-jax data rates [--config=tiny --config.data.alpha=0.3 ...]
      prints each task of the mono and parallel mixtures: train examples, its rate, the examples
      it gives per step and how many steps one pass over it takes.
  amber-jax data cache [--config=tiny --config.data.cache_dir=DIR ...]
      tokenizes every task of both mixtures once (train and validation) into a cache folder
      (amber_jax.data.token_cache); train from it with --config.data.cache_dir=DIR.
"""

from __future__ import annotations

import importlib
import pathlib
import tempfile
import time

from amber_jax import paths, storage
from amber_jax.data import inputs, pipeline, token_cache
from amber_jax.text import tokenizer

PARTS = ('mono', 'parallel')
FEATURES = {'mono': ('tokens',), 'parallel': ('src', 'tgt')}


def mixture_table(data_cfg) -> tuple[dict[str, str | None], dict[str, list[dict]]]:
  """Registers the config's mixtures; returns ({part: mixture name}, {part: [{'task',
  'examples', 'rate', 'per_step', 'steps_per_epoch'}]}) with rates normalised within a mixture."""
  _, seqio = pipeline.import_tf()
  data_cfg = inputs.mirrored(data_cfg, ('corpus_dir', 'vocab_path'))
  names = importlib.import_module(data_cfg.task_module).register(data_cfg)
  table = {}
  for part in PARTS:
    if not names.get(part):
      continue
    batch = getattr(data_cfg, f'{part}_batch_size')
    provider = seqio.get_mixture_or_task(names[part])
    tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
    raw = {t.name: (provider.get_rate(t) if isinstance(provider, seqio.Mixture) else 1.0)
           for t in tasks}
    total = sum(raw.values())
    rows = []
    for t in sorted(tasks, key=lambda t: -raw[t.name]):
      n = t.num_input_examples('train') or 0
      rate = raw[t.name] / total
      rows.append({'task': t.name, 'examples': int(n), 'rate': rate, 'per_step': rate * batch,
                   'steps_per_epoch': n / (rate * batch) if rate and batch else float('inf')})
    table[part] = rows
  return names, table


def print_rates(data_cfg, print_fn=print) -> None:
  for part, rows in mixture_table(data_cfg)[1].items():
    batch = getattr(data_cfg, f'{part}_batch_size')
    print_fn(f'{part} mixture ({len(rows)} tasks, {batch} rows a step, '
             f'alpha={data_cfg.alpha}{", explicit " + data_cfg.rates if data_cfg.rates else ""}):')
    print_fn(f'  {"task":32s} {"examples":>9s} {"rate":>7s} {"per step":>9s} {"steps/epoch":>12s}')
    for r in rows:
      print_fn(f'  {r["task"]:32s} {r["examples"]:9d} {r["rate"]:7.4f} {r["per_step"]:9.3f} '
               f'{r["steps_per_epoch"]:12.1f}')


def write_cache(data_cfg, cache_dir: str | pathlib.Path, print_fn=print) -> dict:
  """Tokenizes every task of the config's mixtures (train, and validation where it exists).

  `cache_dir` may be a bucket URL: the cache is written locally, then uploaded with its
  manifest (cache.json, which readers open first) removed first and uploaded last.
  """
  _, seqio = pipeline.import_tf()
  names, table = mixture_table(data_cfg)
  mixtures, tasks = {}, {}
  for part, rows in table.items():
    mixtures[part] = {'name': names[part], 'rates': {r['task']: r['rate'] for r in rows}}
    for r in rows:
      task = seqio.get_mixture_or_task(r['task'])
      splits = {s: _examples(task, s, FEATURES[part]) for s in ('train', 'validation')
                if s in task.splits}
      tasks[r['task']] = {'kind': part, 'features': list(FEATURES[part]), 'splits': splits}
  vocab = {'path': str(data_cfg.vocab_path),
           'sha256': tokenizer.vocab_fingerprint(data_cfg.vocab_path),
           'size': storage.local(data_cfg.vocab_path).stat().st_size}
  start = time.time()
  if storage.is_url(cache_dir):
    with tempfile.TemporaryDirectory(prefix='amber-jax-tokens-') as tmp:
      manifest = token_cache.write_cache(pathlib.Path(tmp) / 'cache', vocab=vocab,
                                         mixtures=mixtures, tasks=tasks)
      storage.upload(pathlib.Path(tmp) / 'cache', cache_dir, last='cache.json')
  else:
    manifest = token_cache.write_cache(cache_dir, vocab=vocab, mixtures=mixtures, tasks=tasks)
  tokens = sum(sum(s['tokens'].values()) for t in manifest['tasks'].values()
               for s in t['splits'].values())
  print_fn(f'Cached {len(tasks)} tasks, {tokens} tokens in {time.time() - start:.1f} s '
           f'to {cache_dir}; train from it with --config.data.cache_dir={cache_dir}')
  return manifest


def _examples(task, split: str, features: tuple[str, ...]):
  """A task's examples of one split, in file order, tokenized: {feature: int32 ids}."""
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1,
                        trim_output_features=False)
  for ex in ds.as_numpy_iterator():
    yield {f: ex[f] for f in features}


def default_cache_dir(data_cfg) -> pathlib.Path:
  return paths.cache_dir() / 'tokens' / data_cfg.task_prefix
