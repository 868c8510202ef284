"""Tatoeba-style sentence retrieval: is the nearest translation (cosine of mean-pooled states) the
right one? Works on our parameters (JAX) and on an exported HuggingFace folder (PyTorch), with the
same tokenisation, pooling and scoring, so the two can be compared number for number.

Every layer is scored in one run (an embedder returns all of them): `retrieval_by_layer` gives
{lang: [layers + 1, 2]} accuracies (embeddings output first), `format_layer_table` prints them
with the best layer marked, `periodic_eval` is the cheap last-layer figure the trainer logs.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import sparse

from amber_jax import errors, storage
from amber_jax.core import losses
from amber_jax.core.model import Encoder, EncoderConfig, PAD_ID
from amber_jax.corpora import layout
from amber_jax.text import framing, tokenizer

Embedder = Callable[[Sequence[str]], np.ndarray]  # sentences -> [layers + 1, n, embed]
Pairs = Mapping[str, Sequence[tuple[str, str]]]   # {lang: [(src, tgt), ...]}


@functools.lru_cache(maxsize=8)
def _pooled_fn(cfg: EncoderConfig):
  """One jitted 'ids -> mean-pooled states of every layer' per model shape (cached, so that a
  periodic evaluation during training compiles once)."""
  model = Encoder(cfg)

  @jax.jit
  def pooled(params, ids):
    out = model.apply({'params': params}, ids, return_all_hidden=True)
    mask = ids != PAD_ID
    return jnp.stack([losses.mean_pool(h.astype(jnp.float32), mask) for h in out['all_hidden']])

  return pooled


def jax_embedder(params, cfg: EncoderConfig, sp, *, max_length: int = 128,
                 batch_size: int = 64) -> Embedder:
  """Mean-pooled states of every layer (embeddings first) from our encoder."""
  pooled = _pooled_fn(cfg)
  max_length = min(max_length, cfg.max_position_embeddings)

  def embed(sentences):
    rows = framing.encode_framed(sp, sentences, max_length)
    result = np.zeros((cfg.num_layers + 1, len(rows), cfg.hidden_size), np.float32)
    # Fixed batch rows, widths a multiple of 16: few compilations.
    for idx, ids in framing.length_sorted_batches(rows, batch_size):  # ids [batch_size, L]
      result[:, idx] = np.asarray(pooled(params, ids))[:, :len(idx)]
    return result

  return embed


def hf_embedder(hf_dir: str, *, max_length: int = 128, batch_size: int = 64) -> Embedder:
  """The same from an exported HF folder: transformers' tokenizer and BertModel, in PyTorch."""
  import torch  # pylint: disable=import-outside-toplevel
  # pylint: disable-next=import-outside-toplevel
  from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer

  tok = AutoTokenizer.from_pretrained(hf_dir)
  max_length = min(max_length, tok.model_max_length)  # no more than the model has positions for
  config = AutoConfig.from_pretrained(hf_dir)
  # Our exports carry no pooler (pooled states are means here): don't build a random one.
  if any(a.endswith('ForMaskedLM') for a in config.architectures or ()):
    model = AutoModelForMaskedLM.from_pretrained(hf_dir).base_model.eval()  # the head is unused
  else:
    pooler = config.model_type in ('bert', 'xlm-roberta')
    extra = {'add_pooling_layer': False} if pooler else {}
    model = AutoModel.from_pretrained(hf_dir, **extra).eval()

  def embed(sentences):
    chunks = []
    for start in range(0, len(sentences), batch_size):
      enc = tok(list(sentences[start:start + batch_size]), padding=True, truncation=True,
                max_length=max_length, return_tensors='pt')
      with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
      mask = enc['attention_mask'][..., None].float()
      chunks.append(torch.stack([(h * mask).sum(1) / mask.sum(1) for h in out.hidden_states]))
    return torch.cat(chunks, dim=1).numpy()

  return embed


def read_pairs_tsv(path: str | pathlib.Path, default_lang: str = 'xx') -> dict[str, list]:
  """Sentence pairs from a TSV: `lang<TAB>src<TAB>tgt` or `src<TAB>tgt` (then `default_lang`).

  Returns:
    {lang: [(src, tgt), ...]} in file order. Blank lines are skipped.

  Raises:
    errors.UserError: a missing or non-UTF-8 file, a line of another shape (naming the file and
      the line number), or a file without any pair.
  """
  path = pathlib.Path(path)
  result: dict[str, list] = {}
  for number, line in enumerate(storage.read_text(path, 'pairs file').split('\n'), start=1):
    if not line.strip():
      continue
    fields = line.rstrip('\r').split('\t')
    if len(fields) == 2:
      fields = [default_lang] + fields
    if len(fields) != 3 or not all(f.strip() for f in fields):
      raise errors.UserError(
          f'{path}:{number}: expected `lang<TAB>src<TAB>tgt` or `src<TAB>tgt` with no empty '
          f'field, found {len(fields)} fields: {line[:80]!r}; fix the line.')
    result.setdefault(fields[0], []).append((fields[1], fields[2]))
  if not result:
    raise errors.UserError(f'{path} holds no sentence pair; expected `src<TAB>tgt` lines.')
  return result


def unique_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
  """Pairs whose source and target both occur for the first time (file order): with a repeated
  sentence, row i would not be the only right answer for row i."""
  seen_src, seen_tgt, kept = set(), set(), []
  for src, tgt in pairs:
    if src not in seen_src and tgt not in seen_tgt:
      kept.append((src, tgt))
    seen_src.add(src)
    seen_tgt.add(tgt)
  return kept


def nearest_hits(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
  """Whether row i's nearest neighbour by cosine is row i of the other side, both ways: src, tgt
  float [..., n, embed] -> bool [..., 2 (src->tgt, tgt->src), n]."""
  src = src / np.maximum(np.linalg.norm(src, axis=-1, keepdims=True), 1e-9)
  tgt = tgt / np.maximum(np.linalg.norm(tgt, axis=-1, keepdims=True), 1e-9)
  sim = np.einsum('...ie,...je->...ij', src, tgt)  # [..., n, n]
  gold = np.arange(src.shape[-2])
  return np.stack([sim.argmax(-1) == gold, sim.argmax(-2) == gold], axis=-2)


def retrieval_accuracy(src: np.ndarray, tgt: np.ndarray) -> tuple[float, float]:
  """Accuracy of nearest-neighbour retrieval by cosine: (src->tgt, tgt->src). Row i pairs row i."""
  forward, backward = nearest_hits(src, tgt).mean(-1)
  return float(forward), float(backward)


def retrieval_hits(embed: Embedder, pairs: Pairs) -> dict[str, np.ndarray]:
  """Per language, whether each pair's nearest neighbour by cosine is its translation, at every
  layer and in both directions: {lang: bool [layers + 1, 2 (src->tgt, tgt->src), n]}.

  Pairs are de-duplicated per language first (`unique_pairs`); every distinct sentence is embedded
  once, in one call (English shared by an English-centric set included).
  """
  pairs = {lang: unique_pairs(p) for lang, p in pairs.items()}
  empty = sorted(lang for lang, p in pairs.items() if not p)
  if empty:
    raise ValueError(f'no sentence pair for languages {empty}; drop them or give pairs.')
  sentences = sorted({s for p in pairs.values() for pair in p for s in pair})
  index = {s: i for i, s in enumerate(sentences)}
  emb = embed(sentences)  # [layers + 1, n_sentences, embed]: one call, full batches
  return {lang: nearest_hits(emb[:, [index[s] for s, _ in pairs[lang]]],   # [layers + 1, n, e]
                             emb[:, [index[t] for _, t in pairs[lang]]])
          for lang in sorted(pairs)}


def char_ngrams(sentences: Sequence[str], n: int = 3):
  """Counts of character n-grams (lowercased, a space added at each end), rows L2-normalised:
  scipy.sparse float [len(sentences), distinct n-grams]."""
  vocab, rows, cols = {}, [], []
  for i, sentence in enumerate(sentences):
    text = f' {sentence.lower()} '
    for j in range(max(len(text) - n + 1, 1)):
      rows.append(i)
      cols.append(vocab.setdefault(text[j:j + n], len(vocab)))
  counts = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                             shape=(len(sentences), len(vocab)))  # duplicates are summed
  norms = np.sqrt(np.asarray(counts.multiply(counts).sum(1))).ravel()
  return sparse.diags(1 / np.maximum(norms, 1e-9)) @ counts


def char_ngram_hits(pairs: Pairs, n: int = 3) -> dict[str, np.ndarray]:
  """The lexical-overlap baseline in `retrieval_hits`' shape: cosine of character n-gram counts,
  {lang: bool [1, 2 (src->tgt, tgt->src), n_pairs]}. Strong where translations share strings
  (names, numbers, placeholders); no model can be judged without it."""
  result = {}
  for lang, lang_pairs in sorted(pairs.items()):
    lang_pairs = unique_pairs(lang_pairs)
    grams = char_ngrams([s for s, _ in lang_pairs] + [t for _, t in lang_pairs], n)
    src, tgt = grams[:len(lang_pairs)], grams[len(lang_pairs):]
    sim = (src @ tgt.T).toarray()
    gold = np.arange(len(lang_pairs))
    result[lang] = np.stack([sim.argmax(-1) == gold, sim.argmax(-2) == gold])[None]
  return result


def char_ngram_accuracy(pairs: Pairs, n: int = 3) -> tuple[float, float]:
  """The baseline's (src->tgt, tgt->src) accuracy, mean over languages."""
  return mean_accuracy({lang: tuple(hits[0].mean(-1))
                        for lang, hits in char_ngram_hits(pairs, n).items()})


def retrieval_by_layer(embed: Embedder, pairs: Pairs) -> dict[str, np.ndarray]:
  """Per language, (src->tgt, tgt->src) accuracy at every layer: {lang: float [layers + 1, 2]}
  (the means of `retrieval_hits`)."""
  return {lang: hits.mean(-1) for lang, hits in retrieval_hits(embed, pairs).items()}


def retrieval(embed: Embedder, pairs: Pairs, layer: int = -1) -> dict[str, tuple[float, float]]:
  """Per language: (src->tgt, tgt->src) accuracy at `layer` (-1 = last)."""
  return {lang: tuple(float(v) for v in acc[layer])
          for lang, acc in retrieval_by_layer(embed, pairs).items()}


def mean_accuracy(per_language: Mapping[str, tuple[float, float]]) -> tuple[float, float]:
  """Mean over languages of each direction."""
  values = np.array(list(per_language.values()))
  return float(values[:, 0].mean()), float(values[:, 1].mean())


def mean_by_layer(by_layer: Mapping[str, np.ndarray]) -> np.ndarray:
  """Mean over languages: float [layers + 1, 2]."""
  return np.mean(np.stack(list(by_layer.values())), axis=0)


def best_layer(by_layer: Mapping[str, np.ndarray]) -> int:
  """The layer (0 = embeddings) with the best mean over languages and both directions; the lower
  layer wins a tie."""
  return int(np.argmax(mean_by_layer(by_layer).mean(axis=1)))


def format_layer_table(by_layer: Mapping[str, np.ndarray], counts: Mapping[str, int],
                       names: tuple[str, str] = ('src->tgt', 'tgt->src')) -> str:
  """The table printed by `amber-jax eval retrieval`: a row per language, a column per layer
  holding `fwd/bwd`, the mean row, and the best layer marked with '*'."""
  mean = mean_by_layer(by_layer)
  best = best_layer(by_layer)
  n_layers = mean.shape[0]
  head = ''.join(f'{("L" + str(i) + ("*" if i == best else "")):>12s}' for i in range(n_layers))
  lines = [f'accuracy {names[0]}/{names[1]} by layer (L0 = embeddings, * = best)',
           f'{"lang":10s}{"n":>6s}{head}']
  for lang in sorted(by_layer):
    cells = ''.join(f'{f"{f:.3f}/{b:.3f}":>12s}' for f, b in by_layer[lang])
    lines.append(f'{lang:10s}{counts[lang]:6d}{cells}')
  cells = ''.join(f'{f"{f:.3f}/{b:.3f}":>12s}' for f, b in mean)
  lines.append(f'{"mean":10s}{len(by_layer):6d}{cells}')
  lines.append(f'best layer: {best} ({names[0]} {mean[best, 0]:.3f}, {names[1]} '
               f'{mean[best, 1]:.3f}; last layer {mean[-1, 0]:.3f}/{mean[-1, 1]:.3f})')
  return '\n'.join(lines)


def cap_pairs(pairs: Pairs, max_pairs: int, max_languages: int | None = None) -> dict[str, list]:
  """The first `max_pairs` unique pairs of the first `max_languages` languages (sorted codes)."""
  langs = sorted(pairs)[:max_languages]
  return {lang: unique_pairs(pairs[lang])[:max_pairs] for lang in langs}


def periodic_eval(params, model_cfg: EncoderConfig, sp, pairs: Pairs, *, max_pairs: int = 32,
                  max_languages: int = 8, max_length: int = 64) -> dict[str, float]:
  """Retrieval at the last layer, cheap enough to run every N training steps.

  Args:
    params: the encoder's (unboxed) params, numpy or jax arrays (sharded ones are fine).
    model_cfg: their EncoderConfig.
    sp: a SentencePiece processor (or anything with `.encode(list[str]) -> list[list[int]]`).
    pairs: {lang: [(src, tgt)]}, e.g. `layout.read_pairs(corpus, 'validation')`.
    max_pairs: pairs per language (the first unique ones).
    max_languages: languages (the first in sorted order).
    max_length: tokens per sentence.

  Returns:
    {'retrieval_fwd': mean src->tgt accuracy, 'retrieval_bwd': tgt->src, 'retrieval_mean': both}.
  """
  capped = cap_pairs(pairs, max_pairs, max_languages)
  embed = jax_embedder(params, model_cfg, sp, max_length=max_length)
  fwd, bwd = mean_accuracy(retrieval(embed, capped, layer=-1))
  return {'retrieval_fwd': fwd, 'retrieval_bwd': bwd, 'retrieval_mean': (fwd + bwd) / 2}


def periodic_eval_fn(config) -> Callable[[Any], dict] | None:
  """The training loop's `eval_fn` for a config: `periodic_eval` on the validation pairs of
  config.data.corpus_dir, tokenized with config.data.vocab_path (a SentencePiece file or an HF
  tokenizer folder); None when config.train.eval_every is 0."""
  if not config.train.eval_every:
    return None
  pairs = layout.read_pairs(storage.local(config.data.corpus_dir), 'validation')
  tok = tokenizer.load_processor(config.data.vocab_path)
  mcfg = EncoderConfig.from_config(config.model)
  return lambda params: periodic_eval(params, mcfg, tok, pairs)


def nearest_translations(embed: Embedder, queries: Sequence[str], candidates: Sequence[str],
                         layer: int = -1) -> list[tuple[str, str, float]]:
  """For each query, the most similar candidate and its cosine."""
  q = embed(list(queries))[layer]
  c = embed(list(candidates))[layer]
  q = q / np.linalg.norm(q, axis=-1, keepdims=True)
  c = c / np.linalg.norm(c, axis=-1, keepdims=True)
  sim = q @ c.T
  best = sim.argmax(1)
  return [(queries[i], candidates[j], float(sim[i, j])) for i, j in enumerate(best)]


