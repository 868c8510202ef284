"""`amber-jax export` and `amber-jax import`: a run folder <-> a HuggingFace BERT / XLM-R folder."""

from __future__ import annotations

import argparse

from amber_jax.cli import parsing
from amber_jax.export import hf, hf_import, model_card, runs


def cmd_export(argv: list[str]) -> None:
  """`export WORKDIR OUT_DIR [--step N] [--head mlm|base] [--dtype float32|bfloat16]
  [--arch bert|xlm-roberta] [--license ID]`."""
  p = argparse.ArgumentParser(
      prog='amber-jax export',
      description='Write a transformers folder (config, safetensors, tokenizer, model card with '
      'the Hub metadata, sentence-transformers files) from a checkpoint of a training run.')
  p.add_argument('workdir', help='a training run folder (checkpoints/ and config.json)')
  p.add_argument('out_dir')
  p.add_argument('--step', type=int, default=None, help='default: the latest checkpoint')
  p.add_argument('--head', choices=['mlm', 'base'], default='mlm')
  p.add_argument('--dtype', choices=['float32', 'bfloat16'], default='float32')
  p.add_argument('--arch', choices=list(hf.ARCHS), default=None,
                 help='the transformers classes to write (default: xlm-roberta for a run imported '
                 'from XLM-R, bert for the others)')
  p.add_argument('--license', default=model_card.DEFAULT_LICENSE,
                 help="the model card's license id (default %(default)s)")
  args = p.parse_args(argv)
  out = runs.export_run(args.workdir, args.out_dir, step=args.step, head=args.head,
                        dtype=args.dtype, arch=args.arch, license_id=args.license)
  print(f'Exported to {out}')


def cmd_import(argv: list[str]) -> None:
  """`import HF_DIR OUT_WORKDIR [--config=PRESET] [--config.a.b=V ...]`."""
  p = parsing.config_parser(
      'amber-jax import',
      'A local HF BERT or XLM-R folder -> a run folder at step 0 that `amber-jax train '
      '--config=OUT_WORKDIR/config.py` continues; --config=FILE and --config.a.b=V overrides '
      'give everything but the model shape (default configs/tiny.py).')
  p.add_argument('hf_dir', help='config.json, model.safetensors or pytorch_model.bin, tokenizer')
  p.add_argument('workdir', help='the run folder to create')
  p.add_argument('--base-model', default=None,
                 help="the checkpoint's Hub id (e.g. FacebookAI/xlm-roberta-base), for the "
                 "exported model card's base_model")
  args, config = parsing.parse_config(p, argv)
  hf_import.import_run(args.hf_dir, args.workdir, config, base_model=args.base_model)
