"""A run's mixtures and their per-task rates (`amber-jax data rates`).

  amber-jax data rates [--config=tiny --config.data.alpha=0.3 ...]
      prints each task of the mono and parallel mixtures: train examples, its rate, the examples
      it gives per step and how many steps one pass over it takes.

`amber-jax data cache` (amber_jax.data.preprocess) tokenizes the tasks listed here.
"""

from __future__ import annotations

import importlib
import pathlib

from amber_jax import paths
from amber_jax.data import inputs, pipeline

PARTS = ('mono', 'parallel')


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


def default_cache_dir(data_cfg) -> pathlib.Path:
  return paths.cache_dir() / 'tokens' / data_cfg.task_prefix
