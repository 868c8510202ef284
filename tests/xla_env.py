"""XLA flags of the test suite, for this process (conftest.py) and the subprocesses tests start.

The suite compiles a few hundred small train steps, and XLA:CPU's LLVM backend optimisation is
most of each compile: turning it off (`--xla_backend_optimization_level=0`) took the suite from
1,256 s to 895 s on 2 cores. HLO-level optimisation stays on, and every run a test compares is
compiled alike.
"""

import os

FAST_COMPILE = '--xla_backend_optimization_level=0'


def with_cpu_devices(n: int) -> str:
  """The suite's XLA_FLAGS plus `n` host CPU devices (given last, so it wins)."""
  return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}".strip()
