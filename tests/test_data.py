"""amber_jax.data.pipeline and tasks.corpus on a tiny corpus built here (three languages, one Cyrillic)."""

import collections
import itertools
import json
import os
import subprocess
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
import sentencepiece as spm  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

tf.config.set_visible_devices([], 'GPU')

import seqio  # pylint: disable=g-import-not-at-top

from amber_jax.data import pipeline  # pylint: disable=g-import-not-at-top
from amber_jax.data import batches
from amber_jax.data import batching
from amber_jax.data import pairs
from amber_jax.core.model import CLS_ID, PAD_ID, SEP_ID  # pylint: disable=g-import-not-at-top
from configs import default  # pylint: disable=g-import-not-at-top
from tasks import corpus as corpus_tasks  # pylint: disable=g-import-not-at-top

# A tiny dictionary: English sentence i is 'the <adj> <noun> <verb> <place>' (plus a long tail for
# some, to force truncation); a translation maps each word.
WORDS = {
    'en': dict(adj='red green small old quiet', noun='cat dog bird horse fish',
               verb='sleeps runs waits sings', place='here outside today'),
    'de': dict(adj='rote grüne kleine alte stille', noun='Katze Hund Vogel Pferd Fisch',
               verb='schläft läuft wartet singt', place='hier draußen heute'),
    'ru': dict(adj='красная зелёная малая старая тихая', noun='кошка собака птица лошадь рыба',
               verb='спит бежит ждёт поёт', place='здесь снаружи сегодня'),
    'pt-br': dict(adj='vermelho verde pequeno velho quieto', noun='gato cão pássaro cavalo peixe',
                  verb='dorme corre espera canta', place='aqui fora hoje'),
}
PAIRS = {'de': 30, 'ru': 20, 'pt-br': 10}  # train pairs per language
MONO = {'en': 40, 'de': 30, 'ru': 20, 'pt-br': 10}  # train lines per language
LANGS = list(PAIRS)


def sentence(lang, i):
  w = {k: v.split() for k, v in WORDS[lang].items()}
  words = [w['adj'][i % 5], w['noun'][i // 5 % 5], w['verb'][i % 4], w['place'][i % 3]]
  if i % 7 == 0:  # a long one, cut at sentence_length
    words += [w['noun'][j % 5] for j in range(12)]
  return ' '.join(words)


def write_corpus(root, *, pairs=PAIRS, mono=MONO, bad_lines=()):
  """The corpus folder layout of amber_jax.corpora; `bad_lines` are appended to de's train TSV."""
  manifest = {'languages': list(pairs), 'pairs': {}, 'mono': {}}
  for lang, n in pairs.items():
    folder = root / 'parallel' / f'en-{lang}'
    folder.mkdir(parents=True)
    for split, rows in (('train', range(n)), ('validation', range(100, 103))):
      lines = [f'{sentence("en", i)}\t{sentence(lang, i)}' for i in rows]
      if split == 'train' and lang == 'de':
        lines[2:2] = list(bad_lines)
      (folder / f'{split}.tsv').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    manifest['pairs'][f'en-{lang}'] = {'train': n + (len(bad_lines) if lang == 'de' else 0),
                                       'validation': 3}
  for lang, n in mono.items():
    folder = root / 'mono' / lang
    folder.mkdir(parents=True)
    for split, rows in (('train', range(200, 200 + n)), ('validation', range(300, 303))):
      lines = [f'{lang} {sentence(lang, i)}' for i in rows]
      lines[1:1] = ['', '  ']  # blank lines (paragraph breaks) are skipped, not empty rows
      text = '\n'.join(lines) + '\n'
      (folder / f'{split}.txt').write_text(text, encoding='utf-8')
    manifest['mono'][lang] = {'train': n, 'validation': 3}
  (root / 'manifest.json').write_text(json.dumps(manifest))
  return root


@pytest.fixture(scope='module')
def vocab_path(tmp_path_factory):
  return write_vocab(tmp_path_factory.mktemp('vocab'))


def write_vocab(folder):
  """Trains a 160-piece SentencePiece model with our specials on `sentence`s into folder/sp.model;
  returns its path."""
  text = [sentence(lang, i) for lang in WORDS for i in range(60)]
  (folder / 'text.txt').write_text('\n'.join(text), encoding='utf-8')
  spm.SentencePieceTrainer.train(
      input=str(folder / 'text.txt'), model_prefix=str(folder / 'sp'), vocab_size=160,
      pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece='[PAD]', unk_piece='[UNK]',
      bos_piece='[CLS]', eos_piece='[SEP]', user_defined_symbols=['[MASK]'],
      character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
  return str(folder / 'sp.model')


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  return write_corpus(tmp_path_factory.mktemp('corpus'))


def make_cfg(corpus_dir, vocab_path, **overrides):
  cfg = default.get_config().data
  cfg.update(dict(task_prefix='t', corpus_dir=str(corpus_dir), vocab_path=vocab_path,
                  mono_batch_size=4, parallel_batch_size=8, mono_length=16, sentence_length=12,
                  shuffle_buffer=64, pair_packing=False))  # tests of packing set it
  cfg.update(overrides)
  return cfg


@pytest.fixture(scope='module')
def cfg(corpus, vocab_path):
  return make_cfg(corpus, vocab_path)


@pytest.fixture(scope='module')
def first_batches(cfg):
  """Eight batches of a seed-0 iterator from step 0, and its stats after them."""
  it = pipeline.make_train_iterator(cfg, seed=0)
  return [next(it) for _ in range(8)], dict(it.stats)


def framed(ids):
  """The tokens between [CLS] and the first [SEP] of a framed row, checking the frame."""
  assert ids[0] == CLS_ID
  end = list(ids).index(SEP_ID)
  assert (ids[end + 1:] == PAD_ID).all()
  assert PAD_ID not in ids[1:end]
  return list(ids[1:end])


def test_batches_have_the_contracted_shapes_and_dtypes(cfg, first_batches):
  spec = batches.batch_spec(cfg)
  assert set(spec) == {'mono_ids', 'mono_segments', 'src_ids', 'tgt_ids', 'pair_ids',
                       'pair_segments', 'swap_ids', 'swap_segments'}
  assert spec['mono_ids'][0] == (4, 16) and spec['pair_ids'][0] == (8, 24)
  for batch in first_batches[0]:
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == spec


def test_batch_spec_leaves_out_a_part_whose_batch_size_is_zero(cfg):
  assert set(batches.batch_spec(make_cfg('', '', mono_batch_size=0))) == {
      'src_ids', 'tgt_ids', 'pair_ids', 'pair_segments', 'swap_ids', 'swap_segments'}
  assert set(batches.batch_spec(make_cfg('', '', parallel_batch_size=0))) == {
      'mono_ids', 'mono_segments'}
  with pytest.raises(ValueError, match='both 0'):
    batches.batch_spec(make_cfg('', '', parallel_batch_size=0, mono_batch_size=0))


def test_rows_are_framed_and_pair_and_swap_hold_the_same_tokens(first_batches):
  for batch in first_batches[0]:
    for ids, segments in zip(batch['mono_ids'], batch['mono_segments']):
      assert framed(ids) and not segments.any()  # framed(ids): the non-empty text
    for i in range(len(batch['src_ids'])):
      x, y = framed(batch['src_ids'][i]), framed(batch['tgt_ids'][i])
      assert 1 <= len(x) <= 10 and 1 <= len(y) <= 10
      for name, a, b in (('pair', x, y), ('swap', y, x)):
        want = np.zeros(24, np.int32)
        want[:len(a) + len(b) + 3] = [CLS_ID] + a + [SEP_ID] + b + [SEP_ID]
        want_segments = np.zeros(24, np.int32)
        want_segments[len(a) + 2:len(a) + len(b) + 3] = 1
        np.testing.assert_array_equal(batch[f'{name}_ids'][i], want)
        np.testing.assert_array_equal(batch[f'{name}_segments'][i], want_segments)


def test_long_sentences_are_cut_and_counted(first_batches, vocab_path):
  batches, stats = first_batches
  assert stats['steps'] == 8 and stats['pairs'] == 64 and stats['mono_rows'] == 32
  sp = spm.SentencePieceProcessor(model_file=vocab_path)
  is_cut = {}  # the first 10 tokens of an English sentence -> whether it has more
  for i in range(PAIRS['de']):
    tokens = sp.encode(sentence('en', i))
    is_cut[tuple(tokens[:10])] = len(tokens) > 10
  cut = sum(is_cut[tuple(framed(row))] for b in batches for row in b['src_ids'])
  assert 0 < cut < 64  # every 7th sentence is long
  assert stats['src_truncated'] == cut


def test_no_english_sentence_twice_in_a_parallel_batch(first_batches):
  batches, stats = first_batches
  for batch in batches:
    assert len(np.unique(batch['src_ids'], axis=0)) == len(batch['src_ids'])
  assert stats['deferred'] > 0  # the languages share English sentences: duplicates were met


def units(row, seq):
  """The tokens of each pair (or sentence) k = 1, 2, ... of a packed row, by `seq`."""
  return [list(row[seq == k]) for k in range(1, seq.max() + 1)]


def test_packed_pairs_hold_whole_pairs_alike_in_every_array(corpus, vocab_path):
  cfg = make_cfg(corpus, vocab_path, pair_packing=True)
  it = pipeline.make_train_iterator(cfg, seed=0)
  spec = batches.batch_spec(cfg)
  for _ in range(4):
    batch = next(it)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == spec
    english = []
    for r in range(cfg.parallel_batch_size):
      seq, sent_seq = batch['pair_seq'][r], batch['sent_seq'][r]
      pairs_of_row = units(batch['pair_ids'][r], seq)
      assert units(batch['sent_ids'][r], sent_seq) == [
          side for u in pairs_of_row for side in (u[:u.index(SEP_ID) + 1], [CLS_ID] +
                                                  u[u.index(SEP_ID) + 1:])]
      for u, swap, segments in zip(pairs_of_row, units(batch['swap_ids'][r], seq),
                                   units(batch['pair_segments'][r], seq)):
        x, y = framed(np.array(u[:u.index(SEP_ID) + 1])), u[u.index(SEP_ID) + 1:-1]
        assert swap == [CLS_ID] + y + [SEP_ID] + x + [SEP_ID]
        assert segments == [0] * (len(x) + 2) + [1] * (len(y) + 1)
        english.append(tuple(x))
      assert (batch['pair_ids'][r][seq == 0] == PAD_ID).all()
    assert len(set(english)) == len(english)  # no English sentence twice in the step
  assert it.stats['pairs'] > 4 * cfg.parallel_batch_size  # several pairs a row


def _candidates(sources):
  """(handle n, x = [source], y = [n + 5]) for each English id in `sources`, in order."""
  return iter([(n, np.array([x], np.int32), np.array([n + 5], np.int32))
               for n, x in enumerate(sources)])


def test_pairs_defer_duplicates_in_order():
  stream = iter([(np.array([x], np.int32), np.array([n + 5], np.int32))
                 for n, x in enumerate([1, 2, 1, 3, 2, 4, 1, 5, 6])])
  part = batching.StreamPairs(stream, 3, sentence_length=4, packed=False, drop=False)
  got = [part.next() for _ in range(2)]
  tgt = lambda rows: [int(r[1]) - 5 for r in rows['tgt_ids']]  # which pair, by its y
  assert tgt(got[0][0]) == [0, 1, 3] and got[0][1]['deferred'] == 1  # pair 2 (a second 1) waits
  assert tgt(got[1][0]) == [2, 4, 5] and got[1][1]['deferred'] == 0
  selection = pairs.select_pairs(_candidates([1, 2, 1, 3]), rows=3, sentence_length=4,
                                 packed=False, drop=False)
  assert selection.deferred == [2] and selection.examined == 4


def test_pairs_fail_when_the_corpus_is_too_repetitive():
  stream = itertools.cycle([(np.array([x], np.int32), np.array([7], np.int32))
                            for x in (1, 2, 1)])
  with pytest.raises(ValueError, match='too few distinct English sentences'):
    batching.StreamPairs(stream, 3, sentence_length=4, packed=False, drop=False).next()
  with pytest.raises(ValueError, match='too few distinct English sentences'):
    batching.StreamPairs(stream, 3, sentence_length=4, packed=True, drop=False).next()


def test_same_seed_gives_identical_batches_and_another_seed_does_not(cfg, first_batches):
  again = pipeline.make_train_iterator(cfg, seed=0)
  other = pipeline.make_train_iterator(cfg, seed=1)
  for want in first_batches[0][:3]:
    got, different = next(again), next(other)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
  assert any(not np.array_equal(different[k], want[k]) for k in want)


def test_a_private_input_thread_pool_yields_the_same_batches(corpus, vocab_path, first_batches):
  """config.data.input_threads (small hosts) changes how tf.data runs, not what it yields."""
  it = pipeline.make_train_iterator(make_cfg(corpus, vocab_path, input_threads=1), seed=0)
  for want in first_batches[0]:
    got = next(it)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_start_step_yields_the_batches_of_a_fresh_iterator_from_that_step(cfg, first_batches):
  it = pipeline.make_train_iterator(cfg, seed=0, start_step=5)
  for want in first_batches[0][5:8]:
    got = next(it)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_shards_read_different_examples(cfg):
  a = next(pipeline.make_train_iterator(cfg, seed=0, shard_index=0, num_shards=2))
  b = next(pipeline.make_train_iterator(cfg, seed=0, shard_index=1, num_shards=2))
  assert not np.array_equal(a['mono_ids'], b['mono_ids'])
  with pytest.raises(ValueError, match='shard_index'):
    pipeline.make_train_iterator(cfg, seed=0, shard_index=2, num_shards=2)


def test_smoothed_rates_match_a_hand_computation():
  counts = {'a': 100, 'b': 10, 'c': 1, 'empty': 0}
  assert corpus_tasks.smoothed_rates(counts, 1.0) == pytest.approx(
      {'a': 100 / 111, 'b': 10 / 111, 'c': 1 / 111, 'empty': 0})
  assert corpus_tasks.smoothed_rates(counts, 0.0) == pytest.approx(
      {'a': 1 / 3, 'b': 1 / 3, 'c': 1 / 3, 'empty': 0})
  # 100^0.7 = 25.1189, 10^0.7 = 5.0119, 1^0.7 = 1; sum 31.1307.
  assert corpus_tasks.smoothed_rates(counts, 0.7) == pytest.approx(
      {'a': 0.806883, 'b': 0.160994, 'c': 0.032123, 'empty': 0}, abs=1e-6)
  with pytest.raises(ValueError, match='alpha'):
    corpus_tasks.smoothed_rates(counts, -1)


def test_register_is_idempotent_and_the_mixtures_use_the_smoothed_rates(cfg):
  names = corpus_tasks.register(cfg)
  assert corpus_tasks.register(cfg) == names == {'mono': 't_mono', 'parallel': 't_parallel'}
  mixture = seqio.get_mixture_or_task('t_parallel')
  want = corpus_tasks.smoothed_rates({f't_para_en_{k.replace("-", "_")}': n for k, n in PAIRS.items()},
                               0.7)
  assert {t.name: mixture.get_rate(t) for t in mixture.tasks} == pytest.approx(want)
  assert {t.name for t in seqio.get_mixture_or_task('t_mono').tasks} == {
      't_mono_en', 't_mono_de', 't_mono_ru', 't_mono_pt_br'}


def test_register_keeps_only_the_chosen_languages_and_english(cfg):
  names = corpus_tasks.register(make_cfg(cfg.corpus_dir, cfg.vocab_path, task_prefix='only',
                                   languages=['ru']))
  assert [t.name for t in seqio.get_mixture_or_task(names['parallel']).tasks] == ['only_para_en_ru']
  assert {t.name for t in seqio.get_mixture_or_task(names['mono']).tasks} == {
      'only_mono_en', 'only_mono_ru'}
  with pytest.raises(ValueError, match='does not have'):
    corpus_tasks.register(make_cfg(cfg.corpus_dir, cfg.vocab_path, languages=['xx']))


def test_mixture_sampling_follows_the_rates(cfg):
  names = corpus_tasks.register(cfg)
  ds = seqio.get_mixture_or_task(names['mono']).get_dataset(
      None, split='train', seed=3, num_epochs=None, passthrough_features=['text'],
      trim_output_features=False)
  n = 4000
  seen = collections.Counter(ex['text'].decode().split()[0]
                             for ex in ds.take(n).as_numpy_iterator())
  want = corpus_tasks.smoothed_rates(MONO, 0.7)
  for lang, rate in want.items():
    assert seen[lang] / n == pytest.approx(rate, abs=0.03), (lang, seen)


@pytest.mark.parametrize('bad', ['no tab here', 'the cat\t ', '\tder Hund', 'a\tb\tc'])
def test_a_bad_parallel_line_fails_with_its_file_and_line(tmp_path, vocab_path, bad):
  corpus = write_corpus(tmp_path, pairs={'de': 4}, mono={'en': 5}, bad_lines=[bad])
  it = pipeline.make_train_iterator(make_cfg(corpus, vocab_path, task_prefix='bad',
                                         parallel_batch_size=2), seed=0)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r'en-de/train\.tsv:3 \(expected'):
    for _ in range(4):
      next(it)


def test_data_and_batch_spec_import_without_tensorflow():
  code = ('import sys; sys.modules["tensorflow"] = None; sys.modules["seqio"] = None\n'
          'import types, amber_jax.data.pipeline as d\n'
          'c = types.SimpleNamespace(mono_batch_size=2, parallel_batch_size=3, mono_length=8, '
          'sentence_length=5, packing=True, pair_packing=True)\n'
          'print(sorted((k, v[0]) for k, v in d.batch_spec(c).items()))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert "('pair_ids', (3, 10))" in out.stdout and "('mono_ids', (2, 8))" in out.stdout
  assert "('mono_seq', (2, 8))" in out.stdout and "('sent_seq', (3, 10))" in out.stdout


def test_the_built_django_corpus_and_vocabulary_feed_the_pipeline(django_corpus, django_vocab):
  cfg = make_cfg(django_corpus, str(django_vocab), task_prefix='real', languages=['de', 'ja'],
                 sentence_length=64)
  batch = next(pipeline.make_train_iterator(cfg, seed=0))
  assert {k: v.shape for k, v in batch.items()} == {
      k: shape for k, (shape, _) in batches.batch_spec(cfg).items()}
  english = set()
  for lang in ('de', 'ja'):
    lines = (django_corpus / 'parallel' / f'en-{lang}' / 'train.tsv').read_text().splitlines()
    english.update(line.split('\t')[0] for line in lines)
  sp = spm.SentencePieceProcessor(model_file=str(django_vocab))
  decoded = [sp.decode(framed(row)) for row in batch['src_ids'] if row[-1] == PAD_ID]
  assert decoded and all(text in english for text in decoded), decoded


@pytest.mark.parametrize('cached', [False, True], ids=['raw_text', 'cache'])
def test_resume_on_the_real_corpus_continues_with_the_uninterrupted_batches(
    django_corpus, django_vocab, tmp_path, cached):
  cfg = make_cfg(django_corpus, str(django_vocab), task_prefix='real', languages=['de', 'ja', 'ru'],
                 sentence_length=32, packing=True, mono_length=48)
  if cached:
    from amber_jax.data import preprocess  # pylint: disable=import-outside-toplevel
    preprocess.write_cache(cfg, tmp_path / 'tokens', print_fn=lambda *_: None)
    cfg.cache_dir = str(tmp_path / 'tokens')
  full = [b for _, b in zip(range(7), pipeline.make_train_iterator(cfg, seed=5))]
  resumed = pipeline.make_train_iterator(cfg, seed=5, start_step=4)  # the run restored at step 4
  for want in full[4:]:
    got = next(resumed)
    assert got.keys() == want.keys() and all((got[k] == want[k]).all() for k in want)
