"""Debian man-page translations (English <-> 16 languages) -> English-X paragraph pairs.

The translated pages come from Debian's `manpages-<lang>` packages (GPL-3+), fetched with
`apt-get download` and unpacked with `dpkg-deb -x` into a cache folder outside git
(`fetch_packages`; no root needed). Most are made with po4a and keep the English troff structure,
so a page and its translation split into the same sequence of blocks. Rules (DATA.md §2):

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
- troff -> text (`parse_page`): comments (`.\\"`, `\\"`, `\\#`), macro definitions
  (`.de` ... `..`), `.ig` blocks, tables (`.TS` ... `.TE`), conditionals (`.if/.ie/.el`, with
  their `\\{ ... \\}` bodies) and every other request (`.TH .nf .fi .in .br .RS .RE .EX .EE .IX
  .UR` ...) are dropped; text macros (`.B .I .SM .SB`) keep their arguments joined by spaces and
  the alternating-font ones (`.BR .IR .RB .BI .IB .RI`) joined without spaces, as troff prints
  them; escapes are rendered (`\\-` -> `-`, `\\(em` -> an em dash, `\\e` -> a backslash,
  `\\*(lq` and `.ds` strings, `\\[u00E9]` ...) or removed (fonts, sizes, motions, registers).
  A `.so` line inside a longer page is ignored. Whitespace is collapsed.
- Blocks: each `.SH .SS .PP .LP .P .TP .IP .HP` starts one (`.LP` and `.P` are the kind `PP`),
  and so does `.sp` (kind `sp`): DocBook-made pages (systemd, ...) separate their paragraphs with
  `.sp` alone, which would otherwise give section-long blocks (this adds ~10% pairs). The header
  text of `.SH/.SS` is a block of its own, and text after a header before any paragraph macro is
  a block of kind `text`. A `.TP` block holds its tag and its body; an `.IP` block starts with its
  tag when the tag has a letter or digit (bullets are dropped).
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
import dataclasses
import gzip
import pathlib
import re
import shutil
import subprocess
import zlib
from collections.abc import Sequence

from amber_jax import paths
from amber_jax.corpora import layout
from amber_jax.corpora.django_po import normalize_language
from amber_jax.corpora.layout import SOURCE_LANGUAGE, SPLITS, collapse_whitespace

CORPUS_NAME = 'manpages'
LANGUAGE_PACKAGES = (
    'manpages-de', 'manpages-fr', 'manpages-es', 'manpages-pl', 'manpages-ru', 'manpages-uk',
    'manpages-it', 'manpages-nl', 'manpages-pt-br', 'manpages-cs', 'manpages-sv', 'manpages-vi',
    'manpages-ja', 'manpages-zh', 'manpages-ro')
DEFAULT_PACKAGES = ('manpages',) + LANGUAGE_PACKAGES
SYSTEM_MAN_DIR = pathlib.Path('/usr/share/man')
MAN_SUBDIR = pathlib.Path('usr/share/man')  # Where a package's pages lie in its unpacked tree.
MAX_SO_HOPS = 4
DOWNLOAD_TIMEOUT_S = 900
EXTRACT_TIMEOUT_S = 300

# Reasons that count whole translated pages; every other reason counts block positions.
FILE_REASONS = ('redirect', 'no_english_page', 'unsupported_format', 'read_error',
                'structure_mismatch', 'no_pairs')

BLOCK_MACROS = {'SH': 'SH', 'SS': 'SS', 'PP': 'PP', 'LP': 'PP', 'P': 'PP', 'TP': 'TP',
                'IP': 'IP', 'HP': 'HP', 'sp': 'sp'}
_SPACED_MACROS = {'B', 'I', 'SM', 'SB'}  # Arguments joined with spaces.
_ALTERNATING_MACROS = {'BR', 'IR', 'RB', 'BI', 'IB', 'RI'}  # Joined without spaces.
_MDOC_MACROS = {'Dd', 'Sh', 'Ss', 'Pp', 'Nm', 'Xr'}

_NO_SPACE = '\x00'  # After a piece: join the next piece without a space (`\c`).
_GLUE = '\x01'  # Before a piece: join it to the previous one without a space (`.UE ,`).

# Named characters (`\(xx`, `\[xx]`, `\C'xx'`) that matter in running text; others are dropped.
NAMED_CHARS = {
    'em': '\u2014', 'en': '\u2013', 'hy': '-', 'mi': '-', 'aq': "'", 'dq': '"', 'lq': '\u201c',
    'rq': '\u201d', 'oq': '\u2018', 'cq': '\u2019', 'Fo': '\u00ab', 'Fc': '\u00bb',
    'fo': '\u2039', 'fc': '\u203a', 'bq': '\u201e', 'Bq': '\u201e', 'bu': '\u2022',
    'co': '\u00a9', 'rg': '\u00ae', 'tm': '\u2122', 'de': '\u00b0', 'mu': '\u00d7',
    'di': '\u00f7', 'pl': '+', 'eq': '=', '>=': '\u2265', '<=': '\u2264', '!=': '\u2260',
    '->': '\u2192', '<-': '\u2190', 'rs': '\\', 'ti': '~', 'ha': '^', 'ga': '`', 'ul': '_',
    'ru': '_', 'bv': '|', 'or': '|', 'sc': '\u00a7', 'ps': '\u00b6', 'dg': '\u2020',
    'lh': '\u261c', 'rh': '\u261e', 'at': '@', 'sh': '#', 'Do': '$', 'Eu': '\u20ac',
    'eu': '\u20ac', 'Po': '\u00a3', 'ct': '\u00a2', 'Ye': '\u00a5', 'sq': '\u25a1',
    'lB': '[', 'rB': ']', 'lC': '{', 'rC': '}', 'la': '\u27e8', 'ra': '\u27e9', '12': '\u00bd',
    '14': '\u00bc', '34': '\u00be', 'pc': '\u00b7', 'an': '-', 'ss': '\u00df', 'u-': '-',
    'r!': '\u00a1', 'r?': '\u00bf', 'if': '\u221e', 'pd': '\u2202', '+-': '\u00b1',
    'aa': '\u00b4', 'a"': '\u02dd', 'ad': '\u00a8', 'em-': '\u2014', 'ua': '\u2191',
    'da': '\u2193', '*a': '\u03b1', '*b': '\u03b2', '*g': '\u03b3', '*d': '\u03b4',
    '*m': '\u03bc', '*p': '\u03c0', '*l': '\u03bb', 'ap': '~', 'ci': '\u25cb',
}
# Predefined strings (`\*(xx`, `\*x`, `\*[xx]`); a page's own `.ds` definitions override them.
DEFAULT_STRINGS = {
    'lq': '\u201c', 'rq': '\u201d', 'L"': '\u201c', 'R"': '\u201d', 'C+': 'C++', 'Tm': '\u2122',
    'R': '\u00ae', 'Aq': "'", 'aq': "'", "C'": "'", 'C`': "'", 'PI': '\u03c0', 'Lq': '\u201c',
    'Rq': '\u201d', 'Ba': '|', 'Ne': '\u2260', 'Ge': '\u2265', 'Le': '\u2264', 'Gt': '>',
    'Lt': '<', 'Pm': '\u00b1', 'If': '\u221e', 'Na': 'NaN', 'Ok': '',
}
_SIMPLE_ESCAPES = {
    'e': '\\', 'E': '\\', '\\': '\\', '-': '-', '&': '', ' ': ' ', '~': ' ', '0': ' ', '|': '',
    '^': '', ',': '', '/': '', ':': '', '%': '', 'c': _NO_SPACE, "'": '\u00b4', '`': '`',
    '.': '.', 't': ' ', '{': '', '}': '', 'u': '', 'd': '', 'r': '', 'p': '', 'z': '',
    'a': '', '!': '', '_': '_', '"': '', '#': '', '?': '', ')': '',
}

# One troff name after an escape letter: `[long name]`, `(xx` or one character.
_NAME = r'(?:\[(?P<{0}b>[^\]]*)\]|\((?P<{0}p>..)|(?P<{0}c>.))'
_ESCAPE_RE = re.compile(
    r'\\(?:'
    r'f' + _NAME.format('f') +
    r'|s(?:[-+]?\(\d\d|\([-+]?\d\d|[-+]?\[[^\]]*\]|\[[-+]?[^\]]*\]|[-+]?\'[^\']*\'|[-+]?\d)'
    r'|\((?P<char>..)'
    r'|\[(?P<bracket>[^\]]*)\]'
    r'|\*' + _NAME.format('str') +
    r'|n[-+]?' + _NAME.format('reg') +
    r'|[mMFYgkV$]' + _NAME.format('misc') +
    r'|C(?P<cq>.)(?P<cname>.*?)(?P=cq)'
    r'|[hvwlLoDXZbxNABRHSO](?P<dq>.)(?P<darg>.*?)(?P=dq)'
    r'|(?P<other>.)'
    r')', re.S)
_COMMENT_RE = re.compile(r'\\\\|\\["#].*')
_CONTROL_RE = re.compile(r"[.'][ \t]*(?P<name>[^ \t]*)[ \t]*(?P<args>.*)")
_WORD_RE = re.compile(r'\w+')
_LETTER_OR_DIGIT_RE = re.compile(r'[^\W_]')


class FetchError(RuntimeError):
  """`apt-get download` or `dpkg-deb -x` is missing or failed."""


@dataclasses.dataclass
class Block:
  """One block of a page: its kind, text and the (1-based) lines it spans."""
  kind: str  # 'SH', 'SS', 'PP' (incl. .LP, .P), 'TP', 'IP', 'HP' or 'text'.
  line: int
  last_line: int
  pieces: list[str] = dataclasses.field(default_factory=list)

  @property
  def text(self) -> str:
    joined = ' '.join(self.pieces)
    joined = re.sub(f'{_NO_SPACE}\\s*', '', joined)
    joined = re.sub(f'\\s*{_GLUE}', '', joined)
    return collapse_whitespace(joined)


@dataclasses.dataclass
class Page:
  """A parsed page: its blocks, or why it has none of its own."""
  blocks: list[Block]
  redirect: str | None = None  # The target of a page that is only `.so target`.
  mdoc: bool = False  # Written with the mdoc macros (`.Dd`, `.Sh`), which are not parsed.


def decode_page(raw: bytes) -> tuple[str, set[int]]:
  """UTF-8 text of a page (bad bytes -> U+FFFD) and the 1-based lines that held bad bytes."""
  try:
    return raw.decode('utf-8'), set()
  except UnicodeDecodeError:
    # b'\n' never occurs inside a UTF-8 sequence, so the lines can be checked one by one.
    bad = {number for number, line in enumerate(raw.split(b'\n'), start=1)
           if line.decode('utf-8', errors='replace').encode('utf-8') != line}
    return raw.decode('utf-8', errors='replace'), bad


def read_page_bytes(path: pathlib.Path) -> bytes:
  """The troff source of a page file, gunzipped when its name ends in `.gz`."""
  raw = path.read_bytes()
  return gzip.decompress(raw) if path.name.endswith('.gz') else raw


def render_text(text: str, strings: dict[str, str] | None = None, _depth: int = 0) -> str:
  """troff text with escapes rendered (characters, strings) or removed (fonts, sizes, motions).

  `\\c` leaves a marker that `Block.text` uses to join the next piece without a space.
  """
  strings = DEFAULT_STRINGS if strings is None else strings

  def replace(m: re.Match) -> str:
    group = m.group
    if group('other') is not None:
      return _SIMPLE_ESCAPES.get(group('other'), group('other'))
    if group('char') is not None:
      return NAMED_CHARS.get(group('char'), '')
    if group('bracket') is not None:
      return _named_char(group('bracket'))
    if group('cname') is not None:
      return _named_char(group('cname'))
    name = group('strb') or group('strp') or group('strc')
    if name is not None:
      if _depth >= 8 or name not in strings:
        return ''
      return render_text(strings[name], strings, _depth + 1)
    return ''  # Fonts, sizes, registers, motions, colours, ...

  return _ESCAPE_RE.sub(replace, text)


def _named_char(name: str) -> str:
  """`\\[name]`: a named character, `u00E9`-style code points or `char233`."""
  if name in NAMED_CHARS:
    return NAMED_CHARS[name]
  m = re.fullmatch(r'u([0-9A-Fa-f]{4,6}(?:_[0-9A-Fa-f]{4,6})*)', name)
  if m:
    return ''.join(chr(int(code, 16)) for code in m.group(1).split('_'))
  m = re.fullmatch(r'char(\d+)', name)
  if m:
    return chr(int(m.group(1)))
  return ''


def split_arguments(args: str) -> list[str]:
  """A request's arguments as troff splits them: on spaces, `"..."` quoted (`""` is a quote)."""
  result, i, n = [], 0, len(args)
  while i < n:
    if args[i] in ' \t':
      i += 1
      continue
    if args[i] == '"':
      i += 1
      chars = []
      while i < n:
        if args[i] == '"':
          if i + 1 < n and args[i + 1] == '"':
            chars.append('"')
            i += 2
            continue
          i += 1
          break
        if args[i] == '\\' and i + 1 < n:
          chars.append(args[i:i + 2])
          i += 2
          continue
        chars.append(args[i])
        i += 1
      result.append(''.join(chars))
      continue
    start = i
    while i < n and args[i] not in ' \t':
      i += 2 if args[i] == '\\' and i + 1 < n else 1
    result.append(args[start:i])
  return result


def _logical_lines(text: str) -> list[tuple[int, int, str]]:
  """(first line, last line, text) with comments removed and `\\`-newline continuations joined."""
  result = []
  lines = text.split('\n')
  i = 0
  while i < len(lines):
    first, line = i + 1, lines[i]
    if line.startswith(('.\\"', '\'\\"', '.\\#')):
      i += 1
      continue
    line = _COMMENT_RE.sub(lambda m: m.group(0) if m.group(0) == '\\\\' else '', line)
    # A line ending in an odd number of backslashes continues on the next line.
    while (len(line) - len(line.rstrip('\\'))) % 2 == 1 and i + 1 < len(lines):
      i += 1
      line = line[:-1] + _COMMENT_RE.sub(
          lambda m: m.group(0) if m.group(0) == '\\\\' else '', lines[i])
    result.append((first, i + 1, line))
    i += 1
  return result


def parse_page(text: str) -> Page:
  """Splits troff source into blocks (see the module docstring for the rules)."""
  strings = dict(DEFAULT_STRINGS)
  blocks: list[Block] = []
  current: Block | None = None
  header_open = False  # An argument-less .SH/.SS waiting for its text line.
  skip_until: str | None = None  # '..' (macro definition, .ig) or 'TE' (table).
  brace_depth = 0  # Inside the `\{ ... \}` body of a conditional.
  requests: list[str] = []  # Names of the requests seen, to spot `.so`-only and mdoc pages.
  so_target = None
  has_text = False

  def add(piece: str, line: int, kind: str = 'text'):
    nonlocal current, header_open
    if current is None:
      current = Block(kind, line, line)
      blocks.append(current)
    current.pieces.append(piece)
    current.last_line = line
    if header_open:
      current, header_open = None, False

  for first, last, line in _logical_lines(text):
    if brace_depth:
      brace_depth += line.count('\\{') - line.count('\\}')
      brace_depth = max(brace_depth, 0)
      continue
    control = _CONTROL_RE.fullmatch(line) if line[:1] in ('.', "'") else None
    if skip_until is not None:
      if control and (control.group('name') == skip_until
                      or (skip_until == '..' and control.group('name').startswith('.'))):
        skip_until = None
      continue
    if control is None:
      if line.strip():
        has_text = True
        add(render_text(line, strings), last)
      continue
    name, args = control.group('name'), control.group('args')
    if name:
      requests.append(name)
    if name in ('if', 'ie', 'el', 'while'):
      brace_depth = max(line.count('\\{') - line.count('\\}'), 0)
      continue
    if name in ('de', 'de1', 'am', 'am1', 'ig'):
      skip_until = '..'
      continue
    if name == 'TS':
      skip_until = 'TE'
      continue
    if name == 'ds' or name == 'ds1':
      parts = args.split(None, 1)
      if parts:
        value = parts[1] if len(parts) > 1 else ''
        strings[parts[0]] = value[1:] if value.startswith('"') else value
      continue
    if name == 'so':
      so_target = args.strip()
      continue
    if name in BLOCK_MACROS:
      kind = BLOCK_MACROS[name]
      current = Block(kind, first, last)
      blocks.append(current)
      header_open = False
      if kind in ('SH', 'SS'):
        header = render_text(' '.join(split_arguments(args)), strings)
        if header.strip():
          current.pieces.append(header)
          current = None
        else:
          header_open = True
      elif kind == 'IP':
        tag = split_arguments(args)[:1]
        if tag:
          tag_text = render_text(tag[0], strings)
          if _LETTER_OR_DIGIT_RE.search(tag_text):
            current.pieces.append(tag_text)
      continue
    arguments = split_arguments(args)
    if name in _SPACED_MACROS or name in _ALTERNATING_MACROS or name in ('SY', 'OP', 'UE', 'ME'):
      if not arguments:
        continue
      rendered = [render_text(a, strings) for a in arguments]
      if name in _SPACED_MACROS or name == 'SY':
        piece = ' '.join(rendered)
      elif name == 'OP':
        piece = '[' + ' '.join(rendered) + ']'
      elif name in ('UE', 'ME'):
        piece = _GLUE + ''.join(rendered)
      else:
        piece = ''.join(rendered)
      has_text = True
      add(piece, last)
    # Every other request (.TH .nf .fi .in .br .RS .RE .EX .EE .IX .UR .MT ...) is dropped.
  mdoc = bool(_MDOC_MACROS.intersection(requests)) and 'Sh' in requests
  if so_target and not has_text and not blocks:
    return Page([], redirect=so_target)
  return Page(blocks, mdoc=mdoc)


def count_words(text: str) -> int:
  """Words (runs of letters, digits or underscores) in `text`."""
  return len(_WORD_RE.findall(text))


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
  if count_words(english) < min_words:
    return 'too_short'
  if english == translation:
    return 'untranslated'
  if not ratio[0] <= len(translation) / len(english) <= ratio[1]:
    return 'length_ratio'
  return None


# Fetching the packages.


def fetch_packages(cache_dir: str | pathlib.Path,
                   packages: Sequence[str] = DEFAULT_PACKAGES) -> pathlib.Path:
  """Downloads and unpacks Debian packages without root; returns the unpacked tree's root.

  `apt-get download` puts the `.deb` files into `cache_dir/debs` (packages already there are not
  downloaded again) and `dpkg-deb -x` unpacks each into `cache_dir/root` (once: a marker file
  `cache_dir/root/.unpacked-<deb name>` records it). The man pages are then under
  `<root>/usr/share/man`.

  Raises:
    FetchError: apt-get or dpkg-deb is missing, or a download or unpacking failed (its stderr is
      in the message).
  """
  cache_dir = pathlib.Path(cache_dir)
  debs_dir, root = cache_dir / 'debs', cache_dir / 'root'
  debs_dir.mkdir(parents=True, exist_ok=True)
  root.mkdir(parents=True, exist_ok=True)

  def deb_of(package: str) -> pathlib.Path | None:
    found = sorted(debs_dir.glob(f'{package}_*.deb'))
    return found[-1] if found else None

  missing = [p for p in packages if deb_of(p) is None]
  if missing:
    apt_get = shutil.which('apt-get')
    if apt_get is None:
      raise FetchError(
          f'apt-get not found, needed to download {missing}: run on Debian/Ubuntu, or put the '
          f'.deb files (e.g. from packages.debian.org) into {debs_dir} yourself')
    try:
      result = subprocess.run([apt_get, 'download', *missing], cwd=debs_dir, capture_output=True,
                              text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as error:
      raise FetchError(f'`apt-get download {" ".join(missing)}` took over {DOWNLOAD_TIMEOUT_S} '
                       's; check the network and retry') from error
    still_missing = [p for p in missing if deb_of(p) is None]
    if result.returncode != 0 or still_missing:
      raise FetchError(
          f'`apt-get download {" ".join(missing)}` (in {debs_dir}) failed with exit status '
          f'{result.returncode}; missing: {still_missing}. If it says "Unable to locate package", '
          f'run `sudo apt-get update` first. stderr:\n{result.stderr.strip()}')
  dpkg_deb = None
  for package in packages:
    deb = deb_of(package)
    marker = root / f'.unpacked-{deb.name}'
    if marker.exists():
      continue
    dpkg_deb = dpkg_deb or shutil.which('dpkg-deb')
    if dpkg_deb is None:
      raise FetchError(f'dpkg-deb not found, needed to unpack {deb}: install the `dpkg` package '
                       '(or unpack the .deb with `ar x` and tar yourself)')
    try:
      result = subprocess.run([dpkg_deb, '-x', str(deb), str(root)], capture_output=True,
                              text=True, timeout=EXTRACT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as error:
      raise FetchError(f'`dpkg-deb -x {deb} {root}` took over {EXTRACT_TIMEOUT_S} s') from error
    if result.returncode != 0:
      raise FetchError(f'`dpkg-deb -x {deb} {root}` failed with exit status {result.returncode} '
                       f'(delete {deb} to download it again). stderr:\n{result.stderr.strip()}')
    marker.touch()
  return root


def default_cache_dir() -> pathlib.Path:
  """Where `fetch_packages` keeps the packages by default: <cache>/packages/manpages."""
  return paths.cache_dir() / 'packages' / CORPUS_NAME


# Finding and reading pages.


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
  """Aligns every page; returns (pairs by language, counts of blocks/pages read and used)."""
  pairs = collections.defaultdict(list)
  seen = collections.defaultdict(set)
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
  return pairs, counts


def build_manpages_corpus(out_dir: str | pathlib.Path, *,
                          man_roots: Sequence[str | pathlib.Path] | None = None,
                          english_roots: Sequence[str | pathlib.Path] | None = None,
                          languages: Sequence[str] | None = None,
                          validation_fraction: float = 0.15, min_words: int = 4,
                          ratio: tuple[float, float] = (0.4, 3.0),
                          max_pages: int | None = None,
                          cache_dir: str | pathlib.Path | None = None) -> dict:
  """Builds the man-page corpus into `out_dir`, replacing any corpus there atomically.

  Args:
    out_dir: corpus folder to create (usually `paths.corpus_dir('manpages')`).
    man_roots: folders laid out like `/usr/share/man` whose `<lang>/man*/` subfolders hold the
      translated pages; None fetches `DEFAULT_PACKAGES` (`fetch_packages` into `cache_dir`) and
      reads `<root>/usr/share/man`.
    english_roots: folders with English `man*/` subfolders, searched in order; None means each man
      root, then `/usr/share/man`.
    languages: language codes (`de`, `pt-br`) or folder names (`pt_BR`) to read; None reads all.
    validation_fraction: share of distinct English blocks (with all of their translations) that
      go to the validation split.
    min_words: fewest English words for a pair to be kept.
    ratio: allowed (min, max) of characters translation / English.
    max_pages: read at most this many translated pages per language (in path order); None: all.
    cache_dir: package cache for `fetch_packages` when `man_roots` is None (default
      `<cache>/packages/manpages`, see `amber_jax.paths`).

  Returns:
    The manifest, as also written to `out_dir/manifest.json`.
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f'validation_fraction must be in [0, 1), got {validation_fraction}')
  if not 0 < ratio[0] <= ratio[1]:
    raise ValueError(f'ratio must be (min, max) with 0 < min <= max, got {ratio}')
  if man_roots is None:
    package_root = fetch_packages(cache_dir or default_cache_dir())
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
  pairs, counts = _collect(dict(sorted(language_pages.items())), english, min_words, ratio, tally)
  blocks_kept = sum(len(v) for v in pairs.values())
  if counts['blocks_read'] != blocks_kept + tally.entries_skipped():
    raise RuntimeError(
        f'bookkeeping error: read {counts["blocks_read"]} blocks but kept {blocks_kept} and '
        f'skipped {tally.entries_skipped()} ({dict(tally.counts)}); this is a bug in {__name__}')
  if counts['pages_read'] != counts['pages_used'] + tally.files_skipped():
    raise RuntimeError(
        f'bookkeeping error: {counts["pages_read"]} pages but {counts["pages_used"]} used and '
        f'{tally.files_skipped()} skipped; this is a bug in {__name__}')

  by_split, mono = layout.split_corpus(pairs, validation_fraction)
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
      'min_words': min_words,
      'ratio': list(ratio),
      'max_pages': max_pages,
  }
  layout.write_corpus(pathlib.Path(out_dir), by_split, mono, manifest)
  return manifest
