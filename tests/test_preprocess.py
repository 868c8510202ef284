"""`amber-jax data cache` on Apache Beam: ArrayRecord shards whose tokens are seqio's, a manifest
that counts them, long documents cut into rows, skips counted, a bucket, the command line."""

import gzip
import json
import shutil

import fsspec
import numpy as np
import pytest
from array_record.python import array_record_module

from amber_jax import cli
from amber_jax.data import pipeline, preprocess, records
from test_data import corpus, make_cfg, vocab_path  # pylint: disable=unused-import


def quiet(*_):
  pass


def decoded(path, count: int) -> list[list[list[int]]]:
  """The records of one shard file, each as its `count` features (lists of ids)."""
  reader = array_record_module.ArrayRecordReader(str(path), 'readahead_buffer_size:0')
  try:
    raw = reader.read(list(range(reader.num_records()))) if reader.num_records() else []
  finally:
    reader.close()
  return [[f.tolist() for f in ex] for ex in records.decode_many(raw, count)] if raw else []


def seqio_examples(task: str, split: str, features, index: int, count: int):
  _, seqio = pipeline.import_tf()
  ds = seqio.get_mixture_or_task(task).get_dataset(
      sequence_length=None, split=split, shuffle=False, num_epochs=1,
      shard_info=seqio.ShardInfo(index, count), trim_output_features=False)
  return [[ex[f].tolist() for f in features] for ex in ds.as_numpy_iterator()]


def assert_shards_are_seqios(cache, manifest, chunk_limit=None):
  """Every shard's records are the seqio examples of its input shard, in order: an example with an
  empty feature left out, a monolingual document longer than `chunk_limit` as its consecutive
  pieces (each at most `chunk_limit` ids); the manifest counts them all."""
  for name, task in manifest['tasks'].items():
    features = task['features']
    for split, info in task['splits'].items():
      counts = {'examples': 0, 'tokens': dict.fromkeys(features, 0), 'skipped': {},
                'documents': 0, 'chunked': 0}
      for shard in info['shards']:
        assert shard.startswith(f'{name}/{split}-')  # relative to the cache folder
        index, count = (int(x) for x in shard.split('-', 1)[1][:-len('.array_record')]
                        .split('-of-'))
        got = decoded(cache / shard, len(features))
        want = seqio_examples(name, split, features, index, count)
        at = 0
        for ex in want:
          counts['documents'] += 1
          empty = [f for f, ids in zip(features, ex) if not ids]
          if empty:
            reason = f'empty {empty[0]}'
            counts['skipped'][reason] = counts['skipped'].get(reason, 0) + 1
          elif chunk_limit is None or task['kind'] != 'mono' or len(ex[0]) <= chunk_limit:
            assert got[at] == ex, (name, split, shard, at)
            at += 1
          else:
            counts['chunked'] += 1
            joined = []
            while len(joined) < len(ex[0]):
              assert 0 < len(got[at][0]) <= chunk_limit, (name, split, shard, at)
              joined += got[at][0]
              at += 1
            assert joined == ex[0], (name, split, shard, at)
        assert at == len(got), (name, split, shard)
        counts['examples'] += len(got)
        for row in got:
          for f, ids in zip(features, row):
            counts['tokens'][f] += len(ids)
      assert {k: info[k] for k in counts} == counts, (name, split)


@pytest.mark.slow
def test_two_beam_workers_write_seqios_tokens_of_the_django_corpus(django_corpus, django_vocab,
                                                                   tmp_path):
  cfg = make_cfg(django_corpus, str(django_vocab), task_prefix='beam', languages=['de', 'fr'],
                 mono_length=4096)
  cache = tmp_path / 'tokens'
  lines = []
  manifest = preprocess.write_cache(cfg, cache, num_workers=2, examples_per_shard=300,
                                    print_fn=lines.append)
  assert 'train from it with --config.data.cache_dir=' in lines[-1] and '2 workers' in lines[-1]
  # Cut finely: the big tasks have several input shards, the work of several workers.
  assert any(len(s['shards']) > 1 for t in manifest['tasks'].values()
             for s in t['splits'].values())
  assert set(manifest['mixtures']['parallel']['rates']) == {'beam_para_en_de', 'beam_para_en_fr'}
  assert_shards_are_seqios(cache, manifest)
  assert json.loads((cache / records.MANIFEST).read_text()) == manifest
  assert manifest['vocab']['sha256'] and manifest['mono_length'] == 4096


@pytest.mark.slow
def test_long_man_page_paragraphs_become_several_rows_counted(tmp_path):
  from amber_jax.corpora import debian, manpages  # pylint: disable=import-outside-toplevel
  from amber_jax.corpora import vocabulary  # pylint: disable=import-outside-toplevel
  assert shutil.which('apt-get'), 'apt-get is needed to fetch the manpages packages (DATA.md §2)'
  root = debian.fetch_packages(tmp_path / 'debs', ['manpages', 'manpages-de'])
  man_root = root / manpages.MAN_SUBDIR
  corpus_dir = tmp_path / 'corpus'
  manpages.build_manpages_corpus(corpus_dir, man_roots=[man_root], english_roots=[man_root])
  vocab = tmp_path / 'sp.model'
  vocabulary.train_corpus_vocabulary(corpus_dir, vocab, vocab_size=2000)
  cfg = make_cfg(corpus_dir, str(vocab), task_prefix='man', mono_length=64)
  manifest = preprocess.write_cache(cfg, tmp_path / 'tokens', print_fn=quiet)
  mono = [s for t in manifest['tasks'].values() if t['kind'] == 'mono'
          for s in t['splits'].values()]
  chunked = sum(s['chunked'] for s in mono)
  assert chunked > 0  # man pages have paragraphs longer than 62 pieces
  assert sum(s['examples'] for s in mono) > sum(s['documents'] for s in mono)
  assert_shards_are_seqios(tmp_path / 'tokens', manifest, chunk_limit=62)
  # Most cuts fall after a sentence: the pieces end with one more often than at a fixed length.
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  sp = spm.SentencePieceProcessor(model_file=str(vocab))
  ends = records.sentence_ends([sp.id_to_piece(i) for i in range(sp.get_piece_size())])
  rows = [ex[0] for t in manifest['tasks'].values() if t['kind'] == 'mono'
          for shard in t['splits']['train']['shards']
          for ex in decoded(tmp_path / 'tokens' / shard, 1)]
  cut = [r for r in rows if len(r) > 31 and len(r) < 62]  # rows that ended before the limit
  assert cut and np.mean([ends[r[-1]] for r in cut]) > 0.9


def test_a_long_document_is_cut_after_sentences_into_rows_that_join_to_it():
  ends = np.zeros(50, bool)
  ends[[7, 9]] = True  # pieces 7 and 9 end sentences
  doc = np.array([1, 2, 3, 7, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20])
  pieces = records.chunk_document(doc, 8, ends)
  assert [p.tolist() for p in pieces] == [[1, 2, 3, 7], [4, 5, 6, 8, 9], [10, 11, 12, 13, 14, 15,
                                                                              16, 17],
                                          [18, 19, 20]]
  # [1 2 3 7] is half of 8: cut after the 7; [4..9] after the 9; then no sentence end: at 8.
  assert np.concatenate(pieces).tolist() == doc.tolist()
  assert [p.tolist() for p in records.chunk_document(doc[:8], 8, ends)] == [doc[:8].tolist()]


def test_man_pages_are_cached_as_seqio_reads_them_long_blocks_cut(vocab_path, tmp_path):
  # The man-page corpus without the network: test_manpages's English page and its translation.
  from amber_jax.corpora import manpages  # pylint: disable=import-outside-toplevel
  from test_manpages import ENGLISH_PAGE, GERMAN_PAGE  # pylint: disable=import-outside-toplevel
  root = tmp_path / 'man'
  for rel, text in (('man1/frob.1.gz', ENGLISH_PAGE), ('de/man1/frob.1.gz', GERMAN_PAGE)):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(gzip.compress(text.encode('utf-8')))
  manpages.build_manpages_corpus(tmp_path / 'corpus', man_roots=[root], english_roots=[root])
  cfg = make_cfg(tmp_path / 'corpus', vocab_path, task_prefix='frob', mono_length=16)
  manifest = preprocess.write_cache(cfg, tmp_path / 'tokens', print_fn=quiet)
  assert sorted(manifest['tasks']) == ['frob_mono_de', 'frob_mono_en', 'frob_para_en_de']
  assert_shards_are_seqios(tmp_path / 'tokens', manifest, chunk_limit=14)
  mono = [s for t in manifest['tasks'].values() if t['kind'] == 'mono'
          for s in t['splits'].values()]
  assert sum(s['chunked'] for s in mono) > 0
  # Pairs are never cut, however long.
  para = manifest['tasks']['frob_para_en_de']['splits']['train']
  rows = decoded(tmp_path / 'tokens' / para['shards'][0], 2)
  assert para['chunked'] == 0 and max(len(src) for src, _ in rows) > 14


def test_the_manifest_counts_documents_cut_and_examples_skipped(corpus, vocab_path, tmp_path):
  long_text = ' '.join(f'the red cat sleeps here number {i}.' for i in range(12))
  mono = tmp_path / 'long.txt'
  # A zero-width space passes the blank-line filter and tokenizes to no ids: an empty example.
  mono.write_text(long_text + '\nthe cat sleeps\n\u200b\n', encoding='utf-8')
  pairs = tmp_path / 'pairs.tsv'
  pairs.write_text('the cat sleeps\tdie katze schläft\nthe dog\t\u200b\n\u200b\tder hund\n'
                   'the red cat\tdie rote katze\n', encoding='utf-8')
  cfg = make_cfg(corpus, vocab_path, mono_length=16, extra_tasks=[
      {'name': 'long_mono', 'kind': 'mono', 'files': {'train': str(mono)}, 'rate': 0.5},
      {'name': 'empty_pairs', 'kind': 'parallel', 'files': {'train': str(pairs)}, 'rate': 0.5}])
  manifest = preprocess.write_cache(cfg, tmp_path / 'tokens', print_fn=quiet)
  info = manifest['tasks']['long_mono']['splits']['train']
  rows = decoded(tmp_path / 'tokens' / info['shards'][0], 1)
  assert info['documents'] == 3 and info['chunked'] == 1 and info['examples'] == len(rows) > 3
  assert info['skipped'] == {'empty tokens': 1}
  assert all(len(r[0]) <= 14 for r in rows)
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  sp = spm.SentencePieceProcessor(model_file=vocab_path)
  assert sum((r[0] for r in rows[:-1]), []) == sp.encode(long_text)
  assert rows[-1][0] == sp.encode('the cat sleeps')
  # A pair with an empty side (a user's preprocessor may leave one) is skipped, by reason.
  info = manifest['tasks']['empty_pairs']['splits']['train']
  assert info['skipped'] == {'empty src': 1, 'empty tgt': 1}
  assert info['documents'] == 4 and info['examples'] == 2 and info['chunked'] == 0
  assert decoded(tmp_path / 'tokens' / info['shards'][0], 2) == [
      [sp.encode('the cat sleeps'), sp.encode('die katze schläft')],
      [sp.encode('the red cat'), sp.encode('die rote katze')]]
  assert_shards_are_seqios(tmp_path / 'tokens', manifest, chunk_limit=14)


def test_a_cache_rewritten_on_a_bucket_gets_its_manifest_last(gcs, corpus, vocab_path):
  # (tests/test_bucket.py reads a cache from the bucket.)
  from amber_jax import storage  # pylint: disable=import-outside-toplevel
  url = 'gs://bkt/beam/tokens'
  first = preprocess.write_cache(make_cfg(corpus, vocab_path), url, print_fn=quiet)
  # An unfinished earlier run's shard, cut in another number of shards: removed by the rewrite.
  stale = f'{url}/t_mono_en/train-00003-of-00007.array_record'
  storage.write_text(stale, 'old')
  # Written again: the old manifest goes first, so no reader sees it beside new shards; the new
  # one is written after every shard and count file.
  seen = []
  real_write_text, real_copy_file = storage.write_text, storage.copy_file

  def spy_write(path, text):
    seen.append(str(path))
    real_write_text(path, text)

  def spy_copy(src, dst):
    seen.append(str(dst))
    real_copy_file(src, dst)

  try:
    storage.write_text, storage.copy_file = spy_write, spy_copy
    manifest = preprocess.write_cache(make_cfg(corpus, vocab_path), url, print_fn=quiet)
  finally:
    storage.write_text, storage.copy_file = real_write_text, real_copy_file
  assert manifest == first
  assert seen[-1] == f'{url}/{records.MANIFEST}'
  assert all(not s.endswith(records.MANIFEST) for s in seen[:-1])
  shards = [s for t in manifest['tasks'].values() for i in t['splits'].values()
            for s in i['shards']]
  assert sorted(seen[:-1]) == sorted(f'{url}/{s}{e}' for s in shards for e in ('', '.json'))
  # In the bucket: the manifest, each shard and its counts, nothing else.
  fs, folder = fsspec.core.url_to_fs(url)
  assert sorted(name[len(folder) + 1:] for name in fs.find(folder)) == sorted(
      [records.MANIFEST] + [s + e for s in shards for e in ('', '.json')])
  assert json.loads(storage.path(f'{url}/{records.MANIFEST}').read_text()) == manifest
  mirror = storage.local(url)
  assert_shards_are_seqios(mirror, manifest, chunk_limit=14)


def test_the_cache_command_passes_beam_options_through(monkeypatch, corpus, vocab_path, tmp_path):
  got = {}
  monkeypatch.setattr(preprocess, 'write_cache',
                      lambda cfg, cache_dir, **kw: got.update(cache_dir=cache_dir, **kw))
  cli.main(['data', 'cache', '--config=tiny', f'--config.data.corpus_dir={corpus}',
            f'--config.data.vocab_path={vocab_path}', f'--config.data.cache_dir={tmp_path}',
            '--runner=DataflowRunner', '--num-workers=8', '--project=p', '--region=r',
            '--examples-per-shard=5000'])
  assert got == {'cache_dir': str(tmp_path), 'runner': 'DataflowRunner', 'num_workers': 8,
                 'beam_args': ['--project=p', '--region=r'], 'examples_per_shard': 5000}
  with pytest.raises(SystemExit, match='unexpected arguments'):
    cli.main(['data', 'cache', '--config=tiny', 'stray'])
  # A misspelled Beam option is named (Beam itself would drop it with a warning).
  with pytest.raises(SystemExit, match=r"unexpected arguments \['--projekt=p'\]"):
    cli.main(['data', 'cache', '--config=tiny', '--projekt=p'])


def test_the_cache_command_runs_beam_with_two_workers_and_the_options_given(
    monkeypatch, corpus, vocab_path, tmp_path):
  import apache_beam as beam  # pylint: disable=import-outside-toplevel
  options = []

  class Pipeline(beam.Pipeline):  # Beam's own, recording the options it was given

    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      options.append(self._options.get_all_options())  # pylint: disable=protected-access

  monkeypatch.setattr(beam, 'Pipeline', Pipeline)
  cache = tmp_path / 'tokens'
  # A shard of an unfinished earlier run: removed, though no manifest lists it.
  (cache / 't_mono_en').mkdir(parents=True)
  (cache / 't_mono_en' / 'train-00000-of-00002.array_record').write_bytes(b'old')
  cli.main(['data', 'cache', '--config=tiny', f'--config.data.corpus_dir={corpus}',
            f'--config.data.vocab_path={vocab_path}', f'--config.data.cache_dir={cache}',
            '--config.data.task_prefix=t', '--config.data.mono_length=16',
            '--runner=DirectRunner', '--num-workers=2',
            '--examples-per-shard=16', '--job_name=amber-cache-test'])
  (got,) = options
  assert got['runner'] == 'DirectRunner' and got['job_name'] == 'amber-cache-test'
  assert got['direct_num_workers'] == 2 and got['direct_running_mode'] == 'multi_processing'
  manifest = records.read_manifest(cache, vocab_path)
  shards = [s for t in manifest['tasks'].values() for i in t['splits'].values()
            for s in i['shards']]
  assert any(s.endswith('-of-00003.array_record') for s in shards)  # 40 mono lines / 16
  # Only the manifest, the shards and their counts: no temporary left, no old shard.
  assert sorted(str(f.relative_to(cache)) for f in cache.rglob('*') if f.is_file()) == sorted(
      [records.MANIFEST] + [s + e for s in shards for e in ('', '.json')])
  assert_shards_are_seqios(cache, manifest, chunk_limit=14)
