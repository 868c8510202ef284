"""Pictures (PNG, matplotlib's Agg backend: no display needed).

  alignment_heatmap   one sentence pair's piece-level matrices (attention, similarity), tokens
                      as labels, optional word links marked
  retrieval_by_layer  retrieval accuracy (both directions) against the layer
  training_curves     the losses and throughput of a run's metrics.jsonl
"""

from __future__ import annotations

import json
import pathlib
from typing import Mapping, Sequence
import warnings

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from amber_jax.core import objectives  # pylint: disable=wrong-import-position


def loss_keys() -> tuple[str, ...]:
  """The curves drawn first: 'loss' and each registered objective's loss key."""
  return objectives.loss_keys()


def _save(fig, out_png) -> pathlib.Path:
  out = pathlib.Path(out_png)
  out.parent.mkdir(parents=True, exist_ok=True)
  with warnings.catch_warnings():  # scripts DejaVu Sans lacks (CJK, ...) draw as boxes
    warnings.filterwarnings('ignore', message='Glyph .* missing')
    fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def alignment_heatmap(matrices: Mapping[str, np.ndarray], src_tokens: Sequence[str],
                      tgt_tokens: Sequence[str], out_png, *,
                      links: Mapping[str, Sequence[tuple[int, int]]] | None = None,
                      title: str = '') -> pathlib.Path:
  """One heatmap per matrix, side by side: rows = source tokens, columns = target tokens.

  Args:
    matrices: {name: float [len(src_tokens), len(tgt_tokens)]}, e.g. `Aligner.matrices`'s
      'attention' and 'similarity'.
    src_tokens, tgt_tokens: the axis labels.
    out_png: the file to write.
    links: {name: [(row, col)]} drawn as squares on that matrix (e.g. the piece-level links).
    title: the figure's title.

  Returns:
    The written path.
  """
  for name, m in matrices.items():
    if m.shape != (len(src_tokens), len(tgt_tokens)):
      raise ValueError(f'matrix {name!r} has shape {m.shape}, expected ({len(src_tokens)}, '
                       f'{len(tgt_tokens)}) = (source tokens, target tokens).')
  n = len(matrices)
  cell = 0.38
  fig, axes = plt.subplots(1, n, squeeze=False, layout='constrained', figsize=(
      max(4.0, n * (len(tgt_tokens) * cell + 2.0)), max(3.0, len(src_tokens) * cell + 1.8)))
  for ax, (name, m) in zip(axes[0], matrices.items()):
    image = ax.imshow(m, cmap='viridis', aspect='equal', vmin=0.0)
    ax.set_xticks(range(len(tgt_tokens)), tgt_tokens, rotation=90, fontsize=8)
    ax.set_yticks(range(len(src_tokens)), src_tokens, fontsize=8)
    ax.set_title(name, fontsize=10)
    for i, j in (links or {}).get(name, ()):
      ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor='red', lw=1.5))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, out_png)


def retrieval_by_layer(accuracy: np.ndarray | Mapping[str, np.ndarray], out_png, *,
                       names: tuple[str, str] = ('src->tgt', 'tgt->src'),
                       title: str = 'Retrieval accuracy by layer') -> pathlib.Path:
  """Accuracy against the layer (0 = embeddings), one line per direction, the best layer marked.

  Args:
    accuracy: float [layers + 1, 2], or `evaluate.retrieval_by_layer`'s {lang: [layers + 1, 2]}
      (averaged over languages).
    out_png: the file to write.
  """
  if isinstance(accuracy, Mapping):
    accuracy = np.mean(np.stack(list(accuracy.values())), axis=0)
  accuracy = np.asarray(accuracy, np.float64)
  if accuracy.ndim != 2 or accuracy.shape[1] != 2:
    raise ValueError(f'accuracy has shape {accuracy.shape}; expected [layers + 1, 2].')
  layers = np.arange(len(accuracy))
  fig, ax = plt.subplots(figsize=(5.5, 3.6), layout='constrained')
  for k, name in enumerate(names):
    ax.plot(layers, accuracy[:, k], marker='o', label=name)
  best = int(np.argmax(accuracy.mean(axis=1)))
  ax.axvline(best, color='grey', ls='--', lw=1, label=f'best layer {best}')
  ax.set_xticks(layers)
  ax.set_xlabel('layer (0 = embeddings)')
  ax.set_ylabel('accuracy')
  ax.set_ylim(0, 1.02)
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _save(fig, out_png)


def read_metrics(metrics_jsonl_path) -> list[dict]:
  """The rows of a metrics.jsonl (one JSON object per logged step); bad lines raise, naming them."""
  path = pathlib.Path(metrics_jsonl_path)
  rows = []
  for number, line in enumerate(path.read_text(encoding='utf-8').splitlines(), start=1):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}:{number}: not JSON ({e}); metrics.jsonl holds one JSON object '
                       'per line, as amber_jax.training.loop writes it.') from None
  if not rows:
    raise ValueError(f'{path} holds no metrics; train for at least one logged step.')
  return rows


def training_curves(metrics_jsonl_path, out_png) -> pathlib.Path:
  """Losses (left) and non-pad tokens/s (right) against the step, from a run's metrics.jsonl."""
  rows = read_metrics(metrics_jsonl_path)
  steps = np.array([r.get('step', n) for n, r in enumerate(rows)])
  fig, (ax_loss, ax_speed) = plt.subplots(1, 2, figsize=(10, 3.8), layout='constrained')
  plotted = 0
  known = loss_keys()
  for key in known + tuple(sorted(k for k in rows[0] if k.endswith('_loss') and k not in known)):
    have = [(s, r[key]) for s, r in zip(steps, rows) if key in r]
    if have:
      xs, ys = zip(*have)
      ax_loss.plot(xs, ys, label=key, lw=2.0 if key == 'loss' else 1.2)
      plotted += 1
  if not plotted:
    raise ValueError(f'{metrics_jsonl_path} has no loss keys (expected some of {known}).')
  ax_loss.set_xlabel('step')
  ax_loss.set_ylabel('loss')
  ax_loss.set_yscale('log')
  ax_loss.grid(alpha=0.3, which='both')
  ax_loss.legend(fontsize=8)
  ax_loss.set_title('losses', fontsize=10)
  speed = [(s, r['tokens_per_s']) for s, r in zip(steps, rows) if 'tokens_per_s' in r]
  if len(speed) > 1:
    speed = speed[1:]  # the first logged step includes compilation
  if speed:
    xs, ys = zip(*speed)
    ax_speed.plot(xs, ys, marker='.', color='tab:green')
  ax_speed.set_xlabel('step')
  ax_speed.set_ylabel('non-pad tokens / s')
  ax_speed.set_title('throughput', fontsize=10)
  ax_speed.grid(alpha=0.3)
  fig.suptitle(str(pathlib.Path(metrics_jsonl_path).parent.name), fontsize=10)
  return _save(fig, out_png)
