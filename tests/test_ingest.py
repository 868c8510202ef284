"""The Django catalog corpus: real catalogs, the on-disk contract, and bad input never lost."""

import json
import pathlib

import polib
import pytest

from amber_jax.corpora import django_po, layout

SPLITS = ('train', 'validation')


def _lines(path: pathlib.Path) -> list[str]:
  text = path.read_text(encoding='utf-8')
  return text.split('\n')[:-1] if text else []


def _write_po(root: pathlib.Path, lang_dir: str, entries: list[polib.POEntry]) -> pathlib.Path:
  """Writes <root>/<lang_dir>/LC_MESSAGES/django.po holding `entries` (polib, UTF-8)."""
  catalog = polib.POFile()
  catalog.metadata = {'Content-Type': 'text/plain; charset=UTF-8', 'Language': lang_dir}
  for entry in entries:
    catalog.append(entry)
  path = root / lang_dir / 'LC_MESSAGES' / 'django.po'
  path.parent.mkdir(parents=True)
  catalog.save(str(path))
  return path


def _entry(msgid: str, msgstr: str, **kwargs) -> polib.POEntry:
  return polib.POEntry(msgid=msgid, msgstr=msgstr, **kwargs)


GOOD = _entry('Enter a valid email address.', 'Bitte eine gültige E-Mail-Adresse eingeben.')


def _examples(manifest: dict, reason: str) -> list[dict]:
  return [e for e in manifest['skipped_examples'] if e['reason'] == reason]


def _build(tmp_path: pathlib.Path, root: pathlib.Path, **kwargs) -> dict:
  return django_po.build_django_corpus(tmp_path / 'out', locale_roots=[root], **kwargs)


def _assert_accounted(manifest: dict):
  totals = manifest['totals']
  entry_skips = sum(n for r, n in manifest['skipped'].items() if r not in manifest['file_reasons'])
  file_skips = sum(n for r, n in manifest['skipped'].items() if r in manifest['file_reasons'])
  assert totals['entries_read'] == totals['entries_kept'] + entry_skips
  assert totals['files_read'] == totals['files_used'] + file_skips
  assert totals['entries_kept'] == sum(manifest['total_pairs'].values())


# The real catalogs.


def test_real_catalogs_give_the_expected_corpus_size(django_corpus):
  manifest = layout.load_manifest(django_corpus)
  assert manifest['name'] == 'django'
  assert manifest['source'].startswith('django==') and ', wagtail==' in manifest['source']
  assert 90 <= len(manifest['languages']) <= 100
  assert 35_000 < sum(manifest['total_pairs'].values()) < 55_000
  assert 1_200 <= sum(manifest['mono']['en'].values()) <= 1_600  # ~410 Django's, ~970 Wagtail's
  assert sum(1 for v in manifest['pairs'].values() if v['train'] + v['validation'] >= 100) >= 70


def test_real_language_codes_are_normalized_and_known(django_corpus):
  languages = layout.load_manifest(django_corpus)['languages']
  assert {'pt-br', 'zh-hans', 'zh-hant', 'sr-latn', 'ja', 'ko', 'ar', 'hi'} <= set(languages)
  assert not [lang for lang in languages if lang == 'en' or lang.startswith('en-')]  # no en-au
  assert all(lang == lang.lower() and '_' not in lang for lang in languages)


def test_real_manifest_accounts_for_every_entry_and_file(django_corpus):
  manifest = layout.load_manifest(django_corpus)
  _assert_accounted(manifest)
  assert manifest['skipped']['source_language'] >= 1  # The en catalogs.
  assert all(e['file'].startswith(('django/', 'wagtail/')) for e in manifest['skipped_examples'])


def test_no_english_sentence_is_in_both_splits(django_corpus):
  english = {split: {en for pairs in layout.read_pairs(django_corpus, split).values()
                     for en, _ in pairs} for split in SPLITS}
  assert english['train'] and english['validation']
  assert not english['train'] & english['validation']
  share = len(english['validation']) / (len(english['train']) + len(english['validation']))
  assert 0.05 < share < 0.1  # The held-out Django apps: ~95 of ~1,380 sentences.


def test_real_validation_is_the_held_out_apps(django_corpus):
  manifest = layout.load_manifest(django_corpus)
  assert manifest['heldout_apps'] == sorted(django_po.HELDOUT_APPS)
  assert manifest['validation_fraction'] is None
  per_app = manifest['english_per_app']
  assert {'django.conf', 'django.contrib.admin', 'django.contrib.auth', 'django.contrib.gis',
          'django.contrib.admindocs'} <= set(per_app)
  heldout = sum(per_app[app] for app in django_po.HELDOUT_APPS)
  validation = {en for pairs in layout.read_pairs(django_corpus, 'validation').values()
                for en, _ in pairs}
  assert 0.9 * heldout <= len(validation) <= heldout  # Shared with a training app: in train.


def test_layout_matches_the_manifest(django_corpus):
  manifest = layout.load_manifest(django_corpus)
  assert sorted(p.name for p in (django_corpus / 'parallel').iterdir()) == sorted(
      f'en-{lang}' for lang in manifest['languages'])
  assert sorted(p.name for p in (django_corpus / 'mono').iterdir()) == sorted(
      ['en'] + manifest['languages'])
  for pair, counts in manifest['pairs'].items():
    for split in SPLITS:
      lines = _lines(django_corpus / 'parallel' / pair / f'{split}.tsv')
      assert len(lines) == counts[split]
      assert all(line.count('\t') == 1 and '\r' not in line for line in lines)
  for lang, counts in manifest['mono'].items():
    for split in SPLITS:
      lines = _lines(django_corpus / 'mono' / lang / f'{split}.txt')
      assert len(lines) == counts[split] and all(lines)


def test_mono_text_is_the_deduplicated_sides_of_the_pairs(django_corpus):
  for split in SPLITS:
    pairs = layout.read_pairs(django_corpus, split)
    mono = layout.read_mono(django_corpus, split)
    assert set(mono['en']) == {en for p in pairs.values() for en, _ in p}
    assert len(mono['en']) == len(set(mono['en']))
    for lang in ('de', 'ja', 'pt-br'):
      assert mono[lang] == list(dict.fromkeys(xx for _, xx in pairs[lang]))


def test_kept_text_has_whitespace_collapsed(django_corpus):
  for pairs in layout.read_pairs(django_corpus, 'train').values():
    for en, xx in pairs:
      assert en == ' '.join(en.split()) and xx == ' '.join(xx.split())


def test_readers_select_languages_and_reject_unknown_ones(django_corpus):
  assert list(layout.read_pairs(django_corpus, 'validation', ['de', 'ja'])) == ['de', 'ja']
  with pytest.raises(ValueError, match='not in the corpus'):
    layout.read_pairs(django_corpus, 'train', ['tlh'])
  with pytest.raises(ValueError, match='split must be one of'):
    layout.read_mono(django_corpus, 'test')


def test_load_manifest_of_a_missing_corpus_says_how_to_build_it(tmp_path):
  with pytest.raises(FileNotFoundError, match='amber-jax data build django'):
    layout.load_manifest(tmp_path / 'django')


# Rules, on hand-written catalogs.


def test_split_follows_a_stable_hash_of_the_english_sentence():
  sentence = 'Enter a valid email address.'
  assert layout.is_validation(sentence, 1.0) and not layout.is_validation(sentence, 0.0)
  picks = [layout.is_validation(f'sentence number {i}', 0.15) for i in range(2000)]
  assert 0.12 < sum(picks) / len(picks) < 0.18
  assert picks == [layout.is_validation(f'sentence number {i}', 0.15) for i in range(2000)]


def test_translations_of_one_english_sentence_share_its_split(tmp_path):
  root = tmp_path / 'locale'
  english = [f'Please enter item number {i} here.' for i in range(40)]
  _write_po(root, 'de', [_entry(en, f'DE {en}') for en in english])
  _write_po(root, 'fr', [_entry(en, f'FR {en}') for en in english])
  manifest = _build(tmp_path, root, validation_fraction=0.5)
  assert 0 < manifest['pairs']['en-de']['validation'] < 40
  for split in SPLITS:
    pairs = layout.read_pairs(tmp_path / 'out', split)
    assert [en for en, _ in pairs['de']] == [en for en, _ in pairs['fr']]


def test_installed_packages_give_their_locale_roots_named_by_app():
  roots = django_po.package_locale_roots(('django',))
  apps = [app for app, _ in roots]
  assert apps[0] == 'django.conf' and 'django.contrib.gis' in apps
  assert set(django_po.HELDOUT_APPS) < set(apps)
  assert all(root.name == 'locale' and root.is_dir() for _, root in roots)
  with pytest.raises(FileNotFoundError, match=r"'no_such_app_pkg' is not installed \(pip install"):
    django_po.package_locale_roots(('no_such_app_pkg',))


def test_held_out_apps_make_validation_and_shared_sentences_stay_in_train(tmp_path):
  shared = 'This sentence is in both apps.'
  core = [f'Core sentence number {i} here.' for i in range(5)] + [shared]
  gis = [f'Map sentence number {i} here.' for i in range(4)] + [shared]
  for app, english in (('core', core), ('gis', gis)):
    for lang in ('de', 'fr'):
      _write_po(tmp_path / app / 'locale', lang, [_entry(en, f'{lang} {en}') for en in english])
  roots = [tmp_path / 'core' / 'locale', tmp_path / 'gis' / 'locale']
  manifest = django_po.build_django_corpus(tmp_path / 'out', locale_roots=roots,
                                           heldout_apps=['gis'])
  assert manifest['english_per_app'] == {'core': 6, 'gis': 5}
  for lang in ('de', 'fr'):
    assert manifest['pairs'][f'en-{lang}'] == {'train': 6, 'validation': 4}
  validation = layout.read_pairs(tmp_path / 'out', 'validation')
  assert [en for en, _ in validation['de']] == gis[:4]
  assert shared in layout.read_mono(tmp_path / 'out', 'train')['en']
  with pytest.raises(ValueError, match=r"held-out apps \['maps'\] have no catalog; the apps are "
                     r"\['core', 'gis'\]"):
    django_po.build_django_corpus(tmp_path / 'out2', locale_roots=roots, heldout_apps=['maps'])


def test_locale_dir_names_become_bcp47_like_codes(tmp_path):
  root = tmp_path / 'locale'
  for lang_dir in ('pt_BR', 'zh_Hans', 'sr_Latn'):
    _write_po(root, lang_dir, [GOOD])
  assert _build(tmp_path, root)['languages'] == ['pt-br', 'sr-latn', 'zh-hans']
  assert django_po.normalize_language('ar_DZ') == 'ar-dz'


def test_empty_and_blank_msgstr_are_counted_with_file_and_line(tmp_path):
  root = tmp_path / 'locale'
  path = _write_po(root, 'de', [GOOD, _entry('Enter a valid date please.', ''),
                                _entry('Enter a valid time please.', ' \n\t ')])
  manifest = _build(tmp_path, root)
  assert manifest['skipped']['empty_msgstr'] == 2
  lines = {e['line'] for e in _examples(manifest, 'empty_msgstr')}
  entries = {e.msgid: e.linenum for e in polib.pofile(str(path))}
  assert lines == {entries['Enter a valid date please.'], entries['Enter a valid time please.']}
  assert all(e['file'] == str(path) for e in _examples(manifest, 'empty_msgstr'))
  assert manifest['totals']['entries_kept'] == 1
  _assert_accounted(manifest)


def test_invalid_utf8_is_a_counted_skip_naming_file_and_line(tmp_path):
  root = tmp_path / 'locale'
  path = root / 'de' / 'LC_MESSAGES' / 'django.po'
  path.parent.mkdir(parents=True)
  path.write_bytes(
      b'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
      b'msgid "Enter a valid email address."\n'
      b'msgstr "Bitte eine g\xc3\xbcltige Adresse eingeben."\n\n'
      b'msgid "Enter a valid date please."\nmsgstr "Bitte ein g\xfcltiges Datum eingeben."\n')
  manifest = _build(tmp_path, root)
  assert manifest['skipped']['invalid_utf8'] == 1
  [example] = _examples(manifest, 'invalid_utf8')
  assert example['file'] == str(path) and example['line'] == 9  # The line with the bad byte.
  assert layout.read_pairs(tmp_path / 'out', 'train')['de'] + layout.read_pairs(
      tmp_path / 'out', 'validation')['de'] == [
          ('Enter a valid email address.', 'Bitte eine gültige Adresse eingeben.')]
  _assert_accounted(manifest)


def test_unknown_language_dir_is_a_counted_skip_naming_the_file(tmp_path):
  root = tmp_path / 'locale'
  _write_po(root, 'de', [GOOD])
  path = _write_po(root, 'tlh', [GOOD])
  manifest = _build(tmp_path, root)
  assert manifest['skipped']['unknown_language'] == 1
  assert _examples(manifest, 'unknown_language')[0]['file'] == str(path)
  assert manifest['languages'] == ['de']
  _assert_accounted(manifest)


def test_catalog_without_usable_entries_is_an_empty_catalog(tmp_path):
  root = tmp_path / 'locale'
  _write_po(root, 'de', [GOOD])
  only_header = _write_po(root, 'fr', [])
  unusable = _write_po(root, 'it', [_entry('Save', 'Salva')])
  manifest = _build(tmp_path, root)
  assert manifest['skipped']['empty_catalog'] == 2
  assert {e['file'] for e in _examples(manifest, 'empty_catalog')} == {
      str(only_header), str(unusable)}
  assert manifest['skipped']['too_short'] == 1
  assert manifest['languages'] == ['de']
  _assert_accounted(manifest)


def test_fuzzy_and_obsolete_entries_are_skipped(tmp_path):
  root = tmp_path / 'locale'
  _write_po(root, 'de', [GOOD, _entry('Enter a valid date please.', 'Datum?', flags=['fuzzy']),
                         _entry('Enter a valid time please.', 'Zeit?', obsolete=True)])
  manifest = _build(tmp_path, root)
  assert manifest['skipped']['fuzzy'] == 1 and manifest['skipped']['obsolete'] == 1
  assert manifest['totals']['entries_kept'] == 1
  _assert_accounted(manifest)


def test_words_are_counted_without_placeholders_but_text_is_kept_whole(tmp_path):
  root = tmp_path / 'locale'
  _write_po(root, 'de', [
      _entry('%(count)s %(name)s selected', '%(count)s %(name)s ausgewählt'),
      _entry('Delete {name} now', 'Jetzt {name} löschen'),
      _entry('<b>Bold</b> &amp; text', '<b>Fett</b> &amp; Text'),
      _entry('Save', 'Speichern'),
      _entry('Change selected %(verbose_name)s here', 'Ausgewählte %(verbose_name)s ändern'),
      _entry('Enter a valid email address.', '%(value)s'),
  ])
  manifest = _build(tmp_path, root)
  assert manifest['skipped']['mostly_placeholders'] == 4
  assert manifest['skipped']['too_short'] == 1
  pairs = [p for s in SPLITS for p in layout.read_pairs(tmp_path / 'out', s)['de']]
  assert pairs == [
      ('Change selected %(verbose_name)s here', 'Ausgewählte %(verbose_name)s ändern')]


def test_unchanged_and_duplicate_entries_are_counted(tmp_path):
  root = tmp_path / 'locale'
  _write_po(root, 'de', [GOOD, _entry('Enter a valid URL here.', 'Enter a valid URL here.'),
                         _entry(GOOD.msgid, GOOD.msgstr, msgctxt='another context')])
  manifest = _build(tmp_path, root)
  assert manifest['skipped']['unchanged'] == 1 and manifest['skipped']['duplicate'] == 1
  _assert_accounted(manifest)


def test_plural_entries_pair_the_singular_forms(tmp_path):
  root = tmp_path / 'locale'
  plural = polib.POEntry(msgid='Delete the selected item now', msgid_plural='Delete %d items now',
                         msgstr_plural={0: 'Das ausgewählte Element löschen',
                                        1: '%d Elemente löschen'})
  _write_po(root, 'de', [plural])
  _build(tmp_path, root)
  pairs = [p for s in SPLITS for p in layout.read_pairs(tmp_path / 'out', s)['de']]
  assert pairs == [('Delete the selected item now', 'Das ausgewählte Element löschen')]


def test_whitespace_inside_entries_is_collapsed(tmp_path):
  root = tmp_path / 'locale'
  _write_po(root, 'de', [_entry('Enter a\tvalid\n  email address.', 'Bitte eine\u00a0gültige\n'
                                'Adresse eingeben.')])
  _build(tmp_path, root)
  pairs = [p for s in SPLITS for p in layout.read_pairs(tmp_path / 'out', s)['de']]
  assert pairs == [('Enter a valid email address.', 'Bitte eine gültige Adresse eingeben.')]


def test_unparsable_catalog_is_a_counted_parse_error(tmp_path):
  root = tmp_path / 'locale'
  _write_po(root, 'de', [GOOD])
  path = root / 'fr' / 'LC_MESSAGES' / 'django.po'
  path.parent.mkdir(parents=True)
  path.write_text('msgid "Enter a valid email address."\nmsgstr "Adresse?"\n\nnot po syntax\n',
                  encoding='utf-8')
  manifest = _build(tmp_path, root)
  assert manifest['skipped']['parse_error'] == 1
  [example] = _examples(manifest, 'parse_error')
  assert example['file'] == str(path) and example['line'] == 4
  _assert_accounted(manifest)


def test_rebuild_replaces_the_corpus_and_a_failed_build_leaves_it_intact(tmp_path, monkeypatch):
  root = tmp_path / 'locale'
  _write_po(root, 'de', [GOOD])
  _build(tmp_path, root)
  _write_po(root, 'fr', [_entry(GOOD.msgid, 'Saisissez une adresse e-mail valide.')])
  assert _build(tmp_path, root)['languages'] == ['de', 'fr']

  def broken_write(*args, **kwargs):
    raise OSError('disk full')
  monkeypatch.setattr(layout, 'write_lines', broken_write)
  _write_po(root, 'it', [_entry(GOOD.msgid, 'Inserisci un indirizzo email valido.')])
  with pytest.raises(OSError, match='disk full'):
    _build(tmp_path, root)
  manifest = json.loads((tmp_path / 'out' / 'manifest.json').read_text(encoding='utf-8'))
  assert manifest['languages'] == ['de', 'fr']
  assert sorted(p.name for p in tmp_path.iterdir()) == ['locale', 'out']  # No temp folders left.


def test_locale_root_that_does_not_exist_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='is not a folder'):
    _build(tmp_path, tmp_path / 'nowhere')
