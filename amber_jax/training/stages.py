"""Training stages (config.train.stages): each a step range with its own objectives, batch shapes
and data seed; the learning-rate schedule and optimizer state span them all."""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

# The data fields a stage may override: the shapes of a step and how rows are cut. Everything else
# of config.data (corpus, vocabulary, mixture, cache) is fixed for the run.
STAGE_DATA_FIELDS = ('mono_batch_size', 'parallel_batch_size', 'mono_length', 'sentence_length',
                     'too_long', 'packing', 'pair_packing')


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of a run: global steps [start, end), run with `config` (the overrides applied).

  Attributes:
    index: 0, 1, ...
    name: the stage's 'name' (default 'stage<index>').
    start, end: its global step range.
    config: the run's config with the stage's overrides and seed = run seed + index (so that every
      stage reads its own deterministic data stream and draws its own masks).
  """

  index: int
  name: str
  start: int
  end: int
  config: Any

  @property
  def steps(self) -> int:
    return self.end - self.start


def _flat_stage(entry, index: int) -> dict:
  """A stage entry (flat dotted keys and/or nested {'objectives': {...}, 'data': {...}}) as
  {key: value} with dotted keys; raises naming the entry when it is not a mapping."""
  if isinstance(entry, ml_collections.ConfigDict):
    entry = entry.to_dict()
  if not isinstance(entry, dict):
    raise ValueError(f'config.train.stages[{index}] must be a dict such as {{"steps": 100, '
                     f'"objectives.tlm_weight": 0.0}}; got {entry!r}.')
  flat = {}
  for key, value in entry.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      value = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
      for sub, v in value.items():
        flat[f'{key}.{sub}'] = v
    else:
      flat[key] = value
  return flat


def stages(config) -> list[Stage]:
  """The run's stages, validated: config.train.stages, or one stage of config.train.steps.

  A stage is a dict: 'steps' (required, > 0), optional 'name', and overrides 'objectives.<field>'
  (any field of config.objectives) and 'data.<field>' (one of STAGE_DATA_FIELDS), written flat
  ('objectives.sa_weight': 0.0) or nested ('objectives': {'sa_weight': 0.0}). With stages,
  config.train.steps must be the sum of their steps (the learning-rate schedule spans it).

  Raises:
    ValueError: naming the stage and the key that is unknown, missing or of the wrong type.
  """
  entries = list(config.train.stages or [])
  if not entries:
    return [Stage(0, 'stage0', 0, config.train.steps, config)]
  result, start = [], 0
  for index, entry in enumerate(entries):
    flat = _flat_stage(entry, index)
    where = f'config.train.stages[{index}]'
    steps = flat.pop('steps', None)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
      raise ValueError(f"{where} needs 'steps', a positive int; got {steps!r}.")
    name = str(flat.pop('name', f'stage{index}'))
    stage_cfg = ml_collections.ConfigDict(config.to_dict())
    for key, value in flat.items():
      section, _, field = key.partition('.')
      allowed = (list(config.objectives.keys()) if section == 'objectives' else
                 list(STAGE_DATA_FIELDS) if section == 'data' else None)
      if allowed is None or field not in allowed:
        raise ValueError(
            f'{where}: unknown key {key!r}; a stage takes steps, name, objectives.<field> '
            f'({", ".join(sorted(config.objectives.keys()))}) and data.<field> '
            f'({", ".join(STAGE_DATA_FIELDS)}).')
      current = config[section][field]
      ok = (isinstance(value, type(current)) and not (isinstance(value, bool) and
                                                      not isinstance(current, bool))
            or isinstance(current, float) and isinstance(value, int)
            and not isinstance(value, bool))
      if not ok:
        raise ValueError(f'{where}: {key!r} must be a {type(current).__name__} like '
                         f'config.{key} ({current!r}); got {value!r}.')
      stage_cfg[section][field] = type(current)(value)
    stage_cfg.seed = config.seed + index
    stage_cfg.train.stages = []
    stage_cfg.train.steps = steps
    stage_cfg.lock()
    result.append(Stage(index, name, start, start + steps, stage_cfg))
    start += steps
  if config.train.steps != start:
    raise ValueError(f'config.train.steps={config.train.steps} but config.train.stages add up to '
                     f'{start} steps; set --config.train.steps={start} (the learning-rate '
                     'schedule spans the whole run).')
  return result


def stage_at(all_stages: list[Stage], step: int) -> Stage:
  """The stage that runs global step `step` (the last one at or after the end)."""
  for stage in all_stages:
    if step < stage.end:
      return stage
  return all_stages[-1]
