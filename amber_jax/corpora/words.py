"""Word counts for the corpus builders' keep rules (`min_words`), format placeholders aside.

The Django catalogs, a user's files and the man pages all skip text with too few words; they
count them here. Catalog text (and the user's files) counts its words with the format
placeholders removed, so `%(name)s was deleted.` has three words; man-page text has no such
fields and counts every word (`skip_placeholders=False`).
"""

from __future__ import annotations

import re

# `%(name)s` and `%s`-style printf fields (no space flag, so "50% of" is text), `{0}` and `{name}`
# format fields, HTML tags and character entities.
PLACEHOLDER_RE = re.compile(
    r'%\([^)]*\)[-#0+]*\d*(?:\.\d+)?[diouxXeEfFgGcrs]'
    r'|%[-#0+]*\d*(?:\.\d+)?[diouxXeEfFgGcrs]'
    r'|\{[^{}\s]*\}'
    r'|</?[A-Za-z][^<>]*>'
    r'|&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);')
_WORD_RE = re.compile(r'\w+')


def count_words(text: str, *, skip_placeholders: bool = True) -> int:
  """Words (runs of letters, digits or underscores) in `text`.

  Args:
    text: the text to count.
    skip_placeholders: strip the format placeholders (`PLACEHOLDER_RE`) first.

  Returns:
    The number of words.
  """
  if skip_placeholders:
    text = PLACEHOLDER_RE.sub(' ', text)
  return len(_WORD_RE.findall(text))
