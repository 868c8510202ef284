"""`amber-jax eval retrieval|mining|transfer` and `amber-jax align`: evaluate a run folder or an
exported HF folder."""

from __future__ import annotations

import argparse
import pathlib
import sys

from amber_jax import paths
from amber_jax.corpora import layout
from amber_jax.data import aligned, teacher
from amber_jax.eval import align, mining, plots, retrieval, transfer
from amber_jax.export import runs


def _eval_pairs(args) -> dict[str, list[tuple[str, str]]]:
  """{lang: [(src, tgt)]} from --pairs FILE.tsv or the corpus split, filtered as asked."""
  if args.pairs:
    pairs = retrieval.read_pairs_tsv(args.pairs)
  else:
    pairs = layout.read_pairs(pathlib.Path(args.corpus) if args.corpus else
                                 paths.corpus_dir('django'), args.split)
  if args.languages:
    pairs = {k: pairs[k] for k in args.languages.split(',') if k in pairs}
  pairs = {k: v for k, v in pairs.items() if len(retrieval.unique_pairs(v)) >= args.min_pairs}
  if not pairs:
    raise SystemExit('amber-jax eval: no language left (check --languages and --min-pairs).')
  return pairs


def _eval_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='amber-jax eval',
      description='retrieval: Tatoeba-style sentence retrieval accuracy at every layer; mining: '
      'BUCC-style margin mining (precision, recall, F1) at one layer; transfer: fine-tune a '
      'classifier on English (the Django component of a catalog sentence) and test it on the other '
      'languages.')
  p.add_argument('kind', choices=['retrieval', 'mining', 'transfer'])
  p.add_argument('model', help='a training run folder or an exported HF folder')
  p.add_argument('--pairs', default='', help='TSV of `lang<TAB>src<TAB>tgt` or `src<TAB>tgt` '
                 'lines (default: the corpus split)')
  p.add_argument('--corpus', default='', help='corpus folder (default: the Django corpus)')
  p.add_argument('--split', default='validation')
  p.add_argument('--languages', default='', help='comma-separated codes (default: all)')
  p.add_argument('--min-pairs', type=int, default=1, help='skip languages with fewer pairs')
  p.add_argument('--plot', default='', help='retrieval: PNG of the accuracy by layer')
  p.add_argument('--layer', type=int, default=-1, help='mining: the layer (0 = embeddings)')
  p.add_argument('--k', type=int, default=4, help='mining: margin neighbourhood')
  p.add_argument('--mode', default='intersection',
                 choices=['forward', 'backward', 'intersection', 'union'], help='mining')
  p.add_argument('--threshold', type=float, default=None, help='mining: margin threshold')
  p.add_argument('--epochs', type=int, default=10, help='transfer: fine-tuning epochs')
  p.add_argument('--learning-rate', type=float, default=2e-4, help='transfer: peak AdamW rate')
  p.add_argument('--pooling', choices=['mean', 'cls'], default='mean')
  p.add_argument('--freeze-encoder', action='store_true', help='transfer: train the head only')
  p.add_argument('--min-per-class', type=int, default=40, help='transfer: English examples')
  return p


def cmd_eval(argv: list[str]) -> None:
  """`eval retrieval|mining|transfer MODEL [--pairs FILE.tsv] [--plot PNG] ...`."""
  args = _eval_parser().parse_args(argv)
  if args.kind == 'transfer':
    params, cfg, tok, _ = runs.load_encoder(args.model)
    train, test, classes = transfer.split_examples(transfer.django_app_examples(),
                                                   min_per_class=args.min_per_class)
    if args.languages:
      test = {k: v for k, v in test.items() if k in ['en'] + args.languages.split(',')}
    print(f'classes {classes}; {len(train)} English training sentences; {len(test)} test '
          'languages')
    result = transfer.sentence_transfer(params, cfg, tok, train, test, classes, print_fn=print,
                                        epochs=args.epochs, learning_rate=args.learning_rate,
                                        pooling=args.pooling,
                                        freeze_encoder=args.freeze_encoder)
    print(transfer.format_transfer_table(result))
    return
  pairs = _eval_pairs(args)
  embed = runs.embedder_for(args.model)
  if args.kind == 'retrieval':
    by_layer = retrieval.retrieval_by_layer(embed, pairs)
    names = ('src->tgt', 'tgt->src') if args.pairs else ('en->xx', 'xx->en')
    counts = {k: len(retrieval.unique_pairs(v)) for k, v in pairs.items()}
    print(retrieval.format_layer_table(by_layer, counts, names))
    baseline = retrieval.char_ngram_accuracy(pairs, 3)
    print(f'char 3-gram cosine on the same pairs (the lexical-overlap baseline): '
          f'{names[0]} {baseline[0]:.3f}, {names[1]} {baseline[1]:.3f}')
    if args.plot:
      print(f'Wrote {plots.retrieval_by_layer(by_layer, args.plot, names=names)}')
  else:
    print(mining.format_mining_table(mining.evaluate_mining(
        embed, pairs, layer=args.layer, k=args.k, mode=args.mode, threshold=args.threshold)))


def _align_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='amber-jax align',
      description='Word-align pre-tokenised sentence pairs with the encoder (attention or '
      'similarity), write them in Pharaoh format and, given gold links, print the AER.')
  p.add_argument('model', help='a training run folder or an exported HF folder')
  p.add_argument('--pairs', required=True, help='`src words<TAB>tgt words` (or `src ||| tgt`) '
                 'lines, pre-tokenised')
  p.add_argument('--method', choices=align.METHODS, default=None,
                 help="default: 'guided' for a run trained with a teacher (configs/align.py), "
                 "else 'attention'")
  p.add_argument('--teacher-pairs', default=None,
                 help="guided: the pairs eflomal learns from besides --pairs (default: the "
                 "run's config.data.align_pairs, when that file is there)")
  p.add_argument('--rule', choices=align.ATTENTION_RULES, default='argmax',
                 help='attention: how the two directions combine')
  p.add_argument('--threshold', type=float, default=None,
                 help='product threshold (0.1) or similarity softmax threshold (1e-3)')
  p.add_argument('--layer', type=int, default=None, help='similarity: layer (default 2/3 deep)')
  p.add_argument('--out', default='', help='Pharaoh output file (default: stdout)')
  p.add_argument('--gold', default='', help='gold Pharaoh file (`i-j` sure, `i?j` possible)')
  p.add_argument('--possible', default='', help='a separate file of possible links')
  p.add_argument('--heatmap', default='', help='PNG of the matrices of pair --index')
  p.add_argument('--index', type=int, default=0)
  return p


def _teacher_links(args, config, pairs):
  """eflomal's (forward, reverse) links of `pairs`, learnt together with the teacher pairs (the
  run's training pairs unless --teacher-pairs says otherwise; none when they are `pairs`)."""
  extra = args.teacher_pairs
  if extra is None:
    extra = config.data.get('align_pairs', '') if config is not None else ''
    extra = extra if extra and pathlib.Path(extra).is_file() else ''
  same = extra and pathlib.Path(extra).resolve() == pathlib.Path(args.pairs).resolve()
  more = aligned.read_word_pairs(extra) if extra and not same else []
  print(f'Teacher: eflomal on {len(more) + len(pairs):,} pairs', file=sys.stderr)
  return teacher.pair_directions(pairs, learn_with=more)


def cmd_align(argv: list[str]) -> None:
  """`align MODEL --pairs FILE [--method attention|similarity] [--gold FILE] ...`."""
  args = _align_parser().parse_args(argv)
  params, cfg, tok, config = runs.load_encoder(args.model)
  wa_mask = config.objectives.wa_mask if config is not None else 'paper'
  aligner = align.Aligner(params, cfg, tok, wa_mask=wa_mask, layer=args.layer)
  pairs = aligned.read_word_pairs(args.pairs)
  guided = config is not None and config.objectives.get('guided_weight', 0.0) > 0
  method = args.method or ('guided' if guided else 'attention')
  teacher_links = _teacher_links(args, config, pairs) if method == 'guided' else None
  links = aligner.align(pairs, method, rule=args.rule, threshold=args.threshold,
                        teacher_links=teacher_links)
  text = '\n'.join(align.to_pharaoh(l) for l in links) + '\n'
  if args.out:
    pathlib.Path(args.out).write_text(text, encoding='utf-8')
    print(f'Wrote {len(links)} alignments to {args.out}')
  else:
    print(text, end='')
  if args.gold:
    gold = align.read_gold(args.gold, args.possible or None)
    print(f'AER {align.aer(links, gold):.4f} ({method}, {len(links)} pairs)')
  if args.heatmap:
    m = aligner.matrices(*pairs[args.index])
    out = plots.alignment_heatmap({k: m[k] for k in ('attention', 'similarity')},
                                  m['src_pieces'], m['tgt_pieces'], args.heatmap,
                                  title=f'pair {args.index}')
    print(f'Wrote {out}')
