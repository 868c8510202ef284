"""The command line: every command answers -h/--help (exit 0) with its own flags and, where it takes
a config, the --config=PRESET and --config.a.b=V line; unknown commands and arguments are refused
with the usage or their name."""

from __future__ import annotations

import subprocess
import sys

import pytest

from amber_jax import cli

CONFIG = ('--config=PRESET', '--config.a.b=V')

# argv before --help -> what the help must mention (its usage line, its flags).
HELP = {
    ('train',): ('usage: amber-jax train', *CONFIG),
    ('compile',): ('usage: amber-jax compile', '--topology', '--json', 'configs/base.py', *CONFIG),
    ('data', 'build', 'django'): ('usage: amber-jax data build django', '--out'),
    ('data', 'build', 'manpages'): ('usage: amber-jax data build manpages', '--out', '--languages',
                                    '--max-pages', '--cache', '--man-roots', '--english-roots'),
    ('data', 'build', 'files'): ('usage: amber-jax data build files', '--out', '--pairs', '--mono',
                                 '--validation-fraction', '--min-words', 'LANG:EN_FILE,XX_FILE'),
    ('data', 'tfds'): ('usage: amber-jax data tfds', 'corpus_dir', '--out', '--name',
                       '--overwrite'),
    ('data', 'rates'): ('usage: amber-jax data rates', 'sampling rate', *CONFIG),
    ('data', 'cache'): ('usage: amber-jax data cache', 'cache_dir', *CONFIG),
    ('vocab', 'train'): ('usage: amber-jax vocab', '--corpus', '--out', '--size', '--alpha'),
    ('export',): ('usage: amber-jax export', 'workdir', 'out_dir', '--step', '--head', '--dtype'),
    ('eval', 'retrieval'): ('usage: amber-jax eval', '--pairs', '--plot', '--languages'),
    ('eval', 'mining'): ('usage: amber-jax eval', '--k', '--mode', '--threshold'),
    ('eval', 'transfer'): ('usage: amber-jax eval', '--epochs', '--learning-rate',
                           '--freeze-encoder'),
    ('align',): ('usage: amber-jax align', '--pairs', '--method', '--rule', '--gold', '--heatmap'),
    ('mine',): ('usage: amber-jax mine', '--src', '--tgt', '--out', '--src-lang', '--tgt-lang',
                '--threshold', '--index', '--candidates'),
    ('import',): ('usage: amber-jax import', 'hf_dir', 'workdir', *CONFIG),
    ('demo',): ('usage: amber-jax demo', '--out', *CONFIG),
    ('experiment', 'ablation'): ('usage: amber-jax experiment', '--steps', '--seeds',
                                 '--languages', '--presets', '--notes', '--config.a.b=V'),
}


def _exit(argv: list[str], capsys) -> tuple[int, str, str]:
  """(exit code, stdout, stderr) of `amber-jax ARGV`, which must exit."""
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  out, err = capsys.readouterr()
  code = exit_info.value.code
  return (0 if code is None else code), out, err


@pytest.mark.parametrize('command', sorted(HELP), ids=' '.join)
@pytest.mark.parametrize('flag', ['--help', '-h'])
def test_every_command_answers_help(command, flag, capsys):
  code, out, _ = _exit([*command, flag], capsys)
  assert code == 0, (command, out)
  missing = [text for text in HELP[command] if text not in out]
  assert not missing, f'{" ".join(command)} --help does not mention {missing}:\n{out}'


def test_experiment_help_offers_overrides_but_no_preset(capsys):
  _, out, _ = _exit(['experiment', 'ablation', '--help'], capsys)
  assert '--config=PRESET' not in out and 'configs/ablation.py' in out


def test_top_level_usage_lists_every_command(capsys):
  for argv in ([], ['--help'], ['-h']):
    code, out, _ = _exit(argv, capsys)
    assert code == 0 and out.startswith('usage: amber-jax'), (argv, out)
    for command in HELP:
      if command[0] != 'eval':
        assert f'amber-jax {" ".join(command)}' in out, command
    assert 'amber-jax eval retrieval|mining|transfer' in out
    assert set(cli.COMMANDS) == {command[0] for command in HELP}


def test_unknown_command_exits_2_with_the_usage(capsys):
  code, out, err = _exit(['trian', '--config=tiny'], capsys)
  assert code == 2
  assert "unknown command 'trian'" in err and out.startswith('usage: amber-jax')


def test_data_usage_on_help_and_on_a_wrong_action(capsys):
  for argv in (['data', '--help'], ['data', 'build', '-h']):
    code, out, _ = _exit(argv, capsys)
    assert code == 0 and 'amber-jax data build manpages' in out and 'amber-jax data cache' in out
  with pytest.raises(SystemExit, match='amber-jax data tfds CORPUS_DIR'):
    cli.main(['data', 'bild'])
  with pytest.raises(SystemExit, match=r"amber-jax data build: name one of \['django', 'files'"):
    cli.main(['data', 'build', 'wiki'])


def test_config_commands_still_take_config_args_and_name_strays(capsys):
  # The preset and overrides are read (a typo in a field fails naming it) ...
  with pytest.raises(SystemExit, match='mono_batch_sise'):
    cli.main(['data', 'rates', '--config=tiny', '--config.data.mono_batch_sise=4'])
  with pytest.raises(SystemExit, match='mono_batch_sise'):
    cli.main(['compile', '--topology=cpu:1', '--config.data.mono_batch_sise=4'])
  # ... and anything that is neither a flag nor a config argument is named.
  with pytest.raises(SystemExit, match=r"amber-jax train: unexpected arguments \['extra'\]"):
    cli.main(['train', '--config=tiny', '--config.train.steps=1', 'extra'])
  with pytest.raises(SystemExit, match=r"amber-jax data cache: unexpected arguments \['--cach'\]"):
    cli.main(['data', 'cache', '--config=tiny', '--cach'])
  with pytest.raises(SystemExit, match=r"amber-jax import: unexpected arguments \['third'\]"):
    cli.main(['import', 'hf', 'run', 'third', '--config=tiny'])
  code, _, err = _exit(['demo', '--config=tiny', '--bogus'], capsys)
  assert code == 2 and 'unrecognized arguments: --bogus' in err


def test_help_in_a_fresh_process_without_tensorflow():
  # -X importtime lists every module the process imports on stderr, one `| name` a line.
  out = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'amber_jax.cli', 'train',
                        '--help'], capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.startswith('usage: amber-jax train') and '--config.a.b=V' in out.stdout
  imported = {line.rsplit('|', 1)[-1].strip() for line in out.stderr.splitlines()}
  assert 'amber_jax.cli.train' in imported  # the listing is there ...
  assert 'tensorflow' not in imported and 'seqio' not in imported  # ... and has no TensorFlow
