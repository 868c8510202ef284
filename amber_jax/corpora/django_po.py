"""The translation catalogs (.po) of Django and its apps -> English-X pairs and monolingual text.

The catalogs ship inside the `django` and `wagtail` pip packages (both BSD-3; `PACKAGES`), so a
user builds this corpus from what they installed; nothing is downloaded and no corpus text lives
in git. Rules (DATA.md §1):

- Skipped entries: obsolete, fuzzy, empty msgid or msgstr, msgstr equal to the msgid, an English
  side with fewer than `min_words` words once format placeholders are stripped (reason
  `mostly_placeholders` when the entry has placeholders, `too_short` when it has none), and a
  translation that is nothing but placeholders. Placeholders are `%(name)s`, `%s`, `%d`, `{0}`,
  `{name}`, `<tag>` and `&amp;`-style entities (`words.PLACEHOLDER_RE`); the keep rules are
  `po.entry_skip_reason`.
- Kept text is the catalog text as-is, with every run of whitespace (tabs, newlines, no-break
  spaces) collapsed into one space: placeholders only decide what is kept, they are not removed,
  so a sentence stays grammatical (`words.PLACEHOLDER_RE.sub` removes them for code that wants to).
- Plural entries pair the singular msgid with `msgstr[0]` (the singular, or the only form in
  languages such as Japanese); the plural msgid is not used.
- A pair already kept for the same language (the same string in two catalogs or two contexts) is
  a `duplicate` skip.
- Locale folders are normalised to lowercase BCP-47-like codes (`pt_BR` -> `pt-br`, `zh_Hans` ->
  `zh-hans`) and checked against `django.conf.locale.LANG_INFO`; the `en` catalogs (and the
  English variants `en-au`, `en-gb`) are the source language and are skipped whole.
- Train/validation: by whole app, so validation measures text from catalogs never trained on. The
  installed catalogs' validation split is the Django apps in `HELDOUT_APPS` (admindocs, gis,
  postgres and the small ones: 96 distinct English sentences, against 1,239 in Django's
  conf/locale, admin and auth and in Wagtail); an English sentence that is also in a training app
  stays in train. An installed app is named by
  its dotted path (`django/contrib/gis/locale` -> `django.contrib.gis`), a locale root given by
  path by the folder above it (`gis/locale` -> `gis`). With `heldout_apps=()`
  (and by default for other locale roots) the split is by a sha1 hash of the English sentence
  instead; either way an English sentence and all of its translations fall in the same split.

Every entry read is either kept or counted in the manifest under a reason, with up to
`MAX_EXAMPLES` examples per reason naming the file and line; whole files can be skipped too
(`FILE_REASONS`). The builder checks `read == kept + skipped` before it writes anything.

Layout under `out_dir` (what `layout.read_pairs`, `layout.read_mono` and the seqio tasks read):

    manifest.json
    parallel/en-<xx>/train.tsv, validation.tsv   one `english<TAB>translation` a line, UTF-8
    mono/<lang>/train.txt, validation.txt        one sentence a line, every language incl. `en`
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
import importlib.metadata
import importlib.util
import pathlib
import re

import django
from django.conf.locale import LANG_INFO
import polib

from amber_jax.corpora import layout, po
from amber_jax.corpora.layout import collapse_whitespace, SOURCE_LANGUAGE, SPLITS

CORPUS_NAME = 'django'
CATALOG_NAME = 'django.po'  # The file read in every <root>/<lang>/LC_MESSAGES/ folder.

# The validation split of the installed catalogs: whole apps, never trained on.
HELDOUT_APPS = tuple(f'django.contrib.{app}' for app in (
    'admindocs', 'contenttypes', 'flatpages', 'gis', 'humanize', 'postgres', 'redirects', 'sites'))
PACKAGES = ('django', 'wagtail')  # Whose catalogs are read by default: Django's and its apps'.
DISTRIBUTIONS = {'rest_framework': 'djangorestframework', 'django_filters': 'django-filter',
                 'taggit': 'django-taggit', 'treebeard': 'django-treebeard'}  # pip names

# Reasons that count whole files; every other reason counts entries.
FILE_REASONS = ('source_language', 'unknown_language', 'parse_error', 'empty_catalog')


def normalize_language(locale_dir_name: str) -> str:
  """Django locale folder name -> lowercase BCP-47-like code: `pt_BR` -> `pt-br`."""
  return locale_dir_name.replace('_', '-').replace('@', '-').lower()


def installed_source(packages: Sequence[str] = PACKAGES) -> str:
  """What the manifest's `source` says of the installed packages: `django==5.2.19, ...`."""
  return ', '.join(f'{p}=={importlib.metadata.version(DISTRIBUTIONS.get(p, p))}'
                   for p in packages)


def is_current(manifest: dict) -> bool:
  """Whether a built corpus is what `build_django_corpus()` would build now from the installed
  packages (the same catalogs and held-out apps)."""
  return (manifest.get('source') == installed_source()
          and manifest.get('heldout_apps') == sorted(HELDOUT_APPS))


def package_locale_roots(packages: Sequence[str] = PACKAGES) -> list[tuple[str, pathlib.Path]]:
  """(app, locale folder) of every installed package's catalogs, found without importing it:
  each `locale` folder under the package holding `<lang>/LC_MESSAGES/django.po`, named by its
  app's dotted path (`django/contrib/gis/locale` -> `django.contrib.gis`)."""
  found = []
  for package in packages:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
      raise FileNotFoundError(f'the package {package!r} is not installed (pip install {package}); '
                              'its translation catalogs are read from where pip put it.')
    folder = pathlib.Path(next(iter(spec.submodule_search_locations)))
    for root in sorted(folder.glob('**/locale')):
      if any(root.glob(f'*/LC_MESSAGES/{CATALOG_NAME}')):
        found.append(('.'.join(root.parent.relative_to(folder.parent).parts), root))
  return found


def app_name(root: pathlib.Path) -> str:
  """The app of a locale root given by path: the folder above it (`gis/locale` -> `gis`)."""
  return root.parent.name


def _catalog_files(roots: Sequence[tuple[str, pathlib.Path]]
                   ) -> list[tuple[str, str, pathlib.Path]]:
  """(app, locale folder name, catalog path) for every `<root>/<lang>/LC_MESSAGES/django.po`."""
  found = []
  for app, root in roots:
    if not root.is_dir():
      raise FileNotFoundError(
          f'locale root {root} is not a folder; expected <root>/<lang>/LC_MESSAGES/{CATALOG_NAME} '
          'folders (pass existing roots, or None for the installed Django catalogs)')
    for path in sorted(root.glob(f'*/LC_MESSAGES/{CATALOG_NAME}')):
      found.append((app, path.parent.parent.name, path))
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
  """Reads every catalog; returns ({lang: [(en, xx)]} in read order, {en: apps it is kept in},
  entries read, files used)."""
  pairs = collections.defaultdict(list)  # lang -> [(english, translation)]
  english_apps = collections.defaultdict(set)
  seen = collections.defaultdict(set)
  entries_read = files_used = 0
  for app, dir_name, path in catalogs:
    file = display(path)
    lang = normalize_language(dir_name)
    if lang == SOURCE_LANGUAGE or lang.startswith(f'{SOURCE_LANGUAGE}-'):
      # English and its regional variants (en-au, en-gb): English-to-English is no translation.
      tally.skip('source_language', file, None, dir_name)
      continue
    if lang not in known_languages:
      tally.skip('unknown_language', file, None,
                 f'{dir_name} -> {lang} is not in django.conf.locale.LANG_INFO')
      continue
    text, bad_lines = po.decode_catalog(path.read_bytes())
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
      reason = po.entry_skip_reason(entry, min_words)
      if reason is None:
        pair = (collapse_whitespace(entry.msgid), collapse_whitespace(po.entry_translation(entry)))
        english_apps[pair[0]].add(app)
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
  return pairs, english_apps, entries_read, files_used


def build_django_corpus(out_dir: str | pathlib.Path, *, validation_fraction: float = 0.15,
                        min_words: int = 3,
                        locale_roots: Sequence[str | pathlib.Path] | None = None,
                        heldout_apps: Sequence[str] | None = None,
                        packages: Sequence[str] = PACKAGES) -> dict:
  """Builds the Django catalog corpus into `out_dir`, replacing any corpus there atomically.

  Args:
    out_dir: corpus folder to create (usually `paths.corpus_dir('django')`).
    validation_fraction: share of distinct English sentences (with all of their translations)
      that go to the validation split, when it is not by app.
    min_words: fewest English words, placeholders not counted, for an entry to be kept.
    locale_roots: folders laid out like Django's (`<root>/<lang>/LC_MESSAGES/django.po`); None
      reads the installed `packages`.
    heldout_apps: apps (`app_name`) whose sentences make the validation split, unless a training
      app has them too; () splits by hash instead. None: `HELDOUT_APPS` for the installed
      Django, () for other roots.
    packages: the installed packages (import names) whose catalogs are read when `locale_roots`
      is None: Django's own, and Django apps such as `wagtail` that ship theirs the same way.

  Returns:
    The manifest, as also written to `out_dir/manifest.json`.
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f'validation_fraction must be in [0, 1), got {validation_fraction}')

  if locale_roots is None:
    roots, base = package_locale_roots(packages), pathlib.Path(django.__file__).parent.parent
    source = installed_source(packages)
  else:
    roots = [(app_name(pathlib.Path(root)), pathlib.Path(root)) for root in locale_roots]
    base = None
    source = 'po files under ' + ', '.join(str(root) for _, root in roots)
  catalogs = _catalog_files(roots)
  if heldout_apps is None:
    heldout_apps = HELDOUT_APPS if locale_roots is None else ()
  heldout = set(heldout_apps)
  apps = sorted({app for app, _, _ in catalogs})
  if heldout - set(apps):
    raise ValueError(f'held-out apps {sorted(heldout - set(apps))} have no catalog; the apps '
                     f'are {apps}')
  if not catalogs:
    raise FileNotFoundError(
        f'no {CATALOG_NAME} found under {[str(r) for r in roots]}; expected '
        f'<root>/<lang>/LC_MESSAGES/{CATALOG_NAME} (is Django installed? `pip install django`)')

  tally = layout.Tally(FILE_REASONS)
  pairs, english_apps, entries_read, files_used = _collect(
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

  held_out = (lambda english: english_apps[english] <= heldout) if heldout else None
  by_split, mono = layout.split_corpus(pairs, validation_fraction, held_out)
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
      'validation_fraction': None if heldout else validation_fraction,
      'heldout_apps': sorted(heldout),
      'english_per_app': {app: sum(app in a for a in english_apps.values()) for app in apps},
      'min_words': min_words,
  }
  layout.write_corpus(pathlib.Path(out_dir), by_split, mono, manifest)
  return manifest


