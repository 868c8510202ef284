"""A run keeps the vocabulary it started with (its fingerprint in the run folder's vocab.json)."""

from __future__ import annotations

import json

import jax

from amber_jax import errors, storage
from amber_jax.text import tokenizer


def check_run_vocabulary(config, workdir: storage.Path, resumed: bool) -> None:
  """A run keeps the vocabulary it started with: `vocab.json` in the run folder records its
  fingerprint, and resuming with a different config.data.vocab_path file raises errors.UserError
  (the ids would index the wrong embedding rows and training would go on silently wrong)."""
  if not config.data.vocab_path or not storage.path(config.data.vocab_path).exists():
    return  # synthetic input, or check_vocabulary reports the missing file when data is read
  record = storage.path(workdir) / 'vocab.json'
  digest = tokenizer.vocab_fingerprint(config.data.vocab_path)
  if resumed and record.exists():
    saved = json.loads(record.read_text())
    if saved['sha256'] != digest:
      raise errors.UserError(
          f'the run {workdir} was trained with the vocabulary {saved["path"]} (sha256 '
          f'{saved["sha256"][:12]}...), but config.data.vocab_path={config.data.vocab_path} has sha256 '
          f'{digest[:12]}...: its ids would not match the checkpoint\'s embedding rows. Resume '
          f'with --config.data.vocab_path={saved["path"]}, or train a new workdir.')
    return
  if jax.process_index() == 0:
    storage.write_text(record, json.dumps({'path': str(config.data.vocab_path), 'sha256': digest},
                                          indent=2))
