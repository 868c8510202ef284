"""Retrieval: accuracy on known answers, every layer in one run, the table, periodic_eval, and the
same figures from a run's params and from their HuggingFace export."""

import numpy as np
import pytest

from amber_jax.eval import retrieval
from amber_jax.export import runs
from amber_jax.core.model import EncoderConfig, init_params

import flax.linen as nn
import jax

TINY = EncoderConfig(vocab_size=4000, hidden_size=32, num_layers=2, num_heads=2,
                     intermediate_size=64, max_position_embeddings=64)


def test_retrieval_accuracy_known_answer():
  src = np.array([[1.0, 0], [0, 1], [1, 1]])
  tgt = np.array([[1.0, 0.1], [1, 0.2], [1, 1]])
  # src->tgt: src0 -> tgt0 (right), src1 -> tgt2 (wrong), src2 -> tgt2 (right).
  # tgt->src: tgt0 -> src0 (right), tgt1 -> src0 (wrong), tgt2 -> src2 (right).
  assert retrieval.retrieval_accuracy(src, tgt) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
  assert retrieval.retrieval_accuracy(src, src) == (1.0, 1.0)


def test_retrieval_by_layer_scores_every_layer_and_marks_the_best():
  rng = np.random.default_rng(0)
  noise = rng.normal(size=(10, 8))
  exact = rng.normal(size=(10, 8))
  # Layer 0: targets are unrelated rows (chance); layer 1: targets are their sources.
  src_layers = [noise, exact]
  tgt_layers = [rng.normal(size=(10, 8)), exact]
  table = lambda sents: np.stack(  # [layers, n, 8]: 'en i' -> source row i, else target row i
      [np.stack([(s_l if s.startswith('en') else t_l)[int(s.split()[-1])] for s in sents])
       for s_l, t_l in zip(src_layers, tgt_layers)])
  pairs = {'de': [(f'en {i}', f'de {i}') for i in range(10)],
           'fr': [(f'en {i}', f'fr {i}') for i in range(6)]}
  by_layer = retrieval.retrieval_by_layer(table, pairs)
  assert by_layer['de'].shape == (2, 2)
  np.testing.assert_array_equal(by_layer['de'][1], [1.0, 1.0])
  assert retrieval.best_layer(by_layer) == 1
  text = retrieval.format_layer_table(by_layer, {'de': 10, 'fr': 6})
  assert 'L1*' in text and 'L0*' not in text and 'best layer: 1' in text
  assert retrieval.retrieval(table, pairs, layer=1)['fr'] == (1.0, 1.0)


def _char_ngram_cosine(a: str, b: str, n: int) -> float:
  """The baseline written the obvious way: dicts of counts and their cosine."""
  def counts(s):
    s = f' {s.lower()} '
    out = {}
    for j in range(len(s) - n + 1):
      out[s[j:j + n]] = out.get(s[j:j + n], 0) + 1
    return out
  x, y = counts(a), counts(b)
  dot = sum(v * y.get(k, 0) for k, v in x.items())
  return dot / (sum(v * v for v in x.values()) * sum(v * v for v in y.values())) ** 0.5


def test_char_ngrams_equal_the_cosine_written_as_loops():
  texts = ['Enter a valid URL.', 'Entrez une URL valide.', 'Geben Sie eine gültige URL ein.',
           'aaa aaa', 'Ü', '']
  grams = retrieval.char_ngrams(texts, 3)
  sim = (grams @ grams.T).toarray()
  for i, a in enumerate(texts[:-1]):
    for j, b in enumerate(texts[:-1]):
      assert sim[i, j] == pytest.approx(_char_ngram_cosine(a, b, 3), rel=1e-6)
  assert sim[-1, -1] == pytest.approx(1.0)  # '' still has its one gram '  '


def test_char_ngram_hits_known_answer():
  pairs = {'fr': [('The user name', 'Le nom de user'), ('Delete the group', 'Supprimer le group'),
                  ('Save', 'Enregistrer')]}
  hits = retrieval.char_ngram_hits(pairs, 3)
  assert hits['fr'].shape == (1, 2, 3)
  # Every hit is what the loops' cosines say; the two pairs that share 'user'/'group' are found.
  sim = np.array([[_char_ngram_cosine(s, t, 3) for _, t in pairs['fr']] for s, _ in pairs['fr']])
  np.testing.assert_array_equal(hits['fr'][0, 0], sim.argmax(1) == np.arange(3))
  np.testing.assert_array_equal(hits['fr'][0, 1], sim.argmax(0) == np.arange(3))
  assert hits['fr'][0, :, :2].all()


def test_unique_pairs_drops_repeated_sources_and_targets():
  pairs = [('a', '1'), ('a', '2'), ('b', '1'), ('c', '3')]
  assert retrieval.unique_pairs(pairs) == [('a', '1'), ('c', '3')]


def test_read_pairs_tsv_with_and_without_language(tmp_path):
  path = tmp_path / 'p.tsv'
  path.write_text('de\tHello\tHallo\nfr\tHello\tBonjour\n\n', encoding='utf-8')
  assert retrieval.read_pairs_tsv(path) == {'de': [('Hello', 'Hallo')], 'fr': [('Hello', 'Bonjour')]}
  path.write_text('Hello\tHallo\n', encoding='utf-8')
  assert retrieval.read_pairs_tsv(path, default_lang='de') == {'de': [('Hello', 'Hallo')]}
  path.write_text('Hello\n', encoding='utf-8')
  with pytest.raises(ValueError, match=r'p.tsv:1: expected'):
    retrieval.read_pairs_tsv(path)


@pytest.fixture(scope='module')
def tiny_params():
  return nn.meta.unbox(init_params(TINY, jax.random.key(0)))


def test_periodic_eval_returns_the_three_figures(tiny_params, django_vocab, django_corpus):
  import sentencepiece as spm
  from amber_jax.corpora import layout
  sp = spm.SentencePieceProcessor(model_file=str(django_vocab))
  pairs = layout.read_pairs(django_corpus, 'validation', ['de', 'fr'])
  out = retrieval.periodic_eval(tiny_params, TINY, sp, pairs, max_pairs=8)
  assert set(out) == {'retrieval_fwd', 'retrieval_bwd', 'retrieval_mean'}
  assert all(0.0 <= v <= 1.0 for v in out.values())
  assert out['retrieval_mean'] == pytest.approx((out['retrieval_fwd'] + out['retrieval_bwd']) / 2)


@pytest.fixture(scope='module')
def hf_dir(tiny_params, django_vocab, tmp_path_factory):
  """Our tiny random encoder exported as a transformers folder (BertModel + fast tokenizer)."""
  from amber_jax.export import hf
  from amber_jax.text import vocab
  return hf.export(tiny_params, TINY, tmp_path_factory.mktemp('hf') / 'tiny', head='base',
                   tokenizer_fn=lambda d: vocab.export_hf_tokenizer(django_vocab, d,
                                                                    model_max_length=64))


SENTENCES = ['Enter a valid email address.', 'Geben Sie eine gültige E-Mail-Adresse ein.']


def test_hf_export_gives_the_same_embeddings_as_our_params(tiny_params, django_vocab, hf_dir):
  import sentencepiece as spm
  ours = retrieval.jax_embedder(tiny_params, TINY, spm.SentencePieceProcessor(
      model_file=str(django_vocab)))(SENTENCES)                       # [3, 2, 32]
  np.testing.assert_allclose(ours, retrieval.hf_embedder(str(hf_dir))(SENTENCES), atol=2e-5)
  params, cfg, tok, config = runs.load_encoder(hf_dir)                # HF folder -> our encoder
  assert config is None
  np.testing.assert_allclose(ours, retrieval.jax_embedder(params, cfg, tok)(SENTENCES), atol=2e-5)


def test_cli_eval_retrieval_and_mining_on_a_tsv(hf_dir, tmp_path, capsys):
  from amber_jax import cli
  tsv = tmp_path / 'pairs.tsv'
  rows = [('de', 'Enter a number.', 'Bitte eine Zahl eingeben.'),
          ('de', 'Past 7 days', 'Letzte 7 Tage'),
          ('de', 'Log in again', 'Erneut anmelden'),
          ('de', 'Reset my password', 'Mein Passwort zurücksetzen'),
          ('fr', 'Enter a number.', 'Saisissez un nombre.'),
          ('fr', 'Log in again', 'Connectez-vous à nouveau')]
  tsv.write_text(''.join('\t'.join(r) + '\n' for r in rows), encoding='utf-8')
  cli.main(['eval', 'retrieval', str(hf_dir), '--pairs', str(tsv), '--plot',
            str(tmp_path / 'layers.png')])
  out = capsys.readouterr().out
  assert 'src->tgt/tgt->src by layer' in out and 'best layer:' in out
  assert [line.split()[:2] for line in out.splitlines() if line.startswith(('de ', 'fr '))] == \
      [['de', '4'], ['fr', '2']]
  assert (tmp_path / 'layers.png').stat().st_size > 5_000
  accuracy = []  # The baseline's line, from the cosines written as loops.
  for lang in ('de', 'fr'):
    src, tgt = zip(*[(s, t) for code, s, t in rows if code == lang])
    sim = np.array([[_char_ngram_cosine(a, b, 3) for b in tgt] for a in src])
    accuracy.append([(sim.argmax(1) == np.arange(len(src))).mean(),
                     (sim.argmax(0) == np.arange(len(src))).mean()])
  fwd, bwd = np.mean(accuracy, 0)
  assert (f'char 3-gram cosine on the same pairs (the lexical-overlap baseline): src->tgt '
          f'{fwd:.3f}, tgt->src {bwd:.3f}') in out
  cli.main(['eval', 'mining', str(hf_dir), '--pairs', str(tsv), '--k', '2'])
  out = capsys.readouterr().out
  assert out.splitlines()[0].split()[:4] == ['lang', 'src', 'tgt', 'gold']
  assert out.splitlines()[-1].startswith('mean')


@pytest.mark.slow
def test_commands_on_a_run_folder(django_vocab, tmp_path, capsys):
  """eval retrieval and align read a run folder (latest checkpoint, its SentencePiece model)."""
  import synthetic
  from amber_jax import cli
  from amber_jax.training import loop
  from configs import tiny
  cfg = tiny.get_config()
  with cfg.unlocked():
    cfg.workdir = str(tmp_path / 'run')
    cfg.model.update(vocab_size=4000, hidden_size=32, num_layers=2, num_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    cfg.data.update(mono_batch_size=4, parallel_batch_size=4, mono_length=16, sentence_length=12,
                    vocab_path=str(django_vocab))
    cfg.train.update(steps=1, log_every=1, checkpoint_every=1)
  loop.train(cfg, batches=synthetic.batches(0, vocab=4000, mono_rows=4, mono_length=16, pairs=4,
                                             sentence_length=12), print_fn=lambda *_: None)
  (tmp_path / 'p.tsv').write_text('Enter a number.\tBitte eine Zahl eingeben.\n'
                                  'Log in again\tErneut anmelden\n', encoding='utf-8')
  cli.main(['eval', 'retrieval', cfg.workdir, '--pairs', str(tmp_path / 'p.tsv')])
  assert 'best layer:' in capsys.readouterr().out
  (tmp_path / 'w.txt').write_text('Log in again\tErneut anmelden\n', encoding='utf-8')
  cli.main(['align', cfg.workdir, '--pairs', str(tmp_path / 'w.txt'), '--rule', 'product',
            '--threshold', '0'])
  assert capsys.readouterr().out.strip() == '0-0 0-1 1-0 1-1 2-0 2-1'
