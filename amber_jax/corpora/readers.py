"""Reading a user's corpus files: specs -> `Source`, and each format's lines -> a `Collector`.

The specs, formats, compression and skip reasons are documented in `amber_jax.corpora.files`
(the builder that calls these readers). Each reader offers every entry it reads to the
`Collector`, which keeps it or counts it under a reason; format errors raise a ValueError that
names `file:line` and says what was expected.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
import dataclasses
import gzip
import json
import lzma
import pathlib
import re
import zlib

import polib

from amber_jax.corpora import layout, po
from amber_jax.corpora.languages import check_language, normalize_language
from amber_jax.corpora.layout import collapse_whitespace, SOURCE_LANGUAGE
from amber_jax.corpora.words import count_words

KINDS = ('pairs', 'mono')
LANG_COLUMNS = ('src_lang', 'tgt_lang', 'src', 'tgt')
_COMPRESSION = {'.gz': 'gzip', '.xz': 'xz'}
SPEC_HELP = ('pairs: LANG:EN_FILE,XX_FILE | LANG:FILE.tsv | FILE.tsv | LANG:FILE.jsonl | '
             'FILE.jsonl | LANG:FILE.po; mono: LANG:FILE.txt | LANG:FILE.jsonl '
             '(any file may end in .gz or .xz)')


# Specs.


@dataclasses.dataclass(frozen=True)
class Source:
  """One parsed spec: `fmt` is moses, tsv, tsv_langs, jsonl, jsonl_langs, po, text or jsonl_text."""
  spec: str
  kind: str  # 'pairs' or 'mono'
  fmt: str
  lang: str | None  # None for language-column files.
  paths: tuple[pathlib.Path, ...]


def _format_suffix(path: pathlib.Path) -> str:
  """`x.tsv.gz` -> `.tsv`: the suffix before any compression suffix, lowercased."""
  name = path.name.lower()
  for suffix in _COMPRESSION:
    name = name.removesuffix(suffix)
  return pathlib.PurePath(name).suffix


def parse_spec(spec: str, kind: str) -> Source:
  """Parses one --pairs or --mono spec (see `amber_jax.corpora.files`); checks its files exist."""
  if kind not in KINDS:
    raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
  where = f'--{kind} {spec!r}'
  match = re.fullmatch(r'([^:/\\,]+):(.+)', spec.strip())
  lang_text, rest = (match.group(1), match.group(2)) if match else (None, spec.strip())
  if not rest:
    raise ValueError(f'{where}: empty spec; expected {SPEC_HELP}')
  lang = check_language(lang_text, where) if lang_text is not None else None
  if kind == 'pairs' and lang == SOURCE_LANGUAGE:
    raise ValueError(f'{where}: English is the source side of every pair; name the language of '
                     "the translation (e.g. 'de:corpus.en,corpus.de')")
  paths = tuple(pathlib.Path(p.strip()) for p in rest.split(','))
  if any(not str(p) or str(p) == '.' for p in paths) or len(paths) > 2:
    raise ValueError(f'{where}: expected one file or two joined by a comma; {SPEC_HELP}')
  suffix = _format_suffix(paths[0])
  if kind == 'pairs':
    if len(paths) == 2:
      fmt = 'moses'
    elif suffix in ('.tsv', '.jsonl'):
      fmt = suffix[1:] + ('' if lang else '_langs')
    elif suffix == '.po':
      fmt = 'po'
    else:
      raise ValueError(
          f'{where}: cannot tell the format of {paths[0]} (suffix {suffix or "none"!r}); pairs '
          f'are two line-aligned files (`LANG:EN_FILE,XX_FILE`) or one .tsv, .jsonl or .po file')
    if fmt in ('moses', 'po') and lang is None:
      raise ValueError(f"{where}: name the translation's language, e.g. 'de:{rest}'")
  else:
    if len(paths) == 2:
      raise ValueError(f'{where}: a mono spec names one file (`LANG:FILE`)')
    if suffix in ('.tsv', '.po'):
      raise ValueError(f'{where}: {suffix} files hold pairs; pass them with --pairs')
    if lang is None:
      raise ValueError(f"{where}: name the text's language, e.g. 'de:{rest}'")
    fmt = 'jsonl_text' if suffix == '.jsonl' else 'text'
  for path in paths:
    if not path.is_file():
      raise FileNotFoundError(f'{where}: file {path} not found'
                              + (' (it is a folder)' if path.is_dir() else ''))
  return Source(spec, kind, fmt, lang, paths)


# Reading.


def _open_binary(path: pathlib.Path):
  compression = next((c for s, c in _COMPRESSION.items() if path.name.lower().endswith(s)), None)
  if compression == 'gzip':
    return gzip.open(path, 'rb')
  if compression == 'xz':
    return lzma.open(path, 'rb')
  return open(path, 'rb')


def read_lines(path: pathlib.Path) -> Iterator[tuple[int, str, bool]]:
  """(1-based line number, text, valid), line by line, without the line end.

  `valid` is False where the line is not valid UTF-8; its text then has U+FFFD for the bad bytes
  (for skip examples only).

  Raises:
    ValueError: the file has zero lines (once decompressed), or its gzip/xz stream is damaged.
  """
  number = 0
  try:
    with _open_binary(path) as f:
      for number, raw in enumerate(f, start=1):
        if raw.endswith(b'\n'):
          raw = raw[:-1]
        if raw.endswith(b'\r'):
          raw = raw[:-1]
        if number == 1 and raw.startswith(b'\xef\xbb\xbf'):
          raw = raw[3:]
        try:
          yield number, raw.decode('utf-8'), True
        except UnicodeDecodeError:
          yield number, raw.decode('utf-8', errors='replace'), False
  except (EOFError, lzma.LZMAError, gzip.BadGzipFile, zlib.error) as error:
    raise ValueError(f'{path}:{number + 1}: cannot decompress ({type(error).__name__}: {error}); '
                     'the file is damaged or not really gzip/xz (check its suffix)') from None
  if number == 0:
    raise ValueError(f'{path}: the file is empty (zero lines); remove it from the specs or '
                     'check that it was written completely')


def _encodable(*texts: str) -> bool:
  """False when a string holds a lone surrogate (from a JSON `\\ud800` escape)."""
  try:
    for text in texts:
      text.encode('utf-8')
  except UnicodeEncodeError:
    return False
  return True


class Collector:
  """Kept pairs and mono sentences, with read counts and one Tally per kind."""

  def __init__(self, min_words: int):
    self.min_words = min_words
    self.pairs = collections.defaultdict(list)  # lang -> [(english, translation)]
    self.seen_pairs = collections.defaultdict(set)
    self.mono = collections.defaultdict(list)  # lang -> [sentence] from --mono specs
    self.read = collections.Counter()
    self.tallies = {kind: layout.Tally() for kind in KINDS}
    self.source_index = 0  # Index of the source being read; kept with each mono sentence.

  def _words_ok(self, lang: str, text: str) -> bool:
    return count_words(text) >= (self.min_words if lang == SOURCE_LANGUAGE else 1)

  def skip(self, kind: str, reason: str, file, line: int | None, text: str = ''):
    self.tallies[kind].skip(reason, str(file), line, text)

  def pair(self, lang: str, english: str, translation: str, file, line: int,
           count: bool = True):
    """Offers one pair read at file:line (`count`: whether this call counts the entry read)."""
    if count:
      self.read['pairs'] += 1
    if not _encodable(english, translation):
      return self.skip('pairs', 'invalid_utf8', file, line, english.encode('utf-8', 'replace')
                       .decode('utf-8'))
    english, translation = collapse_whitespace(english), collapse_whitespace(translation)
    if not english or not translation:
      return self.skip('pairs', 'empty_side', file, line, english or translation)
    if translation == english:
      return self.skip('pairs', 'unchanged', file, line, english)
    if not (self._words_ok(SOURCE_LANGUAGE, english) and self._words_ok(lang, translation)):
      return self.skip('pairs', 'too_short', file, line, f'{english} | {translation}')
    if (english, translation) in self.seen_pairs[lang]:
      return self.skip('pairs', 'duplicate', file, line, english)
    self.seen_pairs[lang].add((english, translation))
    self.pairs[lang].append((english, translation))

  def sentence(self, lang: str, text: str, file, line: int):
    """Offers one --mono sentence (counted read); duplicates are checked after the split."""
    self.read['mono'] += 1
    if not _encodable(text):
      return self.skip('mono', 'invalid_utf8', file, line, text.encode('utf-8', 'replace')
                       .decode('utf-8'))
    text = collapse_whitespace(text)
    if not self._words_ok(lang, text):
      return self.skip('mono', 'too_short', file, line, text)
    self.mono[lang].append((text, str(file), line, self.source_index))


def _read_moses(source: Source, out: Collector):
  en_path, xx_path = source.paths
  english_lines, other_lines = read_lines(en_path), read_lines(xx_path)
  for number in range(1, 1 << 62):
    en, xx = next(english_lines, None), next(other_lines, None)
    if en is None and xx is None:
      return
    if en is None or xx is None:
      longer, shorter = (xx_path, en_path) if en is None else (en_path, xx_path)
      rest = other_lines if en is None else english_lines
      longer_count = number + sum(1 for _ in rest)
      raise ValueError(
          f'--pairs {source.spec!r}: {longer} has {longer_count} lines but {shorter} has '
          f'{number - 1}; line {number} of {longer} has no partner. Moses files must be '
          'line-aligned (line i of one is the translation of line i of the other): fix or '
          'truncate them to the same length')
    out.read['pairs'] += 1
    (_, en_text, en_ok), (_, xx_text, xx_ok) = en, xx
    if not (en_ok and xx_ok):
      out.skip('pairs', 'invalid_utf8', xx_path if en_ok else en_path, number,
               xx_text if en_ok else en_text)
    elif not en_text.strip() and not xx_text.strip():
      out.skip('pairs', 'empty_line', en_path, number)
    else:  # An empty_side example names the file with the blank line.
      blame = xx_path if en_text.strip() and not xx_text.strip() else en_path
      out.pair(source.lang, en_text, xx_text, blame, number, count=False)


def _row_languages(src_lang, tgt_lang, src, tgt, file, line, out: Collector, checked: dict):
  """Orients a language-column row: (lang, english, translation), or None after a counted skip."""
  langs = []
  for code in (src_lang, tgt_lang):
    if code not in checked:
      checked[code] = check_language(code, f'{file}:{line}')
    langs.append(checked[code])
  if langs[0] == langs[1]:
    out.skip('pairs', 'same_language', file, line, f'{src_lang} -> {tgt_lang}: {src}')
    return None
  if SOURCE_LANGUAGE not in langs:
    out.skip('pairs', 'no_english_side', file, line, f'{src_lang} -> {tgt_lang}: {src}')
    return None
  if langs[1] == SOURCE_LANGUAGE:
    return langs[0], tgt, src
  return langs[1], src, tgt


def _read_tsv(source: Source, out: Collector):
  path = source.paths[0]
  columns = 2 if source.lang else 4
  expected = ('`english<TAB>translation`' if source.lang
              else '`src_lang<TAB>tgt_lang<TAB>src<TAB>tgt`')
  checked = {}
  for number, text, valid in read_lines(path):
    if not valid:
      out.read['pairs'] += 1
      out.skip('pairs', 'invalid_utf8', path, number, text)
      continue
    if not text.strip():
      out.read['pairs'] += 1
      out.skip('pairs', 'empty_line', path, number)
      continue
    fields = text.split('\t')
    if len(fields) != columns:
      raise ValueError(
          f'{path}:{number}: expected {columns} tab-separated fields {expected} (spec '
          f'{source.spec!r}), found {len(fields)}: {collapse_whitespace(text)[:80]!r}. Fix the '
          'line (a tab inside a sentence must be replaced), or pass the file with '
          + ('no language (`FILE.tsv`) if it has language columns' if source.lang
             else 'a language (`de:FILE.tsv`) if it has two columns'))
    out.read['pairs'] += 1
    if source.lang:
      out.pair(source.lang, fields[0], fields[1], path, number, count=False)
      continue
    if number == 1 and tuple(f.strip().lower() for f in fields) == LANG_COLUMNS:
      out.skip('pairs', 'header', path, number, text)
      continue
    oriented = _row_languages(*fields, path, number, out, checked)
    if oriented:
      out.pair(oriented[0], oriented[1], oriented[2], path, number, count=False)


def _json_object(path, number: int, text: str, expected: str) -> dict:
  try:
    value = json.loads(text)
  except json.JSONDecodeError as error:
    raise ValueError(f'{path}:{number}: not valid JSON ({error.msg} at column {error.colno}); '
                     f'expected one object a line: {expected}') from None
  if not isinstance(value, dict):
    raise ValueError(f'{path}:{number}: expected a JSON object {expected}, found a '
                     f'{type(value).__name__}')
  return value


def _strings(path, number: int, obj: dict, keys: Sequence[str], expected: str) -> list[str]:
  missing = [key for key in keys if key not in obj]
  if missing:
    raise ValueError(f'{path}:{number}: the object lacks the keys {missing} (it has '
                     f'{sorted(obj)}); expected {expected}')
  wrong = [key for key in keys if not isinstance(obj[key], str)]
  if wrong:
    raise ValueError(f'{path}:{number}: {wrong} must be strings, found '
                     f'{[type(obj[k]).__name__ for k in wrong]}; expected {expected}')
  return [obj[key] for key in keys]


def _read_jsonl(source: Source, out: Collector):
  path, lang = source.paths[0], source.lang
  kind = 'mono' if source.fmt == 'jsonl_text' else 'pairs'
  if source.fmt == 'jsonl_text':
    expected = '{"text": "..."}'
  elif lang:
    expected = f'{{"en": "...", "{lang}": "..."}} or {{"translation": {{"en": ..., "{lang}": ...}}}}'
  else:
    expected = '{"src": ..., "tgt": ..., "src_lang": ..., "tgt_lang": ...}'
  checked = {}
  for number, text, valid in read_lines(path):
    if not valid or not text.strip():
      out.read[kind] += 1
      out.skip(kind, 'empty_line' if valid else 'invalid_utf8', path, number, text)
      continue
    obj = _json_object(path, number, text, expected)
    if source.fmt == 'jsonl_text':
      (sentence,) = _strings(path, number, obj, ['text'], expected)
      if not sentence.strip():
        out.read['mono'] += 1
        out.skip('mono', 'empty_text', path, number)
      else:
        out.sentence(lang, sentence, path, number)
      continue
    out.read['pairs'] += 1
    if lang:
      if isinstance(obj.get('translation'), dict):
        obj = obj['translation']
      by_code = {normalize_language(k): v for k, v in obj.items()}
      english, translation = _strings(path, number, by_code, [SOURCE_LANGUAGE, lang], expected)
      out.pair(lang, english, translation, path, number, count=False)
    else:
      src, tgt, src_lang, tgt_lang = _strings(path, number, obj, ['src', 'tgt', 'src_lang',
                                                                  'tgt_lang'], expected)
      oriented = _row_languages(src_lang, tgt_lang, src, tgt, path, number, out, checked)
      if oriented:
        out.pair(oriented[0], oriented[1], oriented[2], path, number, count=False)


def _read_po(source: Source, out: Collector):
  path = source.paths[0]
  try:
    with _open_binary(path) as f:
      raw = f.read()
  except (EOFError, lzma.LZMAError, gzip.BadGzipFile, zlib.error) as error:
    raise ValueError(f'{path}: cannot decompress ({type(error).__name__}: {error}); the file is '
                     'damaged or not really gzip/xz (check its suffix)') from None
  if not raw:
    raise ValueError(f'{path}: the file is empty (zero lines); remove it from the specs')
  text, bad_lines = po.decode_catalog(raw)
  try:
    catalog = polib.pofile(text, encoding='utf-8')
  except (OSError, ValueError) as error:  # polib: OSError('Syntax error in po file (line 3)').
    line = re.search(r'line (\d+)', str(error))
    raise ValueError(f'{path}:{line.group(1) if line else "?"}: not a valid .po catalog ({error}); '
                     'expected gettext msgid/msgstr entries') from None
  for entry in catalog:
    out.read['pairs'] += 1
    translation = po.entry_translation(entry)
    fields = [entry.msgid, entry.msgid_plural or '', entry.msgstr, *entry.msgstr_plural.values()]
    if bad_lines and any('\ufffd' in field for field in fields):
      line = next((n for n in bad_lines if n >= entry.linenum), bad_lines[-1])
      out.skip('pairs', 'invalid_utf8', path, line, entry.msgid)
      continue
    reason = po.entry_skip_reason(entry, out.min_words)
    if reason is not None:
      out.skip('pairs', reason, path, entry.linenum, entry.msgid)
    else:
      out.pair(source.lang, entry.msgid, translation, path, entry.linenum, count=False)


def _read_text(source: Source, out: Collector):
  path = source.paths[0]
  for number, text, valid in read_lines(path):
    if not valid or not text.strip():
      out.read['mono'] += 1
      out.skip('mono', 'empty_line' if valid else 'invalid_utf8', path, number, text)
    else:
      out.sentence(source.lang, text, path, number)


_READERS = {'moses': _read_moses, 'tsv': _read_tsv, 'tsv_langs': _read_tsv, 'jsonl': _read_jsonl,
            'jsonl_langs': _read_jsonl, 'jsonl_text': _read_jsonl, 'po': _read_po,
            'text': _read_text}


def read_source(source: Source, out: Collector) -> None:
  """Reads every entry of `source` into `out` with the reader of its format."""
  _READERS[source.fmt](source, out)
