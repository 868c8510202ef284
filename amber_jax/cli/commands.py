"""The `amber-jax` command line.

  amber-jax demo                                  corpus -> vocab -> train tiny -> eval -> export
  amber-jax data build django [--out DIR]         the Django catalog corpus (DATA.md §1)
  amber-jax data build manpages [--out DIR]       the Debian man-page translations (DATA.md §2)
  amber-jax data build files --out DIR ...        your own Moses/TSV/JSONL/text/.po files
  amber-jax data tfds CORPUS_DIR --out DIR        a built corpus -> a local TFDS dataset
  amber-jax data rates [--config=... ]            effective per-task sampling rates of the mixtures
  amber-jax data cache [--config=... ]            pretokenize the training tasks once
  amber-jax vocab train [--size N] [--out PATH]   SentencePiece with BERT specials
  amber-jax train --config=configs/tiny.py [--config.train.steps=N ...]
  amber-jax compile --config=configs/base.py --topology=cpu:8 [--config.mesh.fsdp=8 ...] [--json]
  amber-jax export WORKDIR OUT_DIR [--head mlm|base] [--dtype float32|bfloat16]
  amber-jax eval retrieval|mining|transfer WORKDIR_OR_HF_DIR [--pairs FILE.tsv] [--plot PNG]
  amber-jax align WORKDIR_OR_HF_DIR --pairs FILE [--method attention|similarity] [--gold FILE]
  amber-jax import HF_DIR OUT_WORKDIR [--config=configs/tiny.py --config.a.b=V ...]
  amber-jax experiment ablation [--steps N1,N2] [--seeds 0,1,2] [--languages de,fr,...]
                                [--out docs/RESULTS.md] [--config.a.b=V ...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import sys

from amber_jax import config as config_lib
from amber_jax.parallel import cluster
from amber_jax.training import loop
from amber_jax.data import inputs
from amber_jax.training import aot
from amber_jax.data import mixtures
from amber_jax import paths
from amber_jax.corpora import django_po
from amber_jax.text import vocab
from amber_jax.export import runs
from amber_jax.eval import retrieval
from amber_jax.eval import mining
from amber_jax.eval import plots
from amber_jax.eval import transfer
from amber_jax.eval import align
from amber_jax.export import hf_import
from amber_jax.experiments import demo
from amber_jax.experiments import ablation

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

USAGE = __doc__


def cmd_train(argv):
  config, rest = config_lib.load_config(argv)
  if rest:
    raise SystemExit(f'amber-jax train: unexpected arguments {rest}')
  cluster.initialize()  # joins the other hosts (AMBER_*, SLURM, TPU VM); no-op alone
  config_lib.resolve_paths(config)
  _state, history = loop.train(config, batches=inputs.config_input(config),
                               eval_fn=retrieval.periodic_eval_fn(config))
  if history:
    print(json.dumps(history[-1]))


def cmd_compile(argv):
  """AOT-compiles the train step for a topology; prints per-device memory and FLOPs."""
  p = argparse.ArgumentParser(prog='amber-jax compile', allow_abbrev=False)
  p.add_argument('--topology', default='cpu:8',
                 help="'cpu:N' (N host devices) or 'tpu:NAME' (e.g. tpu:v5e:2x2; needs libtpu)")
  p.add_argument('--json', action='store_true', help='print the report as one JSON line')
  args, rest = p.parse_known_args(argv)
  config, rest = config_lib.load_config(rest, default='configs/base.py')
  if rest:
    raise SystemExit(f'amber-jax compile: unexpected arguments {rest}')
  try:
    platform, count = aot.parse_topology(args.topology)
    if platform == 'cpu':
      aot.use_cpu_devices(count)  # before anything touches a device
    mesh = aot.topology_mesh(config, args.topology)
  except (ValueError, RuntimeError) as e:
    raise SystemExit(f'amber-jax compile: {e}') from None
  report, _ = aot.compile_train_step(config, mesh, args.topology)
  print(json.dumps(report.to_dict()) if args.json else '\n'.join(report.lines()))


def cmd_data(argv):
  """`data build django|manpages|files ...`, `data tfds ...`, `data rates ...`, `data cache ...`."""
  usage = ('usage: amber-jax data build {django,manpages,files} ... | data tfds CORPUS_DIR ... | '
           'data rates [--config...] | data cache [--config...]')
  if not argv or argv[0] not in ('build', 'tfds', 'rates', 'cache'):
    raise SystemExit(usage)
  action, rest = argv[0], argv[1:]
  if action == 'build':
    kinds = {'django': _build_django, 'manpages': 'amber_jax.corpora.manpages',
             'files': 'amber_jax.corpora.files'}
    if not rest or rest[0] not in kinds:
      raise SystemExit(f'amber-jax data build: name one of {sorted(kinds)}\n{usage}')
    target = kinds[rest[0]]
    if callable(target):
      return target(rest[1:])
    return importlib.import_module(target).main(rest[1:])
  if action == 'tfds':
    return importlib.import_module('amber_jax.corpora.tfds_export').main(rest)
  config, rest = config_lib.load_config(rest)
  if rest:
    raise SystemExit(f'amber-jax data {action}: unexpected arguments {rest}')
  config_lib.resolve_paths(config)
  if action == 'rates':
    mixtures.print_rates(config.data)
  else:
    mixtures.write_cache(config.data, config.data.cache_dir or mixtures.default_cache_dir(config.data))


def _build_django(argv):
  p = argparse.ArgumentParser(prog='amber-jax data build django')
  p.add_argument('--out', default='', help='output folder (default: the cache folder)')
  args = p.parse_args(argv)
  out = pathlib.Path(args.out) if args.out else paths.corpus_dir('django')
  manifest = django_po.build_django_corpus(out)
  print(f'Built {out}: {len(manifest["languages"])} languages, '
        f'{sum(v["train"] + v["validation"] for v in manifest["pairs"].values())} pairs; '
        f'skipped: {manifest["skipped"]}')


def cmd_vocab(argv):
  p = argparse.ArgumentParser(prog='amber-jax vocab')
  p.add_argument('action', choices=['train'])
  p.add_argument('--corpus', default='', help='corpus folder (default: the Django corpus)')
  p.add_argument('--out', default='', help='model path (default: the cache folder)')
  p.add_argument('--size', type=int, default=8000)
  p.add_argument('--alpha', type=float, default=0.7)
  args = p.parse_args(argv)
  corpus = pathlib.Path(args.corpus) if args.corpus else paths.corpus_dir('django')
  out = pathlib.Path(args.out) if args.out else paths.vocab_path('django')
  print(vocab.train_sentencepiece(corpus, out, vocab_size=args.size, alpha=args.alpha))


def cmd_export(argv):
  p = argparse.ArgumentParser(prog='amber-jax export')
  p.add_argument('workdir', help='a training run folder (checkpoints/ and config.json)')
  p.add_argument('out_dir')
  p.add_argument('--step', type=int, default=None, help='default: the latest checkpoint')
  p.add_argument('--head', choices=['mlm', 'base'], default='mlm')
  p.add_argument('--dtype', choices=['float32', 'bfloat16'], default='float32')
  args = p.parse_args(argv)
  out = runs.export_run(args.workdir, args.out_dir, step=args.step, head=args.head,
                          dtype=args.dtype)
  print(f'Exported to {out}')


def _eval_pairs(args):
  """{lang: [(src, tgt)]} from --pairs FILE.tsv or the corpus split, filtered as asked."""
  if args.pairs:
    pairs = retrieval.read_pairs_tsv(args.pairs)
  else:
    pairs = django_po.read_pairs(pathlib.Path(args.corpus) if args.corpus else
                                 paths.corpus_dir('django'), args.split)
  if args.languages:
    pairs = {k: pairs[k] for k in args.languages.split(',') if k in pairs}
  pairs = {k: v for k, v in pairs.items() if len(retrieval.unique_pairs(v)) >= args.min_pairs}
  if not pairs:
    raise SystemExit('amber-jax eval: no language left (check --languages and --min-pairs).')
  return pairs


def cmd_eval(argv):
  p = argparse.ArgumentParser(prog='amber-jax eval')
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
  args = p.parse_args(argv)
  # pylint: disable=import-outside-toplevel
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
    if args.plot:
      print(f'Wrote {plots.retrieval_by_layer(by_layer, args.plot, names=names)}')
  else:
    print(mining.format_mining_table(mining.evaluate_mining(
        embed, pairs, layer=args.layer, k=args.k, mode=args.mode, threshold=args.threshold)))


def cmd_align(argv):
  p = argparse.ArgumentParser(prog='amber-jax align')
  p.add_argument('model', help='a training run folder or an exported HF folder')
  p.add_argument('--pairs', required=True, help='`src words<TAB>tgt words` (or `src ||| tgt`) '
                 'lines, pre-tokenised')
  p.add_argument('--method', choices=['attention', 'similarity'], default='attention')
  p.add_argument('--rule', choices=['argmax', 'product'], default='argmax',
                 help='attention: how the two passes combine')
  p.add_argument('--threshold', type=float, default=None,
                 help='product threshold (0.1) or similarity softmax threshold (1e-3)')
  p.add_argument('--layer', type=int, default=None, help='similarity: layer (default 2/3 deep)')
  p.add_argument('--out', default='', help='Pharaoh output file (default: stdout)')
  p.add_argument('--gold', default='', help='gold Pharaoh file (`i-j` sure, `i?j` possible)')
  p.add_argument('--possible', default='', help='a separate file of possible links')
  p.add_argument('--heatmap', default='', help='PNG of the matrices of pair --index')
  p.add_argument('--index', type=int, default=0)
  args = p.parse_args(argv)
  params, cfg, tok, config = runs.load_encoder(args.model)
  wa_mask = config.objectives.wa_mask if config is not None else 'paper'
  aligner = align.Aligner(params, cfg, tok, wa_mask=wa_mask, layer=args.layer)
  pairs = align.read_word_pairs(args.pairs)
  links = aligner.align(pairs, args.method, rule=args.rule, threshold=args.threshold)
  text = '\n'.join(align.to_pharaoh(l) for l in links) + '\n'
  if args.out:
    pathlib.Path(args.out).write_text(text, encoding='utf-8')
    print(f'Wrote {len(links)} alignments to {args.out}')
  else:
    print(text, end='')
  if args.gold:
    gold = align.read_gold(args.gold, args.possible or None)
    print(f'AER {align.aer(links, gold):.4f} ({args.method}, {len(links)} pairs)')
  if args.heatmap:
    m = aligner.matrices(*pairs[args.index])
    out = plots.alignment_heatmap({k: m[k] for k in ('attention', 'similarity')},
                                  m['src_pieces'], m['tgt_pieces'], args.heatmap,
                                  title=f'pair {args.index}')
    print(f'Wrote {out}')


def cmd_import(argv):
  p = argparse.ArgumentParser(
      prog='amber-jax import', allow_abbrev=False,
      description='A local HF BERT folder -> a run folder at step 0 that `amber-jax train '
      '--config=OUT_WORKDIR/config.py` continues; --config=FILE and --config.a.b=V overrides '
      'give everything but the model shape (default configs/tiny.py).')
  p.add_argument('hf_dir', help='config.json, model.safetensors or pytorch_model.bin, tokenizer')
  p.add_argument('workdir', help='the run folder to create')
  args, config_argv = p.parse_known_args(argv)
  config, rest = config_lib.load_config(config_argv)
  if rest:
    raise SystemExit(f'amber-jax import: unexpected arguments {rest}')
  hf_import.import_run(args.hf_dir, args.workdir, config)


def cmd_demo(argv):
  config, rest = config_lib.load_config(argv)
  p = argparse.ArgumentParser(prog='amber-jax demo')
  p.add_argument('--out', default='', help='where the HF export goes (default: ./amber-demo-hf)')
  args = p.parse_args(rest)
  demo.run(config, hf_out=args.out or 'amber-demo-hf')


def cmd_experiment(argv):
  """`experiment ablation`: the paper's objective ablation, trained, evaluated and written up."""
  p = argparse.ArgumentParser(
      prog='amber-jax experiment', allow_abbrev=False,
      description='Trains MLM, MLM+TLM, MLM+TLM+WA and MLM+TLM+WA+SA (configs/ablation.py) with '
      'the same budget and seeds on the man-page translations, evaluates them on held-out pairs '
      'and writes a results page. --config.a.b=V overrides apply to every preset.')
  p.add_argument('name', choices=['ablation'])
  p.add_argument('--steps', default='250,500',
                 help='N1,N2: steps of stage 1 (MLM) and stage 2 (the objectives under test); '
                 'one number N splits it 1:2')
  p.add_argument('--seeds', default='0,1,2', help='comma-separated training seeds')
  p.add_argument('--languages', default='de,es,fr,ja,pl,ru',
                 help='languages paired with English (training and evaluation)')
  p.add_argument('--presets', default='mlm,mlm_tlm,mlm_tlm_wa,mlm_tlm_wa_sa')
  p.add_argument('--out', default='docs/RESULTS.md', help='the results page')
  p.add_argument('--runs-dir', default='', help='where the runs go (default: the cache folder)')
  p.add_argument('--eval-pairs', type=int, default=300, help='retrieval pairs per language')
  p.add_argument('--align-pairs', type=int, default=64, help='alignment pairs per language')
  p.add_argument('--mlm-sentences', type=int, default=100, help='MLM sentences per language')
  p.add_argument('--bootstrap', type=int, default=1000, help='bootstrap replicates')
  p.add_argument('--notes', default='', help='a markdown file added to the page (discussion)')
  args, rest = p.parse_known_args(argv)
  path, overrides, rest = config_lib.split_config_args(rest)
  rest = ([f'--config={path}'] if path is not None else []) + rest
  if rest:
    raise SystemExit(f'amber-jax experiment: unexpected argument {rest[0]!r} (the presets are '
                     'configs/ablation.py; override their fields with --config.a.b=V)')
  try:
    steps = [int(v) for v in args.steps.split(',')]
    seeds = [int(v) for v in args.seeds.split(',')]
  except ValueError:
    raise SystemExit('amber-jax experiment: --steps and --seeds take comma-separated integers '
                     f'(got --steps={args.steps} --seeds={args.seeds})') from None
  if len(steps) == 1:
    steps = [steps[0] // 3, steps[0] - steps[0] // 3]
  if len(steps) != 2 or min(steps) <= 0:
    raise SystemExit(f'amber-jax experiment: --steps takes N or N1,N2 > 0; got {args.steps}')
  settings = ablation.Settings(
      stage1_steps=steps[0], stage2_steps=steps[1], seeds=seeds,
      languages=[l for l in args.languages.split(',') if l], out=args.out,
      runs_dir=args.runs_dir, eval_pairs=args.eval_pairs, align_pairs=args.align_pairs,
      mlm_sentences=args.mlm_sentences, bootstrap=args.bootstrap,
      overrides=[f'{name}={value}' for name, value in overrides],
      presets=[k for k in args.presets.split(',') if k],
      command='amber-jax experiment ' + ' '.join(argv),
      notes=pathlib.Path(args.notes).read_text(encoding='utf-8') if args.notes else '')
  try:
    ablation.run(settings)
  except ValueError as e:
    raise SystemExit(f'amber-jax experiment: {e}') from None


COMMANDS = {'train': cmd_train, 'compile': cmd_compile, 'data': cmd_data, 'vocab': cmd_vocab,
            'export': cmd_export, 'eval': cmd_eval, 'demo': cmd_demo, 'import': cmd_import,
            'align': cmd_align, 'experiment': cmd_experiment}


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] in ('-h', '--help') or argv[0] not in COMMANDS:
    print(USAGE)
    raise SystemExit(0 if not argv or argv[0] in ('-h', '--help') else 2)
  COMMANDS[argv[0]](argv[1:])


if __name__ == '__main__':
  main()
