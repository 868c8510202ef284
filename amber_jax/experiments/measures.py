"""The ablation's measures of one trained model: retrieval, MLM accuracy, alignment symmetry.

Each returns per-pair (or per-sentence) figures so that `statistics.summarize` can bootstrap
over the evaluation pairs; `amber_jax.experiments.ablation` says what each measure means.
"""

from __future__ import annotations

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np

from amber_jax.core import objectives
from amber_jax.core.model import Encoder, EncoderConfig, SEP_ID
from amber_jax.corpora import layout
from amber_jax.eval import align, retrieval
from amber_jax.export import runs
from amber_jax.text import framing


def evaluation_pairs(corpus_dir, languages, count: int, seed: int = 0) -> dict[str, list]:
  """A seeded sample of `count` unique validation pairs per language: {lang: [(en, xx)]}."""
  pairs = layout.read_pairs(corpus_dir, 'validation')
  result = {}
  for lang in languages:
    unique = retrieval.unique_pairs(pairs.get(lang, []))
    if not unique:
      raise ValueError(f'No validation pair for language {lang!r} in {corpus_dir}.')
    order = np.random.default_rng([seed, len(unique)]).permutation(len(unique))[:count]
    result[lang] = [unique[i] for i in sorted(order)]
  return result


def validation_texts(corpus_dir, languages, count: int, seed: int = 0) -> dict[str, list[str]]:
  """A seeded sample of `count` validation sentences per language, English included."""
  mono = layout.read_mono(corpus_dir, 'validation')
  result = {}
  for lang in ['en'] + [l for l in languages if l != 'en']:
    texts = mono.get(lang, [])
    if texts:
      order = np.random.default_rng([seed, len(texts)]).permutation(len(texts))[:count]
      result[lang] = [texts[i] for i in sorted(order)]
  return result


def retrieval_hits(params, mcfg, sp, pairs) -> dict[str, np.ndarray]:
  """`retrieval.retrieval_hits` of this model: {lang: bool [layers + 1, 2 (en->xx, xx->en), n]}."""
  return retrieval.retrieval_hits(retrieval.jax_embedder(params, mcfg, sp), pairs)


def mlm_accuracy(params, mcfg: EncoderConfig, config, sp, texts: dict[str, list[str]],
                 batch_size: int = 32) -> float:
  """Masked-token accuracy on validation text: rows of config.data.mono_length, fixed masks
  (seed 0), no dropout; the mean over all masked tokens. `mcfg` is the params' EncoderConfig
  (`runs.load_params` gives both)."""
  length = config.data.mono_length
  rows = [row for lang in sorted(texts) for row in framing.encode_framed(sp, texts[lang], length)]
  accuracy = _mlm_accuracy_fn(mcfg, float(config.objectives.mask_rate))
  correct = total = 0.0
  for n, start in enumerate(range(0, len(rows), batch_size)):
    chunk = rows[start:start + batch_size]
    ids = framing.pad_rows(chunk, batch_size, width=length)  # [batch_size, length]
    weight = float(np.sum(ids > SEP_ID))  # ~ masked tokens are proportional to real tokens
    correct += float(accuracy(params, ids, jax.random.key(n))) * weight
    total += weight
  return correct / max(total, 1e-9)


@functools.lru_cache(maxsize=4)
def _mlm_accuracy_fn(mcfg, mask_rate: float):
  """One jitted (params, ids [b, L], key) -> MLM accuracy per model shape (compiled once)."""
  model = Encoder(mcfg)
  ocfg = types.SimpleNamespace(mlm_weight=1.0, mask_rate=mask_rate)

  @jax.jit
  def accuracy(params, ids, key):
    batch = {'mono_ids': ids, 'mono_segments': jnp.zeros_like(ids)}
    _, metrics = objectives.amber_losses(model, params, batch, key, ocfg, deterministic=True)
    return metrics['mlm_accuracy']

  return accuracy


def alignment_symmetry(params, mcfg, sp, pairs, wa_mask: str, max_pieces: int = 32
                       ) -> dict[str, dict[str, np.ndarray]]:
  """Per language, per pair: {'agreement': float [n], 'soft': float [n]} (module docstring)."""
  aligner = align.Aligner(params, mcfg, sp, wa_mask=wa_mask, max_pieces=max_pieces)
  result = {}
  for lang, p in pairs.items():
    src = [ids[:max_pieces] for ids in sp.encode([s for s, _ in p])]
    tgt = [ids[:max_pieces] for ids in sp.encode([t for _, t in p])]
    keep = [i for i in range(len(p)) if src[i] and tgt[i]]
    agreement, soft = [], []
    for start in range(0, len(keep), 32):
      chunk = keep[start:start + 32]
      for x2y, y2x in aligner.attention([src[i] for i in chunk], [tgt[i] for i in chunk]):
        x2y = x2y / np.maximum(x2y.sum(1, keepdims=True), 1e-12)  # [n_x, n_y]
        y2x = y2x / np.maximum(y2x.sum(1, keepdims=True), 1e-12)  # [n_y, n_x]
        shorter = min(x2y.shape)
        best_y = x2y.argmax(1)                           # [n_x]
        mutual = y2x[best_y].argmax(1) == np.arange(len(best_y))
        agreement.append(mutual.sum() / shorter)
        soft.append(float(np.sum(x2y * y2x.T)) / shorter)
    result[lang] = {'agreement': np.array(agreement), 'soft': np.array(soft)}
  return result


def evaluate_run(workdir, config, sp, pairs, align_pairs, texts) -> dict:
  """All figures of one trained run: per-pair arrays (for the bootstrap) and MLM accuracy."""
  params, mcfg, _, _ = runs.load_params(workdir)
  return {'hits': retrieval_hits(params, mcfg, sp, pairs),
          'align': alignment_symmetry(params, mcfg, sp, align_pairs, config.objectives.wa_mask),
          'mlm_accuracy': mlm_accuracy(params, mcfg, config, sp, texts)}
