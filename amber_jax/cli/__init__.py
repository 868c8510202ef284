"""The `amber-jax` command line: all argparse lives in this package."""

from amber_jax.cli.commands import main

__all__ = ['main']
