"""A built corpus folder -> a local TFDS dataset that any process can read by name (no network).

`build_tfds(corpus_dir, data_dir, name='amber_corpus')` writes one TFDS dataset with one
BuilderConfig per seqio task of the corpus (language codes with '-' become '_'):

    <name>/para_en_<xx>:1.0.0   features 'src' (English), 'tgt' (translation): tfds.features.Text
    <name>/mono_<lang>:1.0.0    feature 'text': tfds.features.Text (every language, incl. en)

each with the splits 'train' and 'validation' of the corpus files, in file order (the builder
sets `disable_shuffling`; seqio shuffles when it reads). A split with no examples is left out
(TFDS cannot write an empty split), so reading it is an unknown-split error.

File format: tfrecord. With the installed versions (tensorflow-datasets 4.9.10, seqio 0.0.20,
tensorflow 2.21) array_record files are written fine, but `DatasetBuilder.as_dataset()` raises
`NotImplementedError: .as_dataset() not implemented for ArrayRecord files` (only
`as_data_source()` reads them), and seqio reads every TFDS source through `as_dataset()` (tf.data).

Reading it back by name, from a process that never imports this module: with `data_dir` given and
the name not registered in TFDS, `tfds.builder(name, data_dir=...)` falls back to a
`ReadOnlyBuilder` over `<data_dir>/<name>/<config>/<version>/` (dataset_info.json + features.json
+ the tfrecord files), so all of these work:

    seqio.TfdsDataSource(tfds_name='amber_corpus/para_en_de:1.0.0', tfds_data_dir=DATA_DIR,
                         read_only=True)            # read_only: never tries to generate or fetch
    tfds.builder('amber_corpus/para_en_de:1.0.0', data_dir=DATA_DIR).as_dataset(split='train')
    tfds.builder_from_directory(f'{DATA_DIR}/amber_corpus/para_en_de/1.0.0')

Always give the full `<name>/<config>:<version>`; `seqio.TfdsDataSource` without read_only=True
goes through `tfds.load(..., download=True, try_gcs=True)`, which also works here because the
dataset is already prepared, but read_only=True is the safe choice for data that must not be
regenerated. The same recipe reads any TFDS dataset prepared elsewhere (e.g. a public
wikipedia/opus dataset copied into DATA_DIR).

The dataset is built in a temporary folder inside `data_dir` and renamed into place, so a failed
build leaves no half dataset; an existing `<data_dir>/<name>` is only replaced with
`overwrite=True` (TFDS would otherwise silently keep the old data).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import tempfile
import types

from amber_jax.corpora import layout
from amber_jax.corpora.layout import SOURCE_LANGUAGE, SPLITS

VERSION = '1.0.0'
FILE_FORMAT = 'tfrecord'
_NAME_RE = re.compile(r'[a-z][a-z0-9_]*')


def _tfds():
  """Imports tensorflow_datasets with TF kept off the accelerators (JAX owns them)."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF already initialised its devices elsewhere.
    pass
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return tfds


def config_name(kind: str, lang: str) -> str:
  """'para' or 'mono' and a language -> the BuilderConfig name: ('para', 'pt-br') -> para_en_pt_br."""
  safe = re.sub(r'[^a-z0-9_]', '_', lang.lower())
  return f'para_{SOURCE_LANGUAGE}_{safe}' if kind == 'para' else f'mono_{safe}'


def plan(corpus_dir: str | pathlib.Path) -> list[dict]:
  """The configs a corpus gives: [{'config', 'kind', 'lang', 'file': {split: path}, 'counts'}].

  Only configs with at least one example; `counts` is {split: n} for the non-empty splits, as
  the manifest says.
  """
  corpus_dir = pathlib.Path(corpus_dir)
  manifest = layout.load_manifest(corpus_dir)
  configs = []
  for lang in manifest['languages']:
    counts = manifest['pairs'].get(f'{SOURCE_LANGUAGE}-{lang}', {})
    configs.append({'config': config_name('para', lang), 'kind': 'para', 'lang': lang,
                    'file': {s: corpus_dir / 'parallel' / f'{SOURCE_LANGUAGE}-{lang}' / f'{s}.tsv'
                             for s in SPLITS}, 'counts': counts})
  for lang in sorted(manifest['mono']):
    configs.append({'config': config_name('mono', lang), 'kind': 'mono', 'lang': lang,
                    'file': {s: corpus_dir / 'mono' / lang / f'{s}.txt' for s in SPLITS},
                    'counts': manifest['mono'][lang]})
  for config in configs:
    config['counts'] = {s: int(config['counts'].get(s, 0)) for s in SPLITS
                        if int(config['counts'].get(s, 0)) > 0}
  names = [c['config'] for c in configs]
  clashes = sorted({n for n in names if names.count(n) > 1})
  if clashes:
    raise ValueError(f'{corpus_dir}: languages that differ only in punctuation give the same '
                     f'TFDS config names {clashes}; rename one of them in the corpus')
  return [c for c in configs if c['counts']]


def _examples(config: dict, split: str):
  """(key, example) of one split file, in file order; a bad parallel line names file:line.

  Blank mono lines are skipped (the manifest does not count them).
  """
  path = config['file'][split]
  with open(path, encoding='utf-8', newline='\n') as f:
    for number, line in enumerate(f, start=1):
      line = line.removesuffix('\n')
      if config['kind'] == 'mono':
        if line.strip():  # blank lines separate paragraphs; the seqio tasks skip them too
          yield number, {'text': line}
        continue
      fields = line.split('\t')
      if len(fields) != 2:
        raise ValueError(f'{path}:{number}: expected `english<TAB>translation`, found '
                         f'{len(fields)} tab-separated fields; rebuild the corpus')
      yield number, {'src': fields[0], 'tgt': fields[1]}


def make_builder_class(name: str, configs: list[dict], description: str):
  """A GeneratorBasedBuilder subclass named `name` with one BuilderConfig per entry of `configs`.

  Created per call and never registered in TFDS (skip_registration), so any number of names and
  corpora can be built in one process; readers find the result by name through its files.
  Instances take `corpus_configs` ({config name: plan entry}) besides the usual kwargs.
  """
  tfds = _tfds()
  by_name = {c['config']: c for c in configs}

  def body(ns):
    ns['name'] = name
    ns['VERSION'] = tfds.core.Version(VERSION)
    ns['RELEASE_NOTES'] = {VERSION: 'Exported from an amber-jax corpus folder.'}
    ns['BUILDER_CONFIGS'] = [
        tfds.core.BuilderConfig(
            name=c['config'],
            description=(f'English-{c["lang"]} pairs (src: English, tgt: {c["lang"]})'
                         if c['kind'] == 'para' else f'{c["lang"]} sentences'))
        for c in configs]

    def _info(self):
      if by_name[self.builder_config.name]['kind'] == 'para':
        features = {'src': tfds.features.Text(), 'tgt': tfds.features.Text()}
      else:
        features = {'text': tfds.features.Text()}
      # DatasetInfo directly: dataset_info_from_configs() would read metadata files from the
      # folder of this module.
      return tfds.core.DatasetInfo(builder=self, description=description,
                                   features=tfds.features.FeaturesDict(features),
                                   disable_shuffling=True)

    def _split_generators(self, dl_manager):
      del dl_manager  # Nothing is downloaded.
      config = by_name[self.builder_config.name]
      return {split: self._generate_examples(split) for split in config['counts']}

    def _generate_examples(self, split):
      return _examples(by_name[self.builder_config.name], split)

    ns.update(_info=_info, _split_generators=_split_generators,
              _generate_examples=_generate_examples)

  class_name = ''.join(part.title() for part in name.split('_')) or 'AmberCorpus'
  return types.new_class(class_name, (tfds.core.GeneratorBasedBuilder,),
                         {'skip_registration': True}, body)


def _check_replaceable(target: pathlib.Path):
  """Raises unless `target` looks like a TFDS dataset folder (<config>/<version>/dataset_info)."""
  for child in target.iterdir():
    if child.name.startswith('.'):
      continue
    if not (child.is_dir() and any(child.glob('*/dataset_info.json'))):
      raise FileExistsError(
          f'{target} exists and does not look like a TFDS dataset ({child.name} is not '
          '<config>/<version>/dataset_info.json); choose another --name or --out, or remove it')


def build_tfds(corpus_dir: str | pathlib.Path, data_dir: str | pathlib.Path,
               name: str = 'amber_corpus', overwrite: bool = False) -> list[str]:
  """Writes the corpus at `corpus_dir` as the TFDS dataset `<data_dir>/<name>`.

  Args:
    corpus_dir: a built corpus folder (`amber_jax.corpora.layout`).
    data_dir: the TFDS data folder (what readers pass as data_dir / tfds_data_dir).
    name: the dataset name: lowercase letters, digits and '_', starting with a letter.
    overwrite: replace an existing `<data_dir>/<name>` (otherwise FileExistsError).

  Returns:
    The full TFDS names, e.g. ['amber_corpus/para_en_de:1.0.0', 'amber_corpus/mono_de:1.0.0'].
  """
  if not _NAME_RE.fullmatch(name):
    raise ValueError(f'dataset name {name!r} must be lowercase letters, digits and _, starting '
                     "with a letter (e.g. 'amber_corpus')")
  corpus_dir, data_dir = pathlib.Path(corpus_dir), pathlib.Path(data_dir)
  configs = plan(corpus_dir)
  if not configs:
    raise ValueError(f'the corpus at {corpus_dir} has no examples (see its manifest.json)')
  target = data_dir / name
  if target.exists():
    if not overwrite:
      raise FileExistsError(f'{target} already exists; pass overwrite=True (--overwrite) to '
                            'replace it, or choose another --name or --out')
    _check_replaceable(target)

  manifest_bytes = (corpus_dir / 'manifest.json').read_bytes()
  description = (f'Exported by amber_jax.corpora.tfds_export from the corpus {corpus_dir} '
                 f'(manifest sha256 {hashlib.sha256(manifest_bytes).hexdigest()[:16]}).')
  tfds = _tfds()
  builder_class = make_builder_class(name, configs, description)
  data_dir.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{name}.building-', dir=data_dir))
  names = []
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=import-outside-toplevel
  progress_bar = getattr(tqdm_utils, '_active', True)
  tfds.display_progress_bar(False)  # One bar per split and config is noise here.
  try:
    for config in configs:
      builder = builder_class(config=config['config'], data_dir=str(tmp), file_format=FILE_FORMAT)
      builder.download_and_prepare(
          download_dir=str(tmp / 'downloads'),
          download_config=tfds.download.DownloadConfig(try_download_gcs=False))
      written = {s: builder.info.splits[s].num_examples for s in builder.info.splits.keys()}
      if written != config['counts']:
        raise RuntimeError(f'{config["config"]}: wrote {written} examples but the manifest of '
                           f'{corpus_dir} says {config["counts"]}; rebuild the corpus')
      names.append(f'{name}/{config["config"]}:{VERSION}')
    old = data_dir / f'{tmp.name}.old' if target.exists() else None
    if old is not None:
      target.rename(old)
    (tmp / name).rename(target)
    if old is not None:
      shutil.rmtree(old)
  finally:
    tfds.display_progress_bar(progress_bar)
    shutil.rmtree(tmp, ignore_errors=True)
  return names
