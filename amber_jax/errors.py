"""What an `amber-jax` exit code means, and the errors that end a command in one plain line.

| code | meaning |
|---|---|
| 0 | done |
| 1 | a fault of the program or of the run (a bug, non-finite losses): with its traceback |
| 2 | a user error: a bad argument, config value, input file or folder; one line names it |
| 74 | a checkpoint could not be written (disk full, read-only, lost bucket); one line names the cause and the last good step |
| 75 | preempted (SIGTERM): a checkpoint was saved; the same command resumes from it |

`amber-jax --debug ...` (or AMBER_JAX_DEBUG=1) prints the traceback of a one-line error too.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USER = 2
EXIT_STORAGE = 74  # EX_IOERR of sysexits.h
EXIT_PREEMPTED = 75  # EX_TEMPFAIL of sysexits.h: try again later, and it goes on


class PlainError(Exception):
  """An error whose message says all a user needs: the CLI prints it in one line (no traceback)
  and exits with `exit_code`."""
  exit_code = EXIT_FAILURE


class UserError(PlainError, ValueError):
  """Something the user gave is wrong (argument, config, file, folder); the message names it."""
  exit_code = EXIT_USER


class StorageError(PlainError, OSError):
  """A checkpoint could not be written; the message names the cause and the last good step."""
  exit_code = EXIT_STORAGE


class Preempted(PlainError):
  """Training stopped on SIGTERM after saving a checkpoint at `step`; rerunning resumes."""
  exit_code = EXIT_PREEMPTED

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step
