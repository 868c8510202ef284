"""Language codes of users' corpus files, checked against the IANA registry of `langcodes`."""

from __future__ import annotations

import pathlib
import re

from django.conf.locale import LANG_INFO
import pytest

from amber_jax import cli
from amber_jax.corpora import files, languages, manpages
from amber_jax.errors import UserError

EN = ['The little boat sails at dawn.', 'Rain is expected on Tuesday.']
XX = ['Ein kleines Boot segelt.', 'Am Dienstag regnet es.']


def _moses(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  en, xx = tmp_path / 'c.en', tmp_path / 'c.xx'
  en.write_text('\n'.join(EN) + '\n', encoding='utf-8')
  xx.write_text('\n'.join(XX) + '\n', encoding='utf-8')
  return en, xx


@pytest.mark.parametrize('code, reason', [
    ('zz', r'no accepted code is close to it\. It is not an ISO 639 language code of the IANA '
           r'language subtag registry\.'),
    ('qqq', r'no accepted code is close to it\. Codes qaa-qtz are reserved for private use'),
])
def test_codes_the_registry_does_not_know_are_refused_and_named(tmp_path, code, reason):
  en, xx = _moses(tmp_path)
  with pytest.raises(UserError, match=rf"--pairs '{code}:.*c\.en,.*c\.xx': unknown language "
                     rf"code '{code}'; {reason}"):
    files.build_files_corpus(tmp_path / 'out', [f'{code}:{en},{xx}'])
  assert not (tmp_path / 'out').exists()


def test_the_command_line_names_the_refused_code(tmp_path):
  en, xx = _moses(tmp_path)
  with pytest.raises(SystemExit, match=r"amber-jax data build files: --pairs 'zz:.*': unknown "
                     r"language code 'zz'"):
    cli.main(['data', 'build', 'files', '--out', str(tmp_path / 'out'), '--pairs',
              f'zz:{en},{xx}'])


@pytest.mark.parametrize('code, suggestion', [
    ('ger', "'de' (German)"),  # ISO 639-2/B: the registry writes German 'de'.
    ('deu', "'de' (German)"),  # ISO 639-2/T.
    ('english', "'en' (English)"),  # A language name (langcodes.find).
    ('Deutsch', "'de' (German)"),  # ...in the language itself.
    ('iw', "'he' (Hebrew)"),  # Deprecated.
])
def test_other_codes_and_names_suggest_the_registry_code(tmp_path, code, suggestion):
  path = tmp_path / 'x.txt'
  path.write_text('Ein Satz.\n', encoding='utf-8')
  with pytest.raises(UserError, match=rf"--mono '{code}:.*x\.txt': unknown language code "
                     rf"'{code}'; did you mean {re.escape(suggestion)}\? It "):
    files.build_files_corpus(tmp_path / 'out', mono=[f'{code}:{path}'])
  assert languages.suggest_languages(code)[0] == suggestion.split("'")[1]


def test_suggestions_are_few_and_close():
  assert languages.suggest_languages('zz') == []  # Nothing is close.
  assert languages.suggest_languages('qqq') == []
  assert languages.suggest_languages('und') == []  # A special code: names no language.
  assert languages.suggest_languages('eng') == ['en']  # The registry's code, not look-alikes.
  assert languages.suggest_languages('fr-ca') == ['fr']
  assert languages.suggest_languages('dex') == ['de']  # A close spelling.
  with pytest.raises(UserError, match=r"'qqq'; no accepted code is close to it\. Codes qaa-qtz "):
    languages.check_language('qqq', 'x')


@pytest.mark.parametrize('code, normalized, twin, suggestion', [
    ('de', 'de', 'ger', 'de'),
    ('fr', 'fr', 'fre', 'fr'),
    ('pt_BR', 'pt-br', 'por', 'pt'),
    ('zh_Hans', 'zh-hans', 'chi', 'zh'),
    ('fil', 'fil', 'tgl', 'fil'),  # ISO 639-3 only: no two-letter code.
    ('ast', 'ast', 'axt', 'ast'),  # Asturian; `axt` is no code: a typo, by spelling.
])
def test_real_codes_are_accepted_and_their_look_alikes_refused(tmp_path, code, normalized, twin,
                                                               suggestion):
  en, xx = _moses(tmp_path)
  manifest = files.build_files_corpus(tmp_path / 'out', [f'{code}:{en},{xx}'])
  assert manifest['languages'] == [normalized]
  with pytest.raises(UserError, match=rf"'{twin}'; did you mean '{suggestion}'"):
    languages.check_language(twin, 'x')


def test_codes_the_corpus_builders_write_stay_valid():
  # Django: every LANG_INFO key. Debian man pages: folder names of the manpages-* packages.
  for code in LANG_INFO:
    assert languages.check_language(code, 'LANG_INFO') == code
  folders = ['cs', 'da', 'de', 'es', 'fi', 'fr', 'hr', 'hu', 'id', 'it', 'ja', 'ko', 'nl', 'pl',
             'pt', 'pt_BR', 'ro', 'ru', 'sl', 'sr', 'sv', 'tr', 'uk', 'vi', 'zh_CN', 'zh_TW']
  for folder in folders:
    code = manpages.language_code(folder)
    assert languages.check_language(folder, 'man') == code
  # ...and each language has that one code: its ISO 639-2/3 spellings are refused.
  for other, code in [('deu', 'de'), ('fra', 'fr'), ('jpn', 'ja'), ('zho', 'zh'), ('srp', 'sr')]:
    assert not languages.is_known_language(other)
    assert languages.suggest_languages(other) == [code]


def test_iso_639_1_codes_that_only_cldr_aliases_are_kept_as_written():
  # Tagalog and Serbo-Croatian: current ISO 639-1 codes (OPUS and Tatoeba write them) that
  # langcodes would turn into 'fil' and 'sr-latn'; the registry's deprecated codes still point on.
  assert languages.check_language('tl', 'x') == 'tl'
  assert languages.check_language('sh', 'x') == 'sh'
  for deprecated, current in (('iw', 'he'), ('in', 'id'), ('mo', 'ro')):
    with pytest.raises(UserError, match=rf"'{deprecated}'; did you mean '{current}'"):
      languages.check_language(deprecated, 'x')
