"""MLM training step on the CPU: amber-jax against HuggingFace transformers' BertForMaskedLM
(PyTorch), same model shape, same batch, same sequence length, fp32, both measured in this run.

The PyTorch side is what a user would write: AdamW, labels = -100 except at masked positions
(15%), forward + backward + step. Goal: ours >= 1.5x tokens/s.

Each side runs in its own worker process and the two take turns, one step at a time, so that
drift of the machine's speed hits both alike while neither shares a process with the other: in
one process, PyTorch's OpenMP pool slowed the XLA step by ~35% (7.3 s against 5.4 s for `base`).

  python benchmarks/cpu_vs_torch.py [--preset base] [--batch 32] [--length 128] [--repeats 5]
"""

import argparse
import os
import subprocess
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=wrong-import-position

from benchmarks import common  # pylint: disable=wrong-import-position


def torch_step_fn(cfg, ids: np.ndarray, threads: int):
  import torch  # pylint: disable=import-outside-toplevel
  from amber_jax.export import hf  # pylint: disable=import-outside-toplevel
  from amber_jax.core.model import EncoderConfig, MASK_ID  # pylint: disable=import-outside-toplevel
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


def build(side: str, args):
  """The step function of one side, on the shared synthetic batch."""
  cfg = common.config(args.preset, mono=args.batch, pairs=0, mono_length=args.length,
                      mlm_weight=1.0, tlm_weight=0.0, sa_weight=0.0, wa_weight=0.0)
  if side == 'ours':
    return common.JaxStep(cfg).run
  ids = common.synthetic_ids(np.random.default_rng(0), args.batch, args.length,
                             cfg.model.vocab_size)
  return torch_step_fn(cfg, ids, args.threads)


def worker(side: str, args) -> None:
  """Builds one side, then runs one step per line read from stdin and answers with its seconds."""
  run = build(side, args)
  run()  # warm-up (and, for ours, the first execution after compiling)
  print('ready', flush=True)
  for _ in sys.stdin:
    print(common.median_seconds(run, 1, warmup=0)[0], flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--preset', default='base', choices=sorted(common.PRESETS))
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--length', type=int, default=128)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--threads', type=int, default=os.cpu_count())
  p.add_argument('--worker', choices=('ours', 'torch'), help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    worker(args.worker, args)
    return
  cfg = common.PRESETS[args.preset]()
  tokens = args.batch * args.length
  print(f'# cpu_vs_torch: {common.describe_machine()}; preset {args.preset} '
        f'({cfg.model.num_layers} layers, {cfg.model.hidden_size} wide, vocab '
        f'{cfg.model.vocab_size}), batch {args.batch} x {args.length} tokens, fp32, '
        f'{args.threads} threads, one worker process per side')
  argv = [sys.executable, os.path.abspath(__file__), '--preset', args.preset, '--batch',
          str(args.batch), '--length', str(args.length), '--threads', str(args.threads)]
  workers = {}
  for side in ('ours', 'torch'):  # built one after the other: neither competes with a compile
    workers[side] = subprocess.Popen(argv + ['--worker', side], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
    if workers[side].stdout.readline().strip() != 'ready':
      raise SystemExit(f'the {side} worker failed to start (its error is above)')
  times = {'ours': [], 'torch': []}
  for r in range(args.repeats):
    for side in (('ours', 'torch') if r % 2 == 0 else ('torch', 'ours')):
      workers[side].stdin.write('run\n')
      answer = workers[side].stdout.readline()
      if not answer:
        raise SystemExit(f'the {side} worker stopped (its error is above)')
      times[side].append(float(answer))
  for w in workers.values():
    w.stdin.close()
    w.wait()
  o, t = float(np.median(times['ours'])), float(np.median(times['torch']))
  print(f'{"":28s}{"ms/step (median)":>18s}{"min":>8s}{"max":>8s}{"tokens/s":>10s}')
  for name, side, m in (('amber-jax (JAX, XLA CPU)', 'ours', o),
                        ('transformers (PyTorch)', 'torch', t)):
    print(f'{name:28s}{m * 1e3:18.1f}{min(times[side]) * 1e3:8.1f}'
          f'{max(times[side]) * 1e3:8.1f}{tokens / m:10.0f}')
  print(f'ratio (ours / torch tokens/s): {t / o:.2f}x (goal >= 1.5x)')


if __name__ == '__main__':
  main()
