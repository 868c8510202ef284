"""Zero-shot cross-lingual transfer: fine-tune a head (and the encoder) on English, test on every
language.

Sentence classification: mean-pooled (or [CLS]) last-layer state -> linear -> softmax, trained with
AdamW on top of our encoder's params (all fine-tuned, or the encoder frozen). Token tagging
(CoNLL-style): a linear layer on each word's first piece.

The real task shipped here (`django_app_examples`): which Django component a catalog message
belongs to, `django/conf/locale` ('conf') or `django/contrib/<app>/locale` ('admin', 'auth', ...).
English sentences are the msgids, the other languages their msgstr. The English sentences are
split by a hash of the text (`layout.is_validation`), so a test sentence's translations are never
seen in training in any language; an English text found in two components is dropped.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import pathlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import polib

from amber_jax.core import losses
from amber_jax.core.model import Encoder, EncoderConfig, PAD_ID
from amber_jax.corpora import django_po, layout, words
from amber_jax.text import framing

POOLINGS = ('mean', 'cls')
IGNORE = -1  # tag label of pieces that are not a word's first piece, and of padding


@dataclasses.dataclass(frozen=True)
class Example:
  text: str
  label: str
  lang: str
  english: str  # the English source (the text itself for 'en'): decides the split


# ---- the Django component task ----

def component_of(catalog: pathlib.Path) -> str:
  """'conf' for `.../conf/locale/<lang>/...`, the app for `.../contrib/<app>/locale/<lang>/...`."""
  parts = catalog.parts
  i = len(parts) - 1 - parts[::-1].index('locale')
  if i >= 2 and parts[i - 2] == 'contrib':
    return parts[i - 1]
  if parts[i - 1] == 'conf':
    return 'conf'
  raise ValueError(f'{catalog} is neither under conf/locale nor contrib/<app>/locale.')


def django_app_examples(roots: Sequence[pathlib.Path] | None = None, min_words: int = 2
                        ) -> list[Example]:
  """(sentence, component, language) examples from the installed Django catalogs (polib).

  English: every msgid with at least `min_words` words (placeholders aside); other languages: the
  msgstr (msgstr[0] of a plural) of such an entry, unless empty, fuzzy, obsolete or unchanged.
  English texts that occur in more than one component are dropped, with their translations.
  """
  roots = django_po.default_locale_roots() if roots is None else roots
  english_labels = collections.defaultdict(set)
  found = []
  for root in roots:
    for path in sorted(pathlib.Path(root).glob('*/LC_MESSAGES/django.po')):
      label = component_of(path)
      lang = django_po.normalize_language(path.parent.parent.name)
      for entry in polib.pofile(str(path)):
        english = layout.collapse_whitespace(entry.msgid)
        if entry.obsolete or words.count_words(english) < min_words:
          continue
        english_labels[english].add(label)
        text = layout.collapse_whitespace(
            entry.msgstr_plural.get(0, '') if entry.msgid_plural else entry.msgstr)
        if lang != 'en' and text and text != english and 'fuzzy' not in entry.flags:
          found.append(Example(text, label, lang, english))
  unique = {e: labels.pop() for e, labels in english_labels.items() if len(labels) == 1}
  examples = [Example(e, label, 'en', e) for e, label in sorted(unique.items())]
  seen = set()
  for ex in found:
    if ex.english in unique and (ex.text, ex.lang) not in seen:
      seen.add((ex.text, ex.lang))
      examples.append(ex)
  return examples


def split_examples(examples: Sequence[Example], *, test_fraction: float = 0.3,
                   min_per_class: int = 40, min_test: int = 20):
  """English train examples, test examples per language, and the kept classes.

  Args:
    examples: from `django_app_examples`.
    test_fraction: share of English sentences (with all their translations) held out.
    min_per_class: a class is kept when it has at least this many English sentences.
    min_test: a language is tested when it has at least this many test examples.

  Returns:
    (train: English examples, test: {lang: examples} ('en' included), classes: sorted labels).
  """
  counts = collections.Counter(e.label for e in examples if e.lang == 'en')
  classes = sorted(c for c, n in counts.items() if n >= min_per_class)
  if len(classes) < 2:
    raise ValueError(f'{len(classes)} class(es) have >= {min_per_class} English examples '
                     f'(counts {dict(counts)}); lower min_per_class.')
  kept = [e for e in examples if e.label in classes]
  is_test = lambda e: layout.is_validation(e.english, test_fraction)
  train = [e for e in kept if e.lang == 'en' and not is_test(e)]
  test = collections.defaultdict(list)
  for e in kept:
    if is_test(e):
      test[e.lang].append(e)
  return train, {k: v for k, v in sorted(test.items()) if len(v) >= min_test}, classes


# ---- inputs ----

def frame_words(sp, words: Sequence[str], tags: Sequence[int] | None, max_length: int
                ) -> tuple[list[int], list[int]]:
  """([CLS] pieces [SEP], a label per position: the word's tag on its first piece, else IGNORE).

  Whole words only (`amber_jax.text.framing.frame_words`), encoded one by one, so piece -> word
  is exact whatever the tokenizer.
  """
  ids, starts = framing.frame_words(sp, words, max_length)
  return ids, [IGNORE if k < 0 or tags is None else tags[k] for k in starts]


# ---- heads and training ----

def pool(hidden, ids, pooling: str):
  """[batch, embed] sentence vectors: mean over non-pad tokens, or the [CLS] state."""
  if pooling == 'mean':
    return losses.mean_pool(hidden, ids != PAD_ID)
  if pooling == 'cls':
    return hidden[:, 0]
  raise ValueError(f'pooling={pooling!r}; allowed: {POOLINGS}.')


def init_head(cfg: EncoderConfig, n_out: int, seed: int = 0) -> dict[str, np.ndarray]:
  kernel = cfg.initializer_range * jax.random.normal(jax.random.key(seed), (cfg.hidden_size, n_out))
  return {'kernel': np.asarray(kernel, np.float32), 'bias': np.zeros((n_out,), np.float32)}


def _forward(cfg: EncoderConfig, kind: str, pooling: str):
  """(params, ids, rng, deterministic) -> logits: [batch, classes] or [batch, length, tags]."""
  model = Encoder(cfg)

  def forward(params, ids, rng, deterministic):
    hidden = model.apply({'params': params['encoder']}, ids, deterministic=deterministic,
                         rngs={'dropout': rng})['hidden'].astype(jnp.float32)
    features = pool(hidden, ids, pooling) if kind == 'sentence' else hidden
    return features @ params['head']['kernel'] + params['head']['bias']

  return forward


@functools.lru_cache(maxsize=8)
def _jitted(cfg, kind, pooling):
  forward = _forward(cfg, kind, pooling)
  return jax.jit(lambda p, ids: forward(p, ids, jax.random.key(0), True))


def finetune(encoder_params, cfg: EncoderConfig, rows: Sequence[Sequence[int]], labels, n_out: int,
             *, kind: str = 'sentence', pooling: str = 'mean', epochs: int = 4,
             batch_size: int = 32, learning_rate: float = 1e-4, freeze_encoder: bool = False,
             seed: int = 0, print_fn=None) -> dict[str, Any]:
  """Fine-tunes {'encoder', 'head'} with AdamW (warmup 10%, linear decay, weight decay 0.01).

  Args:
    encoder_params: our encoder's params.
    cfg: their EncoderConfig.
    rows: framed token ids per example.
    labels: an int class per row ('sentence'), or an int list per row aligned with it, IGNORE
      where there is no label ('token').
    n_out: number of classes or tags.
    kind: 'sentence' (pooled -> linear) or 'token' (each position -> linear).
    pooling: 'mean' or 'cls' ('sentence' only).
    epochs, batch_size, learning_rate, seed: the usual; the last partial batch is dropped.
    freeze_encoder: train the head only (no gradient flows into the encoder).
    print_fn: receives a line per epoch when given.

  Returns:
    The fine-tuned {'encoder', 'head'} params.
  """
  params = {'encoder': encoder_params, 'head': init_head(cfg, n_out, seed)}
  forward = _forward(cfg, kind, pooling)
  batch_size = min(batch_size, len(rows))
  steps_per_epoch = len(rows) // batch_size
  total = max(1, epochs * steps_per_epoch)
  warmup = max(1, total // 10)
  schedule = optax.join_schedules([
      optax.linear_schedule(0.0, learning_rate, warmup),
      optax.linear_schedule(learning_rate, 0.0, total - warmup)], [warmup])
  tx = optax.adamw(schedule, weight_decay=0.01)
  if freeze_encoder:
    tx = optax.multi_transform({'train': tx, 'freeze': optax.set_to_zero()},
                               {'encoder': jax.tree_util.tree_map(lambda _: 'freeze',
                                                                  params['encoder']),
                                'head': {'kernel': 'train', 'bias': 'train'}})
  opt_state = tx.init(params)

  def loss_fn(p, ids, target, rng):
    if freeze_encoder:
      p = {'encoder': jax.lax.stop_gradient(p['encoder']), 'head': p['head']}
    logits = forward(p, ids, rng, False)
    weights = (target != IGNORE).astype(jnp.float32)
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(target, 0))
    return (xent * weights).sum() / jnp.maximum(weights.sum(), 1.0)

  @jax.jit
  def step(p, o, ids, target, rng):
    loss, grads = jax.value_and_grad(loss_fn)(p, ids, target, rng)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), o, loss

  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  for epoch in range(epochs):
    order = rng.permutation(len(rows))
    epoch_loss = []
    for b in range(steps_per_epoch):
      idx = order[b * batch_size:(b + 1) * batch_size]
      ids = framing.pad_rows([rows[i] for i in idx], batch_size)              # [b, L]
      if kind == 'sentence':
        target = np.asarray([labels[i] for i in idx], np.int32)               # [b]
      else:
        target = framing.pad_rows([labels[i] for i in idx], batch_size,
                                 fill=IGNORE)[:, :ids.shape[1]]    # [b, L]
      key, sub = jax.random.split(key)
      params, opt_state, loss = step(params, opt_state, ids, target, sub)
      epoch_loss.append(float(loss))
    if print_fn:
      print_fn(f'epoch {epoch + 1}/{epochs}: loss {np.mean(epoch_loss):.4f}')
  return params


def predict(params, cfg: EncoderConfig, rows: Sequence[Sequence[int]], *, kind: str = 'sentence',
            pooling: str = 'mean', batch_size: int = 64) -> list:
  """Argmax class per row ('sentence'), or an argmax tag per position ('token')."""
  fn = _jitted(cfg, kind, pooling)
  out: list = [None] * len(rows)
  for idx, ids in framing.length_sorted_batches(rows, batch_size):  # ids [batch_size, L]
    pred = np.asarray(fn(params, ids)).argmax(-1)
    for n, i in enumerate(idx):
      out[i] = int(pred[n]) if kind == 'sentence' else pred[n, :len(rows[i])].tolist()
  return out


# ---- the harnesses ----

def sentence_transfer(encoder_params, cfg: EncoderConfig, sp, train: Sequence[Example],
                      test: Mapping[str, Sequence[Example]], classes: Sequence[str], *,
                      max_length: int = 64, print_fn=None, **finetune_args
                      ) -> dict[str, dict[str, float]]:
  """Fine-tunes on `train` (English), then accuracy per test language.

  Returns:
    {lang: {'accuracy', 'n', 'majority' (share of the test set's most frequent class)}}.
  """
  index = {c: i for i, c in enumerate(classes)}
  rows = framing.encode_framed(sp, [e.text for e in train], max_length)
  params = finetune(encoder_params, cfg, rows, [index[e.label] for e in train], len(classes),
                    print_fn=print_fn, **finetune_args)
  pooling = finetune_args.get('pooling', 'mean')
  result = {}
  for lang, examples in test.items():
    rows = framing.encode_framed(sp, [e.text for e in examples], max_length)
    pred = predict(params, cfg, rows, pooling=pooling)
    gold = [index[e.label] for e in examples]
    result[lang] = {'accuracy': float(np.mean(np.array(pred) == gold)), 'n': len(gold),
                    'majority': max(collections.Counter(gold).values()) / len(gold)}
  return result


def format_transfer_table(result: Mapping[str, Mapping[str, float]], source: str = 'en') -> str:
  """Per-language accuracy, the source language first, then the mean over the others."""
  lines = [f'{"lang":10s}{"n":>6s}{"accuracy":>10s}{"majority":>10s}']
  order = ([source] if source in result else []) + sorted(k for k in result if k != source)
  for lang in order:
    r = result[lang]
    lines.append(f'{lang:10s}{r["n"]:6d}{r["accuracy"]:10.3f}{r["majority"]:10.3f}')
  others = [result[k] for k in order if k != source]
  if others:
    lines.append(f'{"mean xx":10s}{len(others):6d}'
                 f'{np.mean([r["accuracy"] for r in others]):10.3f}'
                 f'{np.mean([r["majority"] for r in others]):10.3f}')
  return '\n'.join(lines)


def tagging_accuracy(pred: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]) -> float:
  """Accuracy over labelled positions (label != IGNORE)."""
  hits = total = 0
  for p, l in zip(pred, labels):
    for a, b in zip(p, l):
      if b != IGNORE:
        hits += a == b
        total += 1
  return hits / max(total, 1)


def token_transfer(encoder_params, cfg: EncoderConfig, sp,
                   train: Sequence[tuple[Sequence[str], Sequence[int]]],
                   test: Mapping[str, Sequence[tuple[Sequence[str], Sequence[int]]]], n_tags: int,
                   *, max_length: int = 64, **finetune_args) -> dict[str, float]:
  """CoNLL-style tagging: fine-tune on (words, tags) of one language, word accuracy per language
  (a word's prediction is its first piece's)."""
  framed = [frame_words(sp, w, t, max_length) for w, t in train]
  params = finetune(encoder_params, cfg, [f[0] for f in framed], [f[1] for f in framed], n_tags,
                    kind='token', **finetune_args)
  result = {}
  for lang, sentences in test.items():
    framed = [frame_words(sp, w, t, max_length) for w, t in sentences]
    pred = predict(params, cfg, [f[0] for f in framed], kind='token')
    result[lang] = tagging_accuracy(pred, [f[1] for f in framed])
  return result
