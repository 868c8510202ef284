"""The `amber-jax` command line: all argparse lives in this package.

usage: amber-jax COMMAND ... (every command answers -h/--help)

  amber-jax demo                                  corpus -> vocab -> train tiny -> eval -> export
  amber-jax data build django [--out DIR]         the Django catalog corpus (DATA.md §1)
  amber-jax data build manpages [--out DIR]       the Debian man-page translations (DATA.md §2)
  amber-jax data build files --out DIR ...        your own Moses/TSV/JSONL/text/.po files
  amber-jax data tfds CORPUS_DIR --out DIR        a built corpus -> a local TFDS dataset
  amber-jax data rates [--config=... ]            effective per-task sampling rates of the mixtures
  amber-jax data cache [--config=... ]            pretokenize the training tasks once
  amber-jax vocab train [--size N] [--out PATH]   SentencePiece with BERT specials
  amber-jax train --config=configs/tiny.py [--config.train.steps=N ...]
  amber-jax compile --config=configs/base.py --topology=cpu:8 [--config.mesh.fsdp=8 ...] [--json]
  amber-jax export WORKDIR OUT_DIR [--head mlm|base] [--dtype float32|bfloat16]
  amber-jax eval retrieval|mining|transfer WORKDIR_OR_HF_DIR [--pairs FILE.tsv] [--plot PNG]
  amber-jax align WORKDIR_OR_HF_DIR --pairs FILE [--method attention|similarity] [--gold FILE]
  amber-jax mine WORKDIR_OR_HF_DIR --src A.txt --tgt B.txt --out DIR   mined pairs (MINING.md)
  amber-jax import HF_DIR OUT_WORKDIR [--config=configs/tiny.py --config.a.b=V ...]
  amber-jax experiment ablation [--steps N1,N2] [--seeds 0,1,2] [--languages de,fr,...]
                                [--out docs/RESULTS.md] [--config.a.b=V ...]

--config=PRESET is a preset name (tiny, base) or a Python file with get_config();
--config.a.b=V sets one field of it (e.g. --config.train.steps=100).
amber-jax --debug COMMAND ... shows the traceback behind a one-line error.

Exit codes: 0 done; 1 a fault (with its traceback); 2 a user error (one line names it);
74 a checkpoint could not be written; 75 preempted: a checkpoint was saved, rerun to resume.

Modules: train (train, compile), data (data ..., vocab train), model (export, import), evaluate
(eval, align), mine (mine), experiments (demo, experiment ablation), parsing (the --config help
and parse).
"""

from __future__ import annotations

import os
import sys

from amber_jax import errors, quiet
from amber_jax.cli import data, evaluate, experiments, mine, model, train

quiet.install()  # before any command imports TensorFlow

USAGE = __doc__[__doc__.index('usage:'):__doc__.index('\nModules:')].rstrip()

COMMANDS = {'train': train.cmd_train, 'compile': train.cmd_compile, 'data': data.cmd_data,
            'vocab': data.cmd_vocab, 'export': model.cmd_export, 'eval': evaluate.cmd_eval,
            'demo': experiments.cmd_demo, 'import': model.cmd_import, 'align': evaluate.cmd_align,
            'experiment': experiments.cmd_experiment, 'mine': mine.cmd_mine}


def main(argv: list[str] | None = None):
  """Runs `amber-jax ARGV...` (default: sys.argv[1:]); returns what the command returns.

  No command, or -h/--help, prints the usage and exits 0; an unknown command prints it and exits 2.
  A user error (`errors.PlainError`, or a SystemExit with a message) prints one line on stderr and
  exits with its code (`amber_jax.errors`); `--debug` (or AMBER_JAX_DEBUG=1) re-raises it.
  """
  argv = sys.argv[1:] if argv is None else list(argv)
  debug = '--debug' in argv or os.environ.get('AMBER_JAX_DEBUG', '') not in ('', '0')
  argv = [a for a in argv if a != '--debug']
  try:
    return _run(argv)
  except errors.PlainError as e:
    if debug:
      raise
    message = str(e) if str(e).startswith('amber-jax') else f'amber-jax: {e}'
    print(message, file=sys.stderr)
    raise CommandExit(e.exit_code, message) from None
  except SystemExit as e:
    if debug or e.code is None or isinstance(e.code, int):
      raise
    print(e.code, file=sys.stderr)
    raise CommandExit(errors.EXIT_USER, str(e.code)) from None


class CommandExit(SystemExit):
  """The exit of a command that failed with a one-line message: `code` is the documented exit
  code (`amber_jax.errors`), str() the message (already printed on stderr)."""

  def __init__(self, code: int, message: str):
    super().__init__(code)
    self.message = message

  def __str__(self):
    return self.message


def _run(argv: list[str]):
  if not argv or argv[0] in ('-h', '--help'):
    print(USAGE)
    raise SystemExit(0)
  if argv[0] not in COMMANDS:
    print(f'amber-jax: unknown command {argv[0]!r}; the commands are {", ".join(COMMANDS)}.',
          file=sys.stderr)
    print(USAGE)
    raise SystemExit(2)
  return COMMANDS[argv[0]](argv[1:])


__all__ = ['main', 'USAGE', 'COMMANDS', 'CommandExit']
