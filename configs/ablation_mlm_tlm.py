"""Ablation preset MLM+TLM, configs/ablation.py:
`amber-jax train --config=configs/ablation_mlm_tlm.py`."""

from configs import ablation


def get_config():
  return ablation.get_config('mlm_tlm')
