"""A quiet start: TensorFlow's start-up notices kept off the terminal, real messages kept on it.

Importing TensorFlow on a CPU machine writes, from C++ and before any Python logging exists:

  WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
  I0000 ... port.cc:153] oneDNN custom operations are on. You may see slightly different ...
  I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
  E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ... (303)

(the last at its first look for a GPU). `TF_CPP_MIN_LOG_LEVEL=2` does not reach the first three,
and level 3 would hide TensorFlow's real errors too. So `install()` (called by the command line)
makes the first `import tensorflow` run with file descriptor 2 sent to a temporary file, hides
TensorFlow's GPUs (JAX owns the accelerators; TF only reads text), and then writes back every
line that is not one of the known notices in `NOISE`. A warning or error of any other kind still
reaches stderr, in its order.

It also drops orbax's absl warnings about the read-only checkpoint manager that restoring for
evaluation and export opens on purpose (`ABSL_NOISE`), and transformers' progress bar for loading
a few megabytes of weights. `AMBER_JAX_VERBOSE=1` turns all of this off.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

# The start-up notices, one pattern each; a line matching none of them is written back.
NOISE = tuple(re.compile(p) for p in (
    r'^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$',
    r'^I\d{4} .*\] oneDNN custom operations are on\.',
    r'^I\d{4} .*cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine',
    r'^E\d{4} .*cuda_(platform|executor|diagnostics)\.cc:\d+\] failed call to cuInit',
    r'^I\d{4} .*cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use',
    r'^To enable the following instructions: .* in other operations, rebuild TensorFlow',
))
QUIET_MODULES = ('tensorflow',)
# orbax's notices when a run folder is opened read-only (evaluation, export), as it is meant to be.
ABSL_NOISE = tuple(re.compile(p) for p in (
    r'^CheckpointManagerOptions\.read_only=True, setting ',
    r'^Given directory is read only=',
))


def is_noise(line: str) -> bool:
  """Whether `line` (without its newline) is one of the start-up notices."""
  return any(p.search(line) for p in NOISE)


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
  """Within the block, what anything in the process writes to fd 2 goes to a temporary file; at
  its end the lines that are not `NOISE` are written to stderr (also when the block raises)."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode('utf-8', errors='replace')
      kept = [line for line in text.splitlines(keepends=True) if not is_noise(line.rstrip('\n'))]
      if kept:
        sys.stderr.write(''.join(kept))
        sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
  """Runs a module's own loader inside `filtered_stderr`."""

  def __init__(self, loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    with filtered_stderr():
      self._loader.exec_module(module)
      if module.__name__ == 'tensorflow':
        # The first look for a GPU logs the cuInit failure; JAX owns the accelerators anyway.
        module.config.set_visible_devices([], 'GPU')


class _QuietFinder(importlib.abc.MetaPathFinder):
  """Finds the modules of QUIET_MODULES as the path finder does, with `_QuietLoader` around."""

  def find_spec(self, name, path, target=None):
    if name not in QUIET_MODULES:
      return None
    spec = importlib.machinery.PathFinder.find_spec(name, path, target)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


class _AbslNoiseFilter(logging.Filter):
  """Drops the absl log records that match `ABSL_NOISE`."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(p.search(message) for p in ABSL_NOISE)


def install() -> None:
  """Makes the first import of TensorFlow quiet, filters `ABSL_NOISE` and hides transformers'
  progress bars (once; none of it when `AMBER_JAX_VERBOSE` is set)."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  if os.environ.get('AMBER_JAX_VERBOSE', '') not in ('', '0'):
    return
  if any(isinstance(f, _QuietFinder) for f in sys.meta_path):
    return
  os.environ.setdefault('HF_HUB_DISABLE_PROGRESS_BARS', '1')  # read when transformers imports
  logging.getLogger('absl').addFilter(_AbslNoiseFilter())
  sys.meta_path.insert(0, _QuietFinder())


__all__ = ['ABSL_NOISE', 'NOISE', 'QUIET_MODULES', 'filtered_stderr', 'install', 'is_noise']
