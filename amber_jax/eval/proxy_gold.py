"""Proxy gold word alignments from a bilingual dictionary, and a scorer that respects their gaps.

No hand-made alignments exist for the English-Spanish Bible test bed (`amber_jax.corpora.bible`),
so the gold is what a dictionary can establish unambiguously (`gold_links`). A sure link (i, j)
joins English token i and Spanish token j of a verse pair when one of these holds:

- the dictionary (`bible.load_dictionary`, lowercase) translates English word i as Spanish word j;
- both are the same number (`12`, `12`);
- both are capitalised names, equal after lowercasing and accent folding (`Jesus`, `Jesús`), at
  least two letters long, and neither is a word of the dictionary (so `He`/`He`, `No`/`No` and
  sentence-initial `A`/`Á` are not names);

and the link is unambiguous: i's word occurs once in the English verse, j's once in the Spanish
verse, and i and j each take part in exactly one such candidate link. Punctuation is never linked.

The gold covers only some of the words, so the scorer (`score`) judges precision on the covered
source words only: A_c = the predicted links whose source word i is in a gold link.

    precision = |A_c ∩ G| / |A_c|      recall = |A ∩ G| / |G|
    AER       = 1 - 2 |A_c ∩ G| / (|A_c| + |G|)

summed over the verses before dividing. A gold word has one gold link, so an aligner that links
it to two words (`days` -> `los días`) loses precision for the second even when it is right:
compare aligners on these numbers, not with published AERs.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
import pathlib

from amber_jax.corpora.bible import fold
from amber_jax.eval import align

Links = set[tuple[int, int]]


def is_word(token: str) -> bool:
  return any(c.isalnum() for c in token)


def _is_name(token: str) -> bool:
  return len(token) >= 2 and token[0].isupper() and token.isalpha()


def candidate_links(src: Sequence[str], tgt: Sequence[str], dictionary: Mapping[str, set[str]],
                    spanish_words: set[str] | frozenset[str] = frozenset()) -> Links:
  """Every (i, j) the dictionary, a shared number or a shared name supports (ambiguous ones
  included). `spanish_words`: every Spanish word of the dictionary (default: its translations)."""
  if not spanish_words:
    spanish_words = set().union(*dictionary.values()) if dictionary else set()
  tgt_lower = [t.lower() for t in tgt]
  links = set()
  for i, token in enumerate(src):
    if not is_word(token):
      continue
    lower = token.lower()
    translations = dictionary.get(lower, ())
    for j, target in enumerate(tgt):
      if not is_word(target):
        continue
      if tgt_lower[j] in translations:
        links.add((i, j))
      elif token.isdigit() and token == target:
        links.add((i, j))
      elif (_is_name(token) and _is_name(target) and fold(token) == fold(target)
            and lower not in dictionary and tgt_lower[j] not in spanish_words):
        links.add((i, j))
  return links


def gold_links(src: Sequence[str], tgt: Sequence[str], dictionary: Mapping[str, set[str]],
               spanish_words: set[str] | frozenset[str] = frozenset()) -> Links:
  """The unambiguous candidate links of a verse pair (see the module docstring)."""
  candidates = candidate_links(src, tgt, dictionary, spanish_words)
  per_src = collections.Counter(i for i, _ in candidates)
  per_tgt = collections.Counter(j for _, j in candidates)
  src_count = collections.Counter(t.lower() for t in src)
  tgt_count = collections.Counter(t.lower() for t in tgt)
  return {(i, j) for i, j in candidates
          if per_src[i] == 1 and per_tgt[j] == 1
          and src_count[src[i].lower()] == 1 and tgt_count[tgt[j].lower()] == 1}


def build_gold(pairs: Sequence[tuple[Sequence[str], Sequence[str]]],
               dictionary: Mapping[str, set[str]]) -> list[Links]:
  """`gold_links` of every (src tokens, tgt tokens) pair."""
  spanish_words = set().union(*dictionary.values()) if dictionary else set()
  return [gold_links(src, tgt, dictionary, spanish_words) for src, tgt in pairs]


def diagonal_links(src_len: int, tgt_len: int) -> Links:
  """The diagonal baseline: word i -> round(i * tgt_len / src_len) (halves round up)."""
  if not src_len or not tgt_len:
    return set()
  return {(i, min(int(i * tgt_len / src_len + 0.5), tgt_len - 1)) for i in range(src_len)}


def score(predicted: Sequence[Links], gold: Sequence[Links],
          src: Sequence[Sequence[str]] | None = None) -> dict:
  """Proxy precision, recall and AER of `predicted` against `gold` (one set per verse).

  Args:
    predicted, gold: links per verse pair, the same number of verses.
    src: the English tokens per verse, for `words_covered` (the share of English words, i.e.
      tokens that are not punctuation, in a gold link); optional.

  Returns:
    {'precision', 'recall', 'aer', 'predicted', 'predicted_covered', 'gold', 'correct',
     'verses', 'gold_per_verse', 'words_covered'} (`words_covered` is None without `src`;
    precision is None when no predicted link falls on a covered word, recall when there is no
    gold).
  """
  if len(predicted) != len(gold):
    raise ValueError(f'{len(predicted)} predicted verses but {len(gold)} gold verses')
  n_pred = n_covered = n_gold = n_correct = 0
  for links, sure in zip(predicted, gold):
    covered_src = {i for i, _ in sure}
    covered = {link for link in links if link[0] in covered_src}
    n_pred += len(links)
    n_covered += len(covered)
    n_gold += len(sure)
    n_correct += len(covered & sure)
  words_covered = None
  if src is not None:
    words = sum(sum(1 for t in s if is_word(t)) for s in src)
    words_covered = sum(len({i for i, _ in g}) for g in gold) / words if words else None
  return {
      'precision': n_correct / n_covered if n_covered else None,
      'recall': n_correct / n_gold if n_gold else None,
      'aer': 1 - 2 * n_correct / (n_covered + n_gold) if n_covered + n_gold else None,
      'predicted': n_pred, 'predicted_covered': n_covered, 'gold': n_gold, 'correct': n_correct,
      'verses': len(gold), 'gold_per_verse': n_gold / len(gold) if gold else None,
      'words_covered': words_covered,
  }


def read_pharaoh(path: str | pathlib.Path) -> list[Links]:
  """One set of links per line of a Pharaoh file (an empty line: no links; `i?j` counts too)."""
  return [possible for _, possible in align.read_gold(path)]


def write_pharaoh(path: str | pathlib.Path, links: Sequence[Links]):
  pathlib.Path(path).write_text(''.join(align.to_pharaoh(l) + '\n' for l in links),
                                encoding='utf-8')
