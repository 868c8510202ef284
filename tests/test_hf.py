"""amber_jax.export.hf: the name table read both ways, and parity with transformers' BERT."""

import json
import os

os.environ['HF_HUB_OFFLINE'] = '1'

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
import yaml

import xla_env
from amber_jax.export import hf
from amber_jax.export import hf_import
from amber_jax.export import model_card
from amber_jax.core.model import Encoder, EncoderConfig, init_params

CFG = EncoderConfig(vocab_size=500, hidden_size=64, num_layers=2, num_heads=4,
                    intermediate_size=128, max_position_embeddings=64)
TOL = 1e-4


def _perturbed_params(cfg):
  """init_params with every LayerNorm scale/bias, dense bias and mlm_bias made random, so that a
  wrong mapping (e.g. scale <-> bias, query <-> key) cannot pass by symmetry."""
  params = nn.unbox(init_params(cfg, jax.random.PRNGKey(0)))
  flat = jax.tree_util.tree_leaves_with_path(params)
  rng = np.random.default_rng(1)
  out = {}
  for path, leaf in flat:
    name = jax.tree_util.keystr(path)
    if "'bias'" in name or "'scale'" in name or 'mlm_bias' in name:
      leaf = jnp.asarray(rng.normal(1.0 if "'scale'" in name else 0.0, 0.2, leaf.shape),
                         jnp.float32)
    out[path] = leaf
  return jax.tree_util.tree_map_with_path(lambda p, _: out[p], params)


PARAMS = _perturbed_params(CFG)


def _batch():
  """ids with padding (id 0) at the ends of rows, and 0/1 segments."""
  rng = np.random.default_rng(2)
  ids = rng.integers(5, CFG.vocab_size, (3, 12)).astype(np.int32)
  ids[1, 8:] = 0
  ids[2, 5:] = 0
  segs = np.zeros_like(ids)
  segs[:, 4:] = 1
  segs[ids == 0] = 0
  return ids, segs


def _ours(params, ids, segs):
  model = Encoder(CFG)
  hidden = model.apply({'params': params}, ids, segs, deterministic=True)['hidden']
  logits = model.apply({'params': params}, hidden, method=Encoder.mlm_logits)
  return np.asarray(hidden), np.asarray(logits)


def _theirs(model, ids, segs):
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(ids).long(),
                attention_mask=torch.from_numpy(ids != 0).long(),
                token_type_ids=torch.from_numpy(segs).long(), output_hidden_states=True)
  return out


def _assert_clean_load(info):
  assert not info['missing_keys'] and not info['unexpected_keys'], info
  assert not info['mismatched_keys'], info


def _flat(params):
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(params)}


@pytest.mark.parametrize('head', ['mlm', 'base'])
def test_round_trip_is_bit_identical(head):
  state = hf.to_hf_state_dict(PARAMS, CFG, head)
  back = _flat(hf.from_hf_state_dict(state, CFG, head))
  want = _flat(PARAMS)
  if head == 'base':
    want = {k: v for k, v in want.items() if 'mlm_' not in k}
  assert back.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(back[k], want[k], err_msg=k)


def test_mlm_names_are_those_of_bert_for_masked_lm():
  state = hf.to_hf_state_dict(PARAMS, CFG, 'mlm')
  model = transformers.BertForMaskedLM(hf.hf_config(CFG))
  # save_pretrained in transformers 5.x leaves the tied decoder out; so do we.
  assert set(state) == set(model.state_dict()) - set(hf.MLM_TIED)
  for name, x in model.state_dict().items():
    if name in state:
      assert tuple(x.shape) == state[name].shape, name


def test_mlm_export_matches_transformers(tmp_path):
  hf.export(PARAMS, CFG, tmp_path, head='mlm', model_card='# tiny\n')
  model, info = transformers.AutoModelForMaskedLM.from_pretrained(
      tmp_path, dtype=torch.float32, output_loading_info=True)
  _assert_clean_load(info)
  model.eval()
  assert (model.cls.predictions.decoder.weight.data_ptr() ==
          model.bert.embeddings.word_embeddings.weight.data_ptr())
  assert (tmp_path / 'README.md').read_text() == '# tiny\n'
  ids, segs = _batch()
  hidden, logits = _ours(PARAMS, ids, segs)
  out = _theirs(model, ids, segs)
  real = ids != 0
  hidden_diff = np.abs(out.hidden_states[-1].numpy() - hidden)[real].max()
  logits_diff = np.abs(out.logits.numpy() - logits)[real].max()
  print(f'mlm: max |hidden diff| {hidden_diff:.2e}, max |logits diff| {logits_diff:.2e}')
  assert hidden_diff <= TOL and logits_diff <= TOL


def test_base_export_matches_transformers_without_pooler(tmp_path):
  hf.export(PARAMS, CFG, tmp_path, head='base')
  model, info = transformers.AutoModel.from_pretrained(
      tmp_path, add_pooling_layer=False, dtype=torch.float32, output_loading_info=True)
  _assert_clean_load(info)
  assert isinstance(model, transformers.BertModel)
  model.eval()
  ids, segs = _batch()
  hidden, _ = _ours(PARAMS, ids, segs)
  diff = np.abs(_theirs(model, ids, segs).last_hidden_state.numpy() - hidden)[ids != 0].max()
  print(f'base: max |hidden diff| {diff:.2e}')
  assert diff <= TOL


def test_bfloat16_export_loads_with_rounded_weights(tmp_path):
  hf.export(PARAMS, CFG, tmp_path, head='mlm', dtype='bfloat16')
  model, info = transformers.AutoModelForMaskedLM.from_pretrained(
      tmp_path, output_loading_info=True)
  _assert_clean_load(info)
  word = model.bert.embeddings.word_embeddings.weight
  assert word.dtype == torch.bfloat16
  want = np.asarray(PARAMS['embeddings']['word_embeddings']).astype(jnp.bfloat16)
  np.testing.assert_array_equal(word.detach().float().numpy(), want.astype(np.float32))
  ids, segs = _batch()
  assert torch.isfinite(_theirs(model.eval(), ids, segs).logits).all()


def test_export_then_import_from_directory(tmp_path):
  calls = []
  hf.export(PARAMS, CFG, tmp_path, tokenizer_fn=calls.append)
  assert calls == [tmp_path]
  config = transformers.BertConfig.from_pretrained(tmp_path).to_dict()
  cfg = hf_import.encoder_config_from_hf(config)
  assert cfg == CFG
  back = _flat(hf.from_hf_state_dict(hf_import.load_hf_state_dict(tmp_path), cfg))
  for k, v in _flat(PARAMS).items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_import_accepts_tied_decoder_and_ignored_extras():
  state = hf.to_hf_state_dict(PARAMS, CFG, 'mlm')
  state['cls.predictions.decoder.weight'] = state['bert.embeddings.word_embeddings.weight']
  state['cls.predictions.decoder.bias'] = state['cls.predictions.bias']
  state['bert.pooler.dense.weight'] = np.zeros((64, 64), np.float32)
  state['cls.seq_relationship.bias'] = np.zeros((2,), np.float32)
  params = hf.from_hf_state_dict(state, CFG, ignore=hf.HF_EXTRAS)
  np.testing.assert_array_equal(params['mlm_bias'], np.asarray(PARAMS['mlm_bias']))


def test_import_raises_on_untied_decoder():
  state = hf.to_hf_state_dict(PARAMS, CFG, 'mlm')
  state['cls.predictions.decoder.weight'] = state['bert.embeddings.word_embeddings.weight'] + 1
  with pytest.raises(ValueError, match='cls.predictions.decoder.weight differs'):
    hf.from_hf_state_dict(state, CFG)


def test_import_names_missing_and_unexpected():
  state = hf.to_hf_state_dict(PARAMS, CFG, 'mlm')
  del state['bert.encoder.layer.1.output.LayerNorm.bias']
  state['bert.pooler.dense.weight'] = np.zeros((64, 64), np.float32)
  with pytest.raises(ValueError) as err:
    hf.from_hf_state_dict(state, CFG)
  assert "missing ['bert.encoder.layer.1.output.LayerNorm.bias']" in str(err.value)
  assert "unexpected ['bert.pooler.dense.weight']" in str(err.value)


def test_import_with_wrong_head_raises():
  state = hf.to_hf_state_dict(PARAMS, CFG, 'base')
  with pytest.raises(ValueError, match='bert.embeddings.word_embeddings.weight'):
    hf.from_hf_state_dict(state, CFG, 'mlm')


def test_import_raises_on_shape_that_does_not_fit_config():
  state = hf.to_hf_state_dict(PARAMS, CFG, 'mlm')
  state['bert.encoder.layer.0.attention.self.query.weight'] = np.zeros((64, 32), np.float32)
  with pytest.raises(ValueError, match=r'query.weight has shape \(64, 32\), expected \(64, 64\)'):
    hf.from_hf_state_dict(state, CFG)


def test_export_names_missing_and_unexpected_params():
  params = jax.tree_util.tree_map(lambda x: x, PARAMS)
  del params['layer_1']['intermediate']['bias']
  params['layer_1']['extra'] = jnp.zeros((3,))
  with pytest.raises(ValueError) as err:
    hf.to_hf_state_dict(params, CFG)
  assert "missing ['layer_1/intermediate/bias']" in str(err.value)
  assert "unexpected ['layer_1/extra']" in str(err.value)


def test_export_raises_on_params_of_another_config():
  with pytest.raises(ValueError, match='pass the EncoderConfig the params were built with'):
    hf.to_hf_state_dict(PARAMS, EncoderConfig(vocab_size=400, hidden_size=64, num_layers=2,
                                              num_heads=4, intermediate_size=128,
                                              max_position_embeddings=64))


@pytest.mark.parametrize('model_type,arch', [('roberta', 'RobertaForMaskedLM'),
                                             ('gpt2', 'GPT2LMHeadModel'),
                                             ('bert', 'BertForSequenceClassification')])
def test_non_bert_config_raises_naming_what_was_found(model_type, arch):
  config = hf.hf_config(CFG).to_dict() | {'model_type': model_type, 'architectures': [arch]}
  with pytest.raises(ValueError, match=f"model_type='{model_type}', architectures=\\['{arch}'\\]"):
    hf_import.encoder_config_from_hf(config)


def test_unknown_head_and_dtype_raise(tmp_path):
  with pytest.raises(ValueError, match="head='seq'"):
    hf.to_hf_state_dict(PARAMS, CFG, 'seq')
  with pytest.raises(ValueError, match="dtype='float16'"):
    hf.export(PARAMS, CFG, tmp_path, dtype='float16')


def test_load_reads_pytorch_bin_as_float32(tmp_path):
  state = hf.to_hf_state_dict(PARAMS, CFG, 'base')
  torch.save({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in state.items()},
             tmp_path / 'pytorch_model.bin')
  loaded = hf_import.load_hf_state_dict(tmp_path)
  name = 'embeddings.word_embeddings.weight'
  assert loaded[name].dtype == np.float32
  np.testing.assert_array_equal(loaded[name], state[name].astype(jnp.bfloat16).astype(np.float32))


def test_load_without_weights_raises(tmp_path):
  with pytest.raises(FileNotFoundError, match='expected model.safetensors'):
    hf_import.load_hf_state_dict(tmp_path)


def test_reorder_vocab_moves_only_token_rows_and_inverts_exactly():
  order = np.random.default_rng(3).permutation(CFG.vocab_size)
  moved = hf.reorder_vocab(PARAMS, order)
  np.testing.assert_array_equal(moved['embeddings']['word_embeddings'],
                                np.asarray(PARAMS['embeddings']['word_embeddings'])[order])
  np.testing.assert_array_equal(moved['mlm_bias'], np.asarray(PARAMS['mlm_bias'])[order])
  np.testing.assert_array_equal(moved['layer_0']['output']['kernel'],
                                np.asarray(PARAMS['layer_0']['output']['kernel']))
  back = _flat(hf.reorder_vocab(moved, np.argsort(order)))
  for k, v in _flat(PARAMS).items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_reorder_vocab_rejects_an_order_of_another_size():
  with pytest.raises(ValueError, match='permutation of the 500 rows'):
    hf.reorder_vocab(PARAMS, np.arange(499))


def test_export_with_hf_to_ours_writes_rows_in_hf_order(tmp_path):
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  ours_to_hf = np.arange(CFG.vocab_size)
  ours_to_hf[[1, 2, 3, 4, 100, 101, 102, 103]] = [100, 101, 102, 103, 1, 2, 3, 4]
  hf.export(PARAMS, CFG, tmp_path, hf_to_ours=np.argsort(ours_to_hf))
  state = safetensors.numpy.load_file(str(tmp_path / 'model.safetensors'))
  word = np.asarray(PARAMS['embeddings']['word_embeddings'])
  np.testing.assert_array_equal(state['bert.embeddings.word_embeddings.weight'][ours_to_hf], word)
  np.testing.assert_array_equal(state['cls.predictions.bias'][101],
                                np.asarray(PARAMS['mlm_bias'])[2])
  assert transformers.BertConfig.from_pretrained(tmp_path).pad_token_id == 0


# A run trained for 2 steps (MLM only, to compile little) with its parameters sharded over an
# fsdp x tensor = 2 x 2 mesh of 4 CPU devices (in a subprocess: the device count is fixed when JAX
# starts), checkpointed at steps 1 and 2.
RUN_SCRIPT = """
import sys
import jax, numpy as np
sys.path.insert(0, {tests!r})
import synthetic, test_train
from amber_jax.training import loop
cfg = test_train.small_config({workdir!r}, steps=2)
with cfg.unlocked():
  cfg.model.vocab_size = {vocab_size}
  cfg.data.vocab_path = {vocab_path!r}
  cfg.train.checkpoint_every = 1
  cfg.data.parallel_batch_size = 0
  cfg.mesh.update(data=1, fsdp=2, tensor=2)
batches = synthetic.batches(0, vocab={vocab_size}, mono_rows=4, mono_length=16, pairs=0)
state, _ = loop.train(cfg, batches=batches, print_fn=lambda *_: None)
assert len(state['params']['embeddings']['word_embeddings'].sharding.device_set) == 4
flat = {{jax.tree_util.keystr(p): np.asarray(x)
        for p, x in jax.tree_util.tree_leaves_with_path(jax.device_get(state['params']))}}
np.savez({params_out!r}, **flat)
"""
RUN_VOCAB = 4000  # the django_vocab fixture's size


@pytest.fixture(scope='module')
def sharded_run(django_vocab, tmp_path_factory):
  """(run folder, its final params {keystr: array}) of the 2-step sharded run."""
  import pathlib  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('sharded_run')
  code = RUN_SCRIPT.format(tests=str(pathlib.Path(__file__).parent), workdir=str(root / 'run'),
                           vocab_size=RUN_VOCAB, vocab_path=str(django_vocab),
                           params_out=str(root / 'params.npz'))
  env = dict(os.environ, XLA_FLAGS=xla_env.with_cpu_devices(4),
             JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  return root / 'run', dict(np.load(root / 'params.npz'))


@pytest.mark.slow
def test_export_of_a_sharded_run_at_any_step(sharded_run, tmp_path, capsys):
  from amber_jax import cli  # pylint: disable=g-import-not-at-top
  from amber_jax.export import runs  # pylint: disable=g-import-not-at-top
  workdir, final = sharded_run
  cli.main(['export', str(workdir), str(tmp_path / 'step1'), '--step', '1', '--head', 'base'])
  runs.export_run(workdir, tmp_path / 'latest', figures={'retrieval en->xx': 0.25})
  assert 'Exported to' in capsys.readouterr().out

  card = (tmp_path / 'latest' / 'README.md').read_text()
  for text in ('- steps: 2', "'tlm_weight': 1.0", "'sa_weight': 1.0", 'task module `tasks.corpus`',
               'shape: 2 layers, hidden 32', '## Evaluation', '- retrieval en->xx: 0.25'):
    assert text in card, text
  assert '- steps: 1' in (tmp_path / 'step1' / 'README.md').read_text()

  # The export of the latest step holds the sharded run's final params, bit for bit (the run's
  # embedding rows are padded to 128, load_params and the export keep the tokenizer's 4,000).
  params, mcfg, _, step = runs.load_params(workdir)
  vocab_keys = ("['embeddings']['word_embeddings']", "['mlm_bias']")
  assert step == 2 and all(final[k].shape[0] == 4096 for k in vocab_keys)
  assert mcfg.padded_vocab_size == mcfg.vocab_size == 4000
  for k, v in _flat(params).items():
    np.testing.assert_array_equal(v, final[k][:4000] if k in vocab_keys else final[k], err_msg=k)
  model, info = transformers.AutoModelForMaskedLM.from_pretrained(
      tmp_path / 'latest', dtype=torch.float32, output_loading_info=True)
  _assert_clean_load(info)
  tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / 'latest')
  enc = tokenizer(['Enter a valid email address.', 'Ensure this value is greater than zero.'],
                  padding=True, return_tensors='np')
  ids, segs = enc['input_ids'].astype(np.int32), enc['token_type_ids'].astype(np.int32)
  encoder = Encoder(mcfg)
  hidden = encoder.apply({'params': params}, ids, segs)['hidden']
  logits = encoder.apply({'params': params}, hidden, method=Encoder.mlm_logits)
  out = _theirs(model.eval(), ids, segs)
  real = ids != 0
  hidden_diff = np.abs(out.hidden_states[-1].numpy() - np.asarray(hidden))[real].max()
  logits_diff = np.abs(out.logits.numpy() - np.asarray(logits))[real].max()
  print(f'sharded run export: max |hidden diff| {hidden_diff:.2e}, |logits diff| {logits_diff:.2e}')
  assert hidden_diff <= TOL and logits_diff <= TOL

  # --step 1 exported the step-1 params, which differ from step 2's.
  step1 = transformers.AutoModel.from_pretrained(tmp_path / 'step1', add_pooling_layer=False)
  params1, _, _, _ = runs.load_params(workdir, step=1)
  np.testing.assert_array_equal(step1.embeddings.word_embeddings.weight.detach().numpy(),
                                params1['embeddings']['word_embeddings'])
  assert not np.array_equal(params1['embeddings']['word_embeddings'],
                            params['embeddings']['word_embeddings'])


@pytest.mark.slow
def test_model_card_reports_the_run_batch(sharded_run, tmp_path):
  from amber_jax.export import runs  # pylint: disable=g-import-not-at-top
  runs.export_run(sharded_run[0], tmp_path)
  text = (tmp_path / 'README.md').read_text()
  assert '- batch: 4 monolingual rows + 0 pairs per step' in text
  # A BERT run's card opens with the Hub's metadata too; sentence-transformers files beside it.
  meta = yaml.safe_load(text.split('---\n')[1])
  assert meta['pipeline_tag'] == 'fill-mask' and meta['library_name'] == 'transformers'
  assert 'bert' in meta['tags'] and 'base_model' not in meta
  pooling = json.loads((tmp_path / '1_Pooling' / 'config.json').read_text())
  assert pooling['pooling_mode_mean_tokens'] and not pooling['pooling_mode_cls_token']


def test_model_card_front_matter_parses_with_the_hub_keys():
  text = model_card.front_matter(languages=['en', 'pt-br', 'pt', 'sr-latn', 'zh-hans'],
                                 head='mlm', datasets=['django'])
  assert text.startswith('---\n') and text.endswith('---\n')
  meta = yaml.safe_load(text.strip('-\n'))
  assert meta == {'language': ['multilingual', 'en', 'pt', 'sr', 'zh'], 'license': 'apache-2.0',
                  'library_name': 'transformers', 'pipeline_tag': 'fill-mask',
                  'tags': ['sentence-transformers', 'amber'], 'datasets': ['django']}
  base = yaml.safe_load(model_card.front_matter(languages=[], head='base', base_model='a/b',
                                                license_id='mit').strip('-\n'))
  assert base['language'] == ['multilingual'] and base['pipeline_tag'] == 'feature-extraction'
  assert base['base_model'] == 'a/b' and base['license'] == 'mit' and 'datasets' not in base


def test_bert_params_exported_as_xlmr_match_transformers(tmp_path):
  """--arch xlm-roberta of a BERT run: positions re-laid after padding_idx (our PAD_ID 0) + 1."""
  hf.export(PARAMS, CFG, tmp_path, head='mlm', arch='xlm-roberta')
  model, info = transformers.AutoModelForMaskedLM.from_pretrained(
      tmp_path, dtype=torch.float32, output_loading_info=True)
  _assert_clean_load(info)
  assert isinstance(model, transformers.XLMRobertaForMaskedLM)
  assert (model.config.pad_token_id, model.config.max_position_embeddings) == (0, 65)
  ids, segs = _batch()
  hidden, logits = _ours(PARAMS, ids, segs)
  out = _theirs(model.eval(), ids, segs)
  real = ids != 0
  hidden_diff = np.abs(out.hidden_states[-1].numpy() - hidden)[real].max()
  logits_diff = np.abs(out.logits.numpy() - logits)[real].max()
  print(f'as xlm-roberta: max |hidden diff| {hidden_diff:.2e}, max |logits diff| '
        f'{logits_diff:.2e}')
  assert hidden_diff <= TOL and logits_diff <= TOL
