"""Training steps on the CPU: amber-jax against HuggingFace transformers' BertForMaskedLM
(PyTorch), same model shape, same batch, fp32, both measured in this run. Two comparisons
(`--step`, both by default):

'mlm': the MLM step, `--batch` rows of `--length` tokens, the same rows on both sides. The PyTorch
side is what a user would write: AdamW, labels = -100 except at masked positions (15%), forward +
backward + clip + step. Goal: ours >= 1.5x tokens/s.

'amber': the full AMBER step (MLM + TLM + SA + WA). Rows: `--batch`/2 monolingual rows of
`--length` tokens and `--batch`/2 rows of translation pairs, sentence_length = `--length`/2 (as
benchmarks/gpu_mfu.py lays them out). Ours packs the pairs (config.data.pair_packing: as many
pairs per row of `--length` as fit); the pairs are `amber_jax.data.inputs.synthetic_batches`'
(random tokens, lengths log-normal around 15 pieces a side, the Django corpus median). The PyTorch
side takes the SAME pairs and mono rows and writes AMBER the obvious way, one pair per row padded
to the longest of the batch (what transformers' DataCollatorWithPadding does; with these lengths
the longest nearly reaches the cap of sentence_length - 2 tokens a side):
  MLM  BertForMaskedLM on the mono rows, labels -100 except at the masked 15%;
  TLM  the same on [CLS] x [SEP] y [SEP] rows (token_type_ids 1 on y [SEP]);
  SA   BertModel on the x rows and on the y rows (two forward passes), last hidden state
       mean-pooled over real tokens, in-batch softmax cross-entropy over the scores (dot products;
       cosine / temperature / both directions as config.objectives says, as ours);
  WA   BertModel on [x; y] and [y; x] rows with the paper's WA mask (x sees x; y sees x and the
       y before it) given as a 4D additive attention mask [pairs, 1, L, L], which HF BERT takes
       as is; output_attentions=True (which needs attn_implementation='eager': the model switches
       to eager for these two passes and back to its default, sdpa, for the others); from the
       last layer's attentions, L_WA = 1 - sum_ij A_x2y[i, j] A_y2x[j, i] / min(|x|, |y|), heads
       averaged, pairs averaged;
  loss = the weighted sum (config.objectives weights), backward, clip to 1.0, AdamW step.
Given our weights (`torch_amber_step_fn`'s state_dict, from amber_jax.export.hf.to_hf_state_dict),
its SA and WA losses equal those of our packed step to float32 precision: the same computation.
Both sides hold the same useful (non-pad) tokens (mono rows + [x; y]); the table gives each
side's ms/step and useful tokens/s, and the ratio (packed ours / padded torch useful tokens/s).

Each side runs in its own worker process and the two take turns, one step at a time, so that
drift of the machine's speed hits both alike while neither shares a process with the other: in
one process, PyTorch's OpenMP pool slowed the XLA step by ~35% (7.3 s against 5.4 s for `base`).

  python benchmarks/cpu_vs_torch.py [--preset base] [--batch 32] [--length 128] [--repeats 5]
                                    [--step mlm,amber]
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


def _padded(rows: list[np.ndarray]) -> np.ndarray:
  """int64 [len(rows), longest]: the rows, padded with PAD_ID (0) to the longest."""
  out = np.zeros((len(rows), max(map(len, rows))), np.int64)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return out


def torch_amber_step_fn(cfg, batch: dict, threads: int, state_dict=None):
  """The full AMBER step written the obvious way with transformers (module docstring), on the
  mono rows of `batch` and its pairs one per padded row. `state_dict`: start weights (default:
  BertForMaskedLM's initialisation). The step function returns the four losses (floats)."""
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
  from amber_jax.export import hf  # pylint: disable=import-outside-toplevel
  from amber_jax.core.model import (  # pylint: disable=import-outside-toplevel
      CLS_ID, EncoderConfig, MASK_ID, NUM_SPECIALS, SEP_ID)
  from transformers import BertForMaskedLM  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = BertForMaskedLM(hf.hf_config(EncoderConfig.from_config(cfg.model))).train()
  if state_dict is not None:
    model.load_state_dict(state_dict, strict=False)  # the tied decoder is not in it
  default_attention = model.config._attn_implementation  # pylint: disable=protected-access
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
  ocfg = cfg.objectives
  rng = np.random.default_rng(0)
  pairs = common.unpack_pairs(batch)
  cls, sep = np.array([CLS_ID]), np.array([SEP_ID])
  n_x = torch.tensor([len(x) for x, _ in pairs])
  n_y = torch.tensor([len(y) for _, y in pairs])
  x_ids = torch.tensor(_padded([np.concatenate([cls, x, sep]) for x, _ in pairs]))
  y_ids = torch.tensor(_padded([np.concatenate([cls, y, sep]) for _, y in pairs]))
  xy = torch.tensor(_padded([np.concatenate([cls, x, sep, y, sep]) for x, y in pairs]))
  yx = torch.tensor(_padded([np.concatenate([cls, y, sep, x, sep]) for x, y in pairs]))
  pos = torch.arange(xy.shape[1])[None, :]
  xy_types = ((pos >= (n_x + 2)[:, None]) & (xy != 0)).long()  # 1 on y [SEP]
  yx_types = ((pos >= (n_y + 2)[:, None]) & (yx != 0)).long()

  def masked(ids):
    """(inputs, labels): 15% of the real tokens -> [MASK], labels -100 elsewhere."""
    chosen = torch.tensor(rng.random(tuple(ids.shape)) < 0.15) & (ids >= NUM_SPECIALS)
    return ids.masked_fill(chosen, MASK_ID), torch.where(chosen, ids, -100)

  mono = torch.tensor(np.asarray(batch['mono_ids']), dtype=torch.long)
  mono_in, mono_labels = masked(mono)
  xy_in, xy_labels = masked(xy)

  def wa_mask(ids, types):
    """The paper's WA mask as a 4D additive mask [pairs, 1, L, L] (0 allowed, min blocked)."""
    first, second = (types == 0) & (ids != 0), (types == 1) & (ids != 0)
    before = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril(-1)
    allowed = (first[:, :, None] & first[:, None, :]) | (second[:, :, None] & first[:, None, :]) \
        | (second[:, :, None] & second[:, None, :] & before)
    return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]

  xy_mask, yx_mask = wa_mask(xy, xy_types), wa_mask(yx, yx_types)
  # Where the tokens of x and y sit: in [x; y], x_i at 1 + i and y_j at |x| + 2 + j.
  side = max(int(n_x.max()), int(n_y.max()))
  k = torch.arange(side)[None, :]
  x_ok, y_ok = k < n_x[:, None], k < n_y[:, None]  # [pairs, side]
  last = xy.shape[1] - 1
  first_side = (1 + k).clamp(max=last).expand(len(pairs), -1)
  y_in_xy, x_in_yx = (n_x[:, None] + 2 + k).clamp(max=last), (n_y[:, None] + 2 + k).clamp(max=last)
  rows = torch.arange(len(pairs))[:, None, None, None]
  heads = torch.arange(cfg.model.num_heads)[None, :, None, None]

  def sentence_embedding(ids):
    hidden = model.bert(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
    real = (ids != 0).float()[..., None]
    return (hidden * real).sum(1) / real.sum(1).clamp(min=1.0)

  def last_attention(ids, types, mask):
    out = model.bert(input_ids=ids, token_type_ids=types, attention_mask=mask,
                     output_attentions=True)
    return out.attentions[-1]  # [pairs, heads, L, L]

  def run():
    opt.zero_grad(set_to_none=True)
    mlm = model(input_ids=mono_in, attention_mask=(mono != 0).long(), labels=mono_labels).loss
    tlm = model(input_ids=xy_in, token_type_ids=xy_types, attention_mask=(xy != 0).long(),
                labels=xy_labels).loss
    c_x, c_y = sentence_embedding(x_ids), sentence_embedding(y_ids)
    if ocfg.sa_cosine:
      c_x, c_y = F.normalize(c_x, dim=-1), F.normalize(c_y, dim=-1)
    scores = (c_x @ c_y.T - ocfg.sa_margin * torch.eye(len(pairs))) / ocfg.sa_temperature
    target = torch.arange(len(pairs))
    sa = F.cross_entropy(scores, target)
    if ocfg.sa_bidirectional:
      sa = 0.5 * (sa + F.cross_entropy(scores.T, target))
    model.set_attn_implementation('eager')
    p_xy = last_attention(xy, xy_types, xy_mask)
    p_yx = last_attention(yx, yx_types, yx_mask)
    model.set_attn_implementation(default_attention)
    a_y2x = p_xy[rows, heads, y_in_xy[:, None, :, None], first_side[:, None, None, :]]
    a_x2y = p_yx[rows, heads, x_in_yx[:, None, :, None], first_side[:, None, None, :]]
    both = (x_ok[:, :, None] & y_ok[:, None, :]).float()[:, None]  # [pairs, 1, x, y]
    agree = (a_x2y * a_y2x.transpose(-1, -2) * both).sum((-1, -2)).mean(-1)  # [pairs]
    wa = (1.0 - agree / torch.minimum(n_x, n_y).clamp(min=1)).mean()
    loss = (ocfg.mlm_weight * mlm + ocfg.tlm_weight * tlm + ocfg.sa_weight * sa
            + ocfg.wa_weight * wa)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    parts = {'mlm': mlm, 'tlm': tlm, 'sa': sa, 'wa': wa}
    return {name: value.detach().item() for name, value in parts.items()}

  return run


def step_config(step: str, args):
  """The config of one comparison: 'mlm' (mono rows only) or 'amber' (packed pairs)."""
  if step == 'mlm':
    return common.config(args.preset, mono=args.batch, pairs=0, mono_length=args.length,
                         mlm_weight=1.0, tlm_weight=0.0, sa_weight=0.0, wa_weight=0.0)
  half = args.batch // 2
  cfg = common.config(args.preset, mono=half, pairs=half, mono_length=args.length,
                      sentence_length=args.length // 2)
  with cfg.unlocked():
    cfg.data.update(pair_packing=True, packing=False)
  return cfg


def amber_batch(cfg) -> dict:
  """The synthetic batch of the amber comparison: the one `common.JaxStep(cfg)` trains on."""
  from amber_jax.data import inputs  # pylint: disable=import-outside-toplevel
  return next(inputs.synthetic_batches(cfg))


def build(side: str, args):
  """The step function of one side, on the shared synthetic batch."""
  cfg = step_config(args.step, args)
  if side == 'ours':
    return common.JaxStep(cfg).run
  if args.step == 'amber':
    return torch_amber_step_fn(cfg, amber_batch(cfg), args.threads)
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


def compare(step: str, args) -> dict[str, list[float]]:
  """Starts both workers of `step`, runs `args.repeats` steps each in turns: seconds per side."""
  argv = [sys.executable, os.path.abspath(__file__), '--preset', args.preset, '--batch',
          str(args.batch), '--length', str(args.length), '--threads', str(args.threads),
          '--step', step]
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
  return times


def report_mlm(args, cfg) -> None:
  tokens = args.batch * args.length
  print(f'# cpu_vs_torch: {common.describe_machine()}; preset {args.preset} '
        f'({cfg.model.num_layers} layers, {cfg.model.hidden_size} wide, vocab '
        f'{cfg.model.vocab_size}), batch {args.batch} x {args.length} tokens, fp32, '
        f'{args.threads} threads, one worker process per side')
  times = compare('mlm', args)
  o, t = float(np.median(times['ours'])), float(np.median(times['torch']))
  print(f'{"":28s}{"ms/step (median)":>18s}{"min":>8s}{"max":>8s}{"tokens/s":>10s}')
  for name, side, m in (('amber-jax (JAX, XLA CPU)', 'ours', o),
                        ('transformers (PyTorch)', 'torch', t)):
    print(f'{name:28s}{m * 1e3:18.1f}{min(times[side]) * 1e3:8.1f}'
          f'{max(times[side]) * 1e3:8.1f}{tokens / m:10.0f}')
  print(f'ratio (ours / torch tokens/s): {t / o:.2f}x (goal >= 1.5x)')


def report_amber(args, cfg) -> None:
  from amber_jax.training import metrics  # pylint: disable=import-outside-toplevel
  batch = amber_batch(cfg)
  pairs = common.unpack_pairs(batch)
  useful = metrics.count_tokens(batch)
  mono_useful = int(np.count_nonzero(batch['mono_ids']))
  assert useful == mono_useful + sum(len(x) + len(y) + 3 for x, y in pairs)  # same tokens
  half, length = args.batch // 2, args.length
  padded_xy = max(len(x) + len(y) + 3 for x, y in pairs)  # torch's [x; y] rows: the longest
  positions = {'ours': common.count_positions(batch),
               'torch': np.size(batch['mono_ids']) + len(pairs) * padded_xy}
  print(f'# cpu_vs_torch amber: {common.describe_machine()}; preset {args.preset} '
        f'({cfg.model.num_layers} layers, {cfg.model.hidden_size} wide, vocab '
        f'{cfg.model.vocab_size}), fp32, {args.threads} threads, one worker process per side; '
        f'MLM + TLM + SA + WA on {half} mono rows x {length} and {len(pairs)} pairs '
        f'(sentence_length {length // 2}), {useful} useful tokens: ours {half} packed rows x '
        f'{length}, torch {len(pairs)} padded rows x {padded_xy}')
  times = compare('amber', args)
  o, t = float(np.median(times['ours'])), float(np.median(times['torch']))
  print(f'{"":32s}{"ms/step (median)":>18s}{"min":>8s}{"max":>8s}{"useful tokens/s":>17s}'
        f'{"fill":>6s}')
  for name, side, m in (('amber-jax packed (JAX, XLA CPU)', 'ours', o),
                        ('transformers padded (PyTorch)', 'torch', t)):
    print(f'{name:32s}{m * 1e3:18.1f}{min(times[side]) * 1e3:8.1f}'
          f'{max(times[side]) * 1e3:8.1f}{useful / m:17.0f}{useful / positions[side]:6.2f}')
  print(f'ratio (packed ours / padded torch useful tokens/s): {t / o:.2f}x')


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--preset', default='base', choices=sorted(common.PRESETS))
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--length', type=int, default=128)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--threads', type=int, default=os.cpu_count())
  p.add_argument('--step', default='mlm,amber',
                 help="'mlm', 'amber' or both (comma-separated): the comparisons to run")
  p.add_argument('--worker', choices=('ours', 'torch'), help=argparse.SUPPRESS)
  args = p.parse_args()
  steps = [x for x in args.step.split(',') if x]
  if not steps or set(steps) - {'mlm', 'amber'}:
    p.error(f"--step: {args.step!r}; allowed: 'mlm', 'amber' or 'mlm,amber'")
  if args.worker:
    if len(steps) != 1:
      p.error('a worker runs one step')
    worker(args.worker, args)
    return
  for i, step in enumerate(steps):
    if i:
      print()
    args.step = step
    (report_mlm if step == 'mlm' else report_amber)(args, step_config(step, args))
    sys.stdout.flush()


if __name__ == '__main__':
  main()
