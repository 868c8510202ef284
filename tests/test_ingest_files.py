"""Users' own corpus files -> the corpus layout: every format, compression, and bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import pathlib

import polib
import pytest

from amber_jax import cli
from amber_jax.corpora import files, languages, layout, readers

SPLITS = ('train', 'validation')

# Sentences written for these tests.
EN = ['The little boat sails at dawn.', 'My neighbour grows tall sunflowers.',
      'Please close the window before you leave.', 'Rain is expected on Tuesday.']
DE = ['Das kleine Boot segelt im Morgengrauen.', 'Mein Nachbar zieht hohe Sonnenblumen.',
      'Bitte schließ das Fenster, bevor du gehst.', 'Für Dienstag wird Regen erwartet.']
FR = ['Le petit bateau navigue à l’aube.', 'Mon voisin cultive de grands tournesols.']


def _write(path: pathlib.Path, data: str | bytes) -> pathlib.Path:
  """Writes text (UTF-8) or bytes; gzip/xz compressed when the name says so."""
  raw = data.encode('utf-8') if isinstance(data, str) else data
  if path.name.endswith('.gz'):
    raw = gzip.compress(raw)
  elif path.name.endswith('.xz'):
    raw = lzma.compress(raw)
  path.write_bytes(raw)
  return path


def _all_pairs(out: pathlib.Path) -> dict[str, list[tuple[str, str]]]:
  by_split = [layout.read_pairs(out, split) for split in SPLITS]
  return {lang: by_split[0][lang] + by_split[1][lang] for lang in by_split[0]}


def _all_mono(out: pathlib.Path) -> dict[str, list[str]]:
  by_split = [layout.read_mono(out, split) for split in SPLITS]
  return {lang: by_split[0][lang] + by_split[1][lang] for lang in by_split[0]}


def _examples(manifest: dict, reason: str) -> list[tuple[str, int]]:
  return [(pathlib.Path(e['file']).name, e['line'])
          for e in manifest['skipped_examples'] if e['reason'] == reason]


def _assert_accounted(manifest: dict):
  totals = manifest['totals']
  for kind in ('pairs', 'mono'):
    skipped = sum(manifest['skipped_by_kind'][kind].values())
    assert totals[f'{kind}_read'] == totals[f'{kind}_kept'] + skipped == (
        totals[f'{kind}_kept'] + totals[f'{kind}_skipped'])
  assert totals['pairs_kept'] == sum(manifest['total_pairs'].values())
  assert sum(s['read'] for s in manifest['sources']) == totals['pairs_read'] + totals['mono_read']
  assert sum(s['kept'] for s in manifest['sources']) == totals['pairs_kept'] + totals['mono_kept']


# Formats.


@pytest.mark.parametrize('suffix', ['', '.gz', '.xz'])
def test_moses_pair_any_compression(tmp_path, suffix):
  en = _write(tmp_path / f'corpus.en{suffix}', '\n'.join(EN) + '\n')
  de = _write(tmp_path / f'corpus.de{suffix}', '\n'.join(DE) + '\n')
  manifest = files.build_files_corpus(tmp_path / 'out', [f'de:{en},{de}'],
                                      validation_fraction=0.3)
  assert sorted(_all_pairs(tmp_path / 'out')['de']) == sorted(zip(EN, DE))
  assert manifest['languages'] == ['de']
  assert sum(manifest['pairs']['en-de'].values()) == 4
  assert sorted(_all_mono(tmp_path / 'out')['en']) == sorted(EN)
  record = manifest['sources'][0]
  assert record['format'] == 'moses' and record['read'] == record['kept'] == 4
  assert record['files'][0] == {'path': str(en), 'size': en.stat().st_size,
                                'sha256': hashlib.sha256(en.read_bytes()).hexdigest()}
  _assert_accounted(manifest)


def test_tsv_two_columns_and_language_columns(tmp_path):
  two = _write(tmp_path / 'de.tsv.xz', ''.join(f'{e}\t{d}\n' for e, d in zip(EN, DE)))
  rows = ['src_lang\ttgt_lang\tsrc\ttgt',
          f'en\tfr\t{EN[0]}\t{FR[0]}',
          f'fr\ten\t{FR[1]}\t{EN[1]}',             # English on the target side: swapped.
          f'de\tfr\t{DE[2]}\t{FR[0]}',             # No English side: counted.
          f'pt_BR\ten\tO barco navega.\t{EN[0]}']  # Codes are normalised: pt-br.
  langs = _write(tmp_path / 'rows.tsv', '\n'.join(rows) + '\n')
  manifest = files.build_files_corpus(tmp_path / 'out', [f'de:{two}', str(langs)])
  pairs = _all_pairs(tmp_path / 'out')
  assert sorted(pairs['de']) == sorted(zip(EN, DE))
  assert sorted(pairs['fr']) == sorted([(EN[0], FR[0]), (EN[1], FR[1])])
  assert pairs['pt-br'] == [(EN[0], 'O barco navega.')]
  assert manifest['skipped'] == {'header': 1, 'no_english_side': 1}
  assert _examples(manifest, 'no_english_side') == [('rows.tsv', 4)]
  _assert_accounted(manifest)


def test_jsonl_pairs_and_mono(tmp_path):
  opus = _write(tmp_path / 'opus.jsonl.gz', '\n'.join([
      json.dumps({'translation': {'en': EN[0], 'de': DE[0]}}),
      json.dumps({'en': EN[1], 'de': DE[1], 'id': 7}),
      '']) + '\n')
  rows = _write(tmp_path / 'rows.jsonl', '\n'.join(json.dumps(r, ensure_ascii=False) for r in [
      {'src': FR[0], 'tgt': EN[0], 'src_lang': 'fr', 'tgt_lang': 'en'},
      {'src': EN[1], 'tgt': FR[1], 'src_lang': 'en', 'tgt_lang': 'fr'},
      {'src': EN[2], 'tgt': EN[2], 'src_lang': 'en', 'tgt_lang': 'en'},
  ]) + '\n')
  text = _write(tmp_path / 'sw.jsonl', json.dumps({'text': 'Mvua itanyesha kesho.'}) + '\n'
                + json.dumps({'text': '  '}) + '\n')
  manifest = files.build_files_corpus(tmp_path / 'out', [f'de:{opus}', str(rows)], [f'sw:{text}'])
  pairs = _all_pairs(tmp_path / 'out')
  assert sorted(pairs['de']) == sorted(zip(EN[:2], DE[:2]))
  assert sorted(pairs['fr']) == sorted(zip(EN[:2], FR))
  assert _all_mono(tmp_path / 'out')['sw'] == ['Mvua itanyesha kesho.']
  assert manifest['skipped'] == {'empty_line': 1, 'empty_text': 1, 'same_language': 1}
  assert manifest['languages'] == ['de', 'fr']  # sw has text only
  _assert_accounted(manifest)


def test_mono_text_blank_lines_counted_and_pairs_feed_mono(tmp_path):
  en = _write(tmp_path / 'c.en', f'{EN[0]}\n{EN[1]}\n')
  de = _write(tmp_path / 'c.de', f'{DE[0]}\n{DE[1]}\n')
  mono = _write(tmp_path / 'news.de.txt.gz', f'Heute scheint die Sonne.\n\n   \n{DE[0]}\n')
  manifest = files.build_files_corpus(tmp_path / 'out', [f'de:{en},{de}'], [f'de:{mono}'])
  assert sorted(_all_mono(tmp_path / 'out')['de']) == sorted(DE[:2] + ['Heute scheint die Sonne.'])
  assert manifest['skipped_by_kind']['mono'] == {'duplicate': 1, 'empty_line': 2}
  assert _examples(manifest, 'empty_line') == [('news.de.txt.gz', 2), ('news.de.txt.gz', 3)]
  assert manifest['mono']['de']['train'] + manifest['mono']['de']['validation'] == 3
  _assert_accounted(manifest)


def test_po_catalog(tmp_path):
  catalog = polib.POFile()
  catalog.metadata = {'Content-Type': 'text/plain; charset=UTF-8'}
  for msgid, msgstr, flags in [(EN[0], DE[0], []), (EN[1], '', []), (EN[2], DE[2], ['fuzzy'])]:
    catalog.append(polib.POEntry(msgid=msgid, msgstr=msgstr, flags=flags))
  path = tmp_path / 'app.po'
  catalog.save(str(path))
  manifest = files.build_files_corpus(tmp_path / 'out', [f'de:{path}'])
  assert _all_pairs(tmp_path / 'out')['de'] == [(EN[0], DE[0])]
  assert manifest['skipped'] == {'empty_msgstr': 1, 'fuzzy': 1}
  _assert_accounted(manifest)


def test_counted_skips_name_file_and_line(tmp_path):
  en = _write(tmp_path / 'c.en', b'\n'.join([
      EN[0].encode(), EN[1].encode(), b'', b'Stop.', EN[0].encode(), EN[3].encode(),
      b'Caf\xe9 is open.', EN[2].encode(), b'']))
  de = _write(tmp_path / 'c.de', b'\n'.join([
      DE[0].encode(), b'   ', DE[2].encode(), b'Halt.', DE[0].encode(), DE[3].encode(),
      'Das Café ist offen.'.encode(), DE[2].encode(), b'']))
  manifest = files.build_files_corpus(tmp_path / 'out', [f'de:{en},{de}'], min_words=2)
  assert sorted(_all_pairs(tmp_path / 'out')['de']) == sorted(
      [(EN[0], DE[0]), (EN[3], DE[3]), (EN[2], DE[2])])  # line 8, after the bad line, is read
  assert manifest['skipped'] == {'duplicate': 1, 'empty_side': 2, 'invalid_utf8': 1,
                                 'too_short': 1}
  assert _examples(manifest, 'empty_side') == [('c.de', 2), ('c.en', 3)]
  assert _examples(manifest, 'too_short') == [('c.en', 4)]
  assert _examples(manifest, 'duplicate') == [('c.en', 5)]
  assert _examples(manifest, 'invalid_utf8') == [('c.en', 7)]
  _assert_accounted(manifest)


def test_invalid_utf8_rest_of_file_is_read(tmp_path):
  text = _write(tmp_path / 'x.txt', b'Ein guter Satz.\n\xc3\x28 kaputt\nNoch ein guter Satz.\n')
  manifest = files.build_files_corpus(tmp_path / 'out', mono=[f'de:{text}'])
  assert sorted(_all_mono(tmp_path / 'out')['de']) == ['Ein guter Satz.', 'Noch ein guter Satz.']
  assert _examples(manifest, 'invalid_utf8') == [('x.txt', 2)]
  assert 'kaputt' in manifest['skipped_examples'][0]['text']


# Errors that stop the build.


def test_misaligned_moses_files_name_both_and_first_orphan_line(tmp_path):
  en = _write(tmp_path / 'c.en', '\n'.join(EN) + '\n')
  de = _write(tmp_path / 'c.de', '\n'.join(DE[:2]) + '\n')
  with pytest.raises(ValueError, match=r'c\.en has 4 lines but .*c\.de has 2; line 3 of .*c\.en '
                     r'has no partner'):
    files.build_files_corpus(tmp_path / 'out', [f'de:{en},{de}'])
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('code, suggestion', [('german', 'de'), ('fr-ca', 'fr'), ('pt_bx', 'pt')])
def test_unknown_language_names_spec_and_suggests(tmp_path, code, suggestion):
  path = _write(tmp_path / 'x.txt', 'Ein Satz.\n')
  with pytest.raises(ValueError, match=rf"--mono '{code}:.*x\.txt': unknown language code "
                     rf"'{code}'; did you mean .*{suggestion}"):
    files.build_files_corpus(tmp_path / 'out', mono=[f'{code}:{path}'])


def test_language_rule(tmp_path):
  assert languages.check_language('pt_BR', 'x') == 'pt-br'
  assert languages.check_language('zh-Hans', 'x') == 'zh-hans'
  assert languages.check_language('swh', 'x') == 'swh'  # plain ISO 639 shape
  with pytest.raises(ValueError, match='English is the source side'):
    tsv = _write(tmp_path / 'x.tsv', f'{EN[0]}\t{DE[0]}\n')
    readers.parse_spec(f'en:{tsv}', 'pairs')
  with pytest.raises(ValueError, match=r'rows\.tsv:2: unknown language code \'xx-yy\''):
    files.build_files_corpus(tmp_path / 'out', [str(_write(
        tmp_path / 'rows.tsv', f'en\tde\t{EN[0]}\t{DE[0]}\nen\txx-yy\ta b\tc d\n'))])


def test_empty_and_missing_files(tmp_path):
  empty = _write(tmp_path / 'empty.de.gz', b'')
  en = _write(tmp_path / 'c.en', '\n'.join(EN) + '\n')
  with pytest.raises(ValueError, match=r'empty\.de\.gz: the file is empty'):
    files.build_files_corpus(tmp_path / 'out', [f'de:{en},{empty}'])
  fake = tmp_path / 'fake.txt.gz'
  fake.write_bytes(b'plain text, not gzip\n')
  with pytest.raises(ValueError, match=r'fake\.txt\.gz:1: cannot decompress'):
    files.build_files_corpus(tmp_path / 'out', mono=[f'de:{fake}'])
  with pytest.raises(FileNotFoundError, match=r'nowhere\.de not found'):
    files.build_files_corpus(tmp_path / 'out', [f'de:{en},{tmp_path / "nowhere.de"}'])


@pytest.mark.parametrize('name, content, message', [
    ('x.tsv', f'{EN[0]}\t{DE[0]}\n{EN[1]}\t{DE[1]}\textra\n',
     r'x\.tsv:2: expected 2 tab-separated fields `english<TAB>translation`.*found 3'),
    ('x.jsonl', json.dumps({'en': EN[0], 'de': DE[0]}) + '\n{"en": "broken\n',
     r'x\.jsonl:2: not valid JSON .*expected one object a line'),
    ('x.jsonl', json.dumps({'en': EN[0], 'fr': FR[0]}) + '\n',
     r"x\.jsonl:1: the object lacks the keys \['de'\]"),
    ('x.jsonl', '[1, 2]\n', r'x\.jsonl:1: expected a JSON object'),
])
def test_format_errors_name_file_and_line(tmp_path, name, content, message):
  path = _write(tmp_path / name, content)
  with pytest.raises(ValueError, match=message):
    files.build_files_corpus(tmp_path / 'out', [f'de:{path}'])


def test_language_column_tsv_needs_four_fields(tmp_path):
  path = _write(tmp_path / 'rows.tsv', f'{EN[0]}\t{DE[0]}\n')
  with pytest.raises(ValueError, match=r'rows\.tsv:1: expected 4 tab-separated fields '
                     r'`src_lang<TAB>tgt_lang<TAB>src<TAB>tgt`.*\(`de:FILE\.tsv`\)'):
    files.build_files_corpus(tmp_path / 'out', [str(path)])


# Readers of the result, and the command line.


def test_output_is_what_tasks_read(tmp_path):
  en = _write(tmp_path / 'c.en', '\n'.join(EN) + '\n')
  de = _write(tmp_path / 'c.de', '\n'.join(DE) + '\n')
  files.build_files_corpus(tmp_path / 'out', [f'de:{en},{de}'], validation_fraction=0.5)
  manifest = layout.load_manifest(tmp_path / 'out')
  assert {'languages', 'pairs', 'mono'} <= set(manifest)
  for split in SPLITS:
    lines = (tmp_path / 'out' / 'parallel' / 'en-de' / f'{split}.tsv').read_text().splitlines()
    assert len(lines) == manifest['pairs']['en-de'][split]
    assert all(line.count('\t') == 1 for line in lines)


def test_cli_main_prints_summary_and_clean_errors(tmp_path, capsys):
  en = _write(tmp_path / 'c.en', '\n'.join(EN) + '\n')
  de = _write(tmp_path / 'c.de', '\n'.join(DE) + '\n')
  cli.main(['data', 'build', 'files', '--out', str(tmp_path / 'out'), '--pairs', f'de:{en},{de}',
            '--validation-fraction', '0.25', '--min-words', '2'])
  printed = capsys.readouterr().out
  assert f'Built {tmp_path / "out"}' in printed and 'kept 4' in printed
  assert layout.load_manifest(tmp_path / 'out')['min_words'] == 2
  with pytest.raises(SystemExit, match='amber-jax data build files: .*unknown language code'):
    cli.main(['data', 'build', 'files', '--out', str(tmp_path / 'out2'), '--pairs',
              f'deutsch:{en},{de}'])


def test_a_folder_that_is_not_a_built_corpus_is_never_replaced(tmp_path):
  # The user's input files live in the folder given as --out: refused, everything left as it was.
  out = tmp_path / 'mine'
  out.mkdir()
  en = _write(out / 'c.en', '\n'.join(EN) + '\n')
  de = _write(out / 'c.de', '\n'.join(DE) + '\n')
  with pytest.raises(FileExistsError, match=r'c\.de, c\.en; no manifest\.json'):
    files.build_files_corpus(out, [f'de:{en},{de}'])
  assert sorted(p.name for p in out.iterdir()) == ['c.de', 'c.en']
  assert en.read_text(encoding='utf-8') == '\n'.join(EN) + '\n'
  with pytest.raises(SystemExit, match='is not a corpus folder that amber-jax built'):
    cli.main(['data', 'build', 'files', '--out', str(out), '--pairs', f'de:{en},{de}'])
  assert sorted(p.name for p in out.iterdir()) == ['c.de', 'c.en']
  # A built corpus, or an empty folder, is replaced.
  built = tmp_path / 'built'
  files.build_files_corpus(built, [f'de:{en},{de}'])
  files.build_files_corpus(built, [f'de:{en},{de}'])
  assert sorted(p.name for p in built.iterdir()) == ['manifest.json', 'mono', 'parallel']
  # ...unless the user put something of theirs beside it.
  _write(built / 'notes.txt', 'mine\n')
  with pytest.raises(FileExistsError, match='notes.txt'):
    files.build_files_corpus(built, [f'de:{en},{de}'])
  assert (built / 'notes.txt').read_text() == 'mine\n'
