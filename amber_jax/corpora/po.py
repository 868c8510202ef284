"""gettext catalogs (.po): decoding, the translation of an entry, and which entries to keep.

Shared by the Django catalog corpus (`amber_jax.corpora.django_po`) and a user's own .po files
(`amber_jax.corpora.readers`); the keep rules are those of DATA.md §1 (see `django_po`).
"""

from __future__ import annotations

import polib

from amber_jax.corpora.layout import collapse_whitespace
from amber_jax.corpora.words import count_words, PLACEHOLDER_RE


def decode_catalog(raw: bytes) -> tuple[str, list[int]]:
  """UTF-8 text of a catalog (bad bytes -> U+FFFD) and the 1-based lines that held bad bytes."""
  try:
    return raw.decode('utf-8'), []
  except UnicodeDecodeError:
    # b'\n' never occurs inside a UTF-8 sequence, so the lines can be checked one by one.
    bad = [number for number, line in enumerate(raw.split(b'\n'), start=1)
           if line.decode('utf-8', errors='replace').encode('utf-8') != line]
    return raw.decode('utf-8', errors='replace'), bad


def entry_translation(entry: polib.POEntry) -> str:
  """The msgstr of a singular entry, msgstr[0] of a plural one."""
  if entry.msgid_plural:
    return entry.msgstr_plural.get(0, '')
  return entry.msgstr


def entry_skip_reason(entry: polib.POEntry, min_words: int) -> str | None:
  """Why a parsed (valid UTF-8) entry is not kept, or None to keep it."""
  if entry.obsolete:
    return 'obsolete'
  if 'fuzzy' in entry.flags:
    return 'fuzzy'
  english = collapse_whitespace(entry.msgid)
  translation = collapse_whitespace(entry_translation(entry))
  if not english:
    return 'empty_msgid'
  if not translation:
    return 'empty_msgstr'
  if translation == english:
    return 'unchanged'
  if count_words(english) < min_words:
    return 'mostly_placeholders' if PLACEHOLDER_RE.search(english) else 'too_short'
  if count_words(translation) == 0:
    return 'mostly_placeholders'
  return None
