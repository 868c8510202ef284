"""`amber-jax train` and `amber-jax compile`: train a preset, or AOT-compile its train step for a
topology."""

from __future__ import annotations

import json

from amber_jax import config as config_lib
from amber_jax.cli import parsing
from amber_jax.data import inputs
from amber_jax.eval import retrieval
from amber_jax.parallel import cluster
from amber_jax.training import aot, loop


def cmd_train(argv: list[str]) -> None:
  """`train [--config=PRESET] [--config.a.b=V ...]`: trains, then prints the last metrics."""
  p = parsing.config_parser(
      'amber-jax train',
      'Train an encoder with the config\'s objectives and mixtures: checkpoints, metrics and '
      'periodic retrieval eval go to config.workdir (default <cache>/runs/<preset>); a run '
      'resumes from its latest checkpoint. Joins the other hosts first when launched on several '
      '(AMBER_* variables, SLURM, TPU VM); prints the last metrics as one JSON line.')
  _, config = parsing.parse_config(p, argv)
  cluster.initialize()  # joins the other hosts (AMBER_*, SLURM, TPU VM); no-op alone
  config_lib.resolve_paths(config)
  _state, history = loop.train(config, batches=inputs.config_input(config),
                               eval_fn=retrieval.periodic_eval_fn(config))
  if history:
    print(json.dumps(history[-1]))


def cmd_compile(argv: list[str]) -> None:
  """AOT-compiles the train step for a topology; prints per-device memory and FLOPs."""
  p = parsing.config_parser(
      'amber-jax compile',
      'AOT-compile the train step of a config for a device topology (no training, no data) and '
      'print the per-device memory and FLOPs of the compiled step.',
      default='configs/base.py')
  p.add_argument('--topology', default='cpu:8',
                 help="'cpu:N' (N host devices) or 'tpu:NAME' (e.g. tpu:v5e:2x2; needs libtpu)")
  p.add_argument('--json', action='store_true', help='print the report as one JSON line')
  args, config = parsing.parse_config(p, argv, default='configs/base.py')
  try:
    platform, count = aot.parse_topology(args.topology)
    if platform == 'cpu':
      aot.use_cpu_devices(count)  # before anything touches a device
    mesh = aot.topology_mesh(config, args.topology)
  except (ValueError, RuntimeError) as e:
    raise SystemExit(f'amber-jax compile: {e}') from None
  report, _ = aot.compile_train_step(config, mesh, args.topology)
  print(json.dumps(report.to_dict()) if args.json else '\n'.join(report.lines()))
