"""`amber-jax mine`: faiss-searched ratio margin against the formula as loops and the dense path,
a known answer, the files written, the mined corpus read back as a task, and clear user errors."""

import gzip
import json
import lzma

import numpy as np
import pytest
from test_mining import margin_loop

from amber_jax import cli
from amber_jax.cli import mine as mine_cli
from amber_jax.corpora import layout
from amber_jax.eval import mine, mining


@pytest.mark.parametrize('mode', mining.MODES)
def test_faiss_margins_equal_the_loops_and_the_dense_path(mode):
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(9, 8)), rng.normal(size=(12, 8))
  loops = margin_loop(x, y, 3)
  found = mine.margin_candidates(x, y, k=3, candidates=12, mode=mode, index='flat')
  assert found, mode
  for i, j, score in found:
    assert score == pytest.approx(loops[i, j], rel=1e-5)
  # Every candidate searched: the same pairs, in the same order, as the dense n x m path.
  dense = mining.candidates(mining.margin_scores(x, y, 3), mode)
  assert [(i, j) for i, j, _ in found] == [(i, j) for i, j, _ in dense]
  # The pairs are each side's best by the loops' margin.
  if mode == 'forward':
    assert {(i, j) for i, j, _ in found} == {(i, int(loops[i].argmax())) for i in range(9)}


# x0, x1 = e0, e1. y0 is x0's translation (cos 0.5), y1 = x1's (cos 1). The hub h is the nearest
# y of x0 by cosine (0.55 > 0.5) but sits closer still to x1 (0.8): the margin discounts it.
HUB_X = np.array([[1.0, 0, 0], [0, 1, 0]])
HUB_Y = np.array([[0.5, 0, np.sqrt(0.75)], [0, 1, 0], [0.55, 0.8, np.sqrt(0.0575)]])


def test_known_answer_the_hub_loses_by_margin():
  found = mine.margin_candidates(HUB_X, HUB_Y, k=1, candidates=3, mode='forward')
  # By hand: margin(x0, y0) = 0.5 / ((0.55 + 0.5) / 2); margin(x1, y1) = 1 / ((1 + 1) / 2).
  assert [(i, j) for i, j, _ in found] == [(1, 1), (0, 0)]
  assert [s for *_, s in found] == pytest.approx([1.0, 0.5 / 0.525])
  assert mine.mine(HUB_X, HUB_Y, k=1, candidates=3, mode='forward', threshold=0.99) == [
      (1, 1, pytest.approx(1.0))]


@pytest.mark.parametrize('index', ['flat', 'ivf', 'hnsw'])
def test_every_index_recovers_planted_translations_among_distractors(index):
  rng = np.random.default_rng(1)
  base = rng.normal(size=(2000, 32))
  x = np.concatenate([base, rng.normal(size=(500, 32))])             # 2000 paired + 500 noise
  y_rows = np.concatenate([base + 0.2 * rng.normal(size=base.shape), rng.normal(size=(500, 32))])
  perm = rng.permutation(len(y_rows))
  y = y_rows[perm]
  where = np.argsort(perm)                                   # row r of y_rows is y[where[r]]
  gold = {(i, int(where[i])) for i in range(2000)}
  found = mine.mine(x, y, threshold=1.3, index=index)
  p, r, _ = mining.precision_recall_f1(found, gold)
  assert p == 1.0 and r >= 0.99, (index, p, r)


def test_char_ngram_miner_pairs_shared_strings():
  src = ['Enter a valid URL.', 'Past 7 days', 'Delete %(name)s', 'Hello']
  tgt = ['Letzte 7 Tage', 'Geben Sie eine gültige URL ein.', '%(name)s löschen', 'zzz qqq']
  found = mine.char_ngram_candidates(src, tgt, k=1, mode='intersection')
  assert {(i, j) for i, j, _ in found} >= {(0, 1), (1, 0), (2, 2)}


def test_read_sentences_plain_gz_and_xz(tmp_path):
  text = 'one\n\n  two\tsentences \none\r\nthree\n'
  (tmp_path / 'a.txt').write_text(text, encoding='utf-8')
  (tmp_path / 'a.txt.gz').write_bytes(gzip.compress(text.encode()))
  (tmp_path / 'a.txt.xz').write_bytes(lzma.compress(text.encode()))
  for name in ('a.txt', 'a.txt.gz', 'a.txt.xz'):
    assert mine.read_sentences(tmp_path / name) == ['one', 'two sentences', 'three']


def test_read_sentences_errors_name_the_file(tmp_path):
  with pytest.raises(mine.errors.UserError, match=r'--src file .*nope.txt does not exist'):
    mine.read_sentences(tmp_path / 'nope.txt', '--src')
  (tmp_path / 'empty.txt').write_bytes(b'')
  with pytest.raises(mine.errors.UserError, match=r'empty.txt is empty \(zero lines\)'):
    mine.read_sentences(tmp_path / 'empty.txt')
  (tmp_path / 'blank.txt').write_text('\n  \n', encoding='utf-8')
  with pytest.raises(mine.errors.UserError, match='blank.txt holds only blank lines'):
    mine.read_sentences(tmp_path / 'blank.txt')
  (tmp_path / 'latin1.txt').write_bytes(b'ok\ncaf\xe9\n')
  with pytest.raises(mine.errors.UserError, match=r'latin1.txt:2: not UTF-8'):
    mine.read_sentences(tmp_path / 'latin1.txt')


MINED = [(1.2, 'Log in again', 'Erneut anmelden'), (1.5, 'Past 7 days', 'Letzte 7 Tage'),
         (1.1, 'OK', 'OK')]


def test_write_mined_pairs_best_first_and_the_corpus_layout(tmp_path):
  record = mine.write_mined(tmp_path / 'out', MINED, {'model': 'm', 'k': 4, 'threshold': 1.0},
                            src_lang='en', tgt_lang='de')
  lines = (tmp_path / 'out' / 'pairs.tsv').read_text(encoding='utf-8').splitlines()
  assert lines == ['1.500000\tPast 7 days\tLetzte 7 Tage',
                   '1.200000\tLog in again\tErneut anmelden', '1.100000\tOK\tOK']
  corpus = tmp_path / 'out' / 'corpus'
  assert layout.read_pairs(corpus, 'train') == {
      'de': [('Past 7 days', 'Letzte 7 Tage'), ('Log in again', 'Erneut anmelden')]}
  assert layout.read_pairs(corpus, 'validation') == {'de': []}
  assert layout.read_mono(corpus, 'train')['de'] == ['Letzte 7 Tage', 'Erneut anmelden']
  manifest = layout.load_manifest(corpus)
  assert manifest['skipped'] == {'unchanged': 1} and manifest['pairs'] == {
      'en-de': {'train': 2, 'validation': 0}}
  assert manifest['mining']['k'] == 4 and manifest['mining']['threshold'] == 1.0
  assert json.loads((tmp_path / 'out' / 'mining.json').read_text()) == record
  assert record['extra_task']['name'] == 'mined_de'
  # Mined again into the same folder: replaced. English as the target: it becomes the source.
  mine.write_mined(tmp_path / 'out', [(2.0, 'Bonjour', 'Hello')], {}, src_lang='fr',
                   tgt_lang='en')
  assert layout.read_pairs(tmp_path / 'out' / 'corpus', 'train') == {'fr': [('Hello', 'Bonjour')]}


def test_write_mined_without_english_writes_pairs_only_and_keeps_user_folders(tmp_path):
  record = mine.write_mined(tmp_path / 'o', MINED, {}, src_lang='de', tgt_lang='fr')
  assert record['corpus'] is None and 'English' in record['corpus_note']
  assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == ['mining.json', 'pairs.tsv']
  (tmp_path / 'mine' / 'notes.txt').parent.mkdir()
  (tmp_path / 'mine' / 'notes.txt').write_text('mine')
  with pytest.raises(mine.errors.UserError, match='holds notes.txt'):
    mine.write_mined(tmp_path / 'mine', MINED, {})


def _write(path, lines):
  path.write_text(''.join(line + '\n' for line in lines), encoding='utf-8')
  return str(path)


def _oracle(monkeypatch):
  """The CLI with an embedder that knows the answer: a sentence's vector is that of the number
  it names (one-hot, so that no two numbers are alike), so 'en 3' pairs 'de 3'."""
  table = np.eye(100)
  embed = lambda sents: table[[int(s.split()[-1]) for s in sents]][None]   # [1 layer, n, 100]
  monkeypatch.setattr(mine_cli, 'embedder_for', lambda model: embed)


def test_cli_mines_a_known_answer_and_the_corpus_is_read_back_as_a_task(
    monkeypatch, tmp_path, capsys):
  _oracle(monkeypatch)
  src = _write(tmp_path / 'en.txt', [f'the cat {i}' for i in range(30)])             # 0..29
  tgt = _write(tmp_path / 'de.txt', [f'die katze {i}' for i in range(50, 19, -1)])   # 50..20
  assert cli.main(['mine', 'model', '--src', src, '--tgt', tgt, '--out', str(tmp_path / 'o'),
                   '--src-lang', 'en', '--tgt-lang', 'de']) is None  # exit status 0
  record = json.loads((tmp_path / 'o' / 'mining.json').read_text())
  out = capsys.readouterr().out
  assert '30 source and 31 target sentences' in out and 'extra_tasks' in out
  pairs = [line.split('\t') for line in (tmp_path / 'o' / 'pairs.tsv').read_text().splitlines()]
  assert sorted(s for _, s, _ in pairs) == sorted(f'the cat {i}' for i in range(20, 30))
  assert all(s.split()[-1] == t.split()[-1] for _, s, t in pairs)
  assert record['kept'] == 10 and record['threshold'] == mine_cli.DEFAULT_THRESHOLD

  import test_data  # a tiny vocabulary and corpus; tasks.corpus registers the extra task
  import seqio
  from tasks import corpus as corpus_tasks
  cfg = test_data.make_cfg(test_data.write_corpus(tmp_path / 'c'), _vocab(tmp_path),
                           task_prefix='m19', extra_tasks=[record['extra_task']])
  names = corpus_tasks.register(cfg)
  mixture = seqio.get_mixture_or_task(names['parallel'])
  assert 'mined_de' in {t.name for t in mixture.tasks}
  ds = seqio.get_mixture_or_task('mined_de').get_dataset(None, split='train', shuffle=False,
                                                         num_epochs=1)
  got = sorted((ex['src_text'].decode(), ex['tgt_text'].decode()) for ex in ds.as_numpy_iterator())
  assert got == sorted((s, t) for _, s, t in pairs)


def _vocab(tmp_path):
  import test_data
  return test_data.write_vocab(tmp_path)


def _user_error(argv, capsys):
  with pytest.raises(SystemExit) as caught:
    cli.main(argv)
  assert caught.value.code == 2
  return capsys.readouterr().err.strip()


def test_cli_bad_input_gives_one_clear_line(monkeypatch, tmp_path, capsys):
  good = _write(tmp_path / 'a.txt', ['the cat 1', 'the cat 2'])
  empty = tmp_path / 'empty.txt'
  empty.write_bytes(b'')
  blank = _write(tmp_path / 'blank.txt', ['', ' '])
  out = str(tmp_path / 'out')
  folder = tmp_path / 'model'
  folder.mkdir()
  base = ['mine', str(folder), '--out', out]
  err = _user_error(base + ['--src', str(empty), '--tgt', good], capsys)
  assert err == (f'amber-jax: the --src file {empty} is empty (zero lines); give one sentence '
                 'a line.')
  err = _user_error(base + ['--src', good, '--tgt', blank], capsys)
  assert err == (f'amber-jax: the --tgt file {blank} holds only blank lines; give one sentence '
                 'a line.')
  assert 'does not exist' in _user_error(base + ['--src', good, '--tgt', str(tmp_path / 'b')],
                                         capsys)
  # Model folders that are not one: empty, a stray config.json, missing, a file.
  err = _user_error(base + ['--src', good, '--tgt', good], capsys)
  assert 'is neither a training run folder' in err and 'no config.json' in err
  (folder / 'config.json').write_text('{"a": 1}')
  assert 'no checkpoints/ and no weights' in _user_error(base + ['--src', good, '--tgt', good],
                                                         capsys)
  err = _user_error(['mine', str(tmp_path / 'nope'), '--out', out, '--src', good, '--tgt', good],
                    capsys)
  assert err == f'amber-jax: the model folder {tmp_path / "nope"} does not exist.'
  assert 'is a file' in _user_error(['mine', good, '--out', out, '--src', good, '--tgt', good],
                                    capsys)
  assert "unknown language code 'german'" in _user_error(
      base + ['--src', good, '--tgt', good, '--tgt-lang', 'german'], capsys)
  assert not (tmp_path / 'out').exists()  # nothing written by any of them


def test_cli_mines_with_an_exported_hf_folder(django_vocab, tmp_path):
  """The real embedder: a tiny random encoder exported as a transformers folder."""
  import flax.linen as nn
  import jax
  from amber_jax.core.model import EncoderConfig, init_params
  from amber_jax.export import hf
  from amber_jax.text import vocab
  cfg = EncoderConfig(vocab_size=4000, hidden_size=32, num_layers=2, num_heads=2,
                      intermediate_size=64, max_position_embeddings=64)
  folder = hf.export(nn.meta.unbox(init_params(cfg, jax.random.key(0))), cfg, tmp_path / 'hf',
                     head='base', tokenizer_fn=lambda d: vocab.export_hf_tokenizer(
                         django_vocab, d, model_max_length=64))
  src = _write(tmp_path / 'en.txt', ['Enter a valid URL.', 'Past 7 days', 'Log in again'])
  tgt = _write(tmp_path / 'de.txt', ['Letzte 7 Tage', 'Erneut anmelden',
                                     'Geben Sie eine gültige URL ein.', 'Hallo'])
  cli.main(['mine', str(folder), '--src', src, '--tgt', tgt, '--out', str(tmp_path / 'o'),
            '--threshold', '0', '--mode', 'union'])
  rows = [line.split('\t') for line in (tmp_path / 'o' / 'pairs.tsv').read_text().splitlines()]
  record = json.loads((tmp_path / 'o' / 'mining.json').read_text())
  assert (record['n_src'], record['n_tgt'], record['corpus']) == (3, 4, None)
  assert len(rows) == record['kept'] >= 4 and all(len(r) == 3 for r in rows)  # union: >= 4
  scores = [float(r[0]) for r in rows]
  assert scores == sorted(scores, reverse=True)
