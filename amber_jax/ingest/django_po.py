"""Django's translation catalogs (.po) -> English-X parallel pairs and monolingual text.

The catalogs ship inside the `django` pip package (BSD-3), so a user builds this corpus from what
they installed; nothing is downloaded and no corpus text lives in git. Rules (DATA.md §1):

- Skipped entries: obsolete, fuzzy, empty msgid or msgstr, msgstr equal to the msgid, an English
  side with fewer than `min_words` words once format placeholders are stripped (reason
  `mostly_placeholders` when the entry has placeholders, `too_short` when it has none), and a
  translation that is nothing but placeholders. Placeholders are `%(name)s`, `%s`, `%d`, `{0}`,
  `{name}`, `<tag>` and `&amp;`-style entities (`PLACEHOLDER_RE`).
- Kept text is the catalog text as-is, with every run of whitespace (tabs, newlines, no-break
  spaces) collapsed into one space: placeholders only decide what is kept, they are not removed,
  so a sentence stays grammatical (`PLACEHOLDER_RE.sub` removes them for code that wants to).
- Plural entries pair the singular msgid with `msgstr[0]` (the singular, or the only form in
  languages such as Japanese); the plural msgid is not used.
- A pair already kept for the same language (the same string in two catalogs or two contexts) is
  a `duplicate` skip.
- Locale folders are normalised to lowercase BCP-47-like codes (`pt_BR` -> `pt-br`, `zh_Hans` ->
  `zh-hans`) and checked against `django.conf.locale.LANG_INFO`; the `en` catalogs are the source
  language and are skipped whole.
- Train/validation: by a sha1 hash of the English sentence, so an English sentence and all of its
  translations fall in the same split.

Every entry read is either kept or counted in the manifest under a reason, with up to
`MAX_EXAMPLES` examples per reason naming the file and line; whole files can be skipped too
(`FILE_REASONS`). The builder checks `read == kept + skipped` before it writes anything.

Layout under `out_dir` (what `read_pairs`, `read_mono` and the seqio tasks read):

    manifest.json
    parallel/en-<xx>/train.tsv, validation.tsv   one `english<TAB>translation` a line, UTF-8
    mono/<lang>/train.txt, validation.txt        one sentence a line, every language incl. `en`
"""

from __future__ import annotations

import collections
import hashlib
import json
import pathlib
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence

import polib

CORPUS_NAME = 'django'
CATALOG_NAME = 'django.po'  # The file read in every <root>/<lang>/LC_MESSAGES/ folder.
SOURCE_LANGUAGE = 'en'
SPLITS = ('train', 'validation')
MAX_EXAMPLES = 20  # Examples kept in the manifest per skip reason.

# `%(name)s` and `%s`-style printf fields (no space flag, so "50% of" is text), `{0}` and `{name}`
# format fields, HTML tags and character entities.
PLACEHOLDER_RE = re.compile(
    r'%\([^)]*\)[-#0+]*\d*(?:\.\d+)?[diouxXeEfFgGcrs]'
    r'|%[-#0+]*\d*(?:\.\d+)?[diouxXeEfFgGcrs]'
    r'|\{[^{}\s]*\}'
    r'|</?[A-Za-z][^<>]*>'
    r'|&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);')
_WORD_RE = re.compile(r'\w+')

# Reasons that count whole files; every other reason counts entries.
FILE_REASONS = ('source_language', 'unknown_language', 'parse_error', 'empty_catalog')


def collapse_whitespace(text: str) -> str:
  """Every run of whitespace (incl. tabs, newlines, no-break spaces) -> one space; trimmed."""
  return ' '.join(text.split())


def count_words(text: str) -> int:
  """Words (runs of letters/digits/underscore) of `text` once placeholders are stripped."""
  return len(_WORD_RE.findall(PLACEHOLDER_RE.sub(' ', text)))


def normalize_language(locale_dir_name: str) -> str:
  """Django locale folder name -> lowercase BCP-47-like code: `pt_BR` -> `pt-br`."""
  return locale_dir_name.replace('_', '-').replace('@', '-').lower()


def is_validation(english: str, validation_fraction: float) -> bool:
  """Whether `english` (and so all of its translations) belongs to the validation split."""
  digest = hashlib.sha1(english.encode('utf-8')).hexdigest()
  return int(digest[:15], 16) / 16**15 < validation_fraction


def default_locale_roots() -> list[pathlib.Path]:
  """Django's own locale folders: conf/locale and every contrib app's locale."""
  import django  # pylint: disable=import-outside-toplevel
  package = pathlib.Path(django.__file__).parent
  return [package / 'conf' / 'locale'] + sorted((package / 'contrib').glob('*/locale'))


class _Tally:
  """Skip counts and a few examples per reason, in the manifest's shape."""

  def __init__(self):
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
    return sum(n for reason, n in self.counts.items() if reason not in FILE_REASONS)

  def files_skipped(self) -> int:
    return sum(n for reason, n in self.counts.items() if reason in FILE_REASONS)


def _decode_catalog(raw: bytes) -> tuple[str, list[int]]:
  """UTF-8 text of a catalog (bad bytes -> U+FFFD) and the 1-based lines that held bad bytes."""
  try:
    return raw.decode('utf-8'), []
  except UnicodeDecodeError:
    # b'\n' never occurs inside a UTF-8 sequence, so the lines can be checked one by one.
    bad = [number for number, line in enumerate(raw.split(b'\n'), start=1)
           if line.decode('utf-8', errors='replace').encode('utf-8') != line]
    return raw.decode('utf-8', errors='replace'), bad


def _entry_translation(entry: polib.POEntry) -> str:
  """The msgstr of a singular entry, msgstr[0] of a plural one."""
  if entry.msgid_plural:
    return entry.msgstr_plural.get(0, '')
  return entry.msgstr


def _entry_skip_reason(entry: polib.POEntry, min_words: int) -> str | None:
  """Why a parsed (valid UTF-8) entry is not kept, or None to keep it."""
  if entry.obsolete:
    return 'obsolete'
  if 'fuzzy' in entry.flags:
    return 'fuzzy'
  english = collapse_whitespace(entry.msgid)
  translation = collapse_whitespace(_entry_translation(entry))
  if not english:
    return 'empty_msgid'
  if not translation:
    return 'empty_msgstr'
  if translation == english:
    return 'unchanged'
  if count_words(english) < min_words:
    return 'mostly_placeholders' if PLACEHOLDER_RE.search(english) else 'too_short'
  if count_words(translation) == 0:
    return 'mostly_placeholders'
  return None


def _catalog_files(roots: Sequence[pathlib.Path]) -> list[tuple[str, pathlib.Path]]:
  """(locale folder name, catalog path) for every `<root>/<lang>/LC_MESSAGES/django.po`."""
  found = []
  for root in roots:
    if not root.is_dir():
      raise FileNotFoundError(
          f'locale root {root} is not a folder; expected <root>/<lang>/LC_MESSAGES/{CATALOG_NAME} '
          'folders (pass existing roots, or None for the installed Django catalogs)')
    for path in sorted(root.glob(f'*/LC_MESSAGES/{CATALOG_NAME}')):
      found.append((path.parent.parent.name, path))
  return found


def _display_path(path: pathlib.Path, base: pathlib.Path | None) -> str:
  """Path as written in the manifest: relative to site-packages for Django's own files."""
  if base is not None:
    try:
      return str(path.relative_to(base))
    except ValueError:
      pass
  return str(path)


def _collect(catalogs, known_languages, min_words, display, tally):
  """Reads every catalog; returns ({lang: [(en, xx)]} in read order, entries read, files used)."""
  pairs = collections.defaultdict(list)  # lang -> [(english, translation)]
  seen = collections.defaultdict(set)
  entries_read = files_used = 0
  for dir_name, path in catalogs:
    file = display(path)
    lang = normalize_language(dir_name)
    if lang == SOURCE_LANGUAGE:
      tally.skip('source_language', file, None, dir_name)
      continue
    if lang not in known_languages:
      tally.skip('unknown_language', file, None,
                 f'{dir_name} -> {lang} is not in django.conf.locale.LANG_INFO')
      continue
    text, bad_lines = _decode_catalog(path.read_bytes())
    try:
      catalog = polib.pofile(text, encoding='utf-8')
    except (OSError, ValueError) as error:  # polib: OSError('Syntax error in po file (line 3)').
      line = re.search(r'line (\d+)', str(error))
      tally.skip('parse_error', file, int(line.group(1)) if line else None, str(error))
      continue
    kept_here = 0
    for entry in catalog:
      entries_read += 1
      fields = [entry.msgid, entry.msgid_plural or '', entry.msgstr, *entry.msgstr_plural.values()]
      if bad_lines and any('\ufffd' in field for field in fields):
        line = next((n for n in bad_lines if n >= entry.linenum), bad_lines[-1])
        tally.skip('invalid_utf8', file, line, entry.msgid)
        continue
      reason = _entry_skip_reason(entry, min_words)
      if reason is None:
        pair = (collapse_whitespace(entry.msgid), collapse_whitespace(_entry_translation(entry)))
        if pair in seen[lang]:
          reason = 'duplicate'
        else:
          seen[lang].add(pair)
          pairs[lang].append(pair)
          kept_here += 1
      if reason is not None:
        tally.skip(reason, file, entry.linenum, entry.msgid)
    if kept_here:
      files_used += 1
    else:
      tally.skip('empty_catalog', file, None, f'{len(catalog)} entries, none usable')
  return pairs, entries_read, files_used


def _split_corpus(pairs: dict[str, list[tuple[str, str]]], validation_fraction: float):
  """Splits pairs by English sentence; returns ({lang: {split: pairs}}, {lang: {split: mono}})."""
  by_split = {lang: {split: [] for split in SPLITS} for lang in sorted(pairs)}
  for lang, lang_pairs in pairs.items():
    for english, translation in lang_pairs:
      split = 'validation' if is_validation(english, validation_fraction) else 'train'
      by_split[lang][split].append((english, translation))
  # Distinct sentences in first-seen order.
  mono = {SOURCE_LANGUAGE: {
      split: list(dict.fromkeys(en for splits in by_split.values() for en, _ in splits[split]))
      for split in SPLITS}}
  for lang, splits in by_split.items():
    mono[lang] = {split: list(dict.fromkeys(xx for _, xx in splits[split])) for split in SPLITS}
  return by_split, mono


def _write_lines(path: pathlib.Path, lines: Iterable[str]):
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', encoding='utf-8', newline='\n') as f:
    for line in lines:
      f.write(line + '\n')


def _write_corpus(out_dir: pathlib.Path, by_split: dict, mono: dict, manifest: dict):
  """Writes the layout into a temporary folder beside `out_dir`, then renames it into place."""
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.building-', dir=out_dir.parent))
  try:
    for lang, splits in by_split.items():
      for split in SPLITS:
        _write_lines(tmp / 'parallel' / f'{SOURCE_LANGUAGE}-{lang}' / f'{split}.tsv',
                     (f'{en}\t{xx}' for en, xx in splits[split]))
    for lang, splits in mono.items():
      for split in SPLITS:
        _write_lines(tmp / 'mono' / lang / f'{split}.txt', splits[split])
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


def build_django_corpus(out_dir: str | pathlib.Path, *, validation_fraction: float = 0.15,
                        min_words: int = 3,
                        locale_roots: Sequence[str | pathlib.Path] | None = None) -> dict:
  """Builds the Django catalog corpus into `out_dir`, replacing any corpus there atomically.

  Args:
    out_dir: corpus folder to create (usually `paths.corpus_dir('django')`).
    validation_fraction: share of distinct English sentences (with all of their translations)
      that go to the validation split.
    min_words: fewest English words, placeholders not counted, for an entry to be kept.
    locale_roots: folders laid out like Django's (`<root>/<lang>/LC_MESSAGES/django.po`); None
      reads the installed Django package.

  Returns:
    The manifest, as also written to `out_dir/manifest.json`.
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f'validation_fraction must be in [0, 1), got {validation_fraction}')
  import django  # pylint: disable=import-outside-toplevel
  from django.conf.locale import LANG_INFO  # pylint: disable=import-outside-toplevel

  if locale_roots is None:
    roots, base = default_locale_roots(), pathlib.Path(django.__file__).parent.parent
    source = f'django=={django.__version__}'
  else:
    roots, base = [pathlib.Path(root) for root in locale_roots], None
    source = 'po files under ' + ', '.join(str(root) for root in roots)
  catalogs = _catalog_files(roots)
  if not catalogs:
    raise FileNotFoundError(
        f'no {CATALOG_NAME} found under {[str(r) for r in roots]}; expected '
        f'<root>/<lang>/LC_MESSAGES/{CATALOG_NAME} (is Django installed? `pip install django`)')

  tally = _Tally()
  pairs, entries_read, files_used = _collect(
      catalogs, set(LANG_INFO), min_words, lambda p: _display_path(p, base), tally)
  entries_kept = sum(len(v) for v in pairs.values())
  if entries_read != entries_kept + tally.entries_skipped():
    raise RuntimeError(
        f'bookkeeping error: read {entries_read} entries but kept {entries_kept} and skipped '
        f'{tally.entries_skipped()} ({dict(tally.counts)}); this is a bug in {__name__}')
  if len(catalogs) != files_used + tally.files_skipped():
    raise RuntimeError(
        f'bookkeeping error: {len(catalogs)} catalogs but {files_used} used and '
        f'{tally.files_skipped()} skipped; this is a bug in {__name__}')

  by_split, mono = _split_corpus(pairs, validation_fraction)
  manifest = {
      'name': CORPUS_NAME,
      'source': source,
      'languages': list(by_split),
      'pairs': {f'{SOURCE_LANGUAGE}-{lang}': {s: len(splits[s]) for s in SPLITS}
                for lang, splits in by_split.items()},
      'mono': {lang: {s: len(mono[lang][s]) for s in SPLITS} for lang in sorted(mono)},
      'total_pairs': {s: sum(len(splits[s]) for splits in by_split.values()) for s in SPLITS},
      'skipped': dict(sorted(tally.counts.items())),
      'skipped_examples': tally.examples,
      'file_reasons': list(FILE_REASONS),
      'totals': {'files_read': len(catalogs), 'files_used': files_used,
                 'files_skipped': tally.files_skipped(), 'entries_read': entries_read,
                 'entries_kept': entries_kept, 'entries_skipped': tally.entries_skipped()},
      'validation_fraction': validation_fraction,
      'min_words': min_words,
  }
  _write_corpus(pathlib.Path(out_dir), by_split, mono, manifest)
  return manifest


def load_manifest(corpus_dir: str | pathlib.Path) -> dict:
  """The manifest of a built corpus; raises FileNotFoundError saying how to build it."""
  corpus_dir = pathlib.Path(corpus_dir)
  path = corpus_dir / 'manifest.json'
  if not path.is_file():
    raise FileNotFoundError(
        f'no corpus at {corpus_dir} (no manifest.json); run `amber-jax data build '
        f'{corpus_dir.name}` (or build_django_corpus({str(corpus_dir)!r}))')
  with open(path, encoding='utf-8') as f:
    return json.load(f)


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
