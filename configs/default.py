"""Every field of an amber-jax run, with its default. Presets (tiny.py, base.py) override a few.

Override from the shell: `amber-jax train --config=configs/tiny.py --config.train.steps=100`.
The returned ConfigDict is locked: a misspelled field fails at start with its name.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.preset = 'default'  # the preset's name (its file's stem, set when loaded); names the default workdir
  c.workdir = ''  # checkpoints, TensorBoard events and the export; '' = <cache>/runs/<preset>

  # The encoder; field names mirror HF BertConfig (see amber_jax.core.model.EncoderConfig).
  c.model = ml_collections.ConfigDict(dict(
      vocab_size=119_547,
      vocab_multiple=128,    # embedding rows padded to a multiple (119,552): tensor=2..8 divide it
      hidden_size=768,
      num_layers=12,
      num_heads=12,
      intermediate_size=3072,
      max_position_embeddings=512,
      type_vocab_size=2,
      dropout_rate=0.1,
      attention_dropout_rate=0.1,
      layer_norm_eps=1e-12,
      initializer_range=0.02,
      dtype='float32',  # compute dtype; 'bfloat16' on accelerators (params stay float32)
      # Performance options (amber_jax.core.model docstring); the defaults are the reference path.
      remat='none',          # 'none' | 'dots' | 'full': recompute each layer in the backward pass
      attention='explicit',  # 'explicit' | 'dot_product' | 'auto' (dot_product; splash on TPU) | 'splash'
      attention_implementation='',  # '' (JAX's default, XLA) | 'xla' | 'cudnn' (GPU flash)
      scan_layers=False,     # one lax.scan over the layers: compiles one layer body, not N
  ))

  # The AMBER objectives (Hu et al., arXiv 2010.07972). A weight of 0 removes the loss and its passes.
  c.objectives = ml_collections.ConfigDict(dict(
      mlm_weight=1.0,        # MLM on monolingual rows
      tlm_weight=1.0,        # MLM on [x; y] translation pairs
      sa_weight=1.0,         # sentence alignment (in-batch softmax)
      wa_weight=1.0,         # word alignment (attention symmetry)
      mask_rate=0.15,
      sa_cosine=False,       # paper: plain dot product
      sa_temperature=1.0,    # scores divided by it
      sa_margin=0.0,         # additive margin on the positive (LaBSE)
      sa_bidirectional=False,  # paper: x->y only
      wa_mask='paper',       # 'paper' (y sees x and earlier y), 'cross' (each side sees the other), 'full'
      guided_weight=0.0,     # guided alignment: WA attention against a teacher's links (data.align_pairs)
  ))

  # Input: two seqio mixtures, registered by `task_module.register(config.data)`.
  c.data = ml_collections.ConfigDict(dict(
      task_module='tasks.corpus',
      task_prefix='django',
      corpus_dir='',         # '' = <cache>/corpora/django
      vocab_path='',         # '' = <cache>/vocab/django.model
      languages=[],          # [] = every language of the corpus
      alpha=0.7,             # language sampling exponent: rate ~ n^alpha (1: by count, 0: uniform)
      rates='',              # explicit rates 'task=w,task=w' (others keep their smoothed share)
      extra_tasks=[],        # your own sources, each a dict (see docs/DATA.md and tasks/corpus.py), mixed in too
      mono_batch_size=32,    # rows of monolingual text per step (0: no MLM)
      parallel_batch_size=32,  # pairs per step, or with pair_packing rows of 2 x sentence_length (0: no TLM/SA/WA)
      mono_length=64,        # tokens per monolingual row, [CLS] and [SEP] included
      sentence_length=64,    # tokens per sentence of a pair, [CLS] and [SEP] included
      shuffle_buffer=10_000,
      too_long='truncate',   # a text longer than its row: 'truncate' (counted) or 'drop' (counted)
      packing=False,         # several monolingual texts per row (segment-aware attention)
      pair_packing=True,     # several translation pairs per row in TLM, SA and WA (exact; amber_jax.data.pairs)
      cache_dir='',          # pretokenized shards from `amber-jax data cache` ('' = tokenize live)
      # Threads of the live (tf.data) pipeline: 0 = TensorFlow's own pools, autotuned; N = a
      # private pool of N, not autotuned, for hosts with few cores (configs/tiny.py).
      input_threads=0,
      # Word alignment on your own pairs (configs/align.py): a file of pre-tokenised pairs
      # `src words<TAB>tgt words` read instead of the mixtures, with eflomal's links as a teacher
      # (amber_jax.data.aligned); '' = the mixtures above.
      align_pairs='',
      teacher='grow-diag-final-and',  # how eflomal's two directions combine (data/teacher.py)
  ))

  c.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=1e-4,
      warmup_steps=10_000,
      weight_decay=0.01,
      b1=0.9,
      b2=0.999,
      eps=1e-6,
      grad_clip_norm=1.0,    # 0 disables clipping
  ))

  c.train = ml_collections.ConfigDict(dict(
      steps=1_000_000,
      log_every=100,         # progress line and TensorBoard scalars
      checkpoint_every=10_000,
      keep_checkpoints=3,
      eval_every=0,          # retrieval on validation pairs every N steps (0: off); at log steps
      max_nonfinite_steps=10,  # halt after this many non-finite losses in a row (updates skipped)
      # Start over in a workdir that holds a run: its files move to <workdir>/discarded-<time>/
      # (never deleted). Without it a run resumes, and refuses to start over (docs/RELIABILITY.md).
      fresh_start=False,
      # Training stages, run in order ([] = one stage with the settings above). Each a dict:
      # 'steps' (required), 'name', and overrides 'objectives.<field>' (any) and 'data.<field>'
      # (mono/parallel_batch_size, mono_length, sentence_length, too_long, packing). With stages,
      # steps (above) must be their sum; stage i reads its own data stream (seed + i). The
      # paper's two (configs/ablation.py): [{'steps': N1, 'objectives.tlm_weight': 0.0,
      # 'objectives.sa_weight': 0.0, 'objectives.wa_weight': 0.0, 'data.parallel_batch_size': 0},
      # {'steps': N2, 'data.mono_batch_size': 8}].
      stages=[],
  ))

  # The device mesh (amber_jax.parallel.mesh) and how the model is laid out on it.
  c.mesh = ml_collections.ConfigDict(dict(
      data=-1,               # axis sizes; one -1 fills the devices (data=-1 yields: fsdp=-1 alone
      fsdp=1,                # means data=1, pure FSDP)
      tensor=1,              # tensor parallelism, always inside a slice / GPU node
      num_slices=1,          # TPU slices or GPU nodes joined by DCN (the launch scripts set it)
      dcn_axis='auto',       # the axis across slices: 'data' | 'fsdp' | 'auto' (data if divisible)
      rules='fsdp_tensor',   # logical-axis rules: 'fsdp_tensor' | 'fsdp' | 'data_parallel'
  ))

  c.lock()
  return c
