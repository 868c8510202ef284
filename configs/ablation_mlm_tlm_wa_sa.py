"""Ablation preset MLM+TLM+WA+SA, configs/ablation.py:
`amber-jax train --config=configs/ablation_mlm_tlm_wa_sa.py`."""

from configs import ablation


def get_config():
  return ablation.get_config('mlm_tlm_wa_sa')
