"""Language codes of a user's corpus files: normalise, accept or reject with suggestions.

A code is lowercased with `_` -> `-` (`pt_BR` -> `pt-br`) and accepted when it is a key of
`django.conf.locale.LANG_INFO` (e.g. `pt-br`, `zh-hans`, `sr-latn`) or exactly 2-3 ASCII
letters (an ISO 639 language code without subtags, e.g. `de`, `swh`). Anything else (`german`,
`fr-ca`, `de-1996`) is a ValueError that says where the code was found and suggests codes
(`fr-ca` -> `fr`, `german` -> `de`).
"""

from __future__ import annotations

import difflib
import re

from django.conf.locale import LANG_INFO

from amber_jax.corpora import django_po


def normalize_language(code: str) -> str:
  """`pt_BR` -> `pt-br`: lowercase, `_` and `@` -> `-`, surrounding blanks removed."""
  return django_po.normalize_language(code.strip())


def _lang_info() -> dict:
  return LANG_INFO


def is_known_language(code: str) -> bool:
  """Whether a normalised code is accepted: a LANG_INFO key or exactly 2-3 ASCII letters."""
  return code in _lang_info() or re.fullmatch(r'[a-z]{2,3}', code) is not None


def suggest_languages(code: str) -> list[str]:
  """Up to 5 accepted codes close to `code` (by its primary subtag, name, or spelling)."""
  info = _lang_info()
  code = normalize_language(code)
  found = []
  primary = code.split('-')[0]
  if primary != code and is_known_language(primary):
    found.append(primary)
  found += [key for key, value in info.items()
            if code in (value.get('name', '').lower(), value.get('name_local', '').lower())]
  found += difflib.get_close_matches(code, sorted(info), n=3, cutoff=0.6)
  return list(dict.fromkeys(found))[:5]


def check_language(code: str, where: str) -> str:
  """The normalised code, or a ValueError saying `where` it was found and what to use instead."""
  lang = normalize_language(code)
  if is_known_language(lang):
    return lang
  suggestions = suggest_languages(code)
  hint = f'did you mean {", ".join(suggestions)}? ' if suggestions else ''
  raise ValueError(
      f'{where}: unknown language code {code!r}; {hint}use a key of django.conf.locale.LANG_INFO '
      "(e.g. 'de', 'pt-br', 'zh-hans') or a plain 2-3 letter ISO 639 code (e.g. 'sw')")
