"""`python -m amber_jax.cli ...` is `amber-jax ...`."""

from amber_jax.cli import main

main()
