"""troff (man-page source) -> text blocks: escapes, requests, macros, and the block split.

What `parse_page` keeps and drops (the man-page corpus, `amber_jax.corpora.manpages`, pairs
the blocks of an English page with those of its translation; DATA.md §2):

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

Pages are decoded line by line (`decode_page`): bytes that are not UTF-8 become U+FFFD and
their lines are reported, so a caller can skip only the blocks on those lines.
"""

from __future__ import annotations

import dataclasses
import gzip
import pathlib
import re

from amber_jax.corpora.layout import collapse_whitespace

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
_LETTER_OR_DIGIT_RE = re.compile(r'[^\W_]')


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

