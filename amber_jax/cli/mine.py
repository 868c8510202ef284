"""`amber-jax mine`: mine translation pairs from two monolingual files with a run folder or an
exported HF folder (docs/MINING.md)."""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

from amber_jax import errors
from amber_jax.corpora import files, languages
from amber_jax.eval import mine, mining
from amber_jax.export import runs

# Chosen on data (docs/MINING.md): 1.0678, rounded, maximised the mean F1 over the validation-split
# mining tasks (held-out Django apps) of six languages whose pairs the mining model never saw.
DEFAULT_THRESHOLD = 1.07


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='amber-jax mine',
      description='Embed two files of sentences (one a line; .gz/.xz read as such), find each '
      "sentence's nearest neighbours in the other with faiss, score them by ratio margin (Artetxe "
      '& Schwenk) and keep the pairs above a threshold: DIR/pairs.tsv (score<TAB>src<TAB>tgt, '
      'best first), DIR/mining.json and, when one side is English, DIR/corpus/ (the layout of '
      '`data build files`) with the config.data.extra_tasks entry that trains on it.')
  p.add_argument('model', help='a training run folder or an exported HF folder')
  p.add_argument('--src', required=True, help='source sentences, one a line')
  p.add_argument('--tgt', required=True, help='target sentences, one a line')
  p.add_argument('--out', required=True, help='output folder (new, empty or an earlier output)')
  p.add_argument('--src-lang', default='', help='language code of --src (e.g. en)')
  p.add_argument('--tgt-lang', default='', help='language code of --tgt (e.g. de)')
  p.add_argument('--threshold', type=float, default=DEFAULT_THRESHOLD,
                 help=f'keep pairs with margin >= this (default {DEFAULT_THRESHOLD}, chosen on '
                 'data: docs/MINING.md)')
  p.add_argument('--k', type=int, default=4, help='margin neighbourhood (default 4)')
  p.add_argument('--candidates', type=int, default=16,
                 help='nearest neighbours by cosine searched for the best margin (default 16)')
  p.add_argument('--mode', default='intersection', choices=mining.MODES)
  p.add_argument('--index', default='auto', choices=mine.INDEXES,
                 help=f'faiss index: auto = exact up to {mine.EXACT_MAX:,} sentences, IVF above')
  p.add_argument('--layer', type=int, default=-1, help='layer to pool (0 = embeddings, -1 last)')
  p.add_argument('--chunk', type=int, default=8192, help='sentences embedded per call')
  return p


def embedder_for(model: str):
  """`runs.embedder_for` after checking the folder, so that each wrong folder gets one line."""
  folder = pathlib.Path(model)
  if not folder.exists():
    raise errors.UserError(f'the model folder {model} does not exist.')
  if not folder.is_dir():
    raise errors.UserError(f'the model {model} is a file; give a training run folder or an '
                           'exported HF folder.')
  if (folder / 'config.json').is_file() and not (folder / 'checkpoints').exists() and not any(
      (folder / name).is_file() for name in ('model.safetensors', 'pytorch_model.bin')):
    raise runs.NotARunError(
        f'{model} is neither a training run folder (config.json + checkpoints/) nor an exported '
        'HF folder (config.json + model.safetensors): it has config.json but no checkpoints/ and '
        'no weights.')
  return runs.embedder_for(model)


def embed_sentences(embed, sentences: list[str], layer: int, chunk: int) -> np.ndarray:
  """float32 [n, d]: `layer` of `embed` over `sentences`, `chunk` at a time (the embedder returns
  every layer; only one is kept)."""
  parts = [np.asarray(embed(sentences[s:s + chunk])[layer], np.float32)
           for s in range(0, len(sentences), chunk)]
  return np.concatenate(parts)


def cmd_mine(argv: list[str]) -> None:
  """`mine MODEL --src A.txt --tgt B.txt --out DIR [--src-lang en --tgt-lang de] ...`; the
  record is also in DIR/mining.json."""
  args = _parser().parse_args(argv)
  if args.k < 1 or args.candidates < 1 or args.chunk < 1:
    raise errors.UserError('--k, --candidates and --chunk must be >= 1.')
  src_lang = languages.check_language(args.src_lang, '--src-lang') if args.src_lang else ''
  tgt_lang = languages.check_language(args.tgt_lang, '--tgt-lang') if args.tgt_lang else ''
  mine.check_out_dir(args.out)
  sources = mine.read_sentences(args.src, '--src')
  targets = mine.read_sentences(args.tgt, '--tgt')
  embed = embedder_for(args.model)
  start = time.time()
  x = embed_sentences(embed, sources, args.layer, args.chunk)
  y = embed_sentences(embed, targets, args.layer, args.chunk)
  embedded = time.time()
  found = mine.margin_candidates(x, y, k=args.k, candidates=args.candidates, mode=args.mode,
                                 index=args.index)
  kept = [(score, sources[i], targets[j]) for i, j, score in found if score >= args.threshold]
  searched = time.time()
  record = {
      'model': str(pathlib.Path(args.model).resolve()), 'src': files.file_record(
          pathlib.Path(args.src)), 'tgt': files.file_record(pathlib.Path(args.tgt)),
      'src_lang': src_lang, 'tgt_lang': tgt_lang, 'n_src': len(sources), 'n_tgt': len(targets),
      'k': args.k, 'candidates': args.candidates, 'mode': args.mode, 'index': args.index,
      'layer': args.layer, 'threshold': args.threshold, 'candidate_pairs': len(found),
      'kept': len(kept), 'embed_seconds': round(embedded - start, 2),
      'search_seconds': round(searched - embedded, 2)}
  record = mine.write_mined(args.out, kept, record, src_lang=src_lang, tgt_lang=tgt_lang)
  out = pathlib.Path(args.out)
  print(f'{len(sources)} source and {len(targets)} target sentences; {len(found)} candidate pairs '
        f'({args.mode}), {len(kept)} with margin >= {args.threshold}: {out / "pairs.tsv"}')
  if record['corpus']:
    print(f'corpus folder: {record["corpus"]} (skipped {record["skipped"] or "none"}); train on '
          f'it with --config.data.extra_tasks="[{record["extra_task"]}]"')
  else:
    print(record['corpus_note'])
