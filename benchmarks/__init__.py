"""Benchmarks: `python -m benchmarks.NAME` (see run_all.sh). They start as quietly as the CLI does
(`amber_jax.quiet`): no TensorFlow start-up notices, no orbax read-only warnings."""

from amber_jax import quiet

quiet.install()
