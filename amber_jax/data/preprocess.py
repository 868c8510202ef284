"""`amber-jax data cache`: the config's seqio tasks tokenized into ArrayRecord shards, on Beam.

One work item per input shard of each task and split (train, validation) of the mono and
parallel mixtures; a worker reads its shard through the task's own seqio pipeline (seqio stays the
definition layer: sources, preprocessors, vocabularies), cuts long monolingual documents into
rows (`records.chunk_document`), writes one ArrayRecord file and a small JSON of its counts beside
it. When every item is done, the launching process writes `manifest.json` from those counts, last
(amber_jax.data.records has the layout). The same pipeline runs on the DirectRunner (worker
processes on this machine) or, unchanged, on Dataflow, Flink or Spark.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import pathlib
import tempfile
import time

import ml_collections
import numpy as np

from amber_jax import storage
from amber_jax.data import inputs, mixtures, pipeline, records
from amber_jax.text import tokenizer

SPLITS = ('train', 'validation')


def work_items(data_cfg, examples_per_shard: int) -> tuple[dict, list[dict]]:
  """({part: {'name', 'rates'}}, [{'part', 'task', 'split', 'index', 'count'}]) of the config's
  mixtures: a task's split is cut into ceil(examples / examples_per_shard) input shards."""
  _, seqio = _import_seqio()
  names, table = mixtures.mixture_table(data_cfg)
  mixes, items = {}, []
  for part, rows in table.items():
    mixes[part] = {'name': names[part], 'rates': {r['task']: r['rate'] for r in rows}}
    for r in rows:
      task = seqio.get_mixture_or_task(r['task'])
      for split in SPLITS:
        if split not in task.splits:
          continue
        n = task.num_input_examples(split) or 0
        count = max(1, math.ceil(n / examples_per_shard))
        items.extend({'part': part, 'task': r['task'], 'split': split, 'index': i,
                      'count': count} for i in range(count))
  return mixes, items


def unknown_beam_options(args: list[str]) -> list[str]:
  """The arguments among `args` that no Beam pipeline option knows (a typo would otherwise be
  dropped with a warning)."""
  from apache_beam.options import pipeline_options  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(allow_abbrev=False)
  kinds, todo = set(), [pipeline_options.PipelineOptions]
  while todo:  # every options class Beam and its runners define
    kind = todo.pop()
    kinds.add(kind)
    todo.extend(k for k in kind.__subclasses__() if k not in kinds)
  for kind in kinds:
    try:
      kind._add_argparse_args(parser)  # pylint: disable=protected-access  (Beam's protocol)
    except argparse.ArgumentError:  # an option two classes declare: the first one counts
      pass
  return parser.parse_known_args(list(args))[1]


def write_cache(data_cfg, cache_dir, *, runner: str = 'DirectRunner', num_workers: int = 1,
                beam_args=(), examples_per_shard: int = 100_000, print_fn=print) -> dict:
  """Tokenizes the config's mixtures into a cache at `cache_dir` (a folder or a gs:// URL).

  Args:
    data_cfg: config.data (task_module, corpus_dir, vocab_path, mono_length, languages, ...).
    cache_dir: where the cache goes; an existing cache there is replaced.
    runner: a Beam runner ('DirectRunner', 'DataflowRunner', ...).
    num_workers: worker processes (DirectRunner) or workers (other runners).
    beam_args: any other Beam pipeline options, passed through (e.g. --project=...).
    examples_per_shard: the size of an input shard, the unit of parallel work.
    print_fn: where the summary line goes.

  Returns:
    The manifest written.
  """
  import apache_beam as beam  # pylint: disable=import-outside-toplevel
  from apache_beam.options import pipeline_options  # pylint: disable=import-outside-toplevel
  if num_workers < 1 or examples_per_shard < 1:
    raise ValueError(f'num_workers ({num_workers}) and examples_per_shard '
                     f'({examples_per_shard}) must be >= 1.')
  start = time.time()
  mixes, items = work_items(data_cfg, examples_per_shard)
  root = str(cache_dir).rstrip('/')
  storage.makedirs(root)
  _remove_previous(root, {item['task'] for item in items})
  options = [f'--runner={runner}', *beam_args]
  if runner == 'DirectRunner':
    options += (['--direct_num_workers', str(num_workers), '--direct_running_mode',
                 'multi_processing'] if num_workers > 1 else ['--direct_running_mode',
                                                              'in_memory'])
  else:
    options += [f'--num_workers={num_workers}']
  with beam.Pipeline(options=pipeline_options.PipelineOptions(options)) as p:
    _ = (p | 'Items' >> beam.Create(items) | 'Spread' >> beam.Reshuffle()
         | 'Tokenize' >> beam.ParDo(_dofn_class()(data_cfg.to_dict(), root)))
  manifest = _manifest(data_cfg, root, mixes, items)
  storage.write_text(f'{root}/{records.MANIFEST}', json.dumps(manifest, indent=1) + '\n')
  seconds = time.time() - start
  tokens = sum(sum(s['tokens'].values()) for t in manifest['tasks'].values()
               for s in t['splits'].values())
  examples = sum(s['examples'] for t in manifest['tasks'].values() for s in t['splits'].values())
  print_fn(f'Cached {len(manifest["tasks"])} tasks, {examples} examples, {tokens} tokens in '
           f'{seconds:.1f} s ({tokens / max(seconds, 1e-9):,.0f} tokens/s, {runner}, '
           f'{num_workers} worker{"s" if num_workers > 1 else ""}) to {root}; train from it with '
           f'--config.data.cache_dir={root}')
  return manifest


def _remove_previous(root: str, tasks: set[str]) -> None:
  """Removes the manifest first (readers never see an old manifest beside new shards), then every
  shard, count file and unfinished temporary of the tasks about to be written and of those the old
  manifest listed (an earlier run's files, maybe cut into another number of shards)."""
  folder = storage.path(root)
  manifest = folder / records.MANIFEST
  if manifest.exists():
    tasks = tasks | set(json.loads(manifest.read_text(encoding='utf-8')).get('tasks', {}))
    manifest.unlink()
  for task in sorted(tasks):
    for old in (folder / task).glob('*.array_record*'):
      old.unlink()


def _manifest(data_cfg, root: str, mixes: dict, items: list[dict]) -> dict:
  """The manifest, from the counts each work item wrote beside its shard."""
  folder = storage.path(root)
  local_vocab = storage.local(data_cfg.vocab_path)
  tasks: dict[str, dict] = {}
  for item in items:
    shard = records.shard_name(item['task'], item['split'], item['index'], item['count'])
    counts = json.loads((folder / (shard + '.json')).read_text(encoding='utf-8'))
    task = tasks.setdefault(item['task'], {'kind': item['part'],
                                           'features': list(records.FEATURES[item['part']]),
                                           'splits': {}})
    split = task['splits'].setdefault(item['split'], {
        'examples': 0, 'tokens': dict.fromkeys(task['features'], 0), 'shards': [],
        'skipped': {}, 'documents': 0, 'chunked': 0})
    split['shards'].append(shard)
    for key in ('examples', 'documents', 'chunked'):
      split[key] += counts[key]
    for key, value in counts['tokens'].items():
      split['tokens'][key] += value
    for key, value in counts['skipped'].items():
      split['skipped'][key] = split['skipped'].get(key, 0) + value
  for task in tasks.values():
    for split in task['splits'].values():
      split['shards'].sort()
  return {'version': records.VERSION,
          'vocab': {'path': str(data_cfg.vocab_path),
                    'sha256': tokenizer.vocab_fingerprint(data_cfg.vocab_path),
                    'size': local_vocab.stat().st_size},
          'mono_length': data_cfg.mono_length, 'mixtures': mixes,
          'tasks': {name: tasks[name] for name in sorted(tasks)}}


class TokenizeShard:
  """The Beam DoFn of one work item: an input shard of a task's split -> an ArrayRecord file and
  its counts. Holds only plain data (it is pickled to the workers)."""

  def __init__(self, data_cfg: dict, root: str):
    self._cfg_dict, self._root = data_cfg, root
    self._ends = None

  def setup(self) -> None:
    """Registers the config's tasks in this worker (each worker is its own process)."""
    cfg = inputs.mirrored(ml_collections.ConfigDict(self._cfg_dict), ('corpus_dir', 'vocab_path'))
    importlib.import_module(cfg.task_module).register(cfg)
    sp = tokenizer.load_processor(cfg.vocab_path)
    self._ends = records.sentence_ends([sp.id_to_piece(i) for i in range(sp.get_piece_size())])
    self._limit = cfg.mono_length - 2

  def process(self, item: dict):
    """Writes the item's shard and counts; yields the counts."""
    _, seqio = _import_seqio()
    features = records.FEATURES[item['part']]
    shard = records.shard_name(item['task'], item['split'], item['index'], item['count'])
    ds = seqio.get_mixture_or_task(item['task']).get_dataset(
        sequence_length=None, split=item['split'], shuffle=False, num_epochs=1,
        shard_info=seqio.ShardInfo(item['index'], item['count']), trim_output_features=False)
    counts = {'examples': 0, 'tokens': dict.fromkeys(features, 0), 'skipped': {},
              'documents': 0, 'chunked': 0}
    with tempfile.TemporaryDirectory(prefix='amber-jax-shard-') as tmp:
      local = os.path.join(tmp, 'shard.array_record')
      writer = _array_record_writer(local)
      try:
        for ex in ds.as_numpy_iterator():
          for rows in self._rows(ex, features, counts):
            writer.write(records.encode(rows))
            counts['examples'] += 1
            for f, ids in zip(features, rows):
              counts['tokens'][f] += len(ids)
      finally:
        writer.close()
      _publish(local, f'{self._root}/{shard}')
    storage.write_text(f'{self._root}/{shard}.json', json.dumps(counts))
    yield counts

  def _rows(self, ex: dict, features: tuple[str, ...], counts: dict):
    """The records of one example: none (an empty feature: skipped and counted), one, or for a
    monolingual document longer than a row, one per piece."""
    counts['documents'] += 1
    rows = [np.asarray(ex[f], np.int32).ravel() for f in features]
    empty = [f for f, ids in zip(features, rows) if not len(ids)]
    if empty:
      reason = f'empty {empty[0]}'
      counts['skipped'][reason] = counts['skipped'].get(reason, 0) + 1
      return
    if len(features) == 1 and len(rows[0]) > self._limit:
      counts['chunked'] += 1
      for piece in records.chunk_document(rows[0], self._limit, self._ends):
        yield [piece]
      return
    yield rows


def _dofn_class():
  """TokenizeShard as a beam.DoFn (apache_beam is imported only when a cache is written)."""
  import apache_beam as beam  # pylint: disable=import-outside-toplevel
  return type('TokenizeShardDoFn', (TokenizeShard, beam.DoFn), {})


def _array_record_writer(path: str):
  """group_size 1: every record can be read alone, fast (random access while training)."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  return array_record_module.ArrayRecordWriter(path, 'group_size:1')


def _publish(local: str, dst: str) -> None:
  """Puts a finished shard at `dst`: a rename beside it locally (a retried item never leaves
  half a file), a copy to a bucket."""
  if storage.is_url(dst):
    storage.copy_file(local, dst)
    return
  dst_path = pathlib.Path(dst)
  dst_path.parent.mkdir(parents=True, exist_ok=True)
  tmp = dst_path.with_name(f'.{dst_path.name}.{os.getpid()}.tmp')
  storage.copy_file(local, tmp)
  os.replace(tmp, dst_path)


def _import_seqio():
  return pipeline.import_tf()
