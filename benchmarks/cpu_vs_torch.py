"""MLM training step on the CPU: amber-jax against HuggingFace transformers' BertForMaskedLM
(PyTorch), same model shape, same batch, same sequence length, fp32, both measured in this run.

The PyTorch side is what a user would write: AdamW, labels = -100 except at masked positions
(15%), forward + backward + step. Goal: ours >= 1.5x tokens/s.

  python benchmarks/cpu_vs_torch.py [--preset tiny] [--batch 32] [--length 128] [--repeats 5]
"""

import argparse
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=wrong-import-position

from benchmarks import common  # pylint: disable=wrong-import-position


def torch_step_fn(cfg, ids: np.ndarray, threads: int):
  import torch  # pylint: disable=import-outside-toplevel
  from amber_jax import hf  # pylint: disable=import-outside-toplevel
  from amber_jax.model import EncoderConfig, MASK_ID  # pylint: disable=import-outside-toplevel
  from transformers import BertForMaskedLM  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = BertForMaskedLM(hf.hf_config(EncoderConfig.from_config(cfg.model))).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
  rng = np.random.default_rng(0)
  inputs = torch.tensor(ids, dtype=torch.long)
  labels = torch.full_like(inputs, -100)
  chosen = torch.tensor(rng.random(ids.shape) < 0.15) & (inputs > 4)
  labels[chosen] = inputs[chosen]
  inputs = inputs.masked_fill(chosen, MASK_ID)
  attention = torch.ones_like(inputs)

  def run():
    opt.zero_grad(set_to_none=True)
    out = model(input_ids=inputs, attention_mask=attention, labels=labels)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()

  return run


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--preset', default='tiny', choices=sorted(common.PRESETS))
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--length', type=int, default=128)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--threads', type=int, default=os.cpu_count())
  args = p.parse_args()
  cfg = common.config(args.preset, mono=args.batch, pairs=0, mono_length=args.length,
                      mlm_weight=1.0, tlm_weight=0.0, sa_weight=0.0, wa_weight=0.0)
  tokens = args.batch * args.length
  print(f'# cpu_vs_torch: {common.describe_machine()}; preset {args.preset} '
        f'({cfg.model.num_layers} layers, {cfg.model.hidden_size} wide, vocab '
        f'{cfg.model.vocab_size}), batch {args.batch} x {args.length} tokens, fp32, '
        f'{args.threads} threads')
  ours = common.JaxStep(cfg)
  ids = common.synthetic_ids(np.random.default_rng(0), args.batch, args.length,
                             cfg.model.vocab_size)
  theirs = torch_step_fn(cfg, ids, args.threads)
  # Interleave the two so that drift of the machine's speed hits both alike.
  ours_t, theirs_t = [], []
  ours.run()
  theirs()
  for _ in range(args.repeats):
    ours_t.append(common.median_seconds(ours.run, 1, warmup=0)[0])
    theirs_t.append(common.median_seconds(theirs, 1, warmup=0)[0])
  o, t = float(np.median(ours_t)), float(np.median(theirs_t))
  print(f'{"":28s}{"ms/step (median)":>18s}{"min":>8s}{"max":>8s}{"tokens/s":>10s}')
  print(f'{"amber-jax (JAX, XLA CPU)":28s}{o * 1e3:18.1f}{min(ours_t) * 1e3:8.1f}'
        f'{max(ours_t) * 1e3:8.1f}{tokens / o:10.0f}')
  print(f'{"transformers (PyTorch)":28s}{t * 1e3:18.1f}{min(theirs_t) * 1e3:8.1f}'
        f'{max(theirs_t) * 1e3:8.1f}{tokens / t:10.0f}')
  print(f'ratio (ours / torch tokens/s): {t / o:.2f}x (goal >= 1.5x)')


if __name__ == '__main__':
  main()
