"""XLM-RoBERTa import and export: a random XLM-R built here by transformers (perturbed LayerNorms
and biases) with a real SentencePiece model trained here on the Django catalogs (fairseq ids)."""

import dataclasses
import json
import shutil
import unicodedata

import numpy as np
import pytest
import safetensors.numpy
import sentencepiece as spm
import torch
import transformers
import yaml

import test_hf_import
import test_train
from amber_jax import cli
from amber_jax.core.model import Encoder
from amber_jax.corpora import layout
from amber_jax.eval import retrieval
from amber_jax.export import hf, hf_import, model_card, runs
from amber_jax.text import hf_tokenizer
from amber_jax.training import loop

TOL = 1e-4
POSITIONS = 64  # the positions a text can use; XLM-R's table has 2 more (padding_idx + 1)
# >= 20 languages in 14 scripts: Arabic, Armenian, Bengali, Cyrillic, Devanagari, Georgian, Greek,
# Han, Hangul, Hebrew, Kana, Khmer, Latin, Thai.
LANGUAGES = ('ar', 'hy', 'bn', 'ru', 'uk', 'hi', 'ka', 'el', 'zh-hans', 'ko', 'he', 'ja', 'km',
             'en', 'de', 'fr', 'pl', 'tr', 'vi', 'fa', 'th', 'mr')


@pytest.fixture(scope='module')
def sentences(django_corpus):
  """Three validation sentences (not seen by the SentencePiece training) of each language, and a
  few with what normalisation and unknown characters touch."""
  out = []
  for lang in LANGUAGES:
    lines = [s for s in layout.read_mono(django_corpus, 'validation', [lang])[lang]
             if len(s) <= 60]
    assert len(lines) >= 3, lang
    out += lines[:3]
  return out + ['  Spaces  around\tand tabs ', 'ﬁne ＡＢＣ ½ №', 'emoji 🙂 and ∰ unknown']


@pytest.fixture(scope='module')
def xlmr_dir(django_corpus, tmp_path_factory):
  """A HF XLMRobertaForMaskedLM folder: 2 layers, hidden 64, every LayerNorm, bias and the unused
  position rows 0..1 randomised; tokenizer from a 2,000-piece unigram SentencePiece model."""
  folder = tmp_path_factory.mktemp('xlmr') / 'hf'
  lines = [s for lang, texts in layout.read_mono(django_corpus, 'train').items()
           for s in texts[:120]]
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_prefix=str(folder.parent / 'sp'), vocab_size=2000,
      model_type='unigram', character_coverage=0.995, num_threads=1, minloglevel=2)
  (folder.parent / 'spm').mkdir()
  (folder.parent / 'sp.model').rename(folder.parent / 'spm' / 'sentencepiece.bpe.model')
  tok = transformers.XLMRobertaTokenizer.from_pretrained(str(folder.parent / 'spm'),
                                                         model_max_length=POSITIONS)
  config = transformers.XLMRobertaConfig(
      vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=128, max_position_embeddings=POSITIONS + 2, type_vocab_size=1,
      pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
      architectures=['XLMRobertaForMaskedLM'])
  torch.manual_seed(0)
  model = transformers.XLMRobertaForMaskedLM(config)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'LayerNorm' in name or 'layer_norm' in name or name.endswith('bias'):
        p.add_(0.1 * torch.randn_like(p))
    model.roberta.embeddings.position_embeddings.weight[:2].normal_()
  model.save_pretrained(str(folder))
  tok.save_pretrained(str(folder))
  return folder


@pytest.fixture(scope='module')
def xlmr_run(xlmr_dir, tmp_path_factory):
  """The XLM-R imported with a continuation config (TLM + SA + WA on pairs of <= 16 tokens)."""
  workdir = tmp_path_factory.mktemp('xlmr_run') / 'run'
  cfg = test_train.small_config(workdir, steps=2)
  with cfg.unlocked():
    cfg.data.update(mono_batch_size=0, parallel_batch_size=4, sentence_length=16)
    cfg.objectives.update(mlm_weight=0.0, tlm_weight=1.0, sa_weight=1.0, wa_weight=1.0)
    cfg.train.update(log_every=1, checkpoint_every=1000)
  lines = []
  hf_import.import_run(xlmr_dir, workdir, cfg, print_fn=lines.append,
                       base_model='FacebookAI/xlm-roberta-base')
  return workdir, '\n'.join(lines)


def _spm_ids(sp, text):
  """fairseq's ids of `text`: <s> (SentencePiece id + 1; its <unk> 0 -> 3) </s>."""
  return [0] + [i + 1 if i else 3 for i in sp.encode(text)] + [2]


def _hf_outputs(folder, hf_ids, mask):
  model = transformers.AutoModelForMaskedLM.from_pretrained(str(folder), dtype=torch.float32)
  with torch.no_grad():
    out = model.eval()(input_ids=torch.from_numpy(hf_ids),
                       attention_mask=torch.from_numpy(mask).long(), output_hidden_states=True)
  return out.hidden_states[-1].numpy(), out.logits.numpy()


def test_import_reads_the_xlmr_shape_and_reports_it(xlmr_run):
  workdir, report = xlmr_run
  assert 'Imported' in report and '(xlm-roberta, 2 layers, hidden 64' in report
  assert '<pad> 1->0, <unk> 3->1, <s> 0->2, </s> 2->3, <mask> 2001->4' in report
  params, mcfg, _, step = runs.load_params(workdir, step=0)
  assert step == 0 and hf.arch_of(mcfg) == 'xlm-roberta'
  assert (mcfg.position_offset, mcfg.max_position_embeddings, mcfg.type_vocab_size) == (2, 64, 1)
  assert params['embeddings']['position_embeddings'].shape == (66, 64)
  assert json.loads((workdir / hf_import.IMPORT_FILE).read_text())['arch'] == 'xlm-roberta'


def test_ids_are_identical_in_22_languages(xlmr_dir, xlmr_run, sentences, tmp_path):
  """Ours (the run's tokenizer, our ids mapped back), the exported folder's and the XLM-R folder's
  tokenizers give the same ids on every sentence; and they are SentencePiece's with the fairseq
  offset on NFC text (on NFD input, e.g. Bengali, tokenizers' Precompiled normaliser differs from
  SentencePiece's: huggingface/tokenizers#2116; the XLM-R tokenizer of transformers is the
  reference the exported model is used with)."""
  sp = spm.SentencePieceProcessor(model_file=str(xlmr_dir.parent / 'spm' /
                                                 'sentencepiece.bpe.model'))
  theirs = transformers.AutoTokenizer.from_pretrained(str(xlmr_dir))
  assert type(theirs).__name__ == 'XLMRobertaTokenizer'
  ours = hf_tokenizer.HFTokenizer(runs.load_config(xlmr_run[0]).data.vocab_path)
  runs.export_run(xlmr_run[0], tmp_path / 'out')
  exported = transformers.AutoTokenizer.from_pretrained(str(tmp_path / 'out'))
  unknown = non_nfc = 0
  for text in sentences:
    want = theirs(text)['input_ids']
    assert exported(text)['input_ids'] == want, text
    framed = [2] + ours.encode(text) + [3]  # [CLS] pieces [SEP] in our ids
    assert ours.ours_to_hf[framed].tolist() == want, text
    nfc = unicodedata.normalize('NFC', text)
    non_nfc += nfc != text
    reference = _spm_ids(sp, nfc)
    unknown += reference.count(3)
    assert theirs(nfc)['input_ids'] == reference, nfc
  assert unknown and non_nfc  # the unknown-character and normalisation paths were exercised
  print(f'{len(sentences)} sentences in {len(LANGUAGES)} languages: ids identical '
        f'({unknown} <unk>, {non_nfc} sentences not in NFC)')


def test_flax_matches_transformers_hidden_and_logits(xlmr_dir, xlmr_run, sentences):
  params, mcfg, config, _ = runs.load_params(xlmr_run[0], step=0)
  ours = hf_tokenizer.HFTokenizer(config.data.vocab_path)
  theirs = transformers.AutoTokenizer.from_pretrained(str(xlmr_dir))
  texts = sentences[::2]
  our_ids, hf_ids, real = test_hf_import._both_ids(texts, ours, theirs)
  assert real.sum(1).min() < real.shape[1]  # padded rows: positions must skip nothing
  encoder = Encoder(mcfg)
  hidden = encoder.apply({'params': params}, our_ids)['hidden']
  logits = np.asarray(encoder.apply({'params': params}, hidden, method=Encoder.mlm_logits))
  hf_hidden, hf_logits = _hf_outputs(xlmr_dir, hf_ids, real)
  hidden_diff = test_hf_import._max_diff(hidden, hf_hidden, real)
  logits_diff = test_hf_import._max_diff(logits, hf_logits[..., ours.ours_to_hf], real)
  print(f'XLM-R import, {len(texts)} sentences: max |hidden diff| {hidden_diff:.2e}, '
        f'max |logits diff| {logits_diff:.2e}')
  assert hidden_diff <= TOL and logits_diff <= TOL
  # Without the offset the positions would be BERT's: far off (the check can fail).
  shifted = dataclasses.replace(mcfg, position_offset=0, max_position_embeddings=66)
  moved = Encoder(shifted).apply({'params': params}, our_ids)['hidden']
  assert test_hf_import._max_diff(moved, hf_hidden, real) > 100 * TOL


def test_round_trip_hf_ours_hf_is_bit_exact(xlmr_dir, xlmr_run, sentences, tmp_path):
  cli.main(['export', str(xlmr_run[0]), str(tmp_path / 'out')])  # default: as it began, XLM-R
  out = tmp_path / 'out'
  config = json.loads((out / 'config.json').read_text())
  original = json.loads((xlmr_dir / 'config.json').read_text())
  for key in ('model_type', 'architectures', 'vocab_size', 'max_position_embeddings',
              'type_vocab_size', 'pad_token_id', 'bos_token_id', 'eos_token_id', 'layer_norm_eps'):
    assert config[key] == original[key], key
  exported = safetensors.numpy.load_file(str(out / 'model.safetensors'))
  weights = hf_import.load_hf_state_dict(xlmr_dir)
  assert set(exported) == set(weights) - set(hf.XLMR_TIED)
  for name, x in exported.items():
    np.testing.assert_array_equal(x, weights[name], err_msg=name)
  model, info = transformers.AutoModelForMaskedLM.from_pretrained(str(out),
                                                                  output_loading_info=True)
  assert type(model).__name__ == 'XLMRobertaForMaskedLM'
  assert not any(info[k] for k in ('missing_keys', 'unexpected_keys', 'mismatched_keys'))
  tok = transformers.AutoTokenizer.from_pretrained(str(out))
  enc = tok(sentences[:8], padding=True, return_tensors='np')
  real = enc['attention_mask'].astype(bool)
  a = _hf_outputs(xlmr_dir, enc['input_ids'], real)
  b = _hf_outputs(out, enc['input_ids'], real)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x[real], y[real])


def test_export_as_the_other_arch_keeps_the_model(xlmr_run, sentences, tmp_path):
  """An XLM-R run written as BERT (and back) gives the same states: positions are re-laid."""
  runs.export_run(xlmr_run[0], tmp_path / 'bert', arch='bert', head='base')
  config = json.loads((tmp_path / 'bert' / 'config.json').read_text())
  assert config['model_type'] == 'bert' and config['max_position_embeddings'] == POSITIONS
  tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / 'bert'))
  enc = tok(sentences[:8], padding=True, return_tensors='pt')
  real = enc['attention_mask'].numpy().astype(bool)
  states = []
  for arch in ('bert', 'xlm-roberta'):
    if arch == 'xlm-roberta':
      runs.export_run(xlmr_run[0], tmp_path / arch, head='base')
    model = transformers.AutoModel.from_pretrained(str(tmp_path / arch), add_pooling_layer=False)
    with torch.no_grad():
      states.append(model.eval()(**enc).last_hidden_state.numpy())
  assert test_hf_import._max_diff(states[0], states[1], real) <= TOL


def test_model_card_metadata_and_sentence_transformers(xlmr_run, sentences, tmp_path):
  st = pytest.importorskip('sentence_transformers')
  out = runs.export_run(xlmr_run[0], tmp_path / 'out')  # XLMRobertaForMaskedLM
  text = (out / 'README.md').read_text()
  assert text.startswith('---\n')
  meta = yaml.safe_load(text.split('---\n')[1])
  assert meta['pipeline_tag'] == 'fill-mask' and meta['library_name'] == 'transformers'
  assert meta['license'] == model_card.DEFAULT_LICENSE
  assert meta['base_model'] == 'FacebookAI/xlm-roberta-base'
  assert meta['datasets'] == ['django'] and 'sentence-transformers' in meta['tags']
  assert meta['language'][0] == 'multilingual' and {'ar', 'zh', 'pt'} <= set(meta['language'])
  assert '# AMBER encoder' in text and 'Continued from FacebookAI/xlm-roberta-base' in text

  base = runs.export_run(xlmr_run[0], tmp_path / 'base', head='base')  # XLMRobertaModel
  assert 'pipeline_tag: "feature-extraction"' in (base / 'README.md').read_text()

  ours = runs.embedder_for(xlmr_run[0])(sentences)[-1]  # what `amber-jax eval retrieval` scores
  for folder in (out, base):
    model = st.SentenceTransformer(str(folder), device='cpu')
    theirs = model.encode(sentences, convert_to_numpy=True, batch_size=16)
    diff = float(np.abs(ours - theirs).max())
    print(f'SentenceTransformer({folder.name}) vs retrieval embeddings, {len(sentences)} '
          f'sentences: max |diff| {diff:.2e}')
    assert theirs.shape == ours.shape and diff <= TOL

  # `amber-jax eval retrieval EXPORT` too, on a text longer than the model's 64 positions.
  long = [' '.join(sentences[:12])]
  for folder in (out, base):
    theirs = retrieval.hf_embedder(str(folder))(sentences + long)[-1]
    ours_long = runs.embedder_for(xlmr_run[0])(sentences + long)[-1]
    assert float(np.abs(ours_long - theirs).max()) <= TOL


def test_imported_xlmr_trains_with_tlm_sa_wa(xlmr_run, django_corpus, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(xlmr_run[0], workdir)
  config = runs.load_config(workdir)
  with config.unlocked():
    config.workdir = str(workdir)
  vocab = hf_tokenizer.HFTokenizer(config.data.vocab_path)
  batches = test_hf_import._pair_batches(django_corpus, vocab, rows=4, length=16)
  lines = []
  _, history = loop.train(config, batches=batches, print_fn=lines.append)
  assert any('Resumed from step 0' in line for line in lines)
  assert [h['step'] for h in history] == [1, 2]
  for key in ('tlm_loss', 'sa_loss', 'wa_loss'):
    assert all(np.isfinite(h[key]) for h in history), key
  params, _, _, step = runs.load_params(workdir)
  before, _, _, _ = runs.load_params(xlmr_run[0], step=0)
  assert step == 2
  # Trained: the single token-type row (the pairs' segments 1 read it too) and the positions.
  for name in ('token_type_embeddings', 'position_embeddings'):
    assert not np.array_equal(params['embeddings'][name], before['embeddings'][name]), name


def test_xlmr_model_with_pooler_and_sentencepiece_only_imports(xlmr_dir, tmp_path):
  """An XLMRobertaModel folder (pooler, no MLM head) whose tokenizer is only the SentencePiece
  model: the pooler is dropped, a head initialised (named as XLM-R names it), the tokenizer
  converted by transformers with the fairseq ids."""
  src = tmp_path / 'base'
  model = transformers.XLMRobertaModel.from_pretrained(str(xlmr_dir))  # a fresh pooler
  model.config.architectures = ['XLMRobertaModel']
  model.save_pretrained(str(src))
  shutil.copy(xlmr_dir.parent / 'spm' / 'sentencepiece.bpe.model', src)
  lines = []
  hf_import.import_run(src, tmp_path / 'run', test_train.small_config(tmp_path / 'unused'),
                       print_fn=lines.append)
  report = '\n'.join(lines)
  assert 'lm_head.dense.weight: normal(0, initializer_range)' in report
  assert 'Dropped (no counterpart in our encoder): pooler.dense.bias, pooler.dense.weight' in report
  ours = hf_tokenizer.HFTokenizer(tmp_path / 'run' / 'tokenizer')
  theirs = transformers.AutoTokenizer.from_pretrained(str(xlmr_dir))
  assert ours.hf_specials == (1, 3, 0, 2, 2001)
  text = 'Введите правильное значение.'
  assert ours.ours_to_hf[ours.encode(text)].tolist() == theirs(text)['input_ids'][1:-1]
  params, mcfg, _, _ = runs.load_params(tmp_path / 'run')
  np.testing.assert_array_equal(
      params['embeddings']['position_embeddings'],
      model.embeddings.position_embeddings.weight.detach().numpy())


def test_unsupported_arch_and_mismatched_offset_raise():
  with pytest.raises(ValueError, match=r"arch='gpt2' is not supported; use one of \('bert', "):
    hf.arch_spec('gpt2')
  params, mcfg = test_hf_import.TINY_PARAMS, test_hf_import.TINY
  with pytest.raises(ValueError, match='position_offset=0 but xlm-roberta reads position 0 at '
                     r'row 1; lay the table out with shift_positions\(params, cfg, 1\)'):
    hf.hf_config(mcfg, 'xlm-roberta', pad_token_id=0)
  moved, cfg = hf.shift_positions(params, mcfg, 2)
  rows = moved['embeddings']['position_embeddings']
  assert cfg.position_offset == 2 and rows.shape[0] == mcfg.max_position_embeddings + 2
  np.testing.assert_array_equal(rows[2:], params['embeddings']['position_embeddings'])
  assert not rows[:2].any()
