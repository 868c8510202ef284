"""The on-disk corpus layout every builder writes and every reader reads (no TensorFlow).

    manifest.json
    parallel/en-<xx>/train.tsv, validation.tsv   one `english<TAB>translation` a line, UTF-8
    mono/<lang>/train.txt, validation.txt        one sentence a line, every language incl. `en`

The manifest has at least `languages` (non-English codes with pairs), `pairs` ({'en-xx': {split:
n}}), `mono` ({lang: {split: n}}), `skipped` ({reason: n}) and `skipped_examples` (up to
`MAX_EXAMPLES` per reason, each naming file and line). Builders split by a hash of the English
sentence (`is_validation`) or by whole source (Django apps), so a sentence and all of its
translations fall in one split, and write atomically (`write_corpus`): a crash never leaves half
a corpus.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
import hashlib
import json
import pathlib
import shutil
import tempfile

SOURCE_LANGUAGE = 'en'
SPLITS = ('train', 'validation')
MAX_EXAMPLES = 20  # Examples kept in the manifest per skip reason.


def collapse_whitespace(text: str) -> str:
  """Every run of whitespace (incl. tabs, newlines, no-break spaces) -> one space; trimmed."""
  return ' '.join(text.split())


def is_validation(english: str, validation_fraction: float) -> bool:
  """Whether `english` (and so all of its translations) belongs to the validation split."""
  digest = hashlib.sha1(english.encode('utf-8')).hexdigest()
  return int(digest[:15], 16) / 16**15 < validation_fraction


class Tally:
  """Skip counts and a few examples per reason, in the manifest's shape."""

  def __init__(self, file_reasons: Sequence[str] = ()):
    self.file_reasons = tuple(file_reasons)
    self.counts = collections.Counter()
    self.examples = []
    self._per_reason = collections.Counter()

  def skip(self, reason: str, file: str, line: int | None, text: str = ''):
    self.counts[reason] += 1
    if self._per_reason[reason] < MAX_EXAMPLES:
      self._per_reason[reason] += 1
      self.examples.append({'file': file, 'line': line, 'reason': reason,
                            'text': collapse_whitespace(text)[:80]})

  def entries_skipped(self) -> int:
    return sum(n for reason, n in self.counts.items() if reason not in self.file_reasons)

  def files_skipped(self) -> int:
    return sum(n for reason, n in self.counts.items() if reason in self.file_reasons)


def split_corpus(pairs: dict[str, list[tuple[str, str]]], validation_fraction: float,
                 held_out: Callable[[str], bool] | None = None):
  """Splits pairs by English sentence; returns ({lang: {split: pairs}}, {lang: {split: mono}}).

  An English sentence is validation when `held_out(english)` says so, or (without `held_out`) by
  its hash (`is_validation` at `validation_fraction`).
  """
  if held_out is None:
    held_out = lambda english: is_validation(english, validation_fraction)
  by_split = {lang: {split: [] for split in SPLITS} for lang in sorted(pairs)}
  for lang, lang_pairs in pairs.items():
    for english, translation in lang_pairs:
      split = 'validation' if held_out(english) else 'train'
      by_split[lang][split].append((english, translation))
  # Distinct sentences in first-seen order.
  mono = {SOURCE_LANGUAGE: {
      split: list(dict.fromkeys(en for splits in by_split.values() for en, _ in splits[split]))
      for split in SPLITS}}
  for lang, splits in by_split.items():
    mono[lang] = {split: list(dict.fromkeys(xx for _, xx in splits[split])) for split in SPLITS}
  return by_split, mono


def write_lines(path: pathlib.Path, lines: Iterable[str]):
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', encoding='utf-8', newline='\n') as f:
    for line in lines:
      f.write(line + '\n')


CORPUS_ENTRIES = frozenset({'manifest.json', 'parallel', 'mono'})  # all a built corpus holds


def check_replaceable(out_dir: str | pathlib.Path) -> None:
  """A builder writes into a new or empty folder, or replaces a corpus that a builder made (its
  manifest.json beside parallel/ and mono/, nothing else): a folder of the user's is never deleted.

  Raises:
    FileExistsError: `out_dir` holds anything else, named in the message; nothing was written.
  """
  out_dir = pathlib.Path(out_dir)
  if not out_dir.exists():
    return
  if not out_dir.is_dir():
    raise FileExistsError(f'{out_dir} is a file, not a corpus folder; give --out a new folder.')
  entries = sorted(p.name for p in out_dir.iterdir())
  if not entries or ('manifest.json' in entries and set(entries) <= CORPUS_ENTRIES):
    return
  shown = ', '.join(entries[:5]) + (f' and {len(entries) - 5} more' if len(entries) > 5 else '')
  raise FileExistsError(
      f'{out_dir} is not a corpus folder that amber-jax built (it holds {shown}'
      f'{"" if "manifest.json" in entries else "; no manifest.json"}), so it is left untouched '
      'and nothing was written. Give the builder a new or empty folder.')


def write_corpus(out_dir: pathlib.Path, by_split: dict, mono: dict, manifest: dict):
  """Writes the layout into a temporary folder beside `out_dir`, then renames it into place
  (replacing only what `check_replaceable` allows)."""
  check_replaceable(out_dir)
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.building-', dir=out_dir.parent))
  try:
    for lang, splits in by_split.items():
      for split in SPLITS:
        write_lines(tmp / 'parallel' / f'{SOURCE_LANGUAGE}-{lang}' / f'{split}.tsv',
                     (f'{en}\t{xx}' for en, xx in splits[split]))
    for lang, splits in mono.items():
      for split in SPLITS:
        write_lines(tmp / 'mono' / lang / f'{split}.txt', splits[split])
    with open(tmp / 'manifest.json', 'w', encoding='utf-8') as f:
      f.write(json.dumps(manifest, ensure_ascii=False, indent=1) + '\n')
    old = out_dir.parent / f'{tmp.name}.old' if out_dir.exists() else None
    if old is not None:
      out_dir.rename(old)
    tmp.rename(out_dir)
    if old is not None:
      shutil.rmtree(old)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _manifest_path(corpus_dir: pathlib.Path) -> pathlib.Path:
  """corpus_dir/manifest.json; raises FileNotFoundError saying how to build the corpus."""
  path = corpus_dir / 'manifest.json'
  if not path.is_file():
    raise FileNotFoundError(
        f'no corpus at {corpus_dir} (no manifest.json); run `amber-jax data build '
        f'{corpus_dir.name}` (or build_django_corpus({str(corpus_dir)!r}))')
  return path


def load_manifest(corpus_dir: str | pathlib.Path) -> dict:
  """The manifest of a built corpus; raises FileNotFoundError saying how to build it."""
  with open(_manifest_path(pathlib.Path(corpus_dir)), encoding='utf-8') as f:
    return json.load(f)


def provenance(corpus_dir: str | pathlib.Path) -> dict[str, str]:
  """What identifies a built corpus, for the metadata of what is made from it (a vocabulary):
  {'corpus_dir': the folder, 'corpus_manifest_sha256': sha256 of its manifest.json's bytes}."""
  path = _manifest_path(pathlib.Path(corpus_dir))
  return {'corpus_dir': str(pathlib.Path(corpus_dir)),
          'corpus_manifest_sha256': hashlib.sha256(path.read_bytes()).hexdigest()}


def _select(split: str, langs: Sequence[str] | None, available: Sequence[str],
            corpus_dir) -> list[str]:
  """Checks `split`; the languages to read: `langs` (all checked present) or `available`."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  if langs is None:
    return list(available)
  missing = [lang for lang in langs if lang not in available]
  if missing:
    raise ValueError(f'languages {missing} are not in the corpus at {corpus_dir}; it has '
                     f'{list(available)}')
  return list(langs)


def _read_lines(path: pathlib.Path) -> list[str]:
  with open(path, encoding='utf-8', newline='\n') as f:
    text = f.read()
  return text.split('\n')[:-1] if text else []


def read_pairs(corpus_dir: str | pathlib.Path, split: str,
               langs: Sequence[str] | None = None) -> dict[str, list[tuple[str, str]]]:
  """Parallel pairs of one split.

  Args:
    corpus_dir: a built corpus folder.
    split: 'train' or 'validation'.
    langs: non-English language codes to read; None reads all of the manifest's languages.

  Returns:
    {lang: [(english, translation), ...]} in file order.
  """
  corpus_dir = pathlib.Path(corpus_dir)
  manifest = load_manifest(corpus_dir)
  result = {}
  for lang in _select(split, langs, manifest['languages'], corpus_dir):
    path = corpus_dir / 'parallel' / f'{SOURCE_LANGUAGE}-{lang}' / f'{split}.tsv'
    lang_pairs = []
    for number, line in enumerate(_read_lines(path), start=1):
      fields = line.split('\t')
      if len(fields) != 2:
        raise ValueError(f'{path}:{number}: expected `english<TAB>translation`, found '
                         f'{len(fields)} tab-separated fields; rebuild the corpus')
      lang_pairs.append((fields[0], fields[1]))
    result[lang] = lang_pairs
  return result


def read_mono(corpus_dir: str | pathlib.Path, split: str,
              langs: Sequence[str] | None = None) -> dict[str, list[str]]:
  """Monolingual sentences of one split: {lang: [sentence, ...]}; None reads every language."""
  corpus_dir = pathlib.Path(corpus_dir)
  manifest = load_manifest(corpus_dir)
  return {lang: _read_lines(corpus_dir / 'mono' / lang / f'{split}.txt')
          for lang in _select(split, langs, sorted(manifest['mono']), corpus_dir)}
