"""Evaluation: retrieval, bitext mining, word alignment and AER, zero-shot transfer, plots."""
