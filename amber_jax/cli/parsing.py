"""What the subcommands' parsers share: `-h/--help` that also explains `--config=PRESET` and
`--config.a.b=V`, and the parse that leaves those two to `config.load_config`.

argparse cannot declare `--config.a.b=V` (any dotted field), so a config-taking command parses its
own flags with `parse_known_args` and hands what is left to the config splitter; its help names
both in the usage line and closes with a paragraph on them.
"""

from __future__ import annotations

import argparse

from amber_jax import config as config_lib

OVERRIDES_HELP = ('--config.a.b=V sets one field of the config, typed like its current value '
                  '(e.g. --config.train.steps=100 --config.data.mono_batch_size=8); a misspelled '
                  'field or a value of the wrong type fails naming it.')


def config_help(default: str | None) -> str:
  """The help's paragraph on --config=PRESET (None: the command takes no preset) and overrides."""
  if default is None:
    return OVERRIDES_HELP
  return ('--config=PRESET picks the config: a preset name (tiny, base) or a Python file with '
          f'get_config() (default {default}). ' + OVERRIDES_HELP)


def config_parser(prog: str, description: str, *, default: str | None = config_lib.DEFAULT_PRESET,
                  epilog: str = '', allow_abbrev: bool = False) -> argparse.ArgumentParser:
  """A parser for a command that also takes --config=PRESET (unless `default` is None) and
  --config.a.b=V; add its own flags, then parse with `parse_config` (or `parse_known`)."""
  parser = argparse.ArgumentParser(
      prog=prog, description=description, allow_abbrev=allow_abbrev,
      epilog=' '.join(text for text in (epilog, config_help(default)) if text))
  parser.config_usage = ('[--config.a.b=V ...]' if default is None
                         else '[--config=PRESET] [--config.a.b=V ...]')
  return parser


def _add_config_usage(parser: argparse.ArgumentParser) -> None:
  """Appends the config flags to the usage line argparse writes from the declared flags."""
  if parser.usage is None:
    usage = parser.format_usage().strip()[len('usage: '):]
    parser.usage = f'{usage} {parser.config_usage}'.replace('%', '%%')


def parse_known(parser: argparse.ArgumentParser, argv: list[str]):
  """(the parser's namespace, the other args): `parse_known_args` with the config usage line."""
  _add_config_usage(parser)
  return parser.parse_known_args(argv)


def parse_config(parser: argparse.ArgumentParser, argv: list[str],
                 default: str = config_lib.DEFAULT_PRESET):
  """(namespace, locked config) of `argv`: the parser's flags, then --config=FILE (else
  `default`) and --config.a.b=V; any other argument exits naming it."""
  args, rest = parse_known(parser, argv)
  config, rest = config_lib.load_config(rest, default=default)
  if rest:
    raise SystemExit(f'{parser.prog}: unexpected arguments {rest}')
  return args, config
