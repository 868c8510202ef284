"""Mining translation pairs from two unaligned monolingual collections with k-nearest-neighbour
search (faiss), scored by ratio margin (Artetxe & Schwenk 2019, arXiv 1811.01136), written as a
TSV and as a corpus folder that joins a training mixture (`config.data.extra_tasks`).

`eval/mining.py` scores the dense n x m similarity; this module never builds it. Each side's k
nearest neighbours in the other come from a faiss index over the L2-normalised embeddings (inner
product = cosine), so memory is O((n + m) * d + (n + m) * k):

    margin(x, y) = cos(x, y) / (sum_{z in NN_k(x)} cos(x, z) / 2k
                                + sum_{z in NN_k(y)} cos(y, z) / 2k)

The candidates of x are its `candidates` nearest y by cosine (the first k of them also give its
denominator), those of y likewise; x's best is the candidate with the largest margin. With
`candidates` >= the other side's size the pairs equal `mining.candidates(mining.margin_scores)`.

Indexes (`index`):
  'flat'  exact search (faiss.IndexFlatIP)
  'ivf'   faiss.IndexIVFFlat, inner product: nlist = 4 * sqrt(size) inverted lists, trained on at
          most 256 * nlist vectors, nprobe = 16 lists searched: approximate, for millions
  'hnsw'  faiss.IndexHNSWFlat, inner product: M = 32, efConstruction = 80, efSearch = 128
  'auto'  'flat' up to EXACT_MAX vectors, 'ivf' above
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Sequence

import numpy as np

from amber_jax import errors
from amber_jax.corpora import layout, readers
from amber_jax.eval import mining, retrieval

INDEXES = ('auto', 'flat', 'ivf', 'hnsw')
EXACT_MAX = 100_000   # 'auto' searches exactly up to this many vectors per side
IVF_NPROBE = 16
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
SEARCH_BATCH = 16_384  # queries per faiss call: bounds the n * k result buffers' peak


def normalized(x: np.ndarray) -> np.ndarray:
  """float32 rows of unit length (a zero row stays zero), C-contiguous, as faiss wants them."""
  x = np.asarray(x, np.float32)
  return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9))


def build_index(base: np.ndarray, index: str = 'auto'):
  """A faiss inner-product index holding `base` (float32 [m, d], rows normalised)."""
  import faiss  # pylint: disable=import-outside-toplevel
  if index not in INDEXES:
    raise ValueError(f'index={index!r}; allowed: {INDEXES}.')
  m, d = base.shape
  if index == 'auto':
    index = 'flat' if m <= EXACT_MAX else 'ivf'
  if index == 'flat':
    found = faiss.IndexFlatIP(d)
  elif index == 'hnsw':
    found = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    found.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    found.hnsw.efSearch = HNSW_EF_SEARCH
  else:
    nlist = max(1, min(int(4 * math.sqrt(m)), m // 39))  # faiss wants >= 39 points per list
    found = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = base[np.random.default_rng(0).permutation(m)[:256 * nlist]]
    found.train(sample)
    found.nprobe = min(IVF_NPROBE, nlist)
  found.add(base)
  return found


def knn(queries: np.ndarray, base: np.ndarray, k: int, index: str = 'auto'
        ) -> tuple[np.ndarray, np.ndarray]:
  """The k nearest rows of `base` to each query by cosine: (cosines float32 [n, k], ids int64
  [n, k]), best first; k is capped at len(base). Rows missing from an approximate search (id -1)
  get cosine -1 (they never win)."""
  queries, base = normalized(queries), normalized(base)
  k = min(k, len(base))
  searcher = build_index(base, index)
  sims = np.empty((len(queries), k), np.float32)
  ids = np.empty((len(queries), k), np.int64)
  for start in range(0, len(queries), SEARCH_BATCH):
    s, i = searcher.search(queries[start:start + SEARCH_BATCH], k)
    sims[start:start + len(s)], ids[start:start + len(s)] = s, i
  sims[ids < 0] = -1.0
  return sims, ids


def margin_candidates(x: np.ndarray, y: np.ndarray, *, k: int = 4, candidates: int = 16,
                      mode: str = 'intersection', index: str = 'auto'
                      ) -> list[tuple[int, int, float]]:
  """Candidate pairs (i, j, ratio margin) of x [n, d] and y [m, d], best first (module docstring).

  Args:
    x, y: embeddings of the two sides (any scale: they are normalised here).
    k: the margin's neighbourhood (4 in Artetxe & Schwenk).
    candidates: nearest neighbours by cosine among which each side's best margin is sought
      (raised to k when smaller).
    mode: one of `mining.MODES`.
    index: one of INDEXES.
  """
  if mode not in mining.MODES:
    raise ValueError(f'mode={mode!r}; allowed: {mining.MODES}.')
  if k < 1:
    raise ValueError(f'k must be >= 1, got {k}.')
  if not len(x) or not len(y):
    return []
  wide = max(k, candidates)
  s_xy, i_xy = knn(x, y, wide, index)            # [n, wide]: each x's nearest y
  s_yx, i_yx = knn(y, x, wide, index)            # [m, wide]: each y's nearest x
  r_x = s_xy[:, :k].astype(np.float64).mean(1)   # mean cosine of x_i to its k nearest y
  r_y = s_yx[:, :k].astype(np.float64).mean(1)
  fwd = _best_by_margin(s_xy, i_xy, r_x, r_y)    # {(i, j): margin}
  bwd = {(i, j): v for (j, i), v in _best_by_margin(s_yx, i_yx, r_y, r_x).items()}
  chosen = {'forward': fwd.keys(), 'backward': bwd.keys(), 'intersection': fwd.keys() & bwd.keys(),
            'union': fwd.keys() | bwd.keys()}[mode]
  scores = {**fwd, **bwd}
  return sorted(((i, j, scores[i, j]) for i, j in chosen), key=lambda c: (-c[2], c[0], c[1]))


def _best_by_margin(sims: np.ndarray, ids: np.ndarray, r_q: np.ndarray, r_b: np.ndarray
                    ) -> dict[tuple[int, int], float]:
  """{(query, its best neighbour by margin): margin} from kNN results [n, wide]."""
  denom = (r_q[:, None] + r_b[np.maximum(ids, 0)]) / 2                 # [n, wide]
  margins = sims / np.where(np.abs(denom) < 1e-9, 1e-9, denom)
  margins[ids < 0] = -np.inf
  best = margins.argmax(1)
  rows = np.arange(len(ids))
  return {(int(q), int(ids[q, b])): float(margins[q, b]) for q, b in zip(rows, best)
          if ids[q, b] >= 0}


def mine(x: np.ndarray, y: np.ndarray, *, k: int = 4, candidates: int = 16,
         mode: str = 'intersection', threshold: float | None = None, index: str = 'auto'
         ) -> list[tuple[int, int, float]]:
  """`margin_candidates` whose margin is >= threshold (all of them when None), best first."""
  found = margin_candidates(x, y, k=k, candidates=candidates, mode=mode, index=index)
  return [c for c in found if threshold is None or c[2] >= threshold]


def char_ngram_candidates(sources: Sequence[str], targets: Sequence[str], *, n: int = 3,
                          k: int = 4, mode: str = 'intersection') -> list[tuple[int, int, float]]:
  """The lexical baseline miner: ratio margin over the cosines of character n-gram counts
  (`retrieval.char_ngrams`), dense, O(n * m) memory: for evaluation sets."""
  grams = retrieval.char_ngrams(list(sources) + list(targets), n)
  sim = (grams[:len(sources)] @ grams[len(sources):].T).toarray()   # [n, m] cosines
  return mining.candidates(mining.margin_of_similarity(sim, k), mode)


# Reading sentences.


def read_sentences(path: str | pathlib.Path, flag: str = '') -> list[str]:
  """The distinct sentences of a one-sentence-a-line file (.gz/.xz read as such), in file order,
  whitespace collapsed (a tab would break the TSV); blank lines are skipped.

  Raises:
    errors.UserError: the file is missing, empty, damaged, not UTF-8 (naming file:line), or holds
      only blank lines. `flag` (e.g. '--src') is named in the message.
  """
  path = pathlib.Path(path)
  what = f'{flag} file {path}' if flag else f'file {path}'
  if not path.is_file():
    raise errors.UserError(f'the {what} does not exist (or is not a file).')
  seen: dict[str, None] = {}
  try:
    for number, text, valid in readers.read_lines(path):
      if not valid:
        raise errors.UserError(f'{path}:{number}: not UTF-8 text; save {flag or "the file"} as '
                               'UTF-8 (one sentence a line).')
      text = layout.collapse_whitespace(text)
      if text:
        seen.setdefault(text, None)
  except errors.UserError:
    raise
  except ValueError as e:  # readers.read_lines: zero lines, or a damaged gzip/xz stream
    if 'zero lines' in str(e):
      raise errors.UserError(f'the {what} is empty (zero lines); give one sentence a line.'
                             ) from None
    raise errors.UserError(str(e)) from None
  if not seen:
    raise errors.UserError(f'the {what} holds only blank lines; give one sentence a line.')
  return list(seen)


# Writing what was mined.

OUTPUTS = frozenset({'pairs.tsv', 'mining.json', 'corpus'})  # all a mining folder holds


def check_out_dir(out_dir: str | pathlib.Path) -> pathlib.Path:
  """`out_dir` if it is new, empty or an earlier mining output (nothing else in it is ever
  replaced); errors.UserError naming what it holds otherwise."""
  out = pathlib.Path(out_dir)
  if out.exists() and not out.is_dir():
    raise errors.UserError(f'--out {out} is a file; give a new folder.')
  entries = sorted(p.name for p in out.iterdir()) if out.exists() else []
  if entries and not set(entries) <= OUTPUTS:
    raise errors.UserError(
        f'--out {out} holds {", ".join(entries[:5])}: it is not a folder that `amber-jax mine` '
        'wrote, so nothing was written; give a new or empty folder.')
  return out


def corpus_language(src_lang: str, tgt_lang: str) -> str | None:
  """The non-English language of an English-centric pair (the corpus layout's `en-<xx>`), or None
  when neither side is English or a code is missing."""
  if src_lang == layout.SOURCE_LANGUAGE and tgt_lang not in ('', layout.SOURCE_LANGUAGE):
    return tgt_lang
  if tgt_lang == layout.SOURCE_LANGUAGE and src_lang not in ('', layout.SOURCE_LANGUAGE):
    return src_lang
  return None


def write_mined(out_dir: str | pathlib.Path, mined: Sequence[tuple[float, str, str]], record: dict,
                *, src_lang: str = '', tgt_lang: str = '') -> dict:
  """Writes `out_dir/pairs.tsv` (`score<TAB>src<TAB>tgt`, best first), `out_dir/mining.json`
  (`record` plus the counts) and, for an English-centric pair, `out_dir/corpus/`: the corpus
  layout of `amber_jax.corpora.layout` (every pair in the train split; a pair whose two sides are
  the same text is skipped, as `data build files` does), its manifest holding the record too.

  Returns:
    The record as written, with 'pairs_written', 'corpus' (the folder or None), 'extra_task' (the
    `config.data.extra_tasks` entry that mixes the corpus in, or None) and 'skipped'.
  """
  out = check_out_dir(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  mined = sorted(mined, key=lambda m: -m[0])
  layout.write_lines(out / 'pairs.tsv', (f'{s:.6f}\t{a}\t{b}' for s, a, b in mined))
  record = dict(record, pairs_written=len(mined), corpus=None, extra_task=None, skipped={})
  xx = corpus_language(src_lang, tgt_lang)
  if xx is None:
    record['corpus_note'] = ('no corpus folder: the corpus layout pairs English with one other '
                             'language; give --src-lang en --tgt-lang XX (or the reverse)')
  else:
    tally = layout.Tally()
    kept = []
    for number, (_, a, b) in enumerate(mined, start=1):
      english, other = (a, b) if src_lang == layout.SOURCE_LANGUAGE else (b, a)
      if english == other:
        tally.skip('unchanged', str(out / 'pairs.tsv'), number, english)
      else:
        kept.append((english, other))
    by_split, mono = layout.split_corpus({xx: kept}, 0.0)  # all train: it is for training
    train_tsv = out / 'corpus' / 'parallel' / f'{layout.SOURCE_LANGUAGE}-{xx}' / 'train.tsv'
    record.update(corpus=str(out / 'corpus'), skipped=dict(tally.counts), extra_task={
        'name': f'mined_{xx.replace("-", "_")}', 'kind': 'parallel',
        'files': {'train': str(train_tsv.resolve())}})
    manifest = {
        'name': 'mined', 'source': f'amber-jax mine {record.get("model", "")}',
        'languages': [xx],
        'pairs': {f'{layout.SOURCE_LANGUAGE}-{xx}': {s: len(by_split[xx][s])
                                                      for s in layout.SPLITS}},
        'mono': {lang: {s: len(v[s]) for s in layout.SPLITS} for lang, v in sorted(mono.items())},
        'skipped': dict(tally.counts), 'skipped_examples': tally.examples,
        'validation_fraction': 0.0, 'mining': record}
    layout.write_corpus(out / 'corpus', by_split, mono, manifest)
  (out / 'mining.json').write_text(json.dumps(record, ensure_ascii=False, indent=1) + '\n',
                                   encoding='utf-8')
  return record
