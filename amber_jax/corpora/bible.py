"""English-Spanish Bible verses, word-tokenised, split by whole books: a word-alignment test bed.

Sources are Debian packages, fetched with `apt-get download` and unpacked with `dpkg-deb -x`
(`debian.fetch_packages`, no root) into `<cache>/packages/bible`:

- `sword-text-web`: the World English Bible (SWORD module `engWEB2015eb`, NRSVA versification),
- `sword-text-sparv`: the Reina-Valera 1909 (`spaRV1909eb`, KJV versification),
- `dict-freedict-eng-spa` and `dict-freedict-spa-eng`: FreeDict's dictd dictionaries, read by
  `read_dictd` / `load_dictionary` for the proxy gold links (`amber_jax.eval.proxy_gold`).

The modules are read with pip `pysword`. A verse's OSIS markup is removed by `clean_osis`: notes,
titles (but the psalms' canonical ones) and speaker labels are dropped with their text, the WEB's
glossary (after Revelation) is cut, and every other tag becomes a space (a word is never split
by one: the only tags inside words are RV1909's `<transChange>` clitics,
`haciéndo<transChange>les`, which are joined).

Verses are paired by key (OSIS book, chapter, verse) where both texts are non-empty
(`pair_verses`). The WEB module's text follows the KJV numbering nearly everywhere (Rev 13:1,
3 John 14, Mal 4 are where the KJV has them); its canonical psalm titles are kept (in verse 1, as
RV1909 has them), and the Deuterocanon has no Spanish side. But RV1909's text follows the Hebrew
chapter breaks in a few places (Num 13, 1 Sam 24, Job 39-40, Jonah 2, ...: its Jonah 1:17 is
empty and its Jonah 2:1 is the KJV's 1:17), and elsewhere merges verses near a chapter's end
(1 Chr 21, 2 Chr 33). `drifted_keys` finds those verses: around each verse (`DRIFT_WINDOW` verses
either side), the dictionary, name and number matches between English verse v and Spanish verse
v + o are counted for o in -`DRIFT_OFFSETS`..`DRIFT_OFFSETS`; when some o != 0 beats o = 0 by more
than `DRIFT_MARGIN` matches, the pair is skipped as `versification_drift` (~200 verses, none in
the held-out books). (The modules' Strong's tags cannot do this: the WEB's are shifted where its
text is not, e.g. Gen 32.)

Split (`split_by_books`): the verses of `HELDOUT_BOOKS` go to `heldout.txt`; the rest, shuffled
with `seed`, give the first `train_limit` to `train.txt` (written in canon order). Each line is
`english tokens<TAB>spanish tokens` (`tokenize`), the input of `amber-jax align --pairs`; the
`.refs` files name each line's verse (`Ruth.1.1`).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
import functools
import gzip
import html
import json
import pathlib
import random
import re
import unicodedata

from amber_jax import paths
from amber_jax.corpora import debian, layout

BIBLE_PACKAGES = ('sword-text-web', 'sword-text-sparv')
DICT_PACKAGES = ('dict-freedict-eng-spa', 'dict-freedict-spa-eng')
MODULES = {'en': 'engWEB2015eb', 'es': 'spaRV1909eb'}
SWORD_SUBDIR = pathlib.PurePosixPath('usr/share/sword')
DICTD_SUBDIR = pathlib.PurePosixPath('usr/share/dictd')
# Ruth (85 verses, OT narrative), Mark (678, gospel), Romans (433, epistle; 430 in the WEB, whose
# Rom 16:25-27 is empty): 1,193 verse pairs.
HELDOUT_BOOKS = ('Ruth', 'Mark', 'Rom')
TRAIN_LIMIT = 8000
SEED = 0
DRIFT_WINDOW = 2
DRIFT_OFFSETS = 3
DRIFT_MARGIN = 2

Key = tuple[str, int, int]  # (OSIS book, chapter, verse)

TOKEN = re.compile(r"\w+(?:['’]\w+)?|[^\w\s]")
_GLOSSARY = re.compile(r'<div\b[^>]*\btype="glossary".*', re.S)
_DROPPED = re.compile(r'<(note|speaker)\b[^>]*(?<!/)>.*?</\1\s*>', re.S)
_TITLE = re.compile(r'<title\b(?![^>]*canonical="true")[^>]*(?<!/)>.*?</title\s*>', re.S)
_CLITIC = re.compile(r'(?<=\w)<transChange\b[^>]*>(?=\w)')
_TAG = re.compile(r'<[^>]*>')
_DICTD_B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'


def default_cache_dir() -> pathlib.Path:
  """Where the packages are kept: <cache>/packages/bible."""
  return paths.cache_dir() / 'packages' / 'bible'


def tokenize(text: str) -> list[str]:
  """Words (`\\w+`, with one inner apostrophe: `Yahweh’s`, `don't`) and punctuation marks, one
  token each."""
  return TOKEN.findall(text)


def fold(word: str) -> str:
  """Lowercase without accents: `Jesús` -> 'jesus'."""
  decomposed = unicodedata.normalize('NFD', word.lower())
  return ''.join(c for c in decomposed if not unicodedata.combining(c))


def clean_osis(raw: str) -> str:
  """A verse's plain text from its OSIS markup (see the module docstring)."""
  text = _GLOSSARY.sub('', raw)
  text = _TITLE.sub(' ', _DROPPED.sub(' ', text))
  text = _CLITIC.sub('', text)
  text = html.unescape(_TAG.sub(' ', text))
  return ' '.join(text.split())


# Reading the SWORD modules.


def read_module(sword_dir: str | pathlib.Path, module: str) -> tuple[dict[Key, str], dict]:
  """Every verse (chapter >= 1, verse >= 1) of a SWORD module: ({key: raw OSIS}, its conf)."""
  from pysword.modules import SwordModules  # pylint: disable=import-outside-toplevel

  modules = SwordModules(str(sword_dir))
  confs = modules.parse_modules()
  if module not in confs:
    raise FileNotFoundError(f'SWORD module {module} not under {sword_dir} (found {sorted(confs)})')
  bible = modules.get_bible_from_module(module)
  if hasattr(bible, '_decompressed_text'):
    # pysword decompresses a whole book for every verse it reads; keep the last block.
    # pylint: disable-next=protected-access
    bible._decompressed_text = functools.lru_cache(maxsize=2)(bible._decompressed_text)
  verses = {}
  structure = bible.get_structure().get_books()
  for testament in ('ot', 'nt'):
    for book in structure.get(testament, []):
      for chapter, n_verses in enumerate(book.chapter_lengths, 1):
        for verse in range(1, n_verses + 1):
          verses[(book.osis_name, chapter, verse)] = bible.get(
              books=[book.osis_name], chapters=[chapter], verses=[verse], clean=False)
  return verses, dict(confs[module])


def pair_verses(english: Mapping[Key, str], spanish: Mapping[Key, str],
                skipped: collections.Counter | None = None) -> dict[Key, tuple[str, str]]:
  """{key: (english, spanish)} plain texts where both exist and are non-empty, in `english`'s
  order; raw OSIS in, clean text out. Skip counts go into `skipped` (`missing_es`,
  `missing_en`, `empty`)."""
  skipped = collections.Counter() if skipped is None else skipped
  skipped['missing_en'] += sum(1 for key in spanish if key not in english)
  pairs = {}
  for key, raw_en in english.items():
    if key not in spanish:
      skipped['missing_es'] += 1
      continue
    en, es = clean_osis(raw_en), clean_osis(spanish[key])
    if not tokenize(en) or not tokenize(es):
      skipped['empty'] += 1
      continue
    pairs[key] = (en, es)
  return pairs


def _translations(text: str, dictionary: Mapping[str, set[str]]) -> set[str]:
  """What an English verse's words may be in Spanish: dictionary translations, and its numbers
  and capitalised words accent-folded."""
  out = set()
  for word in tokenize(text):
    if word[0].isalnum():
      out |= dictionary.get(word.lower(), set())
      if word[0].isupper() or word.isdigit():
        out.add(fold(word))
  return out


def _spanish_words(text: str) -> set[str]:
  words = [w for w in tokenize(text) if w[0].isalnum()]
  return {w.lower() for w in words} | {fold(w) for w in words}


def drifted_keys(english: Mapping[Key, str], spanish: Mapping[Key, str],
                 dictionary: Mapping[str, set[str]]) -> set[Key]:
  """Keys of `english` (clean text) whose verse lies among Spanish verses (clean text, all of
  them: not only the paired ones) numbered with an offset (see the module docstring)."""
  chapters = collections.defaultdict(list)
  for key in english:
    chapters[key[:2]].append(key[2])
  offsets = range(-DRIFT_OFFSETS, DRIFT_OFFSETS + 1)
  drifted = set()
  for (book, chapter), verses in chapters.items():
    wanted = {v + o for v in verses for o in offsets}
    words = {v: _spanish_words(spanish.get((book, chapter, v), '')) for v in wanted}
    matches = {}
    for v in verses:
      translations = _translations(english[(book, chapter, v)], dictionary)
      matches[v] = {o: len(translations & words[v + o]) for o in offsets}
    for v in verses:
      window = [u for u in verses if abs(u - v) <= DRIFT_WINDOW]
      total = {o: sum(matches[u][o] for u in window) for o in offsets}
      if max(total[o] for o in offsets if o) > total[0] + DRIFT_MARGIN:
        drifted.add((book, chapter, v))
  return drifted


def split_by_books(keys: Sequence[Key], heldout_books: Iterable[str],
                   train_limit: int | None = TRAIN_LIMIT, seed: int = SEED
                   ) -> tuple[list[Key], list[Key]]:
  """(train keys, held-out keys), both in the order of `keys`: held-out = every key of a book in
  `heldout_books`; train = the first `train_limit` of the others after a seeded shuffle (None:
  all of them)."""
  heldout_books = set(heldout_books)
  heldout = [k for k in keys if k[0] in heldout_books]
  rest = [k for k in keys if k[0] not in heldout_books]
  if train_limit is not None and train_limit < len(rest):
    chosen = list(rest)
    random.Random(seed).shuffle(chosen)
    chosen = set(chosen[:train_limit])
    rest = [k for k in rest if k in chosen]
  return rest, heldout


def pair_line(english: str, spanish: str) -> str:
  """`en tokens<TAB>es tokens`: the `--pairs` format of `amber-jax align`."""
  return ' '.join(tokenize(english)) + '\t' + ' '.join(tokenize(spanish))


def ref(key: Key) -> str:
  return f'{key[0]}.{key[1]}.{key[2]}'


def build_bible_corpus(out_dir: str | pathlib.Path, *, train_limit: int | None = TRAIN_LIMIT,
                       heldout_books: Sequence[str] = HELDOUT_BOOKS, seed: int = SEED,
                       cache_dir: str | pathlib.Path | None = None,
                       sword_dir: str | pathlib.Path | None = None,
                       dictionary: Mapping[str, set[str]] | None = None,
                       layout_dir: str | pathlib.Path | None = None) -> dict:
  """Writes `train.txt`, `heldout.txt` (+ `.refs`) and `manifest.json` into `out_dir`.

  Args:
    out_dir: folder to write (created; the four files in it are replaced).
    train_limit: most training pairs (see `split_by_books`); None keeps every other verse.
    heldout_books: OSIS names (`Ruth`, `Mark`, `Rom`) of the books held out whole.
    seed: of the shuffle that picks the training verses.
    cache_dir: package cache (default `default_cache_dir()`); used when `sword_dir` is None.
    sword_dir: a SWORD library (with `mods.d/`) holding both modules; None fetches the packages.
    dictionary: English -> Spanish words for `drifted_keys`; None: `load_dictionary` (fetched
      into `cache_dir`).
    layout_dir: also write the same pairs as a training corpus here, in the layout every builder
      writes (`amber_jax.corpora.layout`: parallel/en-es/train.tsv = train.txt, validation.tsv =
      heldout.txt, tokens joined by spaces as the aligner will see them; mono/ derived).

  Returns:
    The manifest.
  """
  debs = []
  if sword_dir is None:
    root = debian.fetch_packages(cache_dir or default_cache_dir(), BIBLE_PACKAGES)
    sword_dir = root / SWORD_SUBDIR
    debs = sorted(p.name[len('.unpacked-'):] for p in root.glob('.unpacked-*'))
  english, en_conf = read_module(sword_dir, MODULES['en'])
  spanish, es_conf = read_module(sword_dir, MODULES['es'])
  books = {k[0] for k in english} & {k[0] for k in spanish}
  unknown = sorted(set(heldout_books) - books)
  if unknown:
    raise ValueError(f'held-out books {unknown} are not in both modules; OSIS names are e.g. '
                     f'{sorted(books)[:12]}')
  skipped = collections.Counter()
  pairs = pair_verses(english, spanish, skipped)
  if dictionary is None:
    dictionary = load_dictionary(cache_dir=cache_dir)
  drifted = drifted_keys({k: en for k, (en, _) in pairs.items()},
                         {k: clean_osis(raw) for k, raw in spanish.items()}, dictionary)
  skipped['versification_drift'] = len(drifted)
  drifted_chapters = collections.Counter(f'{k[0]}.{k[1]}' for k in drifted)
  pairs = {k: pair for k, pair in pairs.items() if k not in drifted}
  train, heldout = split_by_books(list(pairs), heldout_books, train_limit, seed)
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  for name, keys in (('train', train), ('heldout', heldout)):
    _write(out_dir / f'{name}.txt', [pair_line(*pairs[k]) for k in keys])
    _write(out_dir / f'{name}.refs', [ref(k) for k in keys])
  per_book = collections.Counter(k[0] for k in heldout)
  manifest = {
      'name': 'bible-en-es',
      'sources': {lang: {'module': MODULES[lang], 'description': conf.get('description'),
                         'version': conf.get('version'),
                         'versification': conf.get('versification')}
                  for lang, conf in (('en', en_conf), ('es', es_conf))},
      'packages': list(BIBLE_PACKAGES),
      'debs': debs,  # the .deb files unpacked into the package cache (with their versions)
      'verses': {'en': len(english), 'es': len(spanish), 'paired': len(pairs)},
      'skipped': dict(sorted(skipped.items())),
      'drifted_chapters': dict(sorted(drifted_chapters.items())),
      'dictionary_packages': list(DICT_PACKAGES),
      'heldout_books': {book: per_book[book] for book in heldout_books},
      'counts': {'train': len(train), 'heldout': len(heldout),
                 'train_available': len(pairs) - len(heldout)},
      'train_limit': train_limit,
      'seed': seed,
      'files': {'train': 'train.txt', 'heldout': 'heldout.txt'},
  }
  _write(out_dir / 'manifest.json', [json.dumps(manifest, indent=2, ensure_ascii=False)])
  if layout_dir is not None:
    lines = {'train': [pair_line(*pairs[k]) for k in train],
             'validation': [pair_line(*pairs[k]) for k in heldout]}
    by_split = {'es': {split: [tuple(line.split('\t')) for line in split_lines]
                       for split, split_lines in lines.items()}}
    mono = {lang: {split: list(dict.fromkeys(p[side] for p in by_split['es'][split]))
                   for split in layout.SPLITS} for side, lang in enumerate(('en', 'es'))}
    layout.write_corpus(pathlib.Path(layout_dir), by_split, mono, {
        **manifest, 'languages': ['es'],
        'pairs': {'en-es': {split: len(by_split['es'][split]) for split in layout.SPLITS}},
        'mono': {lang: {split: len(m[split]) for split in layout.SPLITS}
                 for lang, m in mono.items()},
        'skipped_examples': [], 'split_by': 'book'})
  return manifest


def _write(path: pathlib.Path, lines: Sequence[str]):
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(''.join(line + '\n' for line in lines), encoding='utf-8')
  tmp.replace(path)


# FreeDict dictionaries (dictd format: `.index` + `.dict` or dictzip `.dict.dz`).


def dictd_number(text: str) -> int:
  """A dictd index offset or length (base 64, `A`=0 ... `/`=63)."""
  value = 0
  for char in text:
    value = value * 64 + _DICTD_B64.index(char)
  return value


def read_dictd(index_path: str | pathlib.Path) -> dict[str, set[str]]:
  """{headword (lowercase): single-word translations (lowercase)} of a dictd dictionary.

  The `.dict.dz` (gzip-readable dictzip) or `.dict` beside the index holds the entries: a first
  line with the headword (and ` /pronunciation/`), then lines of comma- or semicolon-separated
  translations, optionally numbered (`1. bond, tie`). Multi-word headwords and translations,
  phrases run together (`_run_together`) and the `00database...` entries are left out.
  """
  index_path = pathlib.Path(index_path)
  base = index_path.with_suffix('')
  data_path = base.with_name(base.name + '.dict.dz')
  if data_path.exists():
    data = gzip.open(data_path).read()  # pylint: disable=consider-using-with
  else:
    data = base.with_name(base.name + '.dict').read_bytes()
  entries = collections.defaultdict(set)
  for line in index_path.read_text(encoding='utf-8').splitlines():
    parts = line.split('\t')
    if len(parts) < 3 or parts[0].startswith('00database') or parts[0].startswith('00-database'):
      continue
    offset, length = dictd_number(parts[1]), dictd_number(parts[2])
    lines = data[offset:offset + length].decode('utf-8', errors='replace').splitlines()
    head, _, pronunciation = (lines[0] if lines else '').partition(' /')
    head = head.strip().lower()
    if not _single_word(head) or _run_together(head, pronunciation):
      continue
    for text in lines[1:]:
      text = re.sub(r'^\s*\d+\.\s*', '', text)
      for word in re.split(r'[,;]', text):
        word = word.strip().lower()
        if _single_word(word):
          entries[head].add(word)
  return dict(entries)


def _run_together(head: str, pronunciation: str) -> bool:
  """Whether an entry is a phrase whose spaces were lost: FreeDict eng-spa 0.3.1 files `the day
  before yesterday` as `the /ðdeibfɔːrjestədiː/` -> `anteayer`. Its pronunciation gives it away:
  more than two sounds longer than the headword's letters."""
  sounds = re.sub(r'[ˈˌː/\s]', '', pronunciation)
  return len(sounds) > len(head) + 2


def _single_word(text: str) -> bool:
  return len(tokenize(text)) == 1 and bool(re.match(r'\w', text))


def load_dictionary(dictd_dir: str | pathlib.Path | None = None, *,
                    cache_dir: str | pathlib.Path | None = None) -> dict[str, set[str]]:
  """English -> Spanish words: eng-spa's entries plus spa-eng's, reversed.

  Args:
    dictd_dir: folder with `freedict-eng-spa.index` (and `freedict-spa-eng.index`, optional);
      None fetches `DICT_PACKAGES` into `cache_dir` (default `default_cache_dir()`).
  """
  if dictd_dir is None:
    dictd_dir = debian.fetch_packages(cache_dir or default_cache_dir(), DICT_PACKAGES) / \
        DICTD_SUBDIR
  dictd_dir = pathlib.Path(dictd_dir)
  en_es = collections.defaultdict(set)
  for head, words in read_dictd(dictd_dir / 'freedict-eng-spa.index').items():
    en_es[head] |= words
  reverse = dictd_dir / 'freedict-spa-eng.index'
  if reverse.exists():
    for head, words in read_dictd(reverse).items():
      for word in words:
        en_es[word].add(head)
  return dict(en_es)
