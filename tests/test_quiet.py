"""A quiet command line: TensorFlow's, orbax's and transformers' start-up notices are kept off
stderr (`amber_jax.quiet`), while real warnings still reach it."""

import os
import subprocess
import sys

from amber_jax import quiet

# The lines `import tensorflow` and TF's first look for a GPU print on this CPU machine (copied
# from a demo run before the filter existed).
TF_NOISE = [
    'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR',
    'I0000 00:00:1796377061.449714   15446 port.cc:153] oneDNN custom operations are on. You may '
    'see slightly different numerical results due to floating-point round-off errors from '
    'different computation orders. To turn them off, set the environment variable '
    '`TF_ENABLE_ONEDNN_OPTS=0`.',
    'I0000 00:00:1796377061.450557   15446 cudart_stub.cc:31] Could not find cuda drivers on your '
    'machine, GPU will not be used.',
    'E0000 00:00:1796377063.293948   15446 cuda_platform.cc:52] failed call to cuInit: INTERNAL: '
    'CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)',
]
NOISE_WORDS = ('InitializeLog', 'oneDNN', 'cudart_stub', 'cuInit', 'read_only=True',
               'Given directory is read only', 'Loading weights',
               'Writing model shards')


def _python(code: str, verbose: bool = False) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k not in ('AMBER_JAX_VERBOSE',
                                                          'HF_HUB_DISABLE_PROGRESS_BARS')}
  if verbose:
    env['AMBER_JAX_VERBOSE'] = '1'
  return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                        timeout=300, check=False)


def test_the_notices_are_noise_and_real_messages_are_not():
  assert all(quiet.is_noise(line) for line in TF_NOISE)
  for real in ('E0000 00:00:1796377063.29 15446 cuda_platform.cc:52] out of memory',
               'W0000 00:00:1796377061.4 15446 op_level_cost_estimator.cc:700] Error in cost',
               'UserWarning: the vocabulary has no [MASK]', 'oneDNN is faster here'):
    assert not quiet.is_noise(real), real


def test_filtered_stderr_drops_the_noise_and_keeps_the_rest_in_order_even_on_error():
  code = f"""
import os, sys
from amber_jax import quiet
lines = {TF_NOISE!r}
try:
  with quiet.filtered_stderr():
    os.write(2, (lines[0] + '\\nreal one\\n' + lines[1] + '\\n').encode())
    print('real two', file=sys.stderr)
    os.write(2, (lines[3] + '\\n').encode())
    raise KeyError('boom')
except KeyError:
  print('after', file=sys.stderr)
"""
  out = _python(code)
  assert out.returncode == 0, out.stderr
  assert out.stderr == 'real one\nreal two\nafter\n'


def test_tensorflow_starts_quietly_and_real_warnings_still_show():
  code = """
from amber_jax import quiet
quiet.install()
import warnings
import seqio
import tensorflow as tf
assert not tf.config.get_visible_devices('GPU')
print(list(tf.data.Dataset.range(2).as_numpy_iterator()))
warnings.warn('a real warning')
from absl import logging
logging.warning('CheckpointManagerOptions.read_only=True, setting create=False.')
logging.warning('a real absl warning')
import tempfile, transformers
folder = tempfile.mkdtemp()
transformers.BertModel(transformers.BertConfig(
    vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    intermediate_size=32)).save_pretrained(folder)
transformers.BertModel.from_pretrained(folder)
"""
  out = _python(code)
  assert out.returncode == 0, out.stderr
  assert '[np.int64(0), np.int64(1)]' in out.stdout
  assert 'UserWarning: a real warning' in out.stderr
  assert 'a real absl warning' in out.stderr
  assert not [w for w in NOISE_WORDS if w in out.stderr], out.stderr
  # AMBER_JAX_VERBOSE=1 shows what the filter hides: the check above sees the real notices.
  loud = _python(code, verbose=True)
  assert loud.returncode == 0, loud.stderr
  assert 'oneDNN' in loud.stderr and 'read_only=True' in loud.stderr
  assert 'Loading weights' in loud.stderr


def test_the_command_line_installs_the_filter():
  code = """
import sys
import amber_jax.cli
from amber_jax import quiet
print(sum(type(f).__name__ == '_QuietFinder' for f in sys.meta_path))
"""
  out = _python(code)
  assert out.returncode == 0 and out.stdout.strip() == '1', out.stderr
