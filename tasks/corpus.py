"""seqio Tasks and Mixtures over a built corpus folder (the Django catalogs by default).

The corpus folder (written by `amber_jax.corpora`) holds:
  manifest.json                   {"languages": [...], "pairs": {"en-xx": {"train": n, ...}},
                                   "mono": {"xx": {"train": n, ...}}}
  parallel/en-<xx>/{train,validation}.tsv   one pair a line: english<TAB>translation
  mono/<lang>/{train,validation}.txt        one sentence a line (blank lines are skipped)

`register(data_cfg)` registers, for `<prefix>` = `data_cfg.task_prefix`:
  <prefix>_mono_<lang>    features 'tokens' (int32 ids, no specials) and 'text' (the raw line)
  <prefix>_para_en_<xx>   features 'src', 'tgt' (int32 ids: English, translation) and
                          'src_text', 'tgt_text' (the raw sides)
  <prefix>_mono, <prefix>_parallel   Mixtures; task i is sampled with rate
                          n_i^alpha / sum_j n_j^alpha (n_i: its train examples in the manifest;
                          see `smoothed_rates`).
Language codes are turned into task names with every character outside [A-Za-z0-9_] -> '_'
(e.g. 'pt-br' -> <prefix>_mono_pt_br). It is idempotent: a second call replaces the first's
registrations (so a changed corpus or config takes effect).

A parallel line without exactly one tab, or with an empty (or all-blank) side, is never dropped:
reading it fails the input pipeline with a `tf.errors.InvalidArgumentError` that names
`<file>:<line number>` and shows the line. The check runs when the line is read, not at
registration, so a large corpus costs nothing up front (a bad line in a rarely sampled language
may surface late: run a pass over the corpus builder's output if that matters).

Writing your own task module
----------------------------
Any corpus folder in the layout above needs no new module: point config.data.corpus_dir,
vocab_path and task_prefix at it. For other sources (TFDS, TFRecords, JSONL, ...), point
`config.data.task_module` at any importable module with

  def register(data_cfg) -> dict:
    '''Registers seqio Tasks/Mixtures; returns {'mono': name or None, 'parallel': name or None}.'''

`amber_jax.data.pipeline` calls it, then reads `seqio.get_mixture_or_task(name)` for the 'train'
split with num_epochs=None, shuffling with the run's seed. What each must yield per example:
  mono      'tokens': int32 [n] SentencePiece ids of one text, without [CLS]/[SEP]
  parallel  'src', 'tgt': int32 [n] ids of an English sentence and its translation, no specials
The framing ([CLS] x [SEP], pairs, segments, padding, truncation) is done by
`amber_jax.data.pipeline`; ids must come from a vocabulary with PAD 0, UNK 1, [CLS] 2 (bos),
[SEP] 3 (eos), [MASK] 4. A name may be a Task or a Mixture; return None for a part you do not
have (its batch size must then be 0).
The config is locked: a data_cfg field your module needs beyond those above must first be added
to configs/default.py. A sketch, for parallel data only:

  def register(data_cfg):
    vocab = amber_jax.text.tokenizer.load_vocabulary(data_cfg.vocab_path)
    seqio.TaskRegistry.remove('my_pairs')  # idempotent
    seqio.TaskRegistry.add(
        'my_pairs', source=seqio.TfdsDataSource('my_dataset:1.0.0'),
        preprocessors=[functools.partial(seqio.preprocessors.rekey,
                                         key_map={'src': 'en', 'tgt': 'de'}),
                       seqio.preprocessors.tokenize],
        output_features={'src': seqio.Feature(vocab, add_eos=False),
                         'tgt': seqio.Feature(vocab, add_eos=False)})
    return {'mono': None, 'parallel': 'my_pairs'}  # and config.data.mono_batch_size = 0
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # pylint: disable=g-import-not-at-top

try:
  tf.config.set_visible_devices([], 'GPU')  # JAX owns the accelerators; TF only reads text.
except RuntimeError:  # TF already initialised its devices elsewhere; nothing left to do here.
  pass

import seqio  # pylint: disable=g-import-not-at-top

from amber_jax.text import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
from amber_jax import paths  # pylint: disable=g-import-not-at-top

SPLITS = ('train', 'validation')


def smoothed_rates(counts: dict[str, int], alpha: float) -> dict[str, float]:
  """Exponentially smoothed sampling rates: rate_i = n_i^alpha / sum_j n_j^alpha.

  alpha=1 samples in proportion to size, alpha=0 uniformly, 0.7 (XLM-R) in between. A name with
  n_i = 0 gets rate 0 whatever alpha is (it has nothing to sample).

  Args:
    counts: name -> number of examples (>= 0).
    alpha: the exponent, >= 0.

  Returns:
    name -> rate, the rates summing to 1.
  """
  if alpha < 0:
    raise ValueError(f'alpha must be >= 0 (1: proportional, 0: uniform); got {alpha}.')
  negative = {k: n for k, n in counts.items() if n < 0}
  if negative:
    raise ValueError(f'Example counts must be >= 0; got {negative}. Check the corpus manifest.')
  weights = {k: (float(n) ** alpha if n > 0 else 0.0) for k, n in counts.items()}
  total = sum(weights.values())
  if total <= 0:
    raise ValueError(f'No name has any example to sample from: counts={counts}.')
  return {k: w / total for k, w in weights.items()}


def task_name(prefix: str, kind: str, lang: str) -> str:
  """`<prefix>_<kind>_<lang>` with `lang` made safe for a seqio name ('pt-br' -> 'pt_br')."""
  return f'{prefix}_{kind}_{re.sub(r"[^A-Za-z0-9_]", "_", lang)}'


def register(data_cfg) -> dict[str, str | None]:
  """Registers the mono and parallel Tasks of a corpus folder and their two Mixtures.

  Args:
    data_cfg: `config.data`; reads corpus_dir ('' = <cache>/corpora/<task_prefix>), vocab_path
      ('' = <cache>/vocab/<task_prefix>.model), task_prefix, alpha, languages ([] = all in the
      manifest; English monolingual text is always included when present), shuffle_buffer.

  Returns:
    {'mono': mixture name or None, 'parallel': mixture name or None}; None where the corpus has
    no examples of that kind for the chosen languages.
  """
  prefix = data_cfg.task_prefix
  corpus = pathlib.Path(data_cfg.corpus_dir or paths.corpus_dir(prefix))
  vocab_path = pathlib.Path(data_cfg.vocab_path or paths.vocab_path(prefix))
  manifest = _read_manifest(corpus)
  vocab = tokenizer_lib.load_vocabulary(vocab_path)  # raises, saying what to do, if missing
  tokenizer = vocab.tf_tokenizer  # built once, here: every task's graph refers to this one
  langs = _chosen_languages(manifest, list(data_cfg.languages), corpus)
  shuffle_buffer = int(getattr(data_cfg, 'shuffle_buffer', 10_000))

  for name in list(seqio.TaskRegistry.names()):
    if name.startswith((f'{prefix}_mono_', f'{prefix}_para_')):
      seqio.TaskRegistry.remove(name)
  mono_counts, para_counts = {}, {}
  for lang in ['en'] + langs:
    if lang in manifest['mono']:
      name = task_name(prefix, 'mono', lang)
      files = {s: str(corpus / 'mono' / lang / f'{s}.txt') for s in SPLITS}
      mono_counts[name] = _add_task(
          name, manifest['mono'][lang], shuffle_buffer,
          seqio.TextLineDataSource(files, num_input_examples=_sizes(manifest['mono'][lang])),
          [_mono_features], {'tokens': seqio.Feature(vocab, add_eos=False)}, tokenizer)
  for lang in langs:
    pair = f'en-{lang}'
    if pair in manifest['pairs']:
      name = task_name(prefix, 'para', f'en_{lang}')
      files = {s: str(corpus / 'parallel' / pair / f'{s}.tsv') for s in SPLITS}
      para_counts[name] = _add_task(
          name, manifest['pairs'][pair], shuffle_buffer,
          seqio.FileDataSource(_numbered_lines, files,
                               num_input_examples=_sizes(manifest['pairs'][pair])),
          [_split_pairs],
          {'src': seqio.Feature(vocab, add_eos=False), 'tgt': seqio.Feature(vocab, add_eos=False)},
          tokenizer)
  explicit = {}
  for spec in data_cfg.extra_tasks:
    kind, name, count, rate = _add_extra_task(dict(spec), vocab, tokenizer, shuffle_buffer)
    (mono_counts if kind == 'mono' else para_counts)[name] = count
    if rate is not None:
      explicit[name] = rate
  explicit.update(parse_rates(data_cfg.rates))
  unknown = sorted(set(explicit) - set(mono_counts) - set(para_counts))
  if unknown:
    raise ValueError(f'config.data.rates names tasks {unknown} that are not registered; the tasks '
                     f'are {sorted(mono_counts) + sorted(para_counts)}.')
  return {'mono': _add_mixture(f'{prefix}_mono', mono_counts, data_cfg.alpha, explicit),
          'parallel': _add_mixture(f'{prefix}_parallel', para_counts, data_cfg.alpha, explicit)}


def parse_rates(text: str) -> dict[str, float]:
  """'task=2,other=0.5' -> {'task': 2.0, 'other': 0.5}; '' -> {}."""
  rates = {}
  for item in filter(None, (part.strip() for part in text.split(','))):
    name, sep, value = item.partition('=')
    try:
      rates[name.strip()] = float(value)
      if not sep or rates[name.strip()] < 0:
        raise ValueError(item)
    except ValueError:
      raise ValueError(f'config.data.rates={text!r}: {item!r} is not task=RATE with RATE >= 0 '
                       "(e.g. 'django_para_en_de=2,django_mono_en=0.5').") from None
  return rates


EXTRA_KEYS = {'name', 'kind', 'tfds', 'tfds_data_dir', 'files', 'src', 'tgt', 'text', 'examples',
              'rate'}


def _add_extra_task(spec: dict, vocab, tokenizer, shuffle_buffer: int):
  """Registers one `config.data.extra_tasks` entry; returns (kind, name, train examples, rate).

  An entry is a dict:
    name      the seqio task name (required)
    kind      'mono' or 'parallel' (required)
    tfds      a TFDS name 'dataset[/config]:version' (e.g. 'wikipedia/20230601.de:1.0.0', or one
              written by `amber-jax data tfds`), read with seqio.TfdsDataSource; or
    files     {'train': path, 'validation': path} text files: `english<TAB>translation` lines
              (parallel) or one text a line (mono), checked like the corpus folders' files
    tfds_data_dir  where the TFDS dataset lives ('' = TFDS's default)
    src, tgt  (parallel, tfds) the English and translation features; dotted for nested ones
              ('translation.en'); default 'src' and 'tgt'
    text      (mono, tfds) the text feature; default 'text'
    examples  train examples, for the smoothed rate (default: what the source reports)
    rate      an explicit mixture rate (default: smoothed by count like the other tasks)
  """
  unknown = sorted(set(spec) - EXTRA_KEYS)
  where = f'config.data.extra_tasks entry {spec}'
  if unknown:
    raise ValueError(f'{where}: unknown keys {unknown}; the keys are {sorted(EXTRA_KEYS)}.')
  name, kind = spec.get('name'), spec.get('kind')
  if not name or kind not in ('mono', 'parallel'):
    raise ValueError(f"{where}: needs 'name' and 'kind' ('mono' or 'parallel').")
  if ('tfds' in spec) == ('files' in spec):
    raise ValueError(f"{where}: give exactly one of 'tfds' and 'files'.")
  seqio.TaskRegistry.remove(name)
  if 'files' in spec:
    files = {s: str(f) for s, f in dict(spec['files']).items()}
    for f in files.values():
      if not pathlib.Path(f).is_file():
        raise FileNotFoundError(f'{where}: file {f} not found.')
    sizes = {s: _count_lines(f) for s, f in files.items()}
    if kind == 'parallel':
      source = seqio.FileDataSource(_numbered_lines, files, num_input_examples=sizes)
      preprocessors = [_split_pairs]
    else:
      source = seqio.TextLineDataSource(files, num_input_examples=sizes)
      preprocessors = [_mono_features]
  else:
    # read_only: a prepared dataset is read by name (no builder class, never downloads).
    source = seqio.TfdsDataSource(tfds_name=spec['tfds'], read_only=True,
                                  tfds_data_dir=spec.get('tfds_data_dir') or None)
    keys = ({'src': spec.get('src', 'src'), 'tgt': spec.get('tgt', 'tgt')} if kind == 'parallel'
            else {'tokens': spec.get('text', 'text')})
    preprocessors = [functools.partial(_pick_features, keys=keys)]
  count = spec.get('examples')
  if count is None:
    count = source.num_input_examples('train')
  if count is None:
    raise ValueError(f"{where}: its source does not know its train size; add 'examples': N.")
  features = ({'src': seqio.Feature(vocab, add_eos=False),
               'tgt': seqio.Feature(vocab, add_eos=False)}
              if kind == 'parallel' else {'tokens': seqio.Feature(vocab, add_eos=False)})
  _add_task(name, {'train': count}, shuffle_buffer, source, preprocessors, features, tokenizer)
  return kind, name, int(count), spec.get('rate')


def _count_lines(path: str) -> int:
  with open(path, 'rb') as f:
    return sum(1 for _ in f)


def _pick_features(dataset: tf.data.Dataset, keys: dict[str, str]) -> tf.data.Dataset:
  """{source features} -> {out: text, out_text: text} for out, dotted path in `keys`."""

  def pick(ex):
    out = {}
    for name, path in keys.items():
      value = ex
      for part in path.split('.'):
        value = value[part]
      out[name] = value
      out['text' if name == 'tokens' else f'{name}_text'] = value
    return out

  return dataset.map(_graph(pick), num_parallel_calls=tf.data.AUTOTUNE)


def _read_manifest(corpus: pathlib.Path) -> dict:
  path = corpus / 'manifest.json'
  if not path.is_file():
    raise FileNotFoundError(
        f'No manifest.json in {corpus}: expected a corpus folder built by amber_jax.corpora '
        '(manifest.json, parallel/, mono/). Build it or set config.data.corpus_dir.')
  manifest = json.loads(path.read_text())
  missing = [k for k in ('languages', 'pairs', 'mono') if k not in manifest]
  if missing:
    raise ValueError(f'{path} lacks the keys {missing} (expected languages, pairs, mono); '
                     'rebuild the corpus with amber_jax.corpora.')
  return manifest


def _chosen_languages(manifest: dict, wanted: list[str], corpus: pathlib.Path) -> list[str]:
  """The non-English languages to use: `wanted`, or every one in the manifest if empty (those
  with pairs, then those with monolingual text only)."""
  known = list(manifest['languages'])
  known += [lang for lang in sorted(manifest['mono']) if lang not in known and lang != 'en']
  unknown = sorted(set(wanted) - set(known) - {'en'})
  if unknown:
    raise ValueError(f'config.data.languages names {unknown}, which the corpus at {corpus} does '
                     f'not have; it has {sorted(known)}. Use those codes or [] for all.')
  return [lang for lang in (wanted or known) if lang != 'en']


def _sizes(counts: dict) -> dict[str, int]:
  """Split sizes for seqio (known sizes let it cache small tasks in memory)."""
  return {s: int(counts.get(s, 0)) for s in SPLITS}


def _add_task(name, counts, shuffle_buffer, source, preprocessors, features,
              tokenizer) -> int:
  """Registers one Task reading `source`; returns its number of train examples."""
  seqio.TaskRegistry.add(
      name,
      source=source,
      preprocessors=[*preprocessors, functools.partial(_tokenize, tokenizer=tokenizer)],
      output_features=features,
      # A buffer larger than the task would only mix epochs (and read them all before step 1).
      shuffle_buffer_size=max(1, min(shuffle_buffer, int(counts.get('train', 0)))))
  return int(counts.get('train', 0))


def _add_mixture(name: str, counts: dict[str, int], alpha: float,
                 explicit: dict[str, float]) -> str | None:
  """Registers a Mixture of the tasks with train examples at the smoothed rates, except those
  given in `explicit`, which get that rate (rates are relative: seqio normalises them)."""
  seqio.MixtureRegistry.remove(name)
  counts = {k: n for k, n in counts.items() if n > 0}
  if not counts:
    return None
  rates = smoothed_rates(counts, alpha)
  rates.update({k: v for k, v in explicit.items() if k in rates})
  if not any(rates.values()):
    raise ValueError(f'Every task of mixture {name} has rate 0: {rates}.')
  seqio.MixtureRegistry.add(name, sorted(rates.items()))
  return name


def _mono_features(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """line -> {'text': line, 'tokens': line} (tokenized next); blank lines are skipped."""
  dataset = dataset.filter(_graph(lambda line: tf.strings.length(tf.strings.strip(line)) > 0))
  return dataset.map(_graph(lambda line: {'text': line, 'tokens': line}),
                     num_parallel_calls=tf.data.AUTOTUNE)


def _tokenize(dataset: tf.data.Dataset, output_features, tokenizer) -> tf.data.Dataset:
  """Encodes each output feature's text with `tokenizer`: int32 ids, no [CLS]/[SEP].

  `seqio.preprocessors.tokenize` with one TF tokenizer shared by all tasks (seqio builds one in
  each task's graph, copying the model into each: seconds per task with a large vocabulary) and
  without autograph.
  """

  def encode(ex):
    return {**ex, **{k: tf.cast(tokenizer.tokenize(ex[k]), f.dtype)
                     for k, f in output_features.items()}}

  return dataset.map(_graph(encode), num_parallel_calls=tf.data.AUTOTUNE)


def _graph(fn):
  """`fn` traced as plain graph code: autograph's source conversion costs seconds per task."""
  return tf.autograph.experimental.do_not_convert(fn)


@tf.autograph.experimental.do_not_convert
def _numbered_lines(path: tf.Tensor) -> tf.data.Dataset:
  """A text file -> {'path', 'line_number' (from 1), 'line'}: TextLineDataSource plus where."""
  return tf.data.TextLineDataset(path).enumerate(start=1).map(
      _graph(lambda number, line: {'path': path, 'line_number': number, 'line': line}))


def _split_pairs(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """{'line': 'english<TAB>translation', ...} -> {'src', 'tgt', 'src_text', 'tgt_text'}.

  A line without exactly one tab or with a blank side fails the pipeline, naming its file:line.
  """

  def split(ex):
    line = ex['line']
    # One tab, and a non-blank character on each side of it (regexes: quick to build, ~100 tasks).
    ok = tf.strings.regex_full_match(line, r'[^\t]*[^\t\s][^\t]*\t[^\t]*[^\t\s][^\t]*')
    src = tf.strings.regex_replace(line, r'\t.*', '')
    tgt = tf.strings.regex_replace(line, r'^[^\t]*\t', '')
    message = tf.strings.join([
        'Bad parallel line at ', ex['path'], ':', tf.strings.as_string(ex['line_number']),
        ' (expected english<TAB>translation: exactly one tab, both sides non-blank; fix or remove '
        'it in the corpus builder and rebuild the corpus): ', line])
    # The raw op: tf.debugging.Assert would wrap it in a tf.cond, doubling the build time.
    with tf.control_dependencies([tf.raw_ops.Assert(condition=ok, data=[message])]):
      return {'src': tf.identity(src), 'tgt': tf.identity(tgt), 'src_text': src, 'tgt_text': tgt}

  return dataset.map(_graph(split), num_parallel_calls=tf.data.AUTOTUNE)
