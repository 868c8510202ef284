"""Zero-shot transfer harness: the Django component examples, the split, and both heads learning a
synthetic task they must be able to learn."""

import io
import pathlib

import flax.linen as nn
import jax
import numpy as np
import polib
import pytest
import sentencepiece as spm

from amber_jax.eval import transfer
from amber_jax.core.model import EncoderConfig, init_params

ANIMALS = 'cat dog horse bird fish cow'.split()
TOOLS = 'hammer saw drill wrench nail screw'.split()
FILLER = 'the a my your big small red old'.split()
TINY = EncoderConfig(vocab_size=80, hidden_size=32, num_layers=2, num_heads=2,
                     intermediate_size=64, max_position_embeddings=64, dropout_rate=0.0,
                     attention_dropout_rate=0.0)


@pytest.fixture(scope='module')
def sp():
  rng = np.random.default_rng(0)
  lines = [' '.join(rng.choice(ANIMALS + TOOLS + FILLER, size=6)) for _ in range(400)]
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=model, vocab_size=40, hard_vocab_limit=False,
      pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece='[PAD]', unk_piece='[UNK]',
      bos_piece='[CLS]', eos_piece='[SEP]', user_defined_symbols=['[MASK]'], minloglevel=2)
  return spm.SentencePieceProcessor(model_proto=model.getvalue())


@pytest.fixture(scope='module')
def encoder_params():
  return nn.meta.unbox(init_params(TINY, jax.random.key(0)))


def _write_po(path: pathlib.Path, entries):
  path.parent.mkdir(parents=True, exist_ok=True)
  po = polib.POFile()
  for msgid, msgstr in entries:
    po.append(polib.POEntry(msgid=msgid, msgstr=msgstr))
  po.save(str(path))


def test_component_of_catalog_paths():
  assert transfer.component_of(pathlib.Path('/x/django/conf/locale/de/LC_MESSAGES/django.po')) \
      == 'conf'
  assert transfer.component_of(
      pathlib.Path('/x/django/contrib/admin/locale/pt_BR/LC_MESSAGES/django.po')) == 'admin'


def test_django_app_examples_labels_by_catalog_and_drops_ambiguous_english(tmp_path):
  conf, admin = tmp_path / 'conf' / 'locale', tmp_path / 'contrib' / 'admin' / 'locale'
  _write_po(conf / 'de' / 'LC_MESSAGES' / 'django.po',
            [('Enter a valid date.', 'Geben Sie ein gültiges Datum ein.'), ('Shared text.', 'A.')])
  _write_po(admin / 'de' / 'LC_MESSAGES' / 'django.po',
            [('Delete selected objects', 'Ausgewählte Objekte löschen'), ('Shared text.', 'B.'),
             ('Untranslated entry', '')])
  examples = transfer.django_app_examples([conf, admin])
  got = {(e.text, e.label, e.lang) for e in examples}
  assert got == {('Enter a valid date.', 'conf', 'en'),
                 ('Geben Sie ein gültiges Datum ein.', 'conf', 'de'),
                 ('Delete selected objects', 'admin', 'en'),
                 ('Untranslated entry', 'admin', 'en'),
                 ('Ausgewählte Objekte löschen', 'admin', 'de')}


def test_split_keeps_a_sentence_and_its_translations_on_one_side():
  examples = []
  for i in range(200):
    english, label = f'sentence number {i}', ('a' if i % 2 else 'b')
    examples += [transfer.Example(english, label, 'en', english),
                 transfer.Example(f'Satz {i}', label, 'de', english)]
  examples += [transfer.Example('rare one', 'c', 'en', 'rare one')]
  train, test, classes = transfer.split_examples(examples, min_per_class=10)
  assert classes == ['a', 'b']
  assert {e.lang for e in train} == {'en'}
  held_out = {e.english for e in test['en']}
  assert held_out == {e.english for e in test['de']}
  assert held_out.isdisjoint(e.english for e in train)
  assert 40 < len(held_out) < 80  # ~30% of 200


def _sentence(rng, vocab, n=5):
  return ' '.join(list(rng.choice(FILLER, size=n - 2)) + list(rng.choice(vocab, size=2)))


def test_sentence_head_learns_a_learnable_task(sp, encoder_params):
  rng = np.random.default_rng(1)
  make = lambda n, lang: [transfer.Example(s, lab, lang, s) for lab, vocab in
                          (('animal', ANIMALS), ('tool', TOOLS))
                          for s in (_sentence(rng, vocab) for _ in range(n))]
  result = transfer.sentence_transfer(encoder_params, TINY, sp, make(64, 'en'),
                                      {'en': make(20, 'en')}, ['animal', 'tool'], epochs=6,
                                      batch_size=16, learning_rate=3e-3)
  assert result['en']['n'] == 40 and result['en']['majority'] == 0.5
  assert result['en']['accuracy'] >= 0.9
  assert 'mean xx' not in transfer.format_transfer_table(result)


def test_frame_words_labels_each_words_first_piece(sp):
  ids, labels = transfer.frame_words(sp, ['hammer', 'cat'], [1, 0], max_length=16)
  pieces = [sp.id_to_piece(i) for i in ids[1:-1]]
  first = [i for i, p in enumerate(pieces) if p.startswith('▁')]
  assert [labels[1 + i] for i in first] == [1, 0]
  assert sum(l != transfer.IGNORE for l in labels) == 2


def test_token_head_learns_to_tag_tools(sp, encoder_params):
  rng = np.random.default_rng(2)
  def sentences(n):
    out = []
    for _ in range(n):
      words = list(rng.choice(ANIMALS + TOOLS + FILLER, size=6))
      out.append((words, [int(w in TOOLS) for w in words]))
    return out
  result = transfer.token_transfer(encoder_params, TINY, sp, sentences(96), {'en': sentences(20)},
                                   n_tags=2, epochs=15, batch_size=16, learning_rate=3e-3)
  assert result['en'] >= 0.9


def test_tagging_accuracy_ignores_unlabelled_positions():
  assert transfer.tagging_accuracy([[0, 1, 1, 0]], [[-1, 1, 0, -1]]) == 0.5
