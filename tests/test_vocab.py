"""The SentencePiece vocabulary: fixed specials, determinism, seqio and transformers parity."""

import collections
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm

from amber_jax.core import model as model_lib
from amber_jax.corpora import layout, vocabulary
from amber_jax.text import tokenizer, vocab

# >= 20 languages: CJK, Arabic script, Devanagari, Cyrillic, Greek, Hebrew, Thai, accented Latin.
PARITY_LANGUAGES = ('zh-hans', 'zh-hant', 'ja', 'ko', 'ar', 'fa', 'hi', 'bn', 'ru', 'uk', 'bg',
                    'el', 'he', 'th', 'ka', 'ta', 'fr', 'de', 'vi', 'pl', 'cs', 'tr', 'pt-br',
                    'es', 'hu', 'is')


def train_on_corpus(corpus_dir, model_path, **kwargs):
  """Trains as `amber-jax vocab train` does: a built corpus's splits read by the layout."""
  return vocabulary.train_corpus_vocabulary(corpus_dir, model_path, **kwargs)


@pytest.fixture(scope='module')
def sp(django_vocab):
  return tokenizer.load_processor(django_vocab)


@pytest.fixture(scope='module')
def hf_dir(django_vocab, tmp_path_factory):
  out = tmp_path_factory.mktemp('hf_tokenizer')
  vocab.export_hf_tokenizer(django_vocab, out, model_max_length=128)
  return out


@pytest.fixture(scope='module')
def hf_tokenizer(hf_dir):
  from transformers import AutoTokenizer  # pylint: disable=import-outside-toplevel
  return AutoTokenizer.from_pretrained(str(hf_dir))


@pytest.fixture(scope='module')
def parity_sentences(django_corpus):
  """Every validation sentence of PARITY_LANGUAGES plus English: {lang: sentences}."""
  mono = layout.read_mono(django_corpus, 'validation', ('en',) + PARITY_LANGUAGES)
  return {lang: sentences for lang, sentences in mono.items() if sentences}


def test_special_pieces_have_the_fixed_ids(sp):
  assert [sp.id_to_piece(i) for i in range(model_lib.NUM_SPECIALS)] == [
      '[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
  assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (
      model_lib.PAD_ID, model_lib.UNK_ID, model_lib.CLS_ID, model_lib.SEP_ID)
  assert sp.piece_to_id('[MASK]') == model_lib.MASK_ID
  assert sp.encode('[MASK]')[-1] == model_lib.MASK_ID  # User-defined: encoded from text.
  assert model_lib.CLS_ID not in sp.encode('[CLS] [SEP] [PAD]')  # Control: never from text.
  assert sp.get_piece_size() == 4000


def test_same_seed_gives_identical_model_bytes(django_corpus, django_vocab, tmp_path):
  again = train_on_corpus(django_corpus, tmp_path / 'again.model', vocab_size=4000, seed=0)
  assert again.read_bytes() == django_vocab.read_bytes()


def test_sample_depends_on_the_seed_only():
  mono = {'de': [f'de {i}' for i in range(50)], 'fr': [f'fr {i}' for i in range(5)]}
  first, _ = vocab.sample_sentences(mono, alpha=0.7, seed=0)
  assert vocab.sample_sentences(mono, alpha=0.7, seed=0)[0] == first
  assert vocab.sample_sentences(mono, alpha=0.7, seed=1)[0] != first


def test_language_sampling_is_smoothed_by_alpha():
  sizes = {'big': 10_000, 'small': 100}
  assert vocab.language_sample_sizes(sizes, 1.0, 1010) == {'big': 1000, 'small': 10}
  assert vocab.language_sample_sizes(sizes, 0.0, 1000) == {'big': 500, 'small': 500}
  smoothed = vocab.language_sample_sizes(sizes, 0.7, 10_000)
  assert smoothed['small'] / 10_000 == pytest.approx(100**0.7 / (100**0.7 + 10_000**0.7), abs=1e-3)


def test_small_languages_are_upsampled_with_every_sentence_kept():
  mono = {'big': [f'b{i}' for i in range(1000)], 'small': [f's{i}' for i in range(10)]}
  sample, counts = vocab.sample_sentences(mono, alpha=0.0, seed=0, total=400)
  assert counts == {'big': 200, 'small': 200}
  small = collections.Counter(s for s in sample if s.startswith('s'))
  assert set(small) == set(mono['small']) and sum(small.values()) == 200
  big = [s for s in sample if s.startswith('b')]
  assert len(big) == len(set(big)) == 200  # Downsampled without replacement.


def test_per_language_cap_applies_before_sampling():
  mono = {'de': [f'de {i}' for i in range(100)], 'fr': [f'fr {i}' for i in range(100)]}
  sample, _ = vocab.sample_sentences(mono, alpha=1.0, seed=0, max_sentences_per_language=10)
  assert len(sample) == 20 and len(set(sample)) == 20


def test_metadata_records_the_training(django_vocab, django_corpus):
  metadata = json.loads(vocab.metadata_path(django_vocab).read_text(encoding='utf-8'))
  assert metadata['vocab_size'] == 4000 and metadata['alpha'] == 0.7 and metadata['seed'] == 0
  manifest = layout.load_manifest(django_corpus)
  assert set(metadata['sentences_per_language']) == set(manifest['mono'])
  assert sum(metadata['sentences_per_language'].values()) == metadata['sentences_sampled']
  assert len(metadata['corpus_manifest_sha256']) == 64
  assert metadata['corpus_dir'] == str(django_corpus)
  assert 0.0 <= metadata['validation_unk_rate'] < 0.01
  assert metadata['validation_unk_rate_per_language']['zh-hans'] < 0.1


def test_foreign_sentencepiece_model_is_rejected(tmp_path):
  buffer = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(['a small english corpus of words'] * 50 + ['another line here']),
      model_writer=buffer, vocab_size=40, hard_vocab_limit=False, minloglevel=2)
  (tmp_path / 'foreign.model').write_bytes(buffer.getvalue())
  with pytest.raises(RuntimeError, match=r'expected \[PAD\] .* at id 0'):
    tokenizer.load_processor(tmp_path / 'foreign.model')


def test_missing_model_says_how_to_train_one(tmp_path):
  with pytest.raises(FileNotFoundError, match='train_sentencepiece'):
    tokenizer.load_vocabulary(tmp_path / 'none.model')
  with pytest.raises(FileNotFoundError, match='train_sentencepiece'):
    tokenizer.load_processor(tmp_path / 'none.model')


def test_missing_corpus_says_how_to_build_it(tmp_path):
  with pytest.raises(FileNotFoundError, match='amber-jax data build'):
    train_on_corpus(tmp_path / 'django', tmp_path / 'v.model')
  with pytest.raises(FileNotFoundError, match='amber-jax data build'):
    layout.provenance(tmp_path / 'django')


def test_vocab_size_the_corpus_cannot_fill_is_a_clear_error(django_corpus, tmp_path):
  with pytest.raises(RuntimeError, match=r'vocab_size=500.*Increase vocab_size'):
    train_on_corpus(django_corpus, tmp_path / 'v.model', vocab_size=500)
  assert not (tmp_path / 'v.model').exists()


def test_module_imports_without_tensorflow():
  code = ('import sys, amber_jax.text.vocab, amber_jax.text.tokenizer, amber_jax.text.framing; '
          'assert "tensorflow" not in sys.modules and "seqio" not in sys.modules')
  subprocess.run([sys.executable, '-c', code], check=True)


def test_seqio_vocabulary_encodes_like_sentencepiece(django_vocab, sp, parity_sentences):
  seqio_vocab = tokenizer.load_vocabulary(django_vocab)
  assert seqio_vocab.vocab_size == sp.get_piece_size()
  assert (seqio_vocab.pad_id, seqio_vocab.unk_id, seqio_vocab.eos_id) == (0, 1, 3)
  sentences = [s for lang in parity_sentences for s in parity_sentences[lang][:10]]
  for sentence in sentences:
    assert seqio_vocab.encode(sentence) == sp.encode(sentence), sentence
  ids = sp.encode(sentences[0])
  assert seqio_vocab.decode(ids) == sp.decode(ids)


def test_hf_tokenizer_matches_sentencepiece_on_real_sentences(hf_tokenizer, sp, parity_sentences):
  assert len(parity_sentences) >= 20
  sentences = [s for lang in parity_sentences for s in parity_sentences[lang]]
  assert len(sentences) >= 500
  encoded = hf_tokenizer(sentences)['input_ids']
  mismatches = [(s, hf, sp.encode(s)) for s, hf in zip(sentences, encoded)
                if hf != [model_lib.CLS_ID] + sp.encode(s) + [model_lib.SEP_ID]]
  # The one way the two may differ: a tie in the Viterbi search between two orders of the same
  # pieces ('AAAA' as AAA+A or A+AAA have the same score; float rounding picks one in
  # SentencePiece, insertion order in tokenizers). Anything else is a real mismatch.
  ties = [m for m in mismatches if m[1][0] == model_lib.CLS_ID and m[1][-1] == model_lib.SEP_ID
          and sorted(m[1][1:-1]) == sorted(m[2])]
  assert len(ties) == len(mismatches), [m for m in mismatches if m not in ties][:3]
  assert len(ties) <= len(sentences) // 200, ties[:3]


def test_hf_tokenizer_matches_sentencepiece_on_whitespace_and_normalization(hf_tokenizer, sp):
  texts = ['', ' ', '  leading and   inner  spaces  ', 'tab\tand\nnewline', '\u200fRTL mark',
           'ＦＵＬＬ width ﬁ ligature', 'パスワード', '한국어 문장', 'Ελληνικά',
           'ক\u09c7\u09be', 'ত\u09cb', 'र\u093c', 'カ\u3099', 'e\u0323\u0302']  # Composed by NFKC.
  for text in texts:
    assert hf_tokenizer(text)['input_ids'] == [2] + sp.encode(text) + [3], repr(text)


def test_hf_pair_encoding_has_bert_segments(hf_tokenizer, sp):
  a, b = 'Enter a valid email address.', 'Bitte eine gültige E-Mail-Adresse eingeben.'
  encoded = hf_tokenizer(a, b)
  expected = [2] + sp.encode(a) + [3] + sp.encode(b) + [3]
  assert encoded['input_ids'] == expected
  first = len(sp.encode(a)) + 2
  assert encoded['token_type_ids'] == [0] * first + [1] * (len(expected) - first)
  assert encoded['attention_mask'] == [1] * len(expected)


def test_hf_special_tokens_and_padding(hf_tokenizer):
  assert (hf_tokenizer.pad_token_id, hf_tokenizer.unk_token_id, hf_tokenizer.cls_token_id,
          hf_tokenizer.sep_token_id, hf_tokenizer.mask_token_id) == (0, 1, 2, 3, 4)
  assert hf_tokenizer.is_fast and hf_tokenizer.model_max_length == 128
  batch = hf_tokenizer(['a longer sentence here', 'short'], padding=True, return_tensors='np')
  ids, mask = batch['input_ids'], batch['attention_mask']
  assert ids.shape == mask.shape and (ids[mask == 0] == 0).all() and mask[1, -1] == 0
  assert hf_tokenizer('fill [MASK] here')['input_ids'].count(4) == 1


def test_hf_decode_round_trips_text_without_unknown_pieces(hf_tokenizer, parity_sentences):
  checked = 0
  for lang in ('en', 'de', 'ja', 'ar', 'hi', 'ko'):
    for sentence in parity_sentences[lang][:20]:
      ids = hf_tokenizer(sentence)['input_ids']
      if model_lib.UNK_ID in ids:
        continue  # [UNK] is a special token: skipped by decode, shown as ' ⁇ ' by sentencepiece.
      assert hf_tokenizer.decode(ids, skip_special_tokens=True) == sentence
      checked += 1
  assert checked >= 80


def test_autotokenizer_loads_next_to_a_bert_config(hf_dir, tmp_path, sp):
  import shutil  # pylint: disable=import-outside-toplevel
  from transformers import AutoTokenizer, BertConfig  # pylint: disable=import-outside-toplevel
  folder = tmp_path / 'model'
  shutil.copytree(hf_dir, folder)
  BertConfig(vocab_size=sp.get_piece_size(), hidden_size=32, num_hidden_layers=1,
             num_attention_heads=2, intermediate_size=64).save_pretrained(str(folder))
  tokenizer = AutoTokenizer.from_pretrained(str(folder))
  assert tokenizer.is_fast
  config = json.loads((folder / 'tokenizer_config.json').read_text(encoding='utf-8'))
  assert config['tokenizer_class'] == 'PreTrainedTokenizerFast'  # Known to transformers 4 too.
  text = 'Enter a valid email address.'
  assert tokenizer(text)['input_ids'] == [2] + sp.encode(text) + [3]
  assert np.array_equal(tokenizer(text, return_tensors='np')['token_type_ids'],
                        np.zeros((1, len(sp.encode(text)) + 2)))
