"""Training stages (config.train.stages): validation, switching at the boundary, exact resume."""

import jax
import numpy as np
import pytest

import synthetic
from amber_jax import config as config_lib
from amber_jax.training import loop
from amber_jax.training import stages
from configs import ablation, tiny

VOCAB = 64
SMALL = dict(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
             max_position_embeddings=64, dropout_rate=0.0, attention_dropout_rate=0.0)
MLM_ONLY = {'objectives.tlm_weight': 0.0, 'objectives.sa_weight': 0.0,
            'objectives.wa_weight': 0.0, 'data.parallel_batch_size': 0}


def staged_config(workdir, stage1=2, stage2=2):
  cfg = tiny.get_config()
  with cfg.unlocked():
    cfg.workdir = str(workdir)
    cfg.model.update(SMALL)
    cfg.data.update(mono_batch_size=4, parallel_batch_size=4, mono_length=16, sentence_length=12)
    cfg.optimizer.update(warmup_steps=2, learning_rate=1e-3)
    cfg.train.update(steps=stage1 + stage2, log_every=1, checkpoint_every=100,
                     stages=[{'name': 'mono', 'steps': stage1, 'data.mono_batch_size': 8,
                              **MLM_ONLY},
                             {'steps': stage2, 'data': {'mono_batch_size': 2,
                                                        'sentence_length': 10}}])
  return cfg


def stage_batches(opened, shapes=None):
  """Synthetic batches with each stage's shapes and seed; records (stage, start) of each stream
  opened and, in `shapes`, {name: shape} of each batch read."""

  def make(start, stage):
    d = stage.config.data
    opened.append((stage.index, start))
    for batch in synthetic.batches(stage.config.seed, vocab=VOCAB, mono_rows=d.mono_batch_size,
                                   mono_length=d.mono_length, pairs=d.parallel_batch_size,
                                   sentence_length=d.sentence_length)(start):
      if shapes is not None:
        shapes.append({k: v.shape for k, v in batch.items()})
      yield batch

  return make


def test_no_stages_is_one_stage_of_the_top_level_settings():
  cfg = tiny.get_config()
  (stage,) = stages.stages(cfg)
  assert (stage.start, stage.end, stage.config) == (0, cfg.train.steps, cfg)


def test_stage_overrides_seeds_and_ranges(tmp_path):
  cfg = staged_config(tmp_path)
  first, second = stages.stages(cfg)
  assert (first.name, first.start, first.end) == ('mono', 0, 2)
  assert (second.name, second.start, second.end) == ('stage1', 2, 4)
  assert first.config.data.parallel_batch_size == 0 and first.config.objectives.sa_weight == 0.0
  assert first.config.data.mono_batch_size == 8
  assert second.config.data.sentence_length == 10 and second.config.data.mono_batch_size == 2
  assert second.config.objectives.sa_weight == cfg.objectives.sa_weight
  assert (first.config.seed, second.config.seed) == (cfg.seed, cfg.seed + 1)
  assert stages.stage_at([first, second], 1) is first
  assert stages.stage_at([first, second], 2) is second
  assert stages.stage_at([first, second], 4) is second


@pytest.mark.parametrize('stage, message', [
    ({'steps': 3, 'objectives.tlm_wieght': 0.0}, "unknown key 'objectives.tlm_wieght'"),
    ({'steps': 3, 'data.corpus_dir': 'x'}, "unknown key 'data.corpus_dir'"),
    ({'steps': 3, 'optimizer.learning_rate': 1.0}, "unknown key 'optimizer.learning_rate'"),
    ({'objectives.tlm_weight': 0.0}, "needs 'steps'"),
    ({'steps': 0}, "needs 'steps'"),
    ({'steps': 3, 'data.mono_batch_size': 'eight'}, "'data.mono_batch_size' must be a int"),
    ({'steps': 3, 'data.packing': 1}, "'data.packing' must be a bool"),
    ([3], 'must be a dict'),
])
def test_a_bad_stage_fails_naming_it(tmp_path, stage, message):
  cfg = staged_config(tmp_path)
  with cfg.unlocked():
    cfg.train.stages = [{'steps': 3}, stage]
  with pytest.raises(ValueError, match='stages\\[1\\]') as e:
    stages.stages(cfg)
  assert message in str(e.value)


def test_steps_must_add_up(tmp_path):
  cfg = staged_config(tmp_path)
  with cfg.unlocked():
    cfg.train.steps = 7
  with pytest.raises(ValueError, match='add up to 4 steps'):
    stages.stages(cfg)


def test_stages_from_the_command_line(tmp_path):
  text = "[{'steps': 2, 'objectives.sa_weight': 0.0}, {'steps': 3}]"
  cfg, _ = config_lib.load_config(['--config=tiny', f'--config.train.stages={text}',
                                  '--config.train.steps=5'])
  assert [s.steps for s in stages.stages(cfg)] == [2, 3]


def test_ablation_presets_share_stage_one_and_differ_in_stage_two():
  configs = {p: ablation.get_config(p) for p in ablation.PRESETS}
  stage1 = {p: stages.stages(c)[0].config.to_dict() for p, c in configs.items()}
  first = stage1['mlm']
  assert all(s == first for s in stage1.values())  # one stage-1 run serves all four
  assert first['data']['parallel_batch_size'] == 0
  weights = {p: {k: stages.stages(c)[1].config.objectives[k]
                 for k in ('tlm_weight', 'wa_weight', 'sa_weight')} for p, c in configs.items()}
  assert weights['mlm'] == dict(tlm_weight=0.0, wa_weight=0.0, sa_weight=0.0)
  assert weights['mlm_tlm_wa_sa'] == dict(tlm_weight=1.0, wa_weight=1.0, sa_weight=1.0)
  assert stages.stages(configs['mlm'])[1].config.data.parallel_batch_size == 0
  assert stages.stages(configs['mlm_tlm'])[1].config.data.parallel_batch_size > 0


def test_the_boundary_switches_shapes_and_losses(tmp_path):
  cfg = staged_config(tmp_path)
  opened, shapes, lines = [], [], []
  _, history = loop.train(cfg, batches=stage_batches(opened, shapes), print_fn=lines.append)
  assert opened == [(0, 0), (1, 0)]
  assert [s['mono_ids'] for s in shapes] == [(8, 16), (8, 16), (2, 16), (2, 16)]
  assert ['pair_ids' in s for s in shapes] == [False, False, True, True]
  assert shapes[-1]['pair_ids'] == (4, 20)  # stage 2's sentence_length 10
  by_step = {h['step']: h for h in history}
  assert by_step[2]['stage'] == 0 and by_step[3]['stage'] == 1
  assert 'tlm_loss' not in by_step[2] and 'sa_loss' not in by_step[2]
  for name in ('mlm_loss', 'tlm_loss', 'sa_loss', 'wa_loss'):
    assert name in by_step[3], name
  assert any('Stage 1 (stage1): steps 2-4' in line for line in lines)


def test_resume_inside_stage_two_is_exact(tmp_path):
  full, _ = loop.train(staged_config(tmp_path / 'full'), batches=stage_batches([]),
                        print_fn=lambda *_: None)
  part = staged_config(tmp_path / 'part')
  opened = []
  loop.train(part, batches=stage_batches(opened), print_fn=lambda *_: None, stop_at=3)
  assert opened == [(0, 0), (1, 0)]
  lines = []
  resumed, _ = loop.train(part, batches=stage_batches(opened), print_fn=lines.append)
  assert any('Resumed from step 3' in line for line in lines)
  assert opened[-1] == (1, 1)  # stage 2's stream from its own step 1
  assert int(resumed['step']) == 4
  for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
