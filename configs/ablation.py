"""The paper's objective ablation at CPU scale: `--config=configs/ablation_mlm_tlm.py` etc.

Four presets share everything (model, corpus, languages, vocabulary, optimizer, steps, seeds)
but stage 2's objectives, as in the paper's ablation table (arXiv 2010.07972):

  mlm            stage 1 MLM; stage 2 MLM (monolingual rows only)
  mlm_tlm        stage 1 MLM; stage 2 MLM + TLM
  mlm_tlm_wa     stage 1 MLM; stage 2 MLM + TLM + WA
  mlm_tlm_wa_sa  stage 1 MLM; stage 2 MLM + TLM + WA + SA (full AMBER)

Stage 1 is identical in all four (so `amber-jax experiment ablation` trains it once per seed and
forks stage 2 from its checkpoint). Stage 2 uses a different batch layout (fewer monolingual rows,
`parallel_batch_size` pairs), as the paper's stage 2 does. The model is smaller than `tiny` (2
layers, 128 wide, the 8k vocabulary) on the Debian man-page translations (`amber-jax data build manpages`). SA uses cosine,
temperature 0.05, both directions (the `tiny` preset's setting, which aligns much faster at CPU scale; the paper's plain dot
product is `--config.objectives.sa_cosine=False --config.objectives.sa_temperature=1.0`).
"""

from configs import tiny

PRESETS = {
    'mlm': dict(tlm_weight=0.0, wa_weight=0.0, sa_weight=0.0),
    'mlm_tlm': dict(tlm_weight=1.0, wa_weight=0.0, sa_weight=0.0),
    'mlm_tlm_wa': dict(tlm_weight=1.0, wa_weight=1.0, sa_weight=0.0),
    'mlm_tlm_wa_sa': dict(tlm_weight=1.0, wa_weight=1.0, sa_weight=1.0),
}

# The default budget (steps of each stage) and the languages paired with English.
STAGE1_STEPS = 250
STAGE2_STEPS = 500
LANGUAGES = ['de', 'es', 'fr', 'ja', 'pl', 'ru']
STAGE1_DATA = dict(mono_batch_size=32)
STAGE2_DATA = dict(mono_batch_size=8, parallel_batch_size=16)


def stage_list(preset: str, stage1_steps: int = STAGE1_STEPS,
               stage2_steps: int = STAGE2_STEPS) -> list[dict]:
  """The two stages of `preset` (flat dotted overrides, see configs/default.py c.train.stages)."""
  if preset not in PRESETS:
    raise ValueError(f'Unknown ablation preset {preset!r}; choose one of {sorted(PRESETS)}.')
  stage1 = {'name': 'mlm', 'steps': stage1_steps, 'objectives.mlm_weight': 1.0,
            'objectives.tlm_weight': 0.0, 'objectives.wa_weight': 0.0,
            'objectives.sa_weight': 0.0, 'data.parallel_batch_size': 0}
  stage1.update({f'data.{k}': v for k, v in STAGE1_DATA.items()})
  stage2 = {'name': preset, 'steps': stage2_steps, 'objectives.mlm_weight': 1.0}
  stage2.update({f'objectives.{k}': v for k, v in PRESETS[preset].items()})
  stage2.update({f'data.{k}': v for k, v in STAGE2_DATA.items()})
  if preset == 'mlm':
    stage2['data.parallel_batch_size'] = 0
  return [stage1, stage2]


def get_config(preset: str = 'mlm_tlm_wa_sa', stage1_steps: int = STAGE1_STEPS,
               stage2_steps: int = STAGE2_STEPS):
  """The ablation config of `preset` (one of PRESETS; the files configs/ablation_<preset>.py pick
  one) with stages of `stage1_steps` (MLM) and `stage2_steps` (the objectives under test)."""
  c = tiny.get_config()
  c.seed = 0
  # Smaller than `tiny` so that 4 presets x 3 seeds train in about an hour on 2 CPU cores.
  c.model.update(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512)
  c.data.update(task_prefix='manpages', languages=list(LANGUAGES), mono_length=32,
                sentence_length=32, too_long='truncate', shuffle_buffer=10_000,
                mono_batch_size=32, parallel_batch_size=16)
  c.optimizer.update(learning_rate=1e-3, warmup_steps=50)
  stages = stage_list(preset, stage1_steps, stage2_steps)
  c.train.update(steps=sum(s['steps'] for s in stages), stages=stages, log_every=25,
                 checkpoint_every=1_000_000, keep_checkpoints=2, eval_every=0)
  return c
