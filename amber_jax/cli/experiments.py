"""`amber-jax demo` and `amber-jax experiment ablation`: the end-to-end runs."""

from __future__ import annotations

import pathlib

from amber_jax import config as config_lib
from amber_jax.cli import parsing
from amber_jax.experiments import ablation, demo


def cmd_demo(argv: list[str]) -> None:
  """`demo [--out DIR] [--config=PRESET] [--config.a.b=V ...]`."""
  p = parsing.config_parser(
      'amber-jax demo',
      'The whole pipeline on this machine\'s CPU from what pip installed: Django and Wagtail '
      'catalogs -> corpus -> SentencePiece -> train the preset -> retrieval on held-out apps '
      'beside char 3-grams -> HF export -> 20 translations found; prints a final table and '
      'writes demo_summary.json.', default=demo.PRESET, allow_abbrev=True)
  p.add_argument('--out', default='', help='where the HF export goes (default: ./amber-demo-hf)')
  p.add_argument('--minutes', type=float, default=0,
                 help='train for as many steps as fill this many minutes on 2 CPU cores '
                      f'({demo.STEPS_PER_MINUTE} steps a minute, {demo.OVERHEAD_MINUTES:g} '
                      'minutes for the rest; a faster machine ends sooner), in its own workdir '
                      '(runs/demo-<N>min); 0: the preset\'s steps')
  args, rest = parsing.parse_known(p, argv)
  config, rest = config_lib.load_config(rest, default=demo.PRESET)
  if rest:
    p.error(f'unrecognized arguments: {" ".join(rest)}')
  if args.minutes:
    try:
      config = demo.with_minutes(config, args.minutes)
    except ValueError as error:
      p.error(str(error))
  elif config.train.stages and config.train.steps > 0:  # --config.train.steps=N: stages follow
    config = demo.with_steps(config, config.train.steps)
  demo.run(config, hf_out=args.out or 'amber-demo-hf')


def _steps_and_seeds(args) -> tuple[list[int], list[int]]:
  """([stage-1 steps, stage-2 steps], seeds) of --steps N|N1,N2 and --seeds A,B,..."""
  try:
    steps = [int(v) for v in args.steps.split(',')]
    seeds = [int(v) for v in args.seeds.split(',')]
  except ValueError:
    raise SystemExit('amber-jax experiment: --steps and --seeds take comma-separated integers '
                     f'(got --steps={args.steps} --seeds={args.seeds})') from None
  if len(steps) == 1:
    steps = [steps[0] // 3, steps[0] - steps[0] // 3]
  if len(steps) != 2 or min(steps) <= 0:
    raise SystemExit(f'amber-jax experiment: --steps takes N or N1,N2 > 0; got {args.steps}')
  return steps, seeds


def cmd_experiment(argv: list[str]) -> None:
  """`experiment ablation`: the paper's objective ablation, trained, evaluated and written up."""
  p = parsing.config_parser(
      'amber-jax experiment',
      'Trains MLM, MLM+TLM, MLM+TLM+WA and MLM+TLM+WA+SA (configs/ablation.py) with '
      'the same budget and seeds on the man-page translations, evaluates them on held-out pairs '
      'and writes a results page. --config.a.b=V overrides apply to every preset.', default=None)
  p.add_argument('name', choices=['ablation'])
  p.add_argument('--steps', default='250,500',
                 help='N1,N2: steps of stage 1 (MLM) and stage 2 (the objectives under test); '
                 'one number N splits it 1:2')
  p.add_argument('--seeds', default='0,1,2', help='comma-separated training seeds')
  p.add_argument('--languages', default='de,es,fr,ja,pl,ru',
                 help='languages paired with English (training and evaluation)')
  p.add_argument('--presets', default='mlm,mlm_tlm,mlm_tlm_wa,mlm_tlm_wa_sa')
  p.add_argument('--out', default='docs/RESULTS.md', help='the results page')
  p.add_argument('--runs-dir', default='', help='where the runs go (default: the cache folder)')
  p.add_argument('--eval-pairs', type=int, default=300, help='retrieval pairs per language')
  p.add_argument('--align-pairs', type=int, default=64, help='alignment pairs per language')
  p.add_argument('--mlm-sentences', type=int, default=100, help='MLM sentences per language')
  p.add_argument('--bootstrap', type=int, default=1000, help='bootstrap replicates')
  p.add_argument('--notes', default='', help='a markdown file added to the page (discussion)')
  args, rest = parsing.parse_known(p, argv)
  path, overrides, rest = config_lib.split_config_args(rest)
  rest = ([f'--config={path}'] if path is not None else []) + rest
  if rest:
    raise SystemExit(f'amber-jax experiment: unexpected argument {rest[0]!r} (the presets are '
                     'configs/ablation.py; override their fields with --config.a.b=V)')
  steps, seeds = _steps_and_seeds(args)
  settings = ablation.Settings(
      stage1_steps=steps[0], stage2_steps=steps[1], seeds=seeds,
      languages=[l for l in args.languages.split(',') if l], out=args.out,
      runs_dir=args.runs_dir, eval_pairs=args.eval_pairs, align_pairs=args.align_pairs,
      mlm_sentences=args.mlm_sentences, bootstrap=args.bootstrap,
      overrides=[f'{name}={value}' for name, value in overrides],
      presets=[k for k in args.presets.split(',') if k],
      command='amber-jax experiment ' + ' '.join(argv),
      notes=pathlib.Path(args.notes).read_text(encoding='utf-8') if args.notes else '')
  try:
    ablation.run(settings)
  except ValueError as e:
    raise SystemExit(f'amber-jax experiment: {e}') from None
