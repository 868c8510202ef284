"""Debian man-page translations (English <-> 16 languages) -> English-X paragraph pairs.

The translated pages come from Debian's `manpages-<lang>` packages (GPL-3+), fetched with
`apt-get download` and unpacked with `dpkg-deb -x` into a cache folder outside git
(`debian.fetch_packages`; no root needed). Most are made with po4a and keep the English troff
structure, so a page and its translation split into the same sequence of blocks. Rules (DATA.md §2):

- Pages: every `<man_root>/<lang>/man*/<page>` (gzip-compressed or plain) is paired with the
  English page of the same relative path (`man1/ls.1.gz`), looked up in `english_roots` in order
  (the first root that has it wins; `.gz` and plain files match each other). The default English
  roots are each man root's own `man*/` folders (the `manpages` package, i.e. the man-pages
  version the translations were made from) and then the system's `/usr/share/man` (the English
  pages of every installed package: coreutils, apt, dpkg, ...). Translated pages installed on the
  system (`/usr/share/man/<lang>/`) are not read unless their root is passed in `man_roots`.
- Whole pages are skipped (counted per translated page, `FILE_REASONS`): `redirect` (a symlink,
  or a page that is only `.so other`: the target is read as a page of its own),
  `no_english_page`, `unsupported_format` (mdoc pages, `.Dd`/`.Sh`, either side),
  `read_error` (bad gzip, unreadable file), `structure_mismatch` (see below) and `no_pairs` (a
  page that aligned but gave no kept pair; its blocks are counted under their own reasons too).
  An English page that is only `.so other` is followed (in the same root, up to `MAX_SO_HOPS`).
- troff -> text and blocks: see `amber_jax.corpora.roff` (`parse_page`, `Block`).
- Structure: blocks without text (`.PP` right before `.SH`, `.sp` after `.PP`, ...) are counted
  as `empty_block` skips and play no part in the alignment. A page aligns when the kinds of the
  translation's other blocks equal the English ones, or start with them and go on with an `.SH`
  (the translators' credits section po4a appends: `translator_section` skips); otherwise the
  page is a `structure_mismatch`. The strict rule loses some pages where the English page is
  another version than the one translated, but never pairs a block with the wrong one.
- Pairs: the i-th non-empty English block with the i-th non-empty translated block. Skipped
  (reasons per translated block): `invalid_utf8` (the block spans a line with bytes that are not
  UTF-8: pages are decoded with U+FFFD replacements so only the blocks on those lines are lost,
  named by page and line; an English block with U+FFFD is skipped the same way),
  `too_short` (fewer than `min_words` English words), `untranslated` (identical text),
  `length_ratio` (characters translation / English outside `ratio`), `duplicate` (the same pair
  already kept for the language).
- Language folders -> codes with `django_po.normalize_language` (`pt_BR` -> `pt-br`, `zh_CN` ->
  `zh-cn`); an encoding suffix (`de.UTF-8`) is dropped.
- Train/validation: by a hash of the English block (`layout.is_validation`). Monolingual text is
  what `layout.split_corpus` derives from the pairs (English blocks without a translation are not
  added to mono/en).

Every block of a translated page that aligned is kept or counted under a reason, and every
translated page (file or symlink) is used or counted under a file reason; the builder checks both
identities (`totals` in the manifest) before it writes anything.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
import gzip
import pathlib
import zlib

from amber_jax import paths
from amber_jax.corpora import debian, layout
from amber_jax.corpora.django_po import normalize_language
from amber_jax.corpora.layout import SOURCE_LANGUAGE, SPLITS
from amber_jax.corpora.roff import Block, decode_page, Page, parse_page, read_page_bytes
from amber_jax.corpora.words import count_words

CORPUS_NAME = 'manpages'
LANGUAGE_PACKAGES = (
    'manpages-de', 'manpages-fr', 'manpages-es', 'manpages-pl', 'manpages-ru', 'manpages-uk',
    'manpages-it', 'manpages-nl', 'manpages-pt-br', 'manpages-cs', 'manpages-sv', 'manpages-vi',
    'manpages-ja', 'manpages-zh', 'manpages-ro')
DEFAULT_PACKAGES = ('manpages',) + LANGUAGE_PACKAGES
SYSTEM_MAN_DIR = pathlib.Path('/usr/share/man')
MAN_SUBDIR = pathlib.Path('usr/share/man')  # Where a package's pages lie in its unpacked tree.
MAX_SO_HOPS = 4
SPLIT_BY = ('page', 'block')  # how `build_manpages_corpus` holds out validation text

# Reasons that count whole translated pages; every other reason counts block positions.
FILE_REASONS = ('redirect', 'no_english_page', 'unsupported_format', 'read_error',
                'structure_mismatch', 'no_pairs')


def structure_matches(english: Sequence[Block], translated: Sequence[Block]) -> bool:
  """Whether the translation's non-empty blocks have the kinds of the English non-empty blocks,
  optionally followed by sections of its own (starting with `.SH`: the translators' credits)."""
  english = [b.kind for b in english if b.text]
  translated = [b.kind for b in translated if b.text]
  n = len(english)
  return translated[:n] == english and (len(translated) == n or translated[n] == 'SH')


def pair_skip_reason(english: str, translation: str, min_words: int,
                     ratio: tuple[float, float]) -> str | None:
  """Why an aligned block pair (valid text) is not kept, or None to keep it."""
  if not english or not translation:
    return 'empty_block'
  if count_words(english, skip_placeholders=False) < min_words:
    return 'too_short'
  if english == translation:
    return 'untranslated'
  if not ratio[0] <= len(translation) / len(english) <= ratio[1]:
    return 'length_ratio'
  return None


def default_cache_dir() -> pathlib.Path:
  """Where `debian.fetch_packages` keeps the packages by default: <cache>/packages/manpages."""
  return paths.cache_dir() / 'packages' / CORPUS_NAME


# Finding and reading pages.


def is_heldout_page(key: str, validation_fraction: float) -> bool:
  """Whether the page `key` (`man1/ls.1`), in every language, is held out for validation."""
  return layout.is_validation(key, validation_fraction)


def _page_key(relative: pathlib.PurePath) -> str:
  """`man1/ls.1.gz` and `man1/ls.1` -> 'man1/ls.1'."""
  name = relative.as_posix()
  return name[:-3] if name.endswith('.gz') else name


def _page_files(directory: pathlib.Path) -> list[pathlib.Path]:
  """Page files (and symlinks) under `directory/man*/`, sorted."""
  return sorted(p for p in directory.glob('man*/*') if p.is_file() or p.is_symlink())


def language_dirs(man_root: pathlib.Path) -> list[pathlib.Path]:
  """Folders of `man_root` holding translated pages (`de/`, `pt_BR/`, ...: they have `man*/`)."""
  return sorted(d for d in man_root.iterdir()
                if d.is_dir() and not d.name.startswith('man') and any(d.glob('man*/')))


def language_code(dir_name: str) -> str:
  """`de` -> 'de', `pt_BR` -> 'pt-br', `de.UTF-8` -> 'de'."""
  return normalize_language(dir_name.split('.', 1)[0])


class EnglishPages:
  """English pages by relative path across several roots (the first root that has one wins)."""

  def __init__(self, roots: Sequence[pathlib.Path]):
    self.roots = list(roots)
    self._index: dict[str, pathlib.Path] = {}
    for root in self.roots:
      if not root.is_dir():
        continue
      for path in _page_files(root):
        self._index.setdefault(_page_key(path.relative_to(root)), path)
    self._cache: dict[str, Page | str] = {}

  def __len__(self):
    return len(self._index)

  def page(self, key: str) -> Page | str:
    """The parsed English page for `key`, or a file reason (`no_english_page`, `read_error`)."""
    if key not in self._cache:
      self._cache[key] = self._load(key)
    return self._cache[key]

  def _load(self, key: str) -> Page | str:
    for _ in range(MAX_SO_HOPS + 1):
      path = self._index.get(key)
      if path is None or not path.exists():  # Missing, or a dangling symlink.
        return 'no_english_page'
      try:
        text, _ = decode_page(read_page_bytes(path))
      except (OSError, EOFError, zlib.error, gzip.BadGzipFile):
        return 'read_error'
      page = parse_page(text)
      if page.redirect is None:
        return page
      key = _page_key(pathlib.PurePosixPath(page.redirect))
    return 'no_english_page'


# Building the corpus.


def _block_has_bad_line(block: Block, bad_lines: set[int]) -> int | None:
  return next((n for n in range(block.line, block.last_line + 1) if n in bad_lines), None)


def _collect(language_pages, english: EnglishPages, min_words, ratio, tally):
  """Aligns every page; returns (pairs by language, counts of blocks/pages read and used, the
  pages each kept English block came from)."""
  pairs = collections.defaultdict(list)
  seen = collections.defaultdict(set)
  pages_of = collections.defaultdict(set)
  counts = collections.Counter()
  for lang, pages in language_pages.items():
    for path, file in pages:
      counts['pages_read'] += 1
      if path.is_symlink():
        tally.skip('redirect', file, None, f'symlink to {path.readlink()}')
        continue
      try:
        text, bad_lines = decode_page(read_page_bytes(path))
      except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        tally.skip('read_error', file, None, f'{type(error).__name__}: {error}')
        continue
      page = parse_page(text)
      if page.redirect is not None:
        tally.skip('redirect', file, None, f'.so {page.redirect}')
        continue
      key = _page_key(pathlib.PurePosixPath(*pathlib.PurePosixPath(file).parts[1:]))
      source = english.page(key)
      if isinstance(source, str):
        tally.skip(source, file, None, key)
        continue
      if page.mdoc or source.mdoc:
        tally.skip('unsupported_format', file, None, 'mdoc macros (.Sh, .Pp)')
        continue
      if not structure_matches(source.blocks, page.blocks):
        tally.skip('structure_mismatch', file, None,
                   f'{len(source.blocks)} English blocks, {len(page.blocks)} translated')
        continue
      kept_here = 0
      source_blocks = [b for b in source.blocks if b.text]
      position = 0  # Index of the next non-empty English block.
      for block in page.blocks:
        counts['blocks_read'] += 1
        if not block.text:
          tally.skip('empty_block', file, block.line, '')
          continue
        if position >= len(source_blocks):
          tally.skip('translator_section', file, block.line, block.text)
          continue
        position += 1
        bad = _block_has_bad_line(block, bad_lines)
        pair = (source_blocks[position - 1].text, block.text)
        if bad is not None or '\ufffd' in pair[0]:  # U+FFFD: bad bytes in the English page.
          tally.skip('invalid_utf8', file, bad or block.line, block.text)
          continue
        reason = pair_skip_reason(*pair, min_words, ratio)
        if reason is None:
          pages_of[pair[0]].add(key)
          if pair in seen[lang]:
            reason = 'duplicate'
          else:
            seen[lang].add(pair)
            pairs[lang].append(pair)
            kept_here += 1
        if reason is not None:
          tally.skip(reason, file, block.line, block.text)
      if kept_here:
        counts['pages_used'] += 1
      else:
        tally.skip('no_pairs', file, None, f'{len(page.blocks)} blocks, none kept')
  return pairs, counts, pages_of


def build_manpages_corpus(out_dir: str | pathlib.Path, *,
                          man_roots: Sequence[str | pathlib.Path] | None = None,
                          english_roots: Sequence[str | pathlib.Path] | None = None,
                          languages: Sequence[str] | None = None,
                          validation_fraction: float = 0.15, min_words: int = 4,
                          ratio: tuple[float, float] = (0.4, 3.0),
                          max_pages: int | None = None,
                          cache_dir: str | pathlib.Path | None = None,
                          split_by: str = 'page') -> dict:
  """Builds the man-page corpus into `out_dir`, replacing any corpus there atomically.

  Args:
    out_dir: corpus folder to create (usually `paths.corpus_dir('manpages')`).
    man_roots: folders laid out like `/usr/share/man` whose `<lang>/man*/` subfolders hold the
      translated pages; None fetches `DEFAULT_PACKAGES` (`debian.fetch_packages` into
      `cache_dir`) and reads `<root>/usr/share/man`.
    english_roots: folders with English `man*/` subfolders, searched in order; None means each man
      root, then `/usr/share/man`.
    languages: language codes (`de`, `pt-br`) or folder names (`pt_BR`) to read; None reads all.
    validation_fraction: share of the English pages (`split_by='page'`) or of the distinct
      English blocks (`'block'`) that go, with all of their translations, to the validation split.
    min_words: fewest English words for a pair to be kept.
    ratio: allowed (min, max) of characters translation / English.
    max_pages: read at most this many translated pages per language (in path order); None: all.
    cache_dir: package cache for `debian.fetch_packages` when `man_roots` is None (default
      `<cache>/packages/manpages`, see `amber_jax.paths`).
    split_by: 'page' holds out whole pages (`man1/ls.1` in every language): a block is
      validation when every page it was found in is held out, so no validation text was seen in
      training. 'block' splits by a hash of each English block, as the Django corpus once did.

  Returns:
    The manifest, as also written to `out_dir/manifest.json`.
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f'validation_fraction must be in [0, 1), got {validation_fraction}')
  if split_by not in SPLIT_BY:
    raise ValueError(f'split_by must be one of {SPLIT_BY}, got {split_by!r}')
  if not 0 < ratio[0] <= ratio[1]:
    raise ValueError(f'ratio must be (min, max) with 0 < min <= max, got {ratio}')
  if man_roots is None:
    package_root = debian.fetch_packages(cache_dir or default_cache_dir(), DEFAULT_PACKAGES)
    roots = [package_root / MAN_SUBDIR]
  else:
    roots = [pathlib.Path(root) for root in man_roots]
  for root in roots:
    if not root.is_dir():
      raise FileNotFoundError(
          f'man root {root} is not a folder; expected a folder laid out like /usr/share/man '
          '(<lang>/man1/*.gz), or man_roots=None to fetch the Debian packages')
  if english_roots is None:
    english_dirs = roots + [SYSTEM_MAN_DIR]
  else:
    english_dirs = [pathlib.Path(root) for root in english_roots]
  wanted = None if languages is None else {language_code(lang) for lang in languages}

  language_pages: dict[str, list[tuple[pathlib.Path, str]]] = collections.defaultdict(list)
  for root in roots:
    for lang_dir in language_dirs(root):
      lang = language_code(lang_dir.name)
      if lang == SOURCE_LANGUAGE or (wanted is not None and lang not in wanted):
        continue
      files = _page_files(lang_dir)
      language_pages[lang].extend(
          (path, path.relative_to(root).as_posix()) for path in files)
  if max_pages is not None:
    language_pages = {lang: pages[:max_pages] for lang, pages in language_pages.items()}
  if wanted is not None and wanted - set(language_pages):
    raise ValueError(f'languages {sorted(wanted - set(language_pages))} have no pages under '
                     f'{[str(r) for r in roots]}; found {sorted(language_pages)}')
  if not language_pages:
    raise FileNotFoundError(f'no translated pages (<lang>/man*/*) under {[str(r) for r in roots]}')
  english = EnglishPages(english_dirs)
  if not len(english):
    raise FileNotFoundError(f'no English pages (man*/*) under {[str(r) for r in english_dirs]}')

  tally = layout.Tally(FILE_REASONS)
  pairs, counts, pages_of = _collect(dict(sorted(language_pages.items())), english, min_words,
                                     ratio, tally)
  blocks_kept = sum(len(v) for v in pairs.values())
  if counts['blocks_read'] != blocks_kept + tally.entries_skipped():
    raise RuntimeError(
        f'bookkeeping error: read {counts["blocks_read"]} blocks but kept {blocks_kept} and '
        f'skipped {tally.entries_skipped()} ({dict(tally.counts)}); this is a bug in {__name__}')
  if counts['pages_read'] != counts['pages_used'] + tally.files_skipped():
    raise RuntimeError(
        f'bookkeeping error: {counts["pages_read"]} pages but {counts["pages_used"]} used and '
        f'{tally.files_skipped()} skipped; this is a bug in {__name__}')

  held_out = None
  if split_by == 'page':
    held_out = lambda english: all(is_heldout_page(key, validation_fraction)
                                   for key in pages_of[english])
  by_split, mono = layout.split_corpus(pairs, validation_fraction, held_out=held_out)
  pages = sorted(set().union(*pages_of.values())) if pages_of else []
  manifest = {
      'name': CORPUS_NAME,
      'source': 'man pages under ' + ', '.join(str(r) for r in roots) + '; English from '
                + ', '.join(str(r) for r in english_dirs),
      'languages': list(by_split),
      'pairs': {f'{SOURCE_LANGUAGE}-{lang}': {s: len(splits[s]) for s in SPLITS}
                for lang, splits in by_split.items()},
      'mono': {lang: {s: len(mono[lang][s]) for s in SPLITS} for lang in sorted(mono)},
      'total_pairs': {s: sum(len(splits[s]) for splits in by_split.values()) for s in SPLITS},
      'skipped': dict(sorted(tally.counts.items())),
      'skipped_examples': tally.examples,
      'file_reasons': list(FILE_REASONS),
      'totals': {'files_read': counts['pages_read'], 'files_used': counts['pages_used'],
                 'files_skipped': tally.files_skipped(), 'entries_read': counts['blocks_read'],
                 'entries_kept': blocks_kept, 'entries_skipped': tally.entries_skipped()},
      'validation_fraction': validation_fraction,
      'split_by': split_by,
      'heldout_pages': [k for k in pages if is_heldout_page(k, validation_fraction)]
                       if split_by == 'page' else [],
      'min_words': min_words,
      'ratio': list(ratio),
      'max_pages': max_pages,
  }
  layout.write_corpus(pathlib.Path(out_dir), by_split, mono, manifest)
  return manifest
