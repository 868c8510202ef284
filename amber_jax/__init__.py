"""amber-jax: AMBER (arXiv 2010.07972) pretraining of multilingual encoders in JAX/Flax.

Layers, each importing only from the ones below it (tests/test_structure.py checks this):
cli -> experiments -> training / eval / export -> data / corpora -> parallel / text -> core -> config.
"""
