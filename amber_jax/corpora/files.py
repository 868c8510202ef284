"""A user's own corpus files (Moses, TSV, JSONL, plain text, .po) -> the corpus layout.

`build_files_corpus(out_dir, pairs=[SPEC, ...], mono=[SPEC, ...])` reads local files only and
writes the folder described in `amber_jax.corpora.layout` (what `read_pairs`, `read_mono`, the
seqio tasks of `tasks/django.py` and `amber_jax.corpora.tfds_export` read). English is always the
source side of a pair.

Specs (`LANG:` is a language code; what follows it is one path, or two joined by a comma):

    pairs  de:corpus.en,corpus.de   Moses style: two line-aligned files, English file first
           de:file.tsv              `english<TAB>translation` a line
           file.tsv                 `src_lang<TAB>tgt_lang<TAB>src<TAB>tgt` a line; an optional
                                    first line `src_lang<TAB>tgt_lang<TAB>src<TAB>tgt` is a header
           de:file.jsonl            {"en": ..., "de": ...} or {"translation": {"en": ..., "de": ...}}
           file.jsonl               {"src": ..., "tgt": ..., "src_lang": ..., "tgt_lang": ...}
           de:file.po               a gettext catalog: msgid (English) -> msgstr, the keep rules of
                                    `amber_jax.corpora.django_po`
    mono   de:file.txt              one sentence a line (any suffix but .jsonl/.tsv/.po)
           de:file.jsonl            {"text": ...} a line

Any file may be compressed: a name ending in `.gz` is read as gzip, `.xz` as xz (`corpus.de.gz`,
`x.tsv.xz`, `x.jsonl.gz`); the format is the suffix before that. Lines are split on `\\n` (a
trailing `\\r` is dropped, as is a UTF-8 byte-order mark at the start of a file) and decoded one by
one, so one bad line never hides the rest of the file.

Language codes: lowercased, `_` -> `-` (`pt_BR` -> `pt-br`). A code is accepted when it is a key
of `django.conf.locale.LANG_INFO` (e.g. `pt-br`, `zh-hans`, `sr-latn`) or exactly 2-3 ASCII letters
(an ISO 639 language code without subtags, e.g. `de`, `swh`). Anything else (`german`, `fr-ca`,
`de-1996`) is a ValueError naming the spec (or `file:line` for codes read from a file) and
suggesting codes (`fr-ca` -> `fr`, `german` -> `de`). A pair spec may not name `en`.

Errors that stop the build (nothing is written): a missing file (FileNotFoundError), an unknown
language code, an empty file (zero lines once decompressed), a damaged gzip/xz stream, two Moses
files with different line counts (the message names both files, both counts and the first line
without a partner), and format errors, since a file in the wrong format would otherwise be
silently skipped line by line: a TSV line with the wrong number of tab-separated fields, a JSONL
line that is not a JSON object, lacks the expected keys or has non-string values, and a .po file
polib cannot parse. Each names `file:line` and says what was expected.

Counted skips (every entry read is kept or counted under a reason, with up to `MAX_EXAMPLES`
`file:line` examples per reason in the manifest); an entry is a line (Moses: a line pair), a JSONL
object or a .po entry:

    empty_line       a blank (whitespace-only) line in any file
    invalid_utf8     a line that is not valid UTF-8 (Moses: on either side), or a JSON string with
                     a lone surrogate escape
    empty_side       a pair whose English or translation is blank
    empty_text       a mono JSONL object whose "text" is blank
    unchanged        a pair whose translation equals its English sentence
    too_short        English (a pair's English side, or an English mono sentence) with fewer than
                     `min_words` words, or non-English text with no word at all (words: runs of
                     letters/digits, `django_po.count_words`; CJK text without spaces is one
                     "word", so `min_words` applies to English only)
    duplicate        a pair already kept for that language (from any file), or a mono sentence
                     already in that language's mono text
    no_english_side  a language-column row in which neither side is `en`
    same_language    a language-column row with the same language on both sides
    header           the optional header line of a language-column TSV
    .po entries also: obsolete, fuzzy, empty_msgid, empty_msgstr, mostly_placeholders

Kept text has every run of whitespace (tabs and newlines included) collapsed into one space.

Monolingual text: mono/<lang>/ holds first the distinct sentences of the kept pairs (English sides
in mono/en, translations in mono/<xx>; split with their pair, by the English sentence, as
`layout.split_corpus` does), then the --mono sentences not already there, each split by a hash of
the sentence itself (`layout.is_validation`). The manifest's `languages` lists the languages with
pairs only (the layout's contract); a language given only as --mono text appears under `mono`.

The manifest also records every source (`sources`: spec, format, language, and each file's path,
size in bytes and sha256), per-kind skip counts (`skipped_by_kind`), and `totals`; the builder
checks read == kept + skipped for pairs and for mono before it writes anything.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import gzip
import hashlib
import json
import lzma
import pathlib
import re
import zlib
from collections.abc import Iterator, Sequence

from amber_jax.corpora import layout
from amber_jax.corpora.layout import SOURCE_LANGUAGE, SPLITS, collapse_whitespace, is_validation
from amber_jax.corpora import django_po
from django.conf.locale import LANG_INFO
import polib
from amber_jax.corpora.django_po import count_words

CORPUS_NAME = 'files'
KINDS = ('pairs', 'mono')
LANG_COLUMNS = ('src_lang', 'tgt_lang', 'src', 'tgt')
_COMPRESSION = {'.gz': 'gzip', '.xz': 'xz'}
_SPEC_HELP = ('pairs: LANG:EN_FILE,XX_FILE | LANG:FILE.tsv | FILE.tsv | LANG:FILE.jsonl | '
              'FILE.jsonl | LANG:FILE.po; mono: LANG:FILE.txt | LANG:FILE.jsonl '
              '(any file may end in .gz or .xz)')


# Language codes.


def normalize_language(code: str) -> str:
  """`pt_BR` -> `pt-br`: lowercase, `_` and `@` -> `-`, surrounding blanks removed."""
  return django_po.normalize_language(code.strip())


def _lang_info() -> dict:
  return LANG_INFO


def is_known_language(code: str) -> bool:
  """Whether a normalised code is accepted: a LANG_INFO key or exactly 2-3 ASCII letters."""
  return code in _lang_info() or re.fullmatch(r'[a-z]{2,3}', code) is not None


def suggest_languages(code: str) -> list[str]:
  """Up to 5 accepted codes close to `code` (by its primary subtag, name, or spelling)."""
  info = _lang_info()
  code = normalize_language(code)
  found = []
  primary = code.split('-')[0]
  if primary != code and is_known_language(primary):
    found.append(primary)
  found += [key for key, value in info.items()
            if code in (value.get('name', '').lower(), value.get('name_local', '').lower())]
  found += difflib.get_close_matches(code, sorted(info), n=3, cutoff=0.6)
  return list(dict.fromkeys(found))[:5]


def check_language(code: str, where: str) -> str:
  """The normalised code, or a ValueError saying `where` it was found and what to use instead."""
  lang = normalize_language(code)
  if is_known_language(lang):
    return lang
  suggestions = suggest_languages(code)
  hint = f'did you mean {", ".join(suggestions)}? ' if suggestions else ''
  raise ValueError(
      f'{where}: unknown language code {code!r}; {hint}use a key of django.conf.locale.LANG_INFO '
      "(e.g. 'de', 'pt-br', 'zh-hans') or a plain 2-3 letter ISO 639 code (e.g. 'sw')")


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
  """Parses one --pairs or --mono spec (see the module docstring) and checks its files exist."""
  if kind not in KINDS:
    raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
  where = f'--{kind} {spec!r}'
  match = re.fullmatch(r'([^:/\\,]+):(.+)', spec.strip())
  lang_text, rest = (match.group(1), match.group(2)) if match else (None, spec.strip())
  if not rest:
    raise ValueError(f'{where}: empty spec; expected {_SPEC_HELP}')
  lang = check_language(lang_text, where) if lang_text is not None else None
  if kind == 'pairs' and lang == SOURCE_LANGUAGE:
    raise ValueError(f'{where}: English is the source side of every pair; name the language of '
                     "the translation (e.g. 'de:corpus.en,corpus.de')")
  paths = tuple(pathlib.Path(p.strip()) for p in rest.split(','))
  if any(not str(p) or str(p) == '.' for p in paths) or len(paths) > 2:
    raise ValueError(f'{where}: expected one file or two joined by a comma; {_SPEC_HELP}')
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


def file_record(path: pathlib.Path) -> dict:
  """{'path', 'size' (bytes on disk), 'sha256' (of the bytes on disk)} of one source file."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return {'path': str(path), 'size': path.stat().st_size, 'sha256': digest.hexdigest()}


def _encodable(*texts: str) -> bool:
  """False when a string holds a lone surrogate (from a JSON `\\ud800` escape)."""
  try:
    for text in texts:
      text.encode('utf-8')
  except UnicodeEncodeError:
    return False
  return True


class _Collector:
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


def _read_moses(source: Source, out: _Collector):
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


def _row_languages(src_lang, tgt_lang, src, tgt, file, line, out: _Collector, checked: dict):
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


def _read_tsv(source: Source, out: _Collector):
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


def _read_jsonl(source: Source, out: _Collector):
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


def _read_po(source: Source, out: _Collector):
  path = source.paths[0]
  try:
    with _open_binary(path) as f:
      raw = f.read()
  except (EOFError, lzma.LZMAError, gzip.BadGzipFile, zlib.error) as error:
    raise ValueError(f'{path}: cannot decompress ({type(error).__name__}: {error}); the file is '
                     'damaged or not really gzip/xz (check its suffix)') from None
  if not raw:
    raise ValueError(f'{path}: the file is empty (zero lines); remove it from the specs')
  text, bad_lines = django_po._decode_catalog(raw)  # pylint: disable=protected-access
  try:
    catalog = polib.pofile(text, encoding='utf-8')
  except (OSError, ValueError) as error:  # polib: OSError('Syntax error in po file (line 3)').
    line = re.search(r'line (\d+)', str(error))
    raise ValueError(f'{path}:{line.group(1) if line else "?"}: not a valid .po catalog ({error}); '
                     'expected gettext msgid/msgstr entries') from None
  for entry in catalog:
    out.read['pairs'] += 1
    translation = django_po._entry_translation(entry)  # pylint: disable=protected-access
    fields = [entry.msgid, entry.msgid_plural or '', entry.msgstr, *entry.msgstr_plural.values()]
    if bad_lines and any('\ufffd' in field for field in fields):
      line = next((n for n in bad_lines if n >= entry.linenum), bad_lines[-1])
      out.skip('pairs', 'invalid_utf8', path, line, entry.msgid)
      continue
    reason = django_po._entry_skip_reason(entry, out.min_words)  # pylint: disable=protected-access
    if reason is not None:
      out.skip('pairs', reason, path, entry.linenum, entry.msgid)
    else:
      out.pair(source.lang, entry.msgid, translation, path, entry.linenum, count=False)


def _read_text(source: Source, out: _Collector):
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


# Building.


def build_files_corpus(out_dir: str | pathlib.Path, pairs: Sequence[str] = (),
                       mono: Sequence[str] = (), *, validation_fraction: float = 0.15,
                       min_words: int = 1) -> dict:
  """Builds a corpus from local files into `out_dir`, replacing any corpus there atomically.

  Args:
    out_dir: corpus folder to create.
    pairs: --pairs specs (module docstring), e.g. ['de:corpus.en,corpus.de', 'fr:x.tsv.gz'].
    mono: --mono specs, e.g. ['sw:news.sw.txt.xz', 'en:wiki.jsonl'].
    validation_fraction: share of distinct English sentences (with all of their translations),
      and of --mono sentences, that go to the validation split; in [0, 1).
    min_words: fewest words in English text for it to be kept (>= 0); other languages need one.

  Returns:
    The manifest, as also written to `out_dir/manifest.json`.

  Raises:
    FileNotFoundError: a file of a spec does not exist.
    ValueError: a bad spec, language code, empty file, misaligned Moses pair or format error
      (each message names the spec or `file:line`).
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f'validation_fraction must be in [0, 1), got {validation_fraction}')
  if min_words < 0:
    raise ValueError(f'min_words must be >= 0, got {min_words}')
  if isinstance(pairs, str) or isinstance(mono, str):
    raise TypeError('pairs and mono are lists of specs, e.g. pairs=["de:corpus.en,corpus.de"]')
  if not pairs and not mono:
    raise ValueError(f'no input: give at least one pairs or mono spec ({_SPEC_HELP})')
  # Every spec is checked (files exist, languages known) before any file is read.
  sources = [parse_spec(s, 'pairs') for s in pairs] + [parse_spec(s, 'mono') for s in mono]

  out = _Collector(min_words)
  records = []
  for index, source in enumerate(sources):
    out.source_index = index
    before = {kind: (out.read[kind], sum(out.tallies[kind].counts.values())) for kind in KINDS}
    _READERS[source.fmt](source, out)
    records.append({
        'spec': source.spec, 'kind': source.kind, 'format': source.fmt, 'lang': source.lang,
        'files': [file_record(p) for p in source.paths],
        'read': out.read[source.kind] - before[source.kind][0],
        'skipped': sum(out.tallies[source.kind].counts.values()) - before[source.kind][1]})

  by_split, mono_splits = layout.split_corpus(dict(out.pairs), validation_fraction)
  mono_kept, mono_duplicates = _add_mono(mono_splits, out, validation_fraction)
  for index in mono_duplicates:
    records[index]['skipped'] += 1
  pairs_kept = sum(len(v) for v in out.pairs.values())
  kept = {'pairs': pairs_kept, 'mono': mono_kept}
  for kind in KINDS:
    skipped = sum(out.tallies[kind].counts.values())
    if out.read[kind] != kept[kind] + skipped:
      raise RuntimeError(
          f'bookkeeping error: read {out.read[kind]} {kind} entries but kept {kept[kind]} and '
          f'skipped {skipped} ({dict(out.tallies[kind].counts)}); this is a bug in {__name__}')
  mono_splits = {lang: splits for lang, splits in mono_splits.items()
                 if any(splits[s] for s in SPLITS)}
  if not by_split and not mono_splits:
    raise ValueError(
        f'nothing kept from {len(sources)} spec(s): skipped {_skip_counts(out)}; see the '
        'reasons in the module docstring of amber_jax.corpora.files (e.g. lower --min-words)')

  for source_record in records:
    source_record['kept'] = source_record['read'] - source_record.pop('skipped')
  skipped = collections.Counter()
  for tally in out.tallies.values():
    skipped.update(tally.counts)
  examples = [dict(example, kind=kind) for kind, tally in out.tallies.items()
              for example in tally.examples]
  manifest = {
      'name': CORPUS_NAME,
      'source': 'local files: ' + '; '.join(s.spec for s in sources),
      'sources': records,
      'languages': list(by_split),
      'pairs': {f'{SOURCE_LANGUAGE}-{lang}': {s: len(splits[s]) for s in SPLITS}
                for lang, splits in by_split.items()},
      'mono': {lang: {s: len(mono_splits[lang][s]) for s in SPLITS} for lang in sorted(mono_splits)},
      'total_pairs': {s: sum(len(splits[s]) for splits in by_split.values()) for s in SPLITS},
      'skipped': dict(sorted(skipped.items())),
      'skipped_by_kind': {kind: dict(sorted(out.tallies[kind].counts.items())) for kind in KINDS},
      'skipped_examples': examples,
      'file_reasons': [],
      'totals': {'files_read': sum(len(s.paths) for s in sources),
                 **{f'{kind}_{what}': n for kind in KINDS for what, n in
                    (('read', out.read[kind]), ('kept', kept[kind]),
                     ('skipped', sum(out.tallies[kind].counts.values())))}},
      'validation_fraction': validation_fraction,
      'min_words': min_words,
  }
  layout.write_corpus(pathlib.Path(out_dir), by_split, mono_splits, manifest)
  return manifest


def _add_mono(mono_splits: dict, out: _Collector,
              validation_fraction: float) -> tuple[int, list[int]]:
  """Appends the --mono sentences not already in their language's mono text.

  Returns:
    (sentences kept, the source index of each sentence skipped as a duplicate).
  """
  kept, duplicates = 0, []
  for lang, sentences in out.mono.items():
    splits = mono_splits.setdefault(lang, {s: [] for s in SPLITS})
    present = {text for s in SPLITS for text in splits[s]}
    for text, file, line, index in sentences:
      if text in present:
        out.skip('mono', 'duplicate', file, line, text)
        duplicates.append(index)
        continue
      present.add(text)
      splits['validation' if is_validation(text, validation_fraction) else 'train'].append(text)
      kept += 1
  return kept, duplicates


def _skip_counts(out: _Collector) -> dict:
  counts = collections.Counter()
  for tally in out.tallies.values():
    counts.update(tally.counts)
  return dict(sorted(counts.items()))


def summary(out_dir: str | pathlib.Path, manifest: dict) -> str:
  """One paragraph: what was read, kept and skipped, and where the corpus is."""
  totals = manifest['totals']
  pairs = ', '.join(f'{k} {v["train"]}+{v["validation"]}' for k, v in manifest['pairs'].items())
  mono = ', '.join(f'{k} {v["train"]}+{v["validation"]}' for k, v in manifest['mono'].items())
  return (f'Built {out_dir} from {totals["files_read"]} file(s): read {totals["pairs_read"]} '
          f'pair entries, kept {totals["pairs_kept"]} ({pairs or "none"}; train+validation), '
          f'skipped {totals["pairs_skipped"]} {manifest["skipped_by_kind"]["pairs"]}; read '
          f'{totals["mono_read"]} mono lines, kept {totals["mono_kept"]}, skipped '
          f'{totals["mono_skipped"]} {manifest["skipped_by_kind"]["mono"]}; mono text per language '
          f'(with the sides of the pairs): {mono or "none"}. Skip examples (file:line) are in '
          f'{pathlib.Path(out_dir) / "manifest.json"}.')
