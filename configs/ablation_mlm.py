"""Ablation preset MLM, configs/ablation.py:
`amber-jax train --config=configs/ablation_mlm.py`."""

from configs import ablation


def get_config():
  return ablation.get_config('mlm')
