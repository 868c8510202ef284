"""Training batches from the pretokenized cache (amber_jax.data.preprocess writes it, grain_input
reads it), packing, too-long handling and mixture rates, on test_data's corpus."""

import collections
import os
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm

from amber_jax.data import pipeline
from amber_jax.data import batches
from amber_jax.data import batching
from amber_jax.data import mixtures
from amber_jax.data import preprocess
from amber_jax.data import records
from amber_jax.core.model import CLS_ID, PAD_ID, SEP_ID
from tasks import corpus as corpus_tasks
from test_data import corpus, make_cfg, vocab_path, write_corpus  # pylint: disable=unused-import

STEPS = 6


@pytest.fixture(scope='module')
def cache_dir(corpus, vocab_path, tmp_path_factory):
  folder = tmp_path_factory.mktemp('cache') / 'tokens'
  preprocess.write_cache(make_cfg(corpus, vocab_path), folder, print_fn=lambda *_: None)
  return folder


@pytest.fixture(scope='module')
def cached_cfg(corpus, vocab_path, cache_dir):
  return make_cfg(corpus, vocab_path, cache_dir=str(cache_dir))


def _body(row):
  """Ids between [CLS] and [SEP] of a framed row."""
  assert row[0] == CLS_ID
  end = list(row).index(SEP_ID)
  assert (row[end + 1:] == PAD_ID).all()
  return tuple(row[1:end])


def test_cache_holds_every_example_tokenized_like_the_live_pipeline(corpus, vocab_path,
                                                                     cache_dir):
  from test_preprocess import decoded  # pylint: disable=import-outside-toplevel
  sp = spm.SentencePieceProcessor(model_file=vocab_path)
  manifest = records.read_manifest(cache_dir, vocab_path)
  tasks = manifest['tasks']
  rates = {p: manifest['mixtures'][p]['rates'] for p in ('mono', 'parallel')}
  assert set(rates['parallel']) == {'t_para_en_de', 't_para_en_ru', 't_para_en_pt_br'}
  assert abs(sum(rates['mono'].values()) - 1) < 1e-9
  lines = (corpus / 'parallel' / 'en-ru' / 'train.tsv').read_text(encoding='utf-8').splitlines()
  info = tasks['t_para_en_ru']['splits']['train']
  got = [ex for shard in info['shards'] for ex in decoded(cache_dir / shard, 2)]
  assert info['examples'] == len(lines) == len(got)
  assert [tgt for _, tgt in got] == [sp.encode(line.split('\t')[1]) for line in lines]
  # Blank lines of the mono files are skipped, as in the live pipeline.
  assert tasks['t_mono_en']['splits']['train']['documents'] == 40
  assert tasks['t_mono_en']['splits']['validation']['documents'] == 3


def test_cached_batches_keep_the_contract_and_are_deterministic(cached_cfg):
  first = list(zip(range(STEPS), pipeline.make_train_iterator(cached_cfg, seed=3)))
  again = list(zip(range(STEPS), pipeline.make_train_iterator(cached_cfg, seed=3)))
  other = next(pipeline.make_train_iterator(cached_cfg, seed=4))
  spec = batches.batch_spec(cached_cfg)
  for (_, batch), (_, same) in zip(first, again):
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == spec
    assert all((batch[k] == same[k]).all() for k in batch)
    assert len({_body(r) for r in batch['src_ids']}) == len(batch['src_ids'])  # no SA duplicate
    for k in ('pair_ids', 'swap_ids'):
      assert (batch[k] != PAD_ID).sum() == (batch['src_ids'] != PAD_ID).sum() + (
          batch['tgt_ids'] != PAD_ID).sum() - len(batch[k])  # [CLS] x [SEP] y [SEP]
  assert not (first[0][1]['src_ids'] == other['src_ids']).all()


def test_cached_resume_yields_the_uninterrupted_batches(cached_cfg):
  full = [b for _, b in zip(range(STEPS), pipeline.make_train_iterator(cached_cfg, seed=1))]
  resumed = pipeline.make_train_iterator(cached_cfg, seed=1, start_step=STEPS - 2)
  for want in full[-2:]:
    got = next(resumed)
    assert all((got[k] == want[k]).all() for k in want)


def test_a_cache_from_another_vocabulary_is_refused(cached_cfg, tmp_path):
  other = tmp_path / 'other.model'
  other.write_bytes(b'not the same vocabulary')
  cfg = cached_cfg.copy_and_resolve_references()
  cfg.vocab_path = str(other)
  with pytest.raises(ValueError, match='tokenized with .*sp.model.*Rewrite the cache'):
    pipeline.make_train_iterator(cfg, seed=0)


def test_a_missing_cache_says_how_to_write_it(corpus, vocab_path, tmp_path):
  with pytest.raises(FileNotFoundError, match='amber-jax data cache'):
    pipeline.make_train_iterator(make_cfg(corpus, vocab_path, cache_dir=str(tmp_path)), seed=0)


def test_training_from_the_cache_needs_no_tensorflow(cached_cfg):
  code = ('import sys; sys.modules["tensorflow"] = None; sys.modules["seqio"] = None\n'
          'import ml_collections, amber_jax.data.pipeline as d\n'
          f'c = ml_collections.ConfigDict({cached_cfg.to_dict()!r})\n'
          'b = next(d.make_train_iterator(c, seed=0))\n'
          'print(sorted((k, v.shape) for k, v in b.items()))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert out.returncode == 0, out.stderr[-3000:]
  assert "('pair_ids', (8, 24))" in out.stdout


# Packing.


def _texts(lengths):
  return [np.arange(10, 10 + n, dtype=np.int32) + 100 * i for i, n in enumerate(lengths)]


def test_packer_keeps_every_text_in_order_and_numbers_them():
  texts = _texts([3, 4, 10, 2, 2, 5, 1, 7])
  packer = batching.Packer(iter(texts + _texts([1] * 50)), length=12, batch_size=3, drop=False)
  batch, stats = packer.next()
  ids, seq = batch['mono_ids'], batch['mono_seq']
  got = []
  for row, row_seq in zip(ids, seq):
    for k in range(1, row_seq.max() + 1):
      part = row[row_seq == k]
      assert part[0] == CLS_ID and part[-1] == SEP_ID
      got.append(part[1:-1])
    assert (row[row_seq == 0] == PAD_ID).all()
  # 12 columns: [3, 4] (5 + 6 = 11), [10] (12), [2, 2, 5 -> no: 4 + 4 = 8, then 5 + 2 > 12 -> next]
  assert [len(t) for t in got] == [3, 4, 10, 2, 2]
  assert all((a == b).all() for a, b in zip(got, texts))
  assert stats == {'mono_rows': 3, 'mono_texts': 5, 'mono_truncated': 0, 'mono_dropped': 0}
  batch, _ = packer.next()  # the text that did not fit starts the next batch
  assert (batch['mono_ids'][0][1:6] == texts[5]).all()


def test_packer_cuts_or_drops_long_texts_and_counts_them():
  long_first = _texts([20, 3])
  cut = batching.Packer(iter(long_first + _texts([2] * 9)), length=8, batch_size=1, drop=False)
  batch, stats = cut.next()
  assert (batch['mono_ids'][0][1:7] == long_first[0][:6]).all() and stats['mono_truncated'] == 1
  dropped = batching.Packer(iter(long_first + _texts([2] * 9)), length=8, batch_size=1, drop=True)
  batch, stats = dropped.next()
  assert (batch['mono_ids'][0][1:4] == long_first[1]).all() and stats['mono_dropped'] == 1


def test_packing_works_from_the_cache_and_from_seqio(corpus, vocab_path, cache_dir):
  # The two samplers differ (so do their texts); both must pack several texts a row.
  for cfg in (make_cfg(corpus, vocab_path, packing=True, mono_length=40, cache_dir=str(cache_dir)),
              make_cfg(corpus, vocab_path, packing=True, mono_length=40)):
    it = pipeline.make_train_iterator(cfg, seed=0)
    batch = next(it)
    assert batch['mono_seq'].shape == batch['mono_ids'].shape == (4, 40)
    assert it.stats['mono_texts'] > it.stats['mono_rows']  # more than one text a row
    starts = (batch['mono_ids'] == CLS_ID).sum()
    assert starts == it.stats['mono_texts'] == sum(r.max() for r in batch['mono_seq'])


def test_too_long_drop_removes_and_counts_cut_rows(cached_cfg):
  cfg = cached_cfg.copy_and_resolve_references()
  # (sentence_length 12 would leave too few distinct pairs; the cache cut its documents into
  # rows of 16, so rows of 12 are too short for some)
  cfg.update(too_long='drop', sentence_length=16, mono_length=12)
  it = pipeline.make_train_iterator(cfg, seed=0)
  batches = [next(it) for _ in range(STEPS)]
  assert it.stats['pairs_dropped'] > 0 and it.stats['mono_dropped'] > 0
  assert it.stats['src_truncated'] == it.stats['tgt_truncated'] == it.stats['mono_truncated'] == 0
  for b in batches:
    for k in ('src_ids', 'tgt_ids', 'mono_ids'):
      assert ((b[k][:, -1] == PAD_ID) | (b[k][:, -1] == SEP_ID)).all()  # nothing cut
  cfg.too_long = 'truncate'
  truncating = pipeline.make_train_iterator(cfg, seed=0)
  [next(truncating) for _ in range(STEPS)]
  assert truncating.stats['src_truncated'] + truncating.stats['tgt_truncated'] > 0


def test_too_long_must_be_truncate_or_drop(cached_cfg):
  cfg = cached_cfg.copy_and_resolve_references()
  cfg.too_long = 'skip'
  with pytest.raises(ValueError, match="'truncate' or 'drop'"):
    pipeline.make_train_iterator(cfg, seed=0)


# Rates and users' own tasks.


def test_explicit_rates_override_the_smoothed_ones(corpus, vocab_path):
  names, table = mixtures.mixture_table(
      make_cfg(corpus, vocab_path, rates='t_para_en_pt_br=0,t_para_en_de=2'))
  rates = {r['task']: r['rate'] for r in table['parallel']}
  want_ru = 20 ** 0.7 / (30 ** 0.7 + 20 ** 0.7 + 10 ** 0.7)  # ru keeps its smoothed weight
  assert rates['t_para_en_pt_br'] == 0
  assert rates['t_para_en_de'] == pytest.approx(2 / (2 + want_ru))
  assert names['parallel'] == 't_parallel'


@pytest.mark.parametrize('rates, message', [('t_para_en_xx=1', 'not registered'),
                                            ('t_para_en_de', 'task=RATE'),
                                            ('t_para_en_de=-1', 'task=RATE')])
def test_bad_rates_name_the_problem(corpus, vocab_path, rates, message):
  with pytest.raises(ValueError, match=message):
    corpus_tasks.register(make_cfg(corpus, vocab_path, rates=rates))


def test_an_extra_task_from_files_joins_the_mixture(corpus, vocab_path, tmp_path):
  tsv = tmp_path / 'mine.tsv'
  tsv.write_text('the red cat sleeps here\tdie rote Katze schläft hier\n' * 3, encoding='utf-8')
  cfg = make_cfg(corpus, vocab_path, extra_tasks=[
      {'name': 'my_pairs', 'kind': 'parallel', 'files': {'train': str(tsv)}, 'rate': 0.5}])
  _, table = mixtures.mixture_table(cfg)
  row = {r['task']: r for r in table['parallel']}['my_pairs']
  smoothed = corpus_tasks.smoothed_rates({'de': 30, 'ru': 20, 'pt-br': 10, 'mine': 3}, 0.7)
  assert row['examples'] == 3  # the others keep their smoothed weights; 'mine' gets 0.5:
  assert row['rate'] == pytest.approx(0.5 / (0.5 + 1 - smoothed['mine']))
  lines = []
  mixtures.print_rates(cfg, print_fn=lines.append)
  assert any(line.split()[0] == 'my_pairs' for line in lines)


def test_an_extra_task_with_an_unknown_key_is_refused(corpus, vocab_path):
  cfg = make_cfg(corpus, vocab_path, extra_tasks=[{'name': 'x', 'kind': 'mono', 'file': 'a'}])
  with pytest.raises(ValueError, match=r"unknown keys \['file'\]"):
    corpus_tasks.register(cfg)


def test_an_extra_task_from_a_tfds_dataset_reads_its_examples(corpus, vocab_path, tmp_path):
  from amber_jax.corpora import tfds_export  # pylint: disable=import-outside-toplevel
  import seqio  # pylint: disable=import-outside-toplevel
  names = tfds_export.build_tfds(corpus, tmp_path / 'tfds', name='user_pairs')
  assert 'user_pairs/para_en_ru:1.0.0' in names
  cfg = make_cfg(corpus, vocab_path, extra_tasks=[
      {'name': 'from_tfds', 'kind': 'parallel', 'tfds': 'user_pairs/para_en_ru:1.0.0',
       'tfds_data_dir': str(tmp_path / 'tfds')},
      {'name': 'from_tfds_mono', 'kind': 'mono', 'tfds': 'user_pairs/mono_de:1.0.0',
       'tfds_data_dir': str(tmp_path / 'tfds')}])
  _, table = mixtures.mixture_table(cfg)
  assert {r['task']: r['examples'] for r in table['parallel']}['from_tfds'] == 20
  assert {r['task']: r['examples'] for r in table['mono']}['from_tfds_mono'] == 30
  ex = next(seqio.get_mixture_or_task('from_tfds').get_dataset(
      sequence_length=None, split='train', shuffle=False).as_numpy_iterator())
  first = (corpus / 'parallel' / 'en-ru' / 'train.tsv').read_text(encoding='utf-8').split('\n')[0]
  assert (ex['src_text'].decode(), ex['tgt_text'].decode()) == tuple(first.split('\t'))
  sp = spm.SentencePieceProcessor(model_file=vocab_path)
  assert list(ex['tgt']) == sp.encode(first.split('\t')[1])


@pytest.mark.slow
def test_training_reads_packed_rows_from_the_cache(cached_cfg, tmp_path):
  from amber_jax.training import loop  # pylint: disable=import-outside-toplevel
  from amber_jax.eval import retrieval
  from amber_jax.data import inputs
  from test_train import small_config  # pylint: disable=import-outside-toplevel
  cfg = small_config(tmp_path / 'run', steps=2)
  with cfg.unlocked():
    cfg.data = cached_cfg.copy_and_resolve_references()
    cfg.data.update(packing=True, mono_length=40)
    cfg.model.vocab_size = 256
  _, history = loop.train(cfg, batches=inputs.config_input(cfg), print_fn=lambda *_: None,
                          eval_fn=retrieval.periodic_eval_fn(cfg))
  assert history[-1]['step'] == 2 and np.isfinite(history[-1]['mlm_loss'])
