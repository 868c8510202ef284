"""`amber-jax data cache` on Apache Beam: ArrayRecord shards whose tokens are seqio's, a manifest
that counts them, long documents cut into rows, skips counted, a bucket, the command line."""

import json
import shutil

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
  """Every shard's records are the seqio examples of its input shard, in order (a monolingual
  document longer than `chunk_limit` as its consecutive pieces), and the manifest counts them."""
  for name, task in manifest['tasks'].items():
    features = task['features']
    for split, info in task['splits'].items():
      got_examples, tokens = 0, dict.fromkeys(features, 0)
      for shard in info['shards']:
        index, count = (int(x) for x in shard.split('-', 1)[1][:-len('.array_record')]
                        .split('-of-'))
        got = decoded(cache / shard, len(features))
        want = seqio_examples(name, split, features, index, count)
        if chunk_limit is None or task['kind'] != 'mono':
          assert got == want, (name, split, shard)
        else:
          joined, at = [], 0
          for (doc,) in want:
            pieces = [doc] if len(doc) <= chunk_limit else []
            while not pieces and at < len(got) and sum(map(len, joined)) < len(doc):
              joined.append(got[at][0])
              at += 1
            if pieces:
              assert got[at][0] == doc
              at += 1
            else:
              assert sum(joined, []) == doc and all(len(p) <= chunk_limit for p in joined)
              joined = []
          assert at == len(got)
        got_examples += len(got)
        for ex in got:
          for f, ids in zip(features, ex):
            tokens[f] += len(ids)
      assert info['examples'] == got_examples and info['tokens'] == tokens, (name, split)


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


def test_the_manifest_counts_documents_cut_and_examples_skipped(corpus, vocab_path, tmp_path):
  long_text = ' '.join(f'the red cat sleeps here number {i}.' for i in range(12))
  mono = tmp_path / 'long.txt'
  mono.write_text(long_text + '\nthe cat sleeps\n', encoding='utf-8')
  cfg = make_cfg(corpus, vocab_path, mono_length=16, extra_tasks=[
      {'name': 'long_mono', 'kind': 'mono', 'files': {'train': str(mono)}, 'rate': 0.5}])
  manifest = preprocess.write_cache(cfg, tmp_path / 'tokens', print_fn=quiet)
  info = manifest['tasks']['long_mono']['splits']['train']
  rows = decoded(tmp_path / 'tokens' / info['shards'][0], 1)
  assert info['documents'] == 2 and info['chunked'] == 1 and info['examples'] == len(rows) > 3
  assert all(len(r[0]) <= 14 for r in rows)
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  sp = spm.SentencePieceProcessor(model_file=vocab_path)
  assert sum((r[0] for r in rows[:-1]), []) == sp.encode(long_text)
  # An example with an empty side (a user's preprocessor may leave one) is skipped, by reason.
  dofn = preprocess.TokenizeShard(cfg.to_dict(), str(tmp_path))
  dofn.setup()
  counts = {'documents': 0, 'chunked': 0, 'skipped': {}}
  example = {'src': np.array([5, 6]), 'tgt': np.array([], np.int32)}
  out = list(dofn._rows(example, ('src', 'tgt'), counts))  # pylint: disable=protected-access
  assert out == [] and counts['skipped'] == {'empty tgt': 1}


def test_a_cache_rewritten_on_a_bucket_gets_its_manifest_last(gcs, corpus, vocab_path):
  # (tests/test_bucket.py reads a cache from the bucket.)
  from amber_jax import storage  # pylint: disable=import-outside-toplevel
  url = 'gs://bkt/beam/tokens'
  preprocess.write_cache(make_cfg(corpus, vocab_path), url, print_fn=quiet)
  # Written again: the old manifest goes first, so no reader sees it beside new shards.
  seen = []
  real_write_text = storage.write_text

  def spy(path, text):
    seen.append(str(path))
    real_write_text(path, text)

  try:
    storage.write_text = spy
    preprocess.write_cache(make_cfg(corpus, vocab_path), url, print_fn=quiet)
  finally:
    storage.write_text = real_write_text
  assert seen[-1] == f'{url}/{records.MANIFEST}'
  assert all(not s.endswith(records.MANIFEST) for s in seen[:-1])


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
