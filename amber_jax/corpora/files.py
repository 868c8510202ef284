"""A user's own corpus files (Moses, TSV, JSONL, plain text, .po) -> the corpus layout.

`build_files_corpus(out_dir, pairs=[SPEC, ...], mono=[SPEC, ...])` reads local files only and
writes the folder described in `amber_jax.corpora.layout` (what `read_pairs`, `read_mono`, the
seqio tasks of `tasks/django.py` and `amber_jax.corpora.tfds_export` read). English is always the
source side of a pair.

Specs (`LANG:` is a language code; what follows it is one path, or two joined by a comma):

    pairs  de:corpus.en,corpus.de   Moses style: two line-aligned files, English file first
           de:file.tsv              `english<TAB>translation` a line
           file.tsv                 `src_lang<TAB>tgt_lang<TAB>src<TAB>tgt` a line; an optional
                                    first line `src_lang<TAB>tgt_lang<TAB>src<TAB>tgt` is a header
           de:file.jsonl            {"en": ..., "de": ...} or {"translation": {"en": ..., "de": ...}}
           file.jsonl               {"src": ..., "tgt": ..., "src_lang": ..., "tgt_lang": ...}
           de:file.po               a gettext catalog: msgid (English) -> msgstr, the keep rules of
                                    `amber_jax.corpora.django_po`
    mono   de:file.txt              one sentence a line (any suffix but .jsonl/.tsv/.po)
           de:file.jsonl            {"text": ...} a line

Any file may be compressed: a name ending in `.gz` is read as gzip, `.xz` as xz (`corpus.de.gz`,
`x.tsv.xz`, `x.jsonl.gz`); the format is the suffix before that. Lines are split on `\\n` (a
trailing `\\r` is dropped, as is a UTF-8 byte-order mark at the start of a file) and decoded one by
one, so one bad line never hides the rest of the file.

Language codes: lowercased, `_` -> `-` (`pt_BR` -> `pt-br`). A code is accepted when it is a key
of `django.conf.locale.LANG_INFO` (e.g. `pt-br`, `zh-hans`, `sr-latn`) or an ISO 639 language code
without subtags that the IANA registry of `langcodes` lists in its standard form (e.g. `de`, `fil`,
`swh`; rules in `amber_jax.corpora.languages`). Anything else (`zz`, `qqq`, `german`, `ger`,
`fr-ca`, `de-1996`) is a UserError (a ValueError) naming the spec (or `file:line` for codes read
from a file), saying why, and suggesting codes (`ger` -> `de`, `german` -> `de`, `fr-ca` -> `fr`).
A pair spec may not name `en`.

Errors that stop the build (nothing is written): a missing file (FileNotFoundError), an unknown
language code, an empty file (zero lines once decompressed), a damaged gzip/xz stream, two Moses
files with different line counts (the message names both files, both counts and the first line
without a partner), and format errors, since a file in the wrong format would otherwise be
silently skipped line by line: a TSV line with the wrong number of tab-separated fields, a JSONL
line that is not a JSON object, lacks the expected keys or has non-string values, and a .po file
polib cannot parse. Each names `file:line` and says what was expected.

Counted skips (every entry read is kept or counted under a reason, with up to `MAX_EXAMPLES`
`file:line` examples per reason in the manifest); an entry is a line (Moses: a line pair), a JSONL
object or a .po entry:

    empty_line       a blank (whitespace-only) line in any file
    invalid_utf8     a line that is not valid UTF-8 (Moses: on either side), or a JSON string with
                     a lone surrogate escape
    empty_side       a pair whose English or translation is blank
    empty_text       a mono JSONL object whose "text" is blank
    unchanged        a pair whose translation equals its English sentence
    too_short        English (a pair's English side, or an English mono sentence) with fewer than
                     `min_words` words, or non-English text with no word at all (words: runs of
                     letters/digits, `words.count_words`; CJK text without spaces is one
                     "word", so `min_words` applies to English only)
    duplicate        a pair already kept for that language (from any file), or a mono sentence
                     already in that language's mono text
    no_english_side  a language-column row in which neither side is `en`
    same_language    a language-column row with the same language on both sides
    header           the optional header line of a language-column TSV
    .po entries also: obsolete, fuzzy, empty_msgid, empty_msgstr, mostly_placeholders

Kept text has every run of whitespace (tabs and newlines included) collapsed into one space.

Monolingual text: mono/<lang>/ holds first the distinct sentences of the kept pairs (English sides
in mono/en, translations in mono/<xx>; split with their pair, by the English sentence, as
`layout.split_corpus` does), then the --mono sentences not already there, each split by a hash of
the sentence itself (`layout.is_validation`). The manifest's `languages` lists the languages with
pairs only (the layout's contract); a language given only as --mono text appears under `mono`.

The manifest also records every source (`sources`: spec, format, language, and each file's path,
size in bytes and sha256), per-kind skip counts (`skipped_by_kind`), and `totals`; the builder
checks read == kept + skipped for pairs and for mono before it writes anything.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
import hashlib
import pathlib

from amber_jax.corpora import layout
from amber_jax.corpora.layout import is_validation, SOURCE_LANGUAGE, SPLITS
from amber_jax.corpora.readers import Collector, KINDS, parse_spec, read_source, SPEC_HELP

CORPUS_NAME = 'files'


def file_record(path: pathlib.Path) -> dict:
  """{'path', 'size' (bytes on disk), 'sha256' (of the bytes on disk)} of one source file."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return {'path': str(path), 'size': path.stat().st_size, 'sha256': digest.hexdigest()}


# Building.


def build_files_corpus(out_dir: str | pathlib.Path, pairs: Sequence[str] = (),
                       mono: Sequence[str] = (), *, validation_fraction: float = 0.15,
                       min_words: int = 1) -> dict:
  """Builds a corpus from local files into `out_dir`, replacing a corpus built there atomically
  (a folder holding anything else is refused before any file is read: `layout.check_replaceable`).

  Args:
    out_dir: corpus folder to create.
    pairs: --pairs specs (module docstring), e.g. ['de:corpus.en,corpus.de', 'fr:x.tsv.gz'].
    mono: --mono specs, e.g. ['sw:news.sw.txt.xz', 'en:wiki.jsonl'].
    validation_fraction: share of distinct English sentences (with all of their translations),
      and of --mono sentences, that go to the validation split; in [0, 1).
    min_words: fewest words in English text for it to be kept (>= 0); other languages need one.

  Returns:
    The manifest, as also written to `out_dir/manifest.json`.

  Raises:
    FileNotFoundError: a file of a spec does not exist.
    ValueError: a bad spec, language code, empty file, misaligned Moses pair or format error
      (each message names the spec or `file:line`).
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f'validation_fraction must be in [0, 1), got {validation_fraction}')
  if min_words < 0:
    raise ValueError(f'min_words must be >= 0, got {min_words}')
  if isinstance(pairs, str) or isinstance(mono, str):
    raise TypeError('pairs and mono are lists of specs, e.g. pairs=["de:corpus.en,corpus.de"]')
  if not pairs and not mono:
    raise ValueError(f'no input: give at least one pairs or mono spec ({SPEC_HELP})')
  layout.check_replaceable(out_dir)  # before any work: a folder of the user's is never replaced
  # Every spec is checked (files exist, languages known) before any file is read.
  sources = [parse_spec(s, 'pairs') for s in pairs] + [parse_spec(s, 'mono') for s in mono]

  out = Collector(min_words)
  records = []
  for index, source in enumerate(sources):
    out.source_index = index
    before = {kind: (out.read[kind], sum(out.tallies[kind].counts.values())) for kind in KINDS}
    read_source(source, out)
    records.append({
        'spec': source.spec, 'kind': source.kind, 'format': source.fmt, 'lang': source.lang,
        'files': [file_record(p) for p in source.paths],
        'read': out.read[source.kind] - before[source.kind][0],
        'skipped': sum(out.tallies[source.kind].counts.values()) - before[source.kind][1]})

  by_split, mono_splits = layout.split_corpus(dict(out.pairs), validation_fraction)
  mono_kept, mono_duplicates = _add_mono(mono_splits, out, validation_fraction)
  for index in mono_duplicates:
    records[index]['skipped'] += 1
  pairs_kept = sum(len(v) for v in out.pairs.values())
  kept = {'pairs': pairs_kept, 'mono': mono_kept}
  for kind in KINDS:
    skipped = sum(out.tallies[kind].counts.values())
    if out.read[kind] != kept[kind] + skipped:
      raise RuntimeError(
          f'bookkeeping error: read {out.read[kind]} {kind} entries but kept {kept[kind]} and '
          f'skipped {skipped} ({dict(out.tallies[kind].counts)}); this is a bug in {__name__}')
  mono_splits = {lang: splits for lang, splits in mono_splits.items()
                 if any(splits[s] for s in SPLITS)}
  if not by_split and not mono_splits:
    raise ValueError(
        f'nothing kept from {len(sources)} spec(s): skipped {_skip_counts(out)}; see the '
        'reasons in the module docstring of amber_jax.corpora.files (e.g. lower --min-words)')

  for source_record in records:
    source_record['kept'] = source_record['read'] - source_record.pop('skipped')
  skipped = collections.Counter()
  for tally in out.tallies.values():
    skipped.update(tally.counts)
  examples = [dict(example, kind=kind) for kind, tally in out.tallies.items()
              for example in tally.examples]
  manifest = {
      'name': CORPUS_NAME,
      'source': 'local files: ' + '; '.join(s.spec for s in sources),
      'sources': records,
      'languages': list(by_split),
      'pairs': {f'{SOURCE_LANGUAGE}-{lang}': {s: len(splits[s]) for s in SPLITS}
                for lang, splits in by_split.items()},
      'mono': {lang: {s: len(mono_splits[lang][s]) for s in SPLITS} for lang in sorted(mono_splits)},
      'total_pairs': {s: sum(len(splits[s]) for splits in by_split.values()) for s in SPLITS},
      'skipped': dict(sorted(skipped.items())),
      'skipped_by_kind': {kind: dict(sorted(out.tallies[kind].counts.items())) for kind in KINDS},
      'skipped_examples': examples,
      'file_reasons': [],
      'totals': {'files_read': sum(len(s.paths) for s in sources),
                 **{f'{kind}_{what}': n for kind in KINDS for what, n in
                    (('read', out.read[kind]), ('kept', kept[kind]),
                     ('skipped', sum(out.tallies[kind].counts.values())))}},
      'validation_fraction': validation_fraction,
      'min_words': min_words,
  }
  layout.write_corpus(pathlib.Path(out_dir), by_split, mono_splits, manifest)
  return manifest


def _add_mono(mono_splits: dict, out: Collector,
              validation_fraction: float) -> tuple[int, list[int]]:
  """Appends the --mono sentences not already in their language's mono text.

  Returns:
    (sentences kept, the source index of each sentence skipped as a duplicate).
  """
  kept, duplicates = 0, []
  for lang, sentences in out.mono.items():
    splits = mono_splits.setdefault(lang, {s: [] for s in SPLITS})
    present = {text for s in SPLITS for text in splits[s]}
    for text, file, line, index in sentences:
      if text in present:
        out.skip('mono', 'duplicate', file, line, text)
        duplicates.append(index)
        continue
      present.add(text)
      splits['validation' if is_validation(text, validation_fraction) else 'train'].append(text)
      kept += 1
  return kept, duplicates


def _skip_counts(out: Collector) -> dict:
  counts = collections.Counter()
  for tally in out.tallies.values():
    counts.update(tally.counts)
  return dict(sorted(counts.items()))


def summary(out_dir: str | pathlib.Path, manifest: dict) -> str:
  """One paragraph: what was read, kept and skipped, and where the corpus is."""
  totals = manifest['totals']
  pairs = ', '.join(f'{k} {v["train"]}+{v["validation"]}' for k, v in manifest['pairs'].items())
  mono = ', '.join(f'{k} {v["train"]}+{v["validation"]}' for k, v in manifest['mono'].items())
  return (f'Built {out_dir} from {totals["files_read"]} file(s): read {totals["pairs_read"]} '
          f'pair entries, kept {totals["pairs_kept"]} ({pairs or "none"}; train+validation), '
          f'skipped {totals["pairs_skipped"]} {manifest["skipped_by_kind"]["pairs"]}; read '
          f'{totals["mono_read"]} mono lines, kept {totals["mono_kept"]}, skipped '
          f'{totals["mono_skipped"]} {manifest["skipped_by_kind"]["mono"]}; mono text per language '
          f'(with the sides of the pairs): {mono or "none"}. Skip examples (file:line) are in '
          f'{pathlib.Path(out_dir) / "manifest.json"}.')
