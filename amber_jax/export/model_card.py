"""What makes an exported folder a Hub model: the card's YAML metadata and sentence-transformers.

The Hub reads README.md's front matter (between `---` lines) for the language list, license,
library, pipeline tag, datasets and base model; `front_matter` writes it (values as JSON scalars
and flow lists, which YAML reads as they are). `write_sentence_transformers` adds modules.json,
sentence_bert_config.json and 1_Pooling/config.json, so that `SentenceTransformer(folder)` gives
the mean of the token states over the non-padding tokens ([CLS] and [SEP] included): the sentence
embedding `amber-jax eval retrieval` scores (`amber_jax.eval.retrieval`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Sequence

# The license written into the card unless one is given: this project's (pyproject.toml).
DEFAULT_LICENSE = 'apache-2.0'
PIPELINE_TAGS = {'mlm': 'fill-mask', 'base': 'feature-extraction'}
POOLING_DIR = '1_Pooling'
# 1_Pooling/config.json: the mean over the tokens the attention mask keeps, nothing else.
POOLING_MODES = ('cls_token', 'mean_tokens', 'max_tokens', 'mean_sqrt_len_tokens',
                 'weightedmean_tokens', 'lasttoken')


def hub_languages(languages: Sequence[str]) -> list[str]:
  """The Hub's language codes of corpus codes: the language subtag, once each ('pt-br' -> 'pt',
  'sr-latn' -> 'sr'), in order of first appearance; 'multilingual' first when there are several."""
  codes = list(dict.fromkeys(lang.split('-')[0].split('_')[0].lower() for lang in languages))
  return (['multilingual'] if len(codes) > 1 else []) + codes


def front_matter(*, languages: Sequence[str], head: str, datasets: Sequence[str] = (),
                 base_model: str | None = None, license_id: str = DEFAULT_LICENSE,
                 tags: Sequence[str] = ()) -> str:
  """The YAML block (with its `---` lines) that opens README.md.

  Args:
    languages: the corpus's language codes (see `hub_languages`); none gives 'multilingual'.
    head: 'mlm' (pipeline_tag fill-mask) or 'base' (feature-extraction).
    datasets: the data the run trained on, by name.
    base_model: the Hub id the run was imported from, if any.
    license_id: the card's license identifier (e.g. 'apache-2.0', 'mit').
    tags: more tags ('sentence-transformers' is always one).
  """
  fields = {
      'language': hub_languages(languages) or ['multilingual'],
      'license': license_id,
      'library_name': 'transformers',
      'pipeline_tag': PIPELINE_TAGS[head],
      'tags': list(dict.fromkeys(['sentence-transformers', 'amber', *tags])),
  }
  if datasets:
    fields['datasets'] = list(datasets)
  if base_model:
    fields['base_model'] = base_model
  lines = ['---']
  for key, value in fields.items():
    if isinstance(value, list):
      lines.append(f'{key}:')
      lines += [f'- {json.dumps(v, ensure_ascii=False)}' for v in value]
    else:
      lines.append(f'{key}: {json.dumps(value, ensure_ascii=False)}')
  return '\n'.join(lines + ['---', ''])


def write_sentence_transformers(out_dir: str | pathlib.Path, *, hidden_size: int,
                                max_seq_length: int) -> pathlib.Path:
  """Writes the sentence-transformers files into an exported folder: the transformers model in
  the folder itself, then mean pooling; cosine similarity, as our retrieval scores."""
  out = pathlib.Path(out_dir)
  modules = [
      {'idx': 0, 'name': '0', 'path': '', 'type': 'sentence_transformers.models.Transformer'},
      {'idx': 1, 'name': '1', 'path': POOLING_DIR, 'type': 'sentence_transformers.models.Pooling'},
  ]
  pooling = {'word_embedding_dimension': hidden_size, 'include_prompt': True}
  pooling.update({f'pooling_mode_{m}': m == 'mean_tokens' for m in POOLING_MODES})
  files = {
      'modules.json': modules,
      'sentence_bert_config.json': {'max_seq_length': max_seq_length, 'do_lower_case': False},
      'config_sentence_transformers.json': {'prompts': {}, 'default_prompt_name': None,
                                            'similarity_fn_name': 'cosine'},
      f'{POOLING_DIR}/config.json': pooling,
  }
  for name, data in files.items():
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(data, indent=2) + '\n', encoding='utf-8')
  return out
