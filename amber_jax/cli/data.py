"""`amber-jax data ...` and `amber-jax vocab train`: build a corpus, export one to TFDS, print the
mixtures' sampling rates, pretokenize the training tasks, train the SentencePiece vocabulary."""

from __future__ import annotations

import argparse
import pathlib
import time

from amber_jax import config as config_lib
from amber_jax import paths
from amber_jax.cli import parsing
from amber_jax.corpora import debian, django_po, files, manpages, readers, tfds_export, vocabulary
from amber_jax.data import mixtures, preprocess

USAGE = """\
usage: amber-jax data build django [--out DIR]         the Django catalog corpus (DATA.md §1)
       amber-jax data build manpages [--out DIR] ...  the man-page translations (DATA.md §2)
       amber-jax data build files --out DIR ...       your own Moses/TSV/JSONL/text/.po files
       amber-jax data tfds CORPUS_DIR --out DIR       a built corpus -> a local TFDS dataset
       amber-jax data rates [--config=PRESET] [--config.a.b=V ...]   the mixtures' task rates
       amber-jax data cache [--config=PRESET] [--config.a.b=V ...] [--runner=R] [--num-workers=N]
                                         pretokenize the tasks once (Apache Beam -> ArrayRecord)
Each answers -h/--help."""

MIXTURE_HELP = {
    'rates': 'Print each task of the config\'s mono and parallel mixtures: its train examples, '
             'its sampling rate, the examples it gives per step and the steps one pass over it '
             'takes.',
    'cache': 'Tokenize every task of both mixtures once (train and validation) on Apache Beam '
             'into ArrayRecord shards and a manifest, in a folder or a gs:// bucket '
             '(config.data.cache_dir, default <cache>/tokens/<task prefix>); train from it with '
             '--config.data.cache_dir=DIR. Any other --option is a Beam pipeline option, passed '
             'through (e.g. --project, --region, --temp_location for Dataflow).',
}


def cmd_data(argv: list[str]):
  """`data build django|manpages|files ...`, `data tfds ...`, `data rates ...`, `data cache ...`."""
  if argv and argv[0] in ('-h', '--help'):
    print(USAGE)
    raise SystemExit(0)
  if not argv or argv[0] not in ('build', 'tfds', 'rates', 'cache'):
    raise SystemExit(USAGE)
  action, rest = argv[0], argv[1:]
  if action == 'build':
    kinds = {'django': build_django, 'manpages': build_manpages, 'files': build_files}
    if rest and rest[0] in ('-h', '--help'):
      print(USAGE)
      raise SystemExit(0)
    if not rest or rest[0] not in kinds:
      raise SystemExit(f'amber-jax data build: name one of {sorted(kinds)}\n{USAGE}')
    return kinds[rest[0]](rest[1:])
  if action == 'tfds':
    return export_tfds(rest)
  p = parsing.config_parser(f'amber-jax data {action}', MIXTURE_HELP[action])
  if action == 'rates':
    _, config = parsing.parse_config(p, rest)
    config_lib.resolve_paths(config)
    mixtures.print_rates(config.data)
    return None
  p.add_argument('--runner', default='DirectRunner',
                 help='Beam runner: DirectRunner (worker processes here), DataflowRunner, ...')
  p.add_argument('--num-workers', type=int, default=1,
                 help='worker processes (DirectRunner) or workers (other runners)')
  p.add_argument('--examples-per-shard', type=int, default=100_000,
                 help='input examples per shard: the unit of parallel work and of output files')
  args, rest = parsing.parse_known(p, rest)
  config, beam_args = config_lib.load_config(rest)
  stray = preprocess.unknown_beam_options(beam_args)
  if stray:
    raise SystemExit(f'{p.prog}: unexpected arguments {stray} (neither a flag of this command '
                     'nor a Beam pipeline option)')
  config_lib.resolve_paths(config)
  preprocess.write_cache(config.data,
                         config.data.cache_dir or mixtures.default_cache_dir(config.data),
                         runner=args.runner, num_workers=args.num_workers, beam_args=beam_args,
                         examples_per_shard=args.examples_per_shard)
  return None


def build_django(argv: list[str]) -> None:
  """`data build django [--out DIR]`."""
  p = argparse.ArgumentParser(prog='amber-jax data build django',
                              description='Build the Django catalog corpus: English <-> X '
                              'pairs from the translation catalogs (.po) of the installed django '
                              'package (nothing is downloaded).')
  p.add_argument('--out', default='', help='output folder (default: the cache folder)')
  args = p.parse_args(argv)
  out = pathlib.Path(args.out) if args.out else paths.corpus_dir('django')
  try:
    manifest = django_po.build_django_corpus(out)
  except FileExistsError as error:
    raise SystemExit(f'amber-jax data build django: {error}') from None
  print(f'Built {out}: {len(manifest["languages"])} languages, '
        f'{sum(v["train"] + v["validation"] for v in manifest["pairs"].values())} pairs; '
        f'skipped: {manifest["skipped"]}')


def _comma_list(value: str) -> list[str] | None:
  """`'a,b'` -> ['a', 'b']; an empty value -> None (the default)."""
  return [v for v in value.split(',') if v] or None


def build_manpages(argv: list[str]) -> dict:
  """`data build manpages [--out DIR] [--languages de,fr] [--max-pages N] [--cache DIR] ...`;
  returns the corpus manifest."""
  p = argparse.ArgumentParser(
      prog='amber-jax data build manpages',
      description='Build the Debian man-page translation corpus (English <-> 16 languages).')
  p.add_argument('--out', default='', help='output folder (default: <cache>/corpora/manpages)')
  p.add_argument('--languages', default='', help='comma-separated codes, e.g. de,fr,pt-br '
                 '(default: all)')
  p.add_argument('--max-pages', type=int, default=None,
                 help='read at most N translated pages per language')
  p.add_argument('--split-by', choices=manpages.SPLIT_BY, default='page',
                 help='hold out whole pages (default) or paragraphs by hash')
  p.add_argument('--cache', default='', help='package cache (default: <cache>/packages/manpages)')
  p.add_argument('--man-roots', default='', help='comma-separated folders laid out like '
                 '/usr/share/man to read instead of fetching the packages')
  p.add_argument('--english-roots', default='', help='comma-separated folders with English man*/ '
                 'pages (default: the man roots, then /usr/share/man)')
  args = p.parse_args(argv)
  out = pathlib.Path(args.out) if args.out else paths.corpus_dir(manpages.CORPUS_NAME)
  start = time.time()
  try:
    manifest = manpages.build_manpages_corpus(
        out, man_roots=_comma_list(args.man_roots), english_roots=_comma_list(args.english_roots),
        languages=_comma_list(args.languages), max_pages=args.max_pages,
        cache_dir=args.cache or None, split_by=args.split_by)
  except (debian.FetchError, FileNotFoundError, FileExistsError, ValueError) as error:
    raise SystemExit(f'amber-jax data build manpages: {error}') from None
  seconds = time.time() - start
  print(f'Built {out} in {seconds:.1f} s: {len(manifest["languages"])} languages, '
        f'{sum(manifest["total_pairs"].values())} pairs '
        f'(train {manifest["total_pairs"]["train"]}, '
        f'validation {manifest["total_pairs"]["validation"]})')
  for name, splits in sorted(manifest['pairs'].items(), key=lambda kv: -sum(kv[1].values())):
    print(f'  {name:10s} {sum(splits.values()):7d}')
  totals = manifest['totals']
  print(f'pages: {totals["files_read"]} read, {totals["files_used"]} used; blocks: '
        f'{totals["entries_read"]} read, {totals["entries_kept"]} kept')
  print('skipped: ' + ', '.join(f'{reason} {n}' for reason, n in manifest['skipped'].items()))
  return manifest


def build_files(argv: list[str]) -> None:
  """`data build files --out DIR --pairs SPEC ... --mono SPEC ...`."""
  parser = argparse.ArgumentParser(
      prog='amber-jax data build files',
      description='Build a corpus folder from your own files (nothing is downloaded).',
      epilog=f'Specs: {readers.SPEC_HELP}. Example: amber-jax data build files --out corpora/mine '
             '--pairs de:train.en,train.de --pairs fr:enfr.tsv.gz --mono sw:news.sw.txt')
  parser.add_argument('--out', required=True, help='corpus folder to create (replaced if present)')
  parser.add_argument('--pairs', action='append', default=[], metavar='SPEC',
                      help='parallel input; repeat for more files')
  parser.add_argument('--mono', action='append', default=[], metavar='SPEC',
                      help='monolingual input; repeat for more files')
  parser.add_argument('--validation-fraction', type=float, default=0.15)
  parser.add_argument('--min-words', type=int, default=1,
                      help='fewest words in English text (other languages need one)')
  args = parser.parse_args(argv)
  if not args.pairs and not args.mono:
    parser.error('give at least one --pairs or --mono spec')
  try:
    manifest = files.build_files_corpus(args.out, args.pairs, args.mono,
                                        validation_fraction=args.validation_fraction,
                                        min_words=args.min_words)
  except (ValueError, FileNotFoundError, FileExistsError) as error:
    raise SystemExit(f'amber-jax data build files: {error}') from None
  print(files.summary(args.out, manifest))


def export_tfds(argv: list[str]) -> None:
  """`data tfds CORPUS_DIR --out DATA_DIR [--name NAME] [--overwrite]`."""
  parser = argparse.ArgumentParser(
      prog='amber-jax data tfds',
      description='Export a built corpus folder as a local TFDS dataset (tfrecord, no network).',
      epilog="Read it with seqio.TfdsDataSource(tfds_name='NAME/para_en_de:1.0.0', "
             "tfds_data_dir=DATA_DIR, read_only=True).")
  parser.add_argument('corpus_dir', help='a corpus folder (manifest.json, parallel/, mono/)')
  parser.add_argument('--out', required=True, help='TFDS data folder (data_dir)')
  parser.add_argument('--name', default='amber_corpus', help='dataset name (default amber_corpus)')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing dataset')
  args = parser.parse_args(argv)
  try:
    names = tfds_export.build_tfds(args.corpus_dir, args.out, args.name, overwrite=args.overwrite)
  except (ValueError, FileNotFoundError, FileExistsError) as error:
    raise SystemExit(f'amber-jax data tfds: {error}') from None
  print(f'Wrote {len(names)} TFDS configs of {args.name} to {pathlib.Path(args.out) / args.name} '
        f'({tfds_export.FILE_FORMAT}); read them with seqio.TfdsDataSource(tfds_name=NAME, '
        f'tfds_data_dir={str(args.out)!r}, read_only=True):')
  for full_name in names:
    print(f'  {full_name}')


def cmd_vocab(argv: list[str]) -> None:
  """`vocab train [--corpus DIR] [--out PATH] [--size N] [--alpha A]`."""
  p = argparse.ArgumentParser(
      prog='amber-jax vocab',
      description='Train the SentencePiece unigram vocabulary (with the BERT specials) on a '
      'corpus\'s train-split monolingual text, languages smoothed by --alpha.')
  p.add_argument('action', choices=['train'])
  p.add_argument('--corpus', default='', help='corpus folder (default: the Django corpus)')
  p.add_argument('--out', default='', help='model path (default: the cache folder)')
  p.add_argument('--size', type=int, default=8000, help='vocabulary size (default 8000)')
  p.add_argument('--alpha', type=float, default=0.7,
                 help='language smoothing exponent of the sample (default 0.7)')
  args = p.parse_args(argv)
  corpus = pathlib.Path(args.corpus) if args.corpus else paths.corpus_dir('django')
  out = pathlib.Path(args.out) if args.out else paths.vocab_path('django')
  print(vocabulary.train_corpus_vocabulary(corpus, out, vocab_size=args.size, alpha=args.alpha))
