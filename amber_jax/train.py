"""TrainState, the jitted AMBER step, and the training loop.

The state is a plain dict {'step', 'params', 'opt_state'} whose leaves are global jax.Arrays laid
out by `amber_jax.partitioning`; the step is one `jax.jit` with explicit in/out shardings and the
state donated. Nothing here imports TensorFlow: the input pipeline is imported only when a run
reads real data (`amber_jax.data`), and synthetic batches need none.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import signal
import threading
import time
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from amber_jax import checkpoint, objectives, partitioning, paths
from amber_jax.model import Encoder, EncoderConfig, init_params

# {'step': int32 [], 'params': tree, 'opt_state': tree, 'nonfinite_streak': int32 []}
State = dict


def resolve(config) -> None:
  """Fills the config's '' paths with their defaults under the cache folder (in place)."""
  with config.unlocked():
    if not config.data.corpus_dir:
      config.data.corpus_dir = str(paths.corpus_dir(config.data.task_prefix))
    if not config.data.vocab_path:
      config.data.vocab_path = str(paths.vocab_path(config.data.task_prefix))
    if not config.workdir:
      config.workdir = str(paths.cache_dir() / 'runs' / 'default')


# ---- training stages (config.train.stages) ----

# The data fields a stage may override: the shapes of a step and how rows are cut. Everything else
# of config.data (corpus, vocabulary, mixture, cache) is fixed for the run.
STAGE_DATA_FIELDS = ('mono_batch_size', 'parallel_batch_size', 'mono_length', 'sentence_length',
                     'too_long', 'packing')


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


def learning_rate_schedule(ocfg, total_steps: int) -> optax.Schedule:
  """Linear warmup to the peak, then linear decay to 0 at `total_steps` (BERT's schedule)."""
  warmup = max(1, min(ocfg.warmup_steps, total_steps))
  return optax.join_schedules([
      optax.linear_schedule(0.0, ocfg.learning_rate, warmup),
      optax.linear_schedule(ocfg.learning_rate, 0.0, max(1, total_steps - warmup)),
  ], [warmup])


def make_optimizer(ocfg, total_steps: int) -> optax.GradientTransformation:
  """AdamW with warmup + linear decay; no weight decay on biases and LayerNorm parameters."""
  decay_mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)
  chain = []
  if ocfg.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(ocfg.grad_clip_norm))
  chain.append(optax.adamw(learning_rate_schedule(ocfg, total_steps), b1=ocfg.b1, b2=ocfg.b2,
                           eps=ocfg.eps, weight_decay=ocfg.weight_decay, mask=decay_mask))
  return optax.chain(*chain)


@dataclasses.dataclass
class Setup:
  """Everything a run needs that follows from the config and the mesh."""

  config: Any
  mesh: jax.sharding.Mesh
  model: Encoder
  tx: optax.GradientTransformation
  state_shardings: Any
  abstract_state: Any  # ShapeDtypeStructs with shardings (restore target, AOT compile input)


def setup(config, mesh=None) -> Setup:
  """Builds mesh, model, optimizer and the state's shardings (no arrays are allocated)."""
  mesh = mesh if mesh is not None else partitioning.make_mesh(dict(config.mesh))
  mcfg = EncoderConfig.from_config(config.model)
  model = Encoder(mcfg)
  tx = make_optimizer(config.optimizer, config.train.steps)
  for stage in stages(config):
    partitioning.check_batch_divisible(
        {'mono': stage.config.data.mono_batch_size,
         'parallel': stage.config.data.parallel_batch_size}, mesh)
  boxed = jax.eval_shape(lambda: init_params(mcfg, jax.random.key(0)))
  param_sh = partitioning.param_shardings(boxed, mesh)
  params_abs = nn.meta.unbox(boxed)
  opt_abs = jax.eval_shape(tx.init, params_abs)
  # Optimizer moments follow their parameter's sharding; scalars (counts) are replicated.
  opt_sh = _opt_state_shardings(opt_abs, params_abs, param_sh, mesh)
  scalar_sh = partitioning.replicated(mesh)
  state_sh = {'step': scalar_sh, 'params': param_sh, 'opt_state': opt_sh,
              'nonfinite_streak': scalar_sh}
  state_abs = {'step': jax.ShapeDtypeStruct((), jnp.int32), 'params': params_abs,
               'opt_state': opt_abs, 'nonfinite_streak': jax.ShapeDtypeStruct((), jnp.int32)}
  return Setup(config, mesh, model, tx, state_sh, checkpoint.abstract_like(state_abs, state_sh))


def _opt_state_shardings(opt_abs, params_abs, param_sh, mesh):
  """Each optimizer leaf whose path ends with a parameter's path (and has its shape) gets that
  parameter's sharding (Adam's moments); everything else (counts) is replicated."""
  by_path = {}
  for (path, leaf), sh in zip(jax.tree_util.tree_leaves_with_path(params_abs),
                              jax.tree_util.tree_leaves(param_sh)):
    by_path[tuple(path)] = (leaf.shape, sh)

  def pick(path, leaf):
    for i in range(len(path)):
      hit = by_path.get(tuple(path[i:]))
      if hit is not None and hit[0] == getattr(leaf, 'shape', None):
        return hit[1]
    return partitioning.replicated(mesh)

  return jax.tree_util.tree_map_with_path(pick, opt_abs)


def init_state(s: Setup, seed: int) -> State:
  """A fresh state, created directly in its sharded layout."""

  def init():
    params = nn.meta.unbox(init_params(s.model.cfg, jax.random.key(seed)))
    return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': s.tx.init(params),
            'nonfinite_streak': jnp.zeros((), jnp.int32)}

  with partitioning.activation_rules(s.mesh):
    return jax.jit(init, out_shardings=s.state_shardings)()


def make_train_step(s: Setup) -> Callable[[State, dict], tuple[State, dict]]:
  """The jitted step: masks, runs the AMBER passes, applies AdamW. Donates the old state."""
  ocfg = s.config.objectives
  base_key = jax.random.key(s.config.seed)

  def step_fn(state, batch):
    rng = jax.random.fold_in(base_key, state['step'])
    loss_fn = lambda p: objectives.amber_losses(s.model, p, batch, rng, ocfg)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
    grad_norm = optax.global_norm(grads)
    # A non-finite loss or gradient skips the update (parameters and moments stay) and counts.
    # A cond, not a where over every parameter and moment: on the CPU that extra pass over the
    # state cost ~280 ms of a 5.4 s `base` step; the donated buffers are updated in place.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(_):
      updates, opt_state = s.tx.update(grads, state['opt_state'], state['params'])
      return optax.apply_updates(state['params'], updates), opt_state

    params, opt_state = jax.lax.cond(finite, update,
                                     lambda _: (state['params'], state['opt_state']), None)
    streak = jnp.where(finite, 0, state['nonfinite_streak'] + 1)
    metrics.update(grad_norm=grad_norm, nonfinite_streak=streak,
                   skipped=(~finite).astype(jnp.float32))
    return {'step': state['step'] + 1, 'params': params, 'opt_state': opt_state,
            'nonfinite_streak': streak}, metrics

  batch_sh = partitioning.batch_sharding(s.mesh)
  jitted = jax.jit(step_fn, in_shardings=(s.state_shardings, batch_sh),
                   out_shardings=(s.state_shardings, partitioning.replicated(s.mesh)),
                   donate_argnums=(0,))

  def run(state, batch):
    with partitioning.activation_rules(s.mesh):
      return jitted(state, batch)

  run.jitted = jitted
  return run


class MetricsWriter:
  """TensorBoard scalars (tensorboardX: no TensorFlow needed) plus a JSON-lines copy."""

  def __init__(self, workdir: pathlib.Path, enabled: bool = True):
    self.enabled = enabled and jax.process_index() == 0
    self._tb = None
    self._jsonl = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(str(workdir / 'tensorboard'))
      self._jsonl = open(workdir / 'metrics.jsonl', 'a', encoding='utf-8')

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, step)
    self._jsonl.write(json.dumps({'step': step, **scalars}) + '\n')
    self._jsonl.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()


def check_vocabulary(config) -> None:
  """The tokenizer's ids must fit the model's embedding table (else training silently NaNs)."""
  from amber_jax import hf_vocab  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(config.data.vocab_path)
  if not path.exists():
    raise FileNotFoundError(f'Vocabulary {path} not found; train one with `amber-jax vocab train` '
                            'or set config.data.vocab_path.')
  if path.is_file():  # a SentencePiece model: read without seqio/TensorFlow (TF-free hosts)
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    size = spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()
  else:
    size = hf_vocab.load_vocabulary(path).vocab_size
  if size > config.model.vocab_size:
    raise ValueError(f'The vocabulary {path} has {size} pieces but config.model.vocab_size is '
                     f'{config.model.vocab_size}; set --config.model.vocab_size={size} or use the '
                     'vocabulary the checkpoint was trained with.')


def check_run_vocabulary(config, workdir: pathlib.Path, resumed: bool) -> None:
  """A run keeps the vocabulary it started with: `vocab.json` in the run folder records its
  fingerprint, and resuming with a different config.data.vocab_path file raises (the ids would
  index the wrong embedding rows and training would go on silently wrong)."""
  path = pathlib.Path(config.data.vocab_path or '')
  if not config.data.vocab_path or not path.exists():
    return  # synthetic input, or check_vocabulary reports the missing file when data is read
  from amber_jax import token_cache  # pylint: disable=import-outside-toplevel
  record = workdir / 'vocab.json'
  digest = token_cache.vocab_fingerprint(path)
  if resumed and record.exists():
    saved = json.loads(record.read_text())
    if saved['sha256'] != digest:
      raise ValueError(
          f'The run {workdir} was trained with the vocabulary {saved["path"]} (sha256 '
          f'{saved["sha256"][:12]}...), but config.data.vocab_path={path} has sha256 '
          f'{digest[:12]}...: its ids would not match the checkpoint\'s embedding rows. Resume '
          f'with --config.data.vocab_path={saved["path"]}, or train a new workdir.')
    return
  if jax.process_index() == 0:
    record.write_text(json.dumps({'path': str(path), 'sha256': digest}, indent=2))


def real_batches(config, start_step: int, data_seed: int | None = None) -> Iterator[dict]:
  """This process's share of the real input pipeline, from `start_step` on.

  `data_seed` seeds shuffling and mixture sampling (default config.seed; a stage passes its own).
  """
  from amber_jax import data  # pylint: disable=import-outside-toplevel  (imports TensorFlow)
  check_vocabulary(config)
  # config.data's batch sizes are global; each process reads and batches its share of the rows.
  local = ml_collections.ConfigDict(config.data.to_dict())
  for field in ('mono_batch_size', 'parallel_batch_size'):
    if local[field] % jax.process_count():
      raise ValueError(f'config.data.{field}={local[field]} is not divisible by the '
                       f'{jax.process_count()} processes; make it a multiple.')
    local[field] //= jax.process_count()
  seed = config.seed if data_seed is None else data_seed
  return data.make_train_iterator(local, seed=seed, start_step=start_step,
                                  shard_index=jax.process_index(),
                                  num_shards=jax.process_count())


class NonFiniteLossError(RuntimeError):
  """Raised after `train.max_nonfinite_steps` non-finite losses in a row."""


class _Preemption:
  """Turns SIGTERM (a preempted TPU VM, `scancel`, Kubernetes) into a flag the loop polls."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def default_eval_fn(config) -> Callable[[Any], dict] | None:
  """Retrieval on the corpus's validation pairs (config.train.eval_every > 0 and a corpus)."""
  if not config.train.eval_every:
    return None
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  from amber_jax import evaluate  # pylint: disable=import-outside-toplevel
  from amber_jax.ingest import django_po  # pylint: disable=import-outside-toplevel
  pairs = django_po.read_pairs(config.data.corpus_dir, 'validation')
  sp = spm.SentencePieceProcessor(model_file=config.data.vocab_path)
  mcfg = EncoderConfig.from_config(config.model)
  return lambda params: evaluate.periodic_eval(params, mcfg, sp, pairs)


def train(config, *, batches: Callable[..., Iterator[dict]] | None = None,
          mesh=None, print_fn=print, eval_fn: Callable[[Any], dict] | None = None,
          stop_at: int | None = None) -> tuple[State, list[dict]]:
  """Trains until config.train.steps (or `stop_at`), resuming from the latest checkpoint in config.workdir.

  With config.train.stages the run goes through them in order (`stages`): at each boundary a new
  step function (the stage's objectives and batch shapes) and a new data stream (the stage's seed
  and shapes, from the stage's step 0). A resume inside a stage replays that stage's stream from
  its start, so a killed run ends bit-identical to an uninterrupted one. The learning-rate
  schedule and the optimizer state span the whole run.

  SIGTERM saves a checkpoint at the current step and returns; `train.max_nonfinite_steps`
  non-finite losses in a row (their updates are skipped) raise NonFiniteLossError.

  Args:
    config: a resolved config (see `resolve`).
    batches: the input. Without stages: start_step -> iterator of numpy batches (this process's
      rows). With stages: (step within the stage, Stage) -> iterator for that stage (read the
      shapes and seed from `stage.config`). Default: the pipeline of config.data (`real_batches`).
    mesh: an explicit mesh (default: from config.mesh).
    print_fn: where progress lines go.
    eval_fn: params -> scalars, run every config.train.eval_every steps (default: retrieval on
      the corpus's validation pairs when real data is read).
    stop_at: stop after this global step, with a checkpoint there (e.g. the end of a stage that
      several runs share); a later call resumes from it. None: config.train.steps.

  Returns:
    (final state, the logged metrics as a list of dicts; each has its 'stage' index).
  """
  workdir = pathlib.Path(config.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  all_stages = stages(config)
  staged = bool(config.train.stages)
  s = setup(config, mesh)
  tcfg = config.train
  mgr = checkpoint.manager(workdir, keep=tcfg.keep_checkpoints, every=tcfg.checkpoint_every)
  restored = checkpoint.restore_latest(mgr, s.abstract_state, print_fn=print_fn)
  if restored is None:
    state, start = init_state(s, config.seed), 0
  else:
    state, _, start = restored
    print_fn(f'Resumed from step {start} ({mgr.directory})')
  check_run_vocabulary(config, workdir, resumed=restored is not None)
  if jax.process_index() == 0:
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
  if eval_fn is None and batches is None:
    eval_fn = default_eval_fn(config)

  def open_stage(stage: Stage, at: int):
    """(step function, batch iterator) of `stage`, its stream from global step `at`."""
    if batches is None:
      it = real_batches(stage.config, at - stage.start, data_seed=stage.config.seed)
    elif staged:
      it = batches(at - stage.start, stage)
    else:
      it = batches(at)
    step_fn = make_train_step(dataclasses.replace(s, config=stage.config))
    if staged:
      print_fn(f'Stage {stage.index} ({stage.name}): steps {stage.start}-{stage.end}'
               + (f', from step {at}' if at != stage.start else ''))
    return step_fn, it

  end = tcfg.steps if stop_at is None else min(stop_at, tcfg.steps)
  stage = stage_at(all_stages, start)
  step_fn, it = open_stage(stage, start) if start < end else (None, None)
  writer = MetricsWriter(workdir)
  history: list[dict] = []
  meta = {'config': json.loads(config.to_json_best_effort())}
  save = lambda step, force=False: checkpoint.save(mgr, step, state, {**meta, 'step': step},
                                                   force=force)
  t_start = t_window = time.time()
  tokens_window, steps_window, previous = 0, 0, None
  with _Preemption() as preemption:
    for step in range(start, end):
      if step >= stage.end:  # the boundary: the next stage's shapes, objectives and stream
        stage = stage_at(all_stages, step)
        step_fn, it = open_stage(stage, step)
        previous = None
      local = next(it)
      tokens_window += count_tokens(local) * jax.process_count()
      steps_window += 1
      state, metrics = step_fn(state, partitioning.to_global(local, s.mesh))
      done = step + 1
      # The previous step's streak is read while this one runs: no stall on the accelerator.
      if previous is not None and int(previous['nonfinite_streak']) >= tcfg.max_nonfinite_steps:
        raise NonFiniteLossError(
            f'{tcfg.max_nonfinite_steps} non-finite losses in a row up to step {done - 1}; their '
            f'updates were skipped. The last good checkpoint is step {mgr.latest_step()} in '
            f'{mgr.directory}. Lower the learning rate or inspect the data around this step.')
      previous = metrics
      first_of_stage = step == start or (staged and step == stage.start)
      if (done % tcfg.log_every == 0 or done == end or first_of_stage
          or (staged and done == stage.end)):
        scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
        elapsed = max(time.time() - t_window, 1e-9)
        scalars.update(tokens_per_s=tokens_window / elapsed, steps_per_s=steps_window / elapsed)
        if eval_fn is not None and tcfg.eval_every and done % tcfg.eval_every == 0:
          scalars.update({f'eval/{k}': v for k, v in eval_fn(state['params']).items()})
        writer.write(done, {**scalars, 'stage': float(stage.index)})
        history.append({'step': done, 'stage': stage.index, **scalars})
        rate = (done - start) / max(time.time() - t_start, 1e-9)
        shown = ' '.join(f'{k}={v:.4f}' for k, v in sorted(scalars.items())
                         if k.endswith('loss') or k.startswith('eval/'))
        print_fn(f'step {done}/{tcfg.steps} {shown} tok/s={scalars["tokens_per_s"]:.0f} '
                 f'eta={_format_eta((tcfg.steps - done) / rate)}'
                 + (' (includes compilation)' if first_of_stage else ''))
        t_window, tokens_window, steps_window = time.time(), 0, 0
      save(done)
      if preemption.requested:
        print_fn(f'SIGTERM: saving a checkpoint at step {done} and stopping.')
        save(done, force=mgr.latest_step() != done)
        break
  if not preemption.requested and start < end and mgr.latest_step() != end:
    save(end, force=True)
  mgr.wait_until_finished()
  mgr.close()
  writer.close()
  return state, history


def count_tokens(batch: dict) -> int:
  """Non-pad tokens of the rows that define a step's work (mono rows and [x; y] pairs)."""
  return int(sum(np.count_nonzero(batch[k]) for k in ('mono_ids', 'pair_ids') if k in batch))


def _format_eta(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f'{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def synthetic_batches(config, start_step: int = 0) -> Iterator[dict]:
  """Random token batches with the real batch layout (benchmarks, TF-free machines)."""
  from amber_jax.data import batch_spec  # pylint: disable=import-outside-toplevel (no TF at import)
  spec = batch_spec(config.data)
  step = start_step
  while True:
    rng = np.random.default_rng([config.seed, step])
    yield {name: _synthetic_array(name, shape, dtype, rng, config.model.vocab_size)
           for name, (shape, dtype) in spec.items()}
    step += 1


def _synthetic_array(name, shape, dtype, rng, vocab_size):
  from amber_jax.model import CLS_ID, NUM_SPECIALS, SEP_ID  # pylint: disable=import-outside-toplevel
  if name == 'mono_segments':
    return np.zeros(shape, dtype)
  if name == 'mono_seq':  # one text per row, as the ids below are framed
    return np.ones(shape, dtype)
  if name.endswith('segments'):
    half = shape[1] // 2
    return np.concatenate([np.zeros((shape[0], half)), np.ones((shape[0], shape[1] - half))],
                          axis=1).astype(dtype)
  ids = rng.integers(NUM_SPECIALS, vocab_size, size=shape).astype(dtype)
  ids[:, 0] = CLS_ID
  if name in ('pair_ids', 'swap_ids'):
    ids[:, shape[1] // 2 - 1] = SEP_ID
  ids[:, -1] = SEP_ID
  return ids
