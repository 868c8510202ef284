"""The man-page corpus: troff -> text, block alignment, every skip counted, the real packages."""

from __future__ import annotations

import gzip
import hashlib
import json
import pathlib
import re
import shutil
import time

import pytest

from amber_jax import cli
from amber_jax.corpora import debian, layout, manpages, roff

# A small English page and its German translation, written for these tests. The German page
# appends a translators' section, as po4a does.
ENGLISH_PAGE = r'''.\" A comment line that is dropped.
.TH FROB 1 2024-01-01 "Test pages"
.SH NAME
frob \- turn widgets into gadgets
.SH SYNOPSIS
.B frob
.RI [ options ] " file"
.SH DESCRIPTION
.B frob
reads every widget from the named file and writes one gadget for each of them.
.PP
The gadgets are written in the order \fIin which\fP the widgets were read \(em never sorted.
.TP
.BR \-v ", " \-\-verbose
Print one line for each widget that was turned into a gadget.
.TP
.B \-q
Print nothing at all, not even the errors.
.SH SEE ALSO
.BR gadget (5)
'''
GERMAN_PAGE = r'''.\" Ein Kommentar.
.TH FROB 1 2024-01-01 "Testseiten"
.SH BEZEICHNUNG
frob \- verwandelt Widgets in Gadgets
.SH ÜBERSICHT
.B frob
.RI [ Optionen ] " Datei"
.SH BESCHREIBUNG
.B frob
liest jedes Widget aus der genannten Datei und schreibt für jedes davon ein Gadget.
.PP
Die Gadgets werden in der Reihenfolge geschrieben, \fIin der\fP die Widgets gelesen wurden \(em
niemals sortiert.
.TP
.BR \-v ", " \-\-verbose
Gibt für jedes Widget, das in ein Gadget verwandelt wurde, eine Zeile aus.
.TP
.B \-q
Gibt gar nichts aus, nicht einmal die Fehler.
.SH "SIEHE AUCH"
.BR gadget (5)
.PP
.SH ÜBERSETZUNG
Diese Übersetzung wurde von einer erfundenen Person erstellt.
'''


def _write(root: pathlib.Path, relative: str, text: str | bytes, compress: bool = True):
  """Writes `root/relative` (gzip-compressed when it ends in .gz)."""
  path = root / relative
  path.parent.mkdir(parents=True, exist_ok=True)
  data = text.encode('utf-8') if isinstance(text, str) else text
  path.write_bytes(gzip.compress(data) if compress else data)
  return path


def _tree(tmp_path: pathlib.Path) -> pathlib.Path:
  """A man root laid out like usr/share/man with the English and German test pages."""
  root = tmp_path / 'usr' / 'share' / 'man'
  _write(root, 'man1/frob.1.gz', ENGLISH_PAGE)
  _write(root, 'de/man1/frob.1.gz', GERMAN_PAGE)
  return root


def _build(tmp_path: pathlib.Path, root: pathlib.Path, **kwargs) -> dict:
  kwargs.setdefault('english_roots', [root])
  return manpages.build_manpages_corpus(tmp_path / 'out', man_roots=[root], **kwargs)


def _examples(manifest: dict, reason: str) -> list[dict]:
  return [e for e in manifest['skipped_examples'] if e['reason'] == reason]


def _assert_accounted(manifest: dict):
  totals = manifest['totals']
  reasons = manifest['file_reasons']
  block_skips = sum(n for r, n in manifest['skipped'].items() if r not in reasons)
  page_skips = sum(n for r, n in manifest['skipped'].items() if r in reasons)
  assert totals['entries_read'] == totals['entries_kept'] + block_skips
  assert totals['files_read'] == totals['files_used'] + page_skips
  assert totals['entries_kept'] == sum(manifest['total_pairs'].values())


def _all_pairs(out: pathlib.Path) -> dict[str, list[tuple[str, str]]]:
  train = layout.read_pairs(out, 'train')
  validation = layout.read_pairs(out, 'validation')
  return {lang: train[lang] + validation[lang] for lang in train}


# troff -> text.


def test_escapes_are_rendered_or_removed():
  render = roff.render_text
  assert render(r'\fBbold\fP, \fIitalic\fR and \f(CWcode\fP, \f[B]long\f[]') == (
      'bold, italic and code, long')
  assert render(r'a\-b \(em c \(en d \(aqe\(aq \(dqf\(dq') == "a-b \u2014 c \u2013 d 'e' \"f\""
  assert render(r'back\eslash, \&.dot, no\ break, \s-1small\s0 and \s+2big\s0') == (
      'back\\slash, .dot, no break, small and big')
  assert render(r'\*(lqquoted\*(rq, \*[lq]too\*[rq], \[u00E9]t\[u00E9]') == (
      '\u201cquoted\u201d, \u201ctoo\u201d, \u00e9t\u00e9')
  assert render(r"\h'2n'moved\v'-1' \n(.g\n[x]reg\|\^thin") == 'moved regthin'
  assert render(r'\*(XX') == ''  # An undefined string is dropped.


def test_macros_comments_and_requests():
  page = roff.parse_page(
      '.TH X 1\n'
      '.\\" a whole-line comment\n'
      '.SH "TWO WORDS"\n'
      '.B bold words here\n'
      '.BR ls (1) ,\n'
      '.IR file .txt\n'
      '.BI \\-\\-size= n\n'
      'text with a trailing comment \\" not this\n'
      '.nf\n'
      '.in +4\n'
      'kept line\n'
      '.fi\n'
      '.TS\n'
      'tab;\n'
      'l l.\n'
      'table\tcontent\n'
      '.TE\n'
      '.de XY\n'
      'macro body\n'
      '..\n'
      '.ie n \\{\\\n'
      'conditional body\n'
      '.\\}\n'
      '.ds Qq quoted string\n'
      '.RS\n'
      'use the \\*(Qq; \\fBjoin\\fP\\c\n'
      '.I ed\n'
      '.RE\n')
  assert [b.kind for b in page.blocks] == ['SH', 'text']
  assert page.blocks[0].text == 'TWO WORDS'
  assert page.blocks[1].text == ('bold words here ls(1), file.txt --size=n text with a trailing '
                                 'comment kept line use the quoted string; joined')


def test_block_boundaries():
  page = roff.parse_page(
      '.SH\nHEADER ON ITS OWN LINE\nbody under the header\n.PP\nfirst paragraph\n.LP\nsecond\n'
      '.P\nthird\n.SS Sub\n.TP\n.B \\-x\nthe x option\n.IP \\(bu 2\nbullet item\n'
      '.IP (a) 4\nlettered item\n.HP\nhanging\n.sp\nafter a space\n.PP\n.SH END\n')
  assert [(b.kind, b.text) for b in page.blocks] == [
      ('SH', 'HEADER ON ITS OWN LINE'), ('text', 'body under the header'),
      ('PP', 'first paragraph'), ('PP', 'second'), ('PP', 'third'), ('SS', 'Sub'),
      ('TP', '-x the x option'), ('IP', 'bullet item'), ('IP', '(a) lettered item'),
      ('HP', 'hanging'), ('sp', 'after a space'), ('PP', ''), ('SH', 'END')]
  assert page.blocks[6].line == 11  # The line of the `.TP`.


def test_so_only_page_is_a_redirect():
  page = roff.parse_page('.\\" comment\n.so man1/other.1\n')
  assert page.redirect == 'man1/other.1'
  assert page.blocks == []
  assert roff.parse_page('.SH X\ntext\n.so man1/other.1\n').redirect is None


def test_split_arguments():
  assert roff.split_arguments('a "b c" "say ""hi""" d\\ e') == ['a', 'b c', 'say "hi"', 'd\\ e']


def test_language_codes():
  assert manpages.language_code('de') == 'de'
  assert manpages.language_code('pt_BR') == 'pt-br'
  assert manpages.language_code('zh_TW') == 'zh-tw'
  assert manpages.language_code('fr.UTF-8') == 'fr'


# Alignment and the corpus.


def test_matching_pages_align_block_by_block(tmp_path):
  root = _tree(tmp_path)
  manifest = _build(tmp_path, root, validation_fraction=0.0)
  _assert_accounted(manifest)
  assert manifest['name'] == 'manpages'
  assert manifest['languages'] == ['de']
  pairs = _all_pairs(tmp_path / 'out')['de']
  assert pairs == [
      ('frob - turn widgets into gadgets', 'frob - verwandelt Widgets in Gadgets'),
      ('frob reads every widget from the named file and writes one gadget for each of them.',
       'frob liest jedes Widget aus der genannten Datei und schreibt für jedes davon ein Gadget.'),
      ('The gadgets are written in the order in which the widgets were read \u2014 never sorted.',
       'Die Gadgets werden in der Reihenfolge geschrieben, in der die Widgets gelesen wurden '
       '\u2014 niemals sortiert.'),
      ('-v, --verbose Print one line for each widget that was turned into a gadget.',
       '-v, --verbose Gibt für jedes Widget, das in ein Gadget verwandelt wurde, eine Zeile aus.'),
      ('-q Print nothing at all, not even the errors.',
       '-q Gibt gar nichts aus, nicht einmal die Fehler.'),
  ]
  skipped = manifest['skipped']
  # NAME, SYNOPSIS, DESCRIPTION, SEE ALSO headers; the synopsis; `gadget(5)`.
  assert skipped['too_short'] == 6
  assert skipped['empty_block'] == 1  # The `.PP` before the appended section.
  assert skipped['translator_section'] == 2  # Its header and its text.
  assert manifest['totals']['files_read'] == manifest['totals']['files_used'] == 1
  assert _examples(manifest, 'translator_section')[0]['file'] == 'de/man1/frob.1.gz'


def test_output_is_readable_and_split_by_english(tmp_path):
  root = _tree(tmp_path)
  manifest = _build(tmp_path, root, validation_fraction=0.5, split_by='block')
  out = tmp_path / 'out'
  assert json.loads((out / 'manifest.json').read_text(encoding='utf-8')) == manifest
  for split in layout.SPLITS:
    pairs = layout.read_pairs(out, split)['de']
    assert len(pairs) == manifest['pairs']['en-de'][split]
    assert all(layout.is_validation(en, 0.5) == (split == 'validation') for en, _ in pairs)
    mono = layout.read_mono(out, split)
    assert mono['en'] == list(dict.fromkeys(en for en, _ in pairs))
    assert mono['de'] == list(dict.fromkeys(de for _, de in pairs))


def _page_hash(key: str) -> float:
  return int(hashlib.sha1(key.encode('utf-8')).hexdigest()[:15], 16) / 16**15


def test_whole_pages_are_held_out_and_shared_blocks_stay_in_train(tmp_path):
  root = _tree(tmp_path)  # man1/frob.1, and a second page that shares only the `-q` block
  _write(root, 'man1/zap.1.gz', ENGLISH_PAGE.replace('widget', 'sprocket'))
  _write(root, 'de/man1/zap.1.gz', GERMAN_PAGE.replace('Widget', 'Sprocket'))
  held, kept = sorted(['man1/frob.1', 'man1/zap.1'], key=_page_hash)
  fraction = (_page_hash(held) + _page_hash(kept)) / 2  # holds out `held`, not `kept`
  manifest = _build(tmp_path, root, validation_fraction=fraction)
  _assert_accounted(manifest)
  assert manifest['split_by'] == 'page' and manifest['heldout_pages'] == [held]
  out = tmp_path / 'out'
  validation, train = (layout.read_pairs(out, s)['de'] for s in ('validation', 'train'))
  word = 'widget' if held == 'man1/frob.1' else 'sprocket'
  other = 'sprocket' if word == 'widget' else 'widget'
  assert len(validation) == 4 and all(word in en for en, _ in validation)
  shared = ('-q Print nothing at all, not even the errors.',
            '-q Gibt gar nichts aus, nicht einmal die Fehler.')
  assert shared in train and shared not in validation  # the training page has it too
  assert not {en for en, _ in validation} & {en for en, _ in train}
  assert sum(other in en for en, _ in train) == 4
  with pytest.raises(ValueError, match="split_by must be one of"):
    _build(tmp_path, root, split_by='sentence')


def test_structure_mismatch_is_counted(tmp_path):
  root = _tree(tmp_path)
  # One paragraph fewer than the English page: nothing of the page may be paired.
  _write(root, 'de/man1/frob.1.gz', GERMAN_PAGE.replace(
      '.PP\nDie Gadgets', 'Die Gadgets'))
  _write(root, 'de/man1/good.1.gz', GERMAN_PAGE)
  _write(root, 'man1/good.1.gz', ENGLISH_PAGE)
  manifest = _build(tmp_path, root)
  _assert_accounted(manifest)
  assert manifest['skipped']['structure_mismatch'] == 1
  assert _examples(manifest, 'structure_mismatch')[0]['file'] == 'de/man1/frob.1.gz'
  assert sum(manifest['pairs']['en-de'].values()) == 5


def test_pair_skips_are_counted(tmp_path):
  root = tmp_path / 'man'
  english = ('.SH NAME\nthe tool name\n'
             '.PP\nThis paragraph is left in English by the translator.\n'
             '.PP\nThis paragraph gets a far too long translation here.\n'
             '.PP\nThis paragraph gets a translation that is tiny.\n'
             '.PP\nThis paragraph appears twice with one translation.\n'
             '.PP\nThis paragraph appears twice with one translation.\n'
             '.PP\nA kept paragraph with enough words.\n')
  german = ('.SH NAME\nder Werkzeugname\n'
            '.PP\nThis paragraph is left in English by the translator.\n'
            '.PP\n' + 'Eine viel zu lange Übersetzung. ' * 12 + '\n'
            '.PP\nWinzig.\n'
            '.PP\nDieser Absatz kommt zweimal mit einer Übersetzung vor.\n'
            '.PP\nDieser Absatz kommt zweimal mit einer Übersetzung vor.\n'
            '.PP\nEin behaltener Absatz mit genug Wörtern.\n')
  _write(root, 'man1/tool.1.gz', english)
  _write(root, 'de/man1/tool.1.gz', german)
  manifest = _build(tmp_path, root)
  _assert_accounted(manifest)
  assert manifest['skipped'] == {'duplicate': 1, 'length_ratio': 2, 'too_short': 2,
                                 'untranslated': 1}
  assert sum(manifest['pairs']['en-de'].values()) == 2
  duplicate = _examples(manifest, 'duplicate')[0]
  assert (duplicate['file'], duplicate['line']) == ('de/man1/tool.1.gz', 11)


def test_thresholds_are_parameters(tmp_path):
  root = _tree(tmp_path)
  strict = _build(tmp_path, root, min_words=12)
  assert sum(strict['total_pairs'].values()) == 3
  loose = _build(tmp_path, root, min_words=1, ratio=(0.1, 10.0))
  assert sum(loose['total_pairs'].values()) == 10  # Headers and synopsis are kept too.
  _assert_accounted(loose)


def test_invalid_utf8_loses_only_its_block(tmp_path):
  root = _tree(tmp_path)
  raw = GERMAN_PAGE.encode('utf-8').replace('Gibt gar nichts'.encode(), b'Gibt gar \xff nichts')
  _write(root, 'de/man1/frob.1.gz', raw)
  manifest = _build(tmp_path, root)
  _assert_accounted(manifest)
  assert manifest['skipped']['invalid_utf8'] == 1
  example = _examples(manifest, 'invalid_utf8')[0]
  assert (example['file'], example['line']) == ('de/man1/frob.1.gz', 19)
  assert sum(manifest['total_pairs'].values()) == 4
  assert all('\ufffd' not in de for _, de in _all_pairs(tmp_path / 'out')['de'])


def test_file_level_skips(tmp_path):
  root = _tree(tmp_path)
  _write(root, 'de/man1/alias.1.gz', '.so man1/frob.1\n')
  (root / 'de' / 'man1' / 'link.1.gz').symlink_to('frob.1.gz')
  _write(root, 'de/man1/orphan.1.gz', GERMAN_PAGE)  # No English page of that name.
  _write(root, 'de/man1/broken.1.gz', b'not gzip data', compress=False)
  _write(root, 'de/man7/bsd.7.gz', '.Dd January 1, 2024\n.Sh NAME\n.Nm bsd\n')
  _write(root, 'man7/bsd.7.gz', '.Dd January 1, 2024\n.Sh NAME\n.Nm bsd\n')
  _write(root, 'de/man1/plain.1', GERMAN_PAGE, compress=False)  # Uncompressed pages work too.
  _write(root, 'man1/plain.1.gz', ENGLISH_PAGE)
  manifest = _build(tmp_path, root)
  _assert_accounted(manifest)
  skipped = manifest['skipped']
  assert skipped['redirect'] == 2
  assert skipped['no_english_page'] == 1
  assert skipped['read_error'] == 1
  assert skipped['unsupported_format'] == 1
  assert manifest['totals']['files_read'] == 7
  assert manifest['totals']['files_used'] == 1
  # plain.1 aligns, but its pairs are frob.1's: duplicates, so the page gave none.
  assert skipped['duplicate'] == 5
  assert skipped['no_pairs'] == 1


def test_english_so_redirect_is_followed(tmp_path):
  root = _tree(tmp_path)
  _write(root, 'man1/defrob.1.gz', '.so man1/frob.1\n')
  _write(root, 'de/man1/defrob.1.gz', GERMAN_PAGE)
  manifest = _build(tmp_path, root, languages=['de'])
  _assert_accounted(manifest)
  assert manifest['totals']['files_read'] == 2
  assert manifest['skipped']['duplicate'] == 5  # defrob aligned against frob's English text.


def test_languages_and_max_pages(tmp_path):
  root = _tree(tmp_path)
  _write(root, 'pt_BR/man1/frob.1.gz', GERMAN_PAGE)
  _write(root, 'de/man1/zzz.1.gz', GERMAN_PAGE)
  manifest = _build(tmp_path, root)
  assert manifest['languages'] == ['de', 'pt-br']
  only = _build(tmp_path, root, languages=['pt_BR'], max_pages=1)
  assert only['languages'] == ['pt-br']
  assert only['totals']['files_read'] == 1
  capped = _build(tmp_path, root, max_pages=1)
  assert capped['totals']['files_read'] == 2  # One page per language.
  with pytest.raises(ValueError, match=r"\['fr'\] have no pages"):
    _build(tmp_path, root, languages=['fr'])


def test_missing_roots_say_what_to_do(tmp_path):
  with pytest.raises(FileNotFoundError, match='laid out like /usr/share/man'):
    manpages.build_manpages_corpus(tmp_path / 'out', man_roots=[tmp_path / 'nowhere'])
  root = _tree(tmp_path)
  with pytest.raises(FileNotFoundError, match='no English pages'):
    manpages.build_manpages_corpus(tmp_path / 'out', man_roots=[root],
                                   english_roots=[tmp_path / 'none'])


def test_fetch_reports_a_missing_apt_get(tmp_path, monkeypatch):
  monkeypatch.setattr(debian.shutil, 'which', lambda name: None)
  with pytest.raises(debian.FetchError, match='apt-get not found'):
    debian.fetch_packages(tmp_path, ['manpages-de'])


def test_fetch_uses_debs_already_there(tmp_path, monkeypatch):
  """A .deb in the cache is unpacked without apt-get (a dpkg-deb stand-in writes one page)."""
  (tmp_path / 'debs').mkdir()
  (tmp_path / 'debs' / 'manpages-xx_1.0_all.deb').write_bytes(b'')
  calls = []

  def fake_run(command, **kwargs):
    calls.append(command)
    _write(pathlib.Path(command[-1]), 'usr/share/man/xx/man1/frob.1.gz', GERMAN_PAGE)
    return debian.subprocess.CompletedProcess(command, 0, '', '')

  monkeypatch.setattr(debian.shutil, 'which', lambda name: f'/usr/bin/{name}')
  monkeypatch.setattr(debian.subprocess, 'run', fake_run)
  root = debian.fetch_packages(tmp_path, ['manpages-xx'])
  assert (root / 'usr/share/man/xx/man1/frob.1.gz').exists()
  assert [c[:2] for c in calls] == [['/usr/bin/dpkg-deb', '-x']]
  debian.fetch_packages(tmp_path, ['manpages-xx'])  # Already unpacked: nothing runs.
  assert len(calls) == 1


def test_fetch_failure_shows_stderr(tmp_path, monkeypatch):
  monkeypatch.setattr(debian.shutil, 'which', lambda name: f'/usr/bin/{name}')
  monkeypatch.setattr(debian.subprocess, 'run', lambda command, **kwargs: (
      debian.subprocess.CompletedProcess(command, 100, '', 'E: Unable to locate package x')))
  with pytest.raises(debian.FetchError, match='(?s)apt-get update.*Unable to locate package'):
    debian.fetch_packages(tmp_path, ['manpages-nope'])


def test_main_prints_a_summary(tmp_path, capsys):
  root = _tree(tmp_path)
  manifest = cli.main(['data', 'build', 'manpages', '--out', str(tmp_path / 'cli'), '--man-roots',
                       str(root), '--english-roots', str(root), '--languages', 'de'])
  printed = capsys.readouterr().out
  assert 'en-de' in printed and 'too_short 6' in printed
  assert layout.load_manifest(tmp_path / 'cli') == manifest
  assert manifest['split_by'] == 'page'
  manifest = cli.main(['data', 'build', 'manpages', '--out', str(tmp_path / 'cli'), '--man-roots',
                       str(root), '--english-roots', str(root), '--split-by', 'block'])
  assert manifest['split_by'] == 'block' and manifest['heldout_pages'] == []


# The real packages.


@pytest.mark.slow
def test_real_packages_give_german_pairs(tmp_path):
  """Fetches `manpages` and `manpages-de` (~5 MB) and builds the German corpus (~5 s).

  The English side is the `manpages` package alone, so the count does not depend on the English
  pages this machine has installed; a second build reads the first 150 German pages with the
  default English roots (those installed pages too).
  """
  assert shutil.which('apt-get'), (
      'apt-get is not available: this test downloads the Debian packages manpages and '
      'manpages-de with `apt-get download`; run it on Debian/Ubuntu (or deselect -m "not slow")')
  start = time.time()
  root = debian.fetch_packages(tmp_path / 'cache', ['manpages', 'manpages-de'])
  man_root = root / manpages.MAN_SUBDIR
  manifest = manpages.build_manpages_corpus(tmp_path / 'out', man_roots=[man_root],
                                            english_roots=[man_root])
  _assert_accounted(manifest)
  assert manifest['languages'] == ['de']
  german = sum(manifest['pairs']['en-de'].values())
  assert german >= 3000, manifest['skipped']  # 4,291 with manpages 6.03 / manpages-de 4.18.
  pairs = _all_pairs(tmp_path / 'out')['de']
  # Escapes are rendered: a backslash is left only where a page writes one as text (`\\e`).
  assert sum(bool(re.search(r'\\f[BIRP]|\\-|\\\(', en + de)) for en, de in pairs) < len(pairs) / 100
  assert not any(c in en + de for en, de in pairs for c in '\x00\x01\t\n')

  capped = manpages.build_manpages_corpus(tmp_path / 'capped', man_roots=[man_root],
                                          max_pages=150)
  _assert_accounted(capped)
  assert capped['totals']['files_read'] == 150
  assert time.time() - start < 60
