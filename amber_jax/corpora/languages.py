"""Language codes of a user's corpus files: normalise, accept or reject with suggestions.

A code is lowercased with `_` and `@` -> `-` (`pt_BR` -> `pt-br`) and accepted when it is

- a key of `django.conf.locale.LANG_INFO` (e.g. `pt-br`, `zh-hans`, `zh-cn`, `sr-latn`): every
  code the Django and Debian man-page corpora write, so a user's files can add to those languages;
- or an ISO 639 language code without subtags that the IANA language subtag registry (shipped
  with `langcodes`) lists in the form `langcodes` standardises to: the two-letter ISO 639-1 code
  where there is one (`de`, `sw`), else the three-letter ISO 639-3 code (`fil`, `ast`, `swh`).

Refused, as a `UserError` (a ValueError) that says where the code was found, why, and "did you
mean" the accepted codes it most likely stands for:

- codes the registry does not know (`zz`, `xx`, `german`): language names are looked up with
  `langcodes.find` (`english` -> `en`, `deutsch` -> `de`), other codes compared by spelling with
  the two-letter codes and the LANG_INFO keys (`pt-bx` -> `pt`; `zz` has nothing close);
- other codes for a language that has an accepted one, so that a language has one code in a
  corpus: ISO 639-2 (`ger`, `deu` -> `de`; `fre` -> `fr`) and codes the registry deprecates
  (`iw` -> `he`, `in` -> `id`, `ji` -> `yi`, `jw` -> `jv`, `mo` -> `ro`). `tl` (Tagalog) and `sh`
  (Serbo-Croatian) stay accepted as written: they are current ISO 639-1 codes that only CLDR
  aliases (to `fil`, `sr-latn`), and corpora such as OPUS and Tatoeba use them;
- private-use codes (`qaa`-`qtz`, e.g. `qqq`) and the special codes `mis`, `mul`, `und`, `zxx`,
  which name no language;
- tags with subtags that are not LANG_INFO keys (`fr-ca` -> `fr`, `de-1996` -> `de`).
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
import string

from django.conf.locale import LANG_INFO
import langcodes

from amber_jax.corpora import django_po
from amber_jax.errors import UserError

MAX_SUGGESTIONS = 3
# ISO 639-2 codes that name no language: uncoded, multiple, undetermined, no linguistic content.
SPECIAL_CODES = ('mis', 'mul', 'und', 'zxx')
_PRIVATE_USE = re.compile(r'q[a-t][a-z]')  # qaa-qtz, reserved for local use by ISO 639-2.
_BARE_CODE = re.compile(r'[a-z]{2,3}')
# Current ISO 639-1 codes that langcodes standardises to another code after CLDR's aliases only
# (the IANA registry does not deprecate them): accepted as written.
KEPT_AS_WRITTEN = ('sh', 'tl')


def normalize_language(code: str) -> str:
  """`pt_BR` -> `pt-br`: lowercase, `_` and `@` -> `-`, surrounding blanks removed."""
  return django_po.normalize_language(code.strip())


def _standard_tag(code: str) -> str | None:
  """What `langcodes` standardises `code` to, lowercased (`ger` -> 'de', `sh` -> 'sr-latn'), or
  None when the result is not a valid tag of the registry."""
  try:
    language = langcodes.Language.get(code)
  except ValueError:  # langcodes.tag_parser.LanguageTagError: not shaped like a tag at all.
    return None
  return str(language).lower() if language.is_valid() else None


def _refusal(code: str) -> str | None:
  """Why a normalised code is refused (a sentence), or None when it is accepted."""
  if code in LANG_INFO:
    return None
  if _BARE_CODE.fullmatch(code) is None:
    primary = code.split('-')[0]
    if primary != code and _BARE_CODE.fullmatch(primary):
      return 'It has subtags, which only keys of django.conf.locale.LANG_INFO may have.'
    return 'It is not an ISO 639 language code.'
  if _PRIVATE_USE.fullmatch(code):
    return 'Codes qaa-qtz are reserved for private use and name no language.'
  if code in SPECIAL_CODES:
    return 'It is a special ISO 639 code that names no language.'
  standard = _standard_tag(code)
  if not langcodes.Language.get(code, normalize=False).is_valid():
    if standard is not None and standard != code:
      return (f'It is not in the IANA language subtag registry, which writes this language '
              f'{standard!r}.')
    return 'It is not an ISO 639 language code of the IANA language subtag registry.'
  if standard != code and code not in KEPT_AS_WRITTEN:
    return (f'It is a deprecated or alternative code; the registry writes this language '
            f'{standard!r}.')
  return None


@functools.lru_cache(maxsize=4096)
def is_known_language(code: str) -> bool:
  """Whether a normalised code is accepted (module docstring): `de`, `fil`, `pt-br` yes; `zz`,
  `qqq`, `ger`, `fr-ca` no."""
  return _refusal(code) is None


@functools.lru_cache(maxsize=1)
def _spelling_candidates() -> tuple[str, ...]:
  """The accepted two-letter codes and the LANG_INFO keys, sorted: what a typo is compared with."""
  pairs = (''.join(p) for p in itertools.product(string.ascii_lowercase, repeat=2))
  return tuple(sorted({c for c in pairs if is_known_language(c)} | set(LANG_INFO)))


def _by_name(text: str) -> list[str]:
  """Codes whose language is named `text` (`english`, `Deutsch`, `Brazilian Portuguese`)."""
  found = [key for key, value in LANG_INFO.items()
           if text.lower() in (value.get('name', '').lower(), value.get('name_local', '').lower())]
  try:
    found.append(str(langcodes.find(text)).lower())
  except LookupError:  # No language has that name.
    pass
  return found


def suggest_languages(code: str) -> list[str]:
  """Up to `MAX_SUGGESTIONS` accepted codes `code` most likely stands for, best first: the
  registry's code for it (`ger` -> 'de'), its primary subtag (`fr-ca` -> 'fr'), codes of a
  language of that name (`english` -> 'en'); only when there is none of those, close spellings
  among the two-letter codes and LANG_INFO keys (`dex` -> 'de'; nothing for `zz`, nor for the
  private-use and special codes such as `qqq` and `und`)."""
  text = code.strip()
  code = normalize_language(text)
  primary = code.split('-')[0]
  found = [_standard_tag(code), primary, _standard_tag(primary)] + _by_name(text)
  accepted = [c for c in found if c and c != code and is_known_language(c)]
  if not accepted and not _PRIVATE_USE.fullmatch(code) and code not in SPECIAL_CODES:
    accepted = difflib.get_close_matches(code, _spelling_candidates(), n=MAX_SUGGESTIONS,
                                         cutoff=0.6)
  return list(dict.fromkeys(accepted))[:MAX_SUGGESTIONS]


def _display(code: str) -> str:
  """`de` -> "'de' (German)"."""
  try:
    return f'{code!r} ({langcodes.Language.get(code).display_name()})'
  except (ValueError, LookupError, ImportError):  # No name data for it: the code alone.
    return repr(code)


def check_language(code: str, where: str) -> str:
  """The normalised code, or a UserError (a ValueError) naming the code, `where` it was found
  (a spec, `file:line`), why it is refused and what to use instead.

  Raises:
    UserError: the code is not accepted (module docstring).
  """
  lang = normalize_language(code)
  reason = _refusal(lang)
  if reason is None:
    return lang
  suggestions = suggest_languages(code)
  hint = (f'did you mean {" or ".join(_display(s) for s in suggestions)}?' if suggestions
          else 'no accepted code is close to it.')
  raise UserError(
      f'{where}: unknown language code {code!r}; {hint} {reason} Accepted: ISO 639 codes of the '
      "IANA registry (e.g. 'de', 'sw', 'fil') and keys of django.conf.locale.LANG_INFO (e.g. "
      "'pt-br', 'zh-hans').")
