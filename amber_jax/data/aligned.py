"""Word-aligned pairs: a user's pre-tokenised parallel file -> batches that carry a teacher's links.

`configs/align.py` trains word alignment on the user's own sentence pairs (config.data.align_pairs,
one pair a line, `source words<TAB>target words` or awesome-align's `src ||| tgt`: the input
`amber-jax align` reads). Each batch is the one-pair-per-row parallel layout of the batch contract
(amber_jax.data.batches; no monolingual part) plus

  guide  int32 [B_p, (L_s - 2)^2]  guide[r, i * (L_s - 2) + j] = 1 when piece i of x and piece j
                                    of y belong to words the teacher links (row-major [x, y]).

The teacher is eflomal (amber_jax.data.teacher), run once on every pair of the file at the start
of a run; it samples, so its links are saved in the workdir (`teacher-links.<process>.txt`) and
read back on a resume, which then sees exactly the batches it would have. Step s reads pairs
[s B, (s + 1) B) of an order that is a seeded permutation per epoch, this process taking every
process_count-th row: the position is a function of the step, so nothing else is saved.

Words become pieces as `amber_jax.eval.align.Aligner` makes them at alignment time: the words
joined by single spaces, SentencePiece-encoded, each piece starting with '▁' starting a word
(`word_index`).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Sequence

import numpy as np

from amber_jax import errors, storage
from amber_jax.data import pairs, teacher
from amber_jax.text import tokenizer, vocab

WORD_START = '\u2581'  # SentencePiece's '▁'


def read_lines(path) -> list[str]:
  """The lines of a UTF-8 text file (a final newline ends the last line; blank lines are kept).

  Raises:
    errors.UserError: the file is missing or not UTF-8, named in the message.
  """
  text = storage.read_text(path)
  lines = text.split('\n')
  return lines[:-1] if lines and lines[-1] == '' else lines


def read_word_pairs(path) -> list[tuple[list[str], list[str]]]:
  """Pre-tokenised pairs, one a line: `src words<TAB>tgt words` or `src words ||| tgt words`
  (awesome-align's input); words are split on whitespace.

  Raises:
    errors.UserError: naming the file and line of a line that is not a pair of non-empty sides.
  """
  result = []
  for number, line in enumerate(read_lines(path), start=1):
    sep = '\t' if '\t' in line else ' ||| '
    parts = line.split(sep)
    if len(parts) != 2 or not parts[0].split() or not parts[1].split():
      raise errors.UserError(f'{path}:{number}: expected `source words<TAB>target words` (or '
                             f'`src ||| tgt`), both non-empty; found {line[:80]!r}.')
    result.append((parts[0].split(), parts[1].split()))
  return result


def word_index(pieces: Sequence[str]) -> list[int]:
  """The word each piece belongs to: a piece starting with '▁' starts a new word.

  The first piece always starts word 0 (with or without '▁'). A lone '▁' piece starts a word
  whose text is in the following pieces.
  """
  index, word = [], -1
  for n, piece in enumerate(pieces):
    if n == 0 or piece.startswith(WORD_START):
      word += 1
    index.append(word)
  return index


def word_pieces(sp, words: Sequence[str], limit: int | None = None
                ) -> tuple[list[int], list[str], list[int], bool]:
  """(ids, pieces, word index of each piece, whether it was cut) of a word list, the ids cut to
  `limit`.

  Raises:
    ValueError: a word did not start a piece (an empty or invisible word).
  """
  full = sp.encode([' '.join(words)])[0]
  ids = full if limit is None else full[:limit]
  pieces = [sp.id_to_piece(i) for i in ids]
  index = word_index(pieces)
  starts = index[-1] + 1 if ids else 0
  if starts > len(words) or (len(full) == len(ids) and starts != len(words)):
    raise ValueError(f'{len(words)} words gave {starts} word starts (pieces {pieces}): every '
                     "word must begin a piece with '▁'; pass whitespace-split words without "
                     'empty or invisible ones.')
  return ids, pieces, index, len(ids) < len(full)


def piece_guide(links, src_words: Sequence[int], tgt_words: Sequence[int], side: int
                ) -> np.ndarray:
  """int32 [side, side]: 1 at (i, j) when piece i's word and piece j's word are linked."""
  out = np.zeros((side, side), np.int32)
  src_words, tgt_words = np.asarray(src_words), np.asarray(tgt_words)
  for i, j in links:
    rows, cols = np.nonzero(src_words == i)[0], np.nonzero(tgt_words == j)[0]
    out[rows[:, None], cols[None, :]] = 1
  return out


def vocab_texts(word_pairs) -> dict[str, list[str]]:
  """{'source': [...], 'target': [...]}: the text a vocabulary for these pairs is trained on."""
  return {'source': [' '.join(s) for s, _ in word_pairs],
          'target': [' '.join(t) for _, t in word_pairs]}


def teacher_links(word_pairs, workdir, *, symmetrization: str, process: int = 0,
                  print_fn=print) -> list[set[tuple[int, int]]]:
  """The teacher's links of every pair: read from the workdir, or computed by eflomal and saved.

  Raises:
    errors.UserError: the saved links are for other pairs (the pairs file changed mid-run).
  """
  path = storage.path(workdir) / f'teacher-links.{process}.txt'
  digest = hashlib.sha256(json.dumps(word_pairs).encode()).hexdigest()
  if path.exists():
    lines = path.read_text().split('\n')
    header = json.loads(lines[0])
    if header['pairs_sha256'] != digest or header['symmetrization'] != symmetrization:
      raise errors.UserError(
          f'{path} holds teacher links for other pairs or settings ({header}); the pairs file '
          'or config.data.teacher changed since this run started: use a new workdir.')
    return [teacher.parse_pharaoh(line)[0] for line in lines[1:1 + len(word_pairs)]]
  print_fn(f'Teacher: eflomal on {len(word_pairs):,} pairs ({symmetrization})')
  links = teacher.eflomal_links([s for s, _ in word_pairs], [t for _, t in word_pairs],
                                symmetrization=symmetrization)
  header = json.dumps({'pairs_sha256': digest, 'symmetrization': symmetrization,
                       'pairs': len(word_pairs)})
  storage.makedirs(workdir)
  storage.write_text(path, '\n'.join([header] + [teacher.to_pharaoh(l) for l in links]) + '\n')
  return links


class GuidedPairs:
  """Pieces and piece-level teacher links of every pair, and the batches of a step."""

  def __init__(self, word_pairs, links, sp, sentence_length: int, where: str = 'pairs'):
    """Raises errors.UserError naming `where` and the line of a pair whose words do not each
    start a piece (an empty or invisible word)."""
    self.side = sentence_length - 2
    self.length = sentence_length
    self.items, cuts = [], []
    for line, ((src, tgt), pair_links) in enumerate(zip(word_pairs, links), start=1):
      try:
        x_ids, _, x_words, x_cut = word_pieces(sp, src, self.side)
        y_ids, _, y_words, y_cut = word_pieces(sp, tgt, self.side)
      except ValueError as e:
        raise errors.UserError(f'{where}:{line}: {e}') from None
      cuts.append((x_cut, y_cut))
      self.items.append((np.asarray(x_ids, np.int32), np.asarray(y_ids, np.int32),
                         x_words, y_words, pair_links))
    self.cuts = np.array(cuts, np.int64).reshape(-1, 2)  # [pairs, 2]: x, y cut to `side`
    self.cut = int(self.cuts.any(axis=1).sum())

  def rows(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
    """The batch of the pairs `indices`: the one-pair-per-row layout plus `guide`."""
    chosen = [self.items[i] for i in indices]
    n = len(chosen)
    selection = pairs.Selection(
        pairs=[(x, y) for x, y, *_ in chosen], rows=list(range(n)), deferred=[], examined=n,
        dropped=0, src_cut=np.zeros(n, np.int32), tgt_cut=np.zeros(n, np.int32))
    batch = pairs.pair_rows(selection, self.length)
    batch['guide'] = np.stack([piece_guide(l, xw, yw, self.side).reshape(-1)
                               for _, _, xw, yw, l in chosen])
    return batch

  def batches(self, start_step: int, batch_size: int, *, seed: int, process: int = 0,
              processes: int = 1) -> 'Batches':
    """Global batches of `batch_size` pairs from `start_step` on, this process's rows of each."""
    if len(self.items) < batch_size:
      raise errors.UserError(f'{len(self.items)} pairs cannot fill a batch of {batch_size}; '
                             'lower config.data.parallel_batch_size or give more pairs.')
    return Batches(self, start_step, batch_size, seed, process, processes)


class Batches:
  """The iterator of `GuidedPairs.batches`; `stats` counts the pairs it gave and how many had
  a side cut (what the training loop reports as `input/*`)."""

  def __init__(self, guided: GuidedPairs, step: int, batch_size: int, seed: int, process: int,
               processes: int):
    self.guided, self.step, self.batch_size, self.seed = guided, step, batch_size, seed
    self.process, self.processes = process, processes
    self.stats = {'pairs': 0, 'src_truncated': 0, 'tgt_truncated': 0}

  def __iter__(self) -> 'Batches':
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    n = len(self.guided.items)
    per_epoch = n // self.batch_size  # the last partial batch of an epoch is skipped
    epoch, within = divmod(self.step, per_epoch)
    order = np.random.default_rng([self.seed, epoch]).permutation(n)
    chosen = order[within * self.batch_size:(within + 1) * self.batch_size]
    mine = chosen[self.process::self.processes]
    self.step += 1
    cut = self.guided.cuts[mine].sum(axis=0)
    self.stats['pairs'] += len(mine)
    self.stats['src_truncated'] += int(cut[0])
    self.stats['tgt_truncated'] += int(cut[1])
    return self.guided.rows(mine.tolist())


def guided_input(config, start_step: int, *, seed: int, process: int = 0, processes: int = 1,
                 print_fn=print) -> Batches:
  """This process's batches of config.data.align_pairs with the teacher's links, from
  `start_step` on (config.data.parallel_batch_size is the global batch)."""
  data = config.data
  if data.mono_batch_size or data.pair_packing:
    raise errors.UserError('config.data.align_pairs trains on sentence pairs, one a row; set '
                           'config.data.mono_batch_size=0 and pair_packing=False '
                           '(configs/align.py does).')
  word_pairs = read_word_pairs(data.align_pairs)
  ensure_vocab(word_pairs, data.vocab_path, config.model.vocab_size, seed=config.seed,
               print_fn=print_fn)
  links = teacher_links(word_pairs, config.workdir, symmetrization=data.teacher,
                        process=process, print_fn=print_fn)
  sp = tokenizer.load_processor(data.vocab_path)
  guided = GuidedPairs(word_pairs, links, sp, data.sentence_length, where=data.align_pairs)
  if start_step == 0:
    print_fn(f'Aligned pairs: {len(word_pairs):,} from {data.align_pairs}; '
             f'{guided.cut:,} cut to {guided.side} pieces a side')
  return guided.batches(start_step, data.parallel_batch_size, seed=seed,
                        process=process, processes=processes)


def ensure_vocab(word_pairs, vocab_path, vocab_size: int, *, seed: int, print_fn=print) -> None:
  """Trains a SentencePiece vocabulary on the pairs' two sides at `vocab_path` if none is
  there (deterministic: every host trains the same one). Pairs too few for `vocab_size` pieces
  get as many as they give (the model's embedding rows past them stay unused)."""
  if storage.path(vocab_path).exists():
    return
  texts = vocab_texts(word_pairs)
  pathlib.Path(vocab_path).parent.mkdir(parents=True, exist_ok=True)
  train = lambda size: vocab.train_sentencepiece(
      texts, vocab_path, validation=texts, vocab_size=size, alpha=1.0, seed=seed,
      source={'align_pairs': len(word_pairs)})
  try:
    train(vocab_size)
  except vocab.VocabSizeError as e:
    if not e.largest:
      raise
    print_fn(f'Vocabulary: the pairs give {e.largest:,} pieces, not {vocab_size:,}; using '
             f'{e.largest:,}')
    train(e.largest)
