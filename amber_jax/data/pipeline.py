"""seqio mixtures -> one dict of fixed-shape int32 numpy arrays per training step, in the
batch contract of `amber_jax.data.batches`.

No two pairs of a parallel batch share the same x (after truncation): a duplicate would be a
false negative for the in-batch sentence-alignment softmax. A pair whose x is already in the batch
waits in a carry-over pool and goes into the next batch it fits (order otherwise kept;
deterministic). With config.data.pair_packing several pairs share a row (amber_jax.data.pairs).

Examples come from a pretokenized cache of the two mixtures (`data_cfg.cache_dir`, written by
`amber-jax data cache`), read through Grain without TensorFlow (amber_jax.data.grain_input: its
iterators save and restore their position in O(1)); or, for small runs and users' own
preprocessors, from the mixtures that `data_cfg.task_module`'s `register(data_cfg)` returns (see
tasks/corpus.py), tokenized while training by tf.data (a resume replays the stage's batches). A
text longer than its row is cut, or dropped when `data_cfg.too_long == 'drop'`; both are counted in
`TrainIterator.stats`. Only this module of amber_jax imports TensorFlow, and only inside the
functions that build the seqio pipeline.
"""

from __future__ import annotations

import functools
import importlib
import os

from amber_jax.core.model import CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID
from amber_jax.data import batching, grain_input
from amber_jax.data.batches import batch_spec


def make_train_iterator(data_cfg, *, seed: int, start_step: int = 0, shard_index: int = 0,
                        num_shards: int = 1) -> batching.TrainIterator:
  """An endless, deterministic iterator of training batches (see the module docstring).

  Args:
    data_cfg: `config.data`: task_module, mono/parallel_batch_size, mono_length, sentence_length,
      too_long, packing, cache_dir, and whatever the task module's `register` reads
      (tasks/django.py).
    seed: shuffling and mixture-sampling seed; two iterators with the same arguments yield
      identical batches.
    start_step: yield the batches that an iterator from step 0 yields from its start_step-th on.
    shard_index: this host's shard of the examples (seqio ShardInfo), in [0, num_shards).
    num_shards: number of hosts reading disjoint shards.

  Returns:
    A `TrainIterator` (its `stats` count truncations, drops and deferred duplicates).
  """
  spec = batch_spec(data_cfg)
  if not 0 <= shard_index < num_shards:
    raise ValueError(f'shard_index must be in [0, num_shards={num_shards}); got {shard_index}.')
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0; got {start_step}.')
  if data_cfg.too_long not in ('truncate', 'drop'):
    raise ValueError("config.data.too_long must be 'truncate' or 'drop'; got "
                     f'{data_cfg.too_long!r}.')
  if data_cfg.cache_dir:  # positions in a cache: O(1) to save and restore
    mono, parallel, layout = grain_input.make_parts(data_cfg, seed=seed, shard_index=shard_index,
                                                    num_shards=num_shards)
    return batching.TrainIterator(mono, parallel, skip=start_step, layout=layout)
  drop = data_cfg.too_long == 'drop'
  source = _SeqioSource(data_cfg, seed, shard_index, num_shards)
  mono = parallel = None
  if 'mono_ids' in spec:
    size, length = data_cfg.mono_batch_size, data_cfg.mono_length
    mono = (batching.Packer(source.mono_texts(), length, size, drop) if data_cfg.packing
            else batching.RowBatcher(source.mono_rows(), size, drop))
  if data_cfg.parallel_batch_size:
    parallel = batching.StreamPairs(source.pair_texts(), data_cfg.parallel_batch_size,
                                    data_cfg.sentence_length, data_cfg.pair_packing, drop)
  return batching.TrainIterator(mono, parallel, skip=start_step)


class _SeqioSource:
  """Examples of the task module's seqio mixtures, framed (and batched) by tf.data."""

  def __init__(self, data_cfg, seed, shard_index, num_shards):
    tf, seqio = import_tf()
    self._cfg, self._seed, self._tf = data_cfg, seed, tf
    self._names = importlib.import_module(data_cfg.task_module).register(data_cfg)
    self._shard = seqio.ShardInfo(index=shard_index, num_shards=num_shards)
    self._options = tf.data.Options()
    self._options.deterministic = True
    self._prefetch = tf.data.AUTOTUNE
    threads = getattr(data_cfg, 'input_threads', 0)
    if threads:  # a small host: TF's own pools and autotuning would take cores from the step
      self._options.threading.private_threadpool_size = threads
      self._options.threading.max_intra_op_parallelism = 1
      self._options.autotune.enabled = False
      self._prefetch = 2

  def _numpy(self, ds):
    return ds.with_options(self._options).prefetch(self._prefetch).as_numpy_iterator()

  def mono_rows(self):
    """Chunks (int32 [B_m, L_m] framed ids, int32 [B_m] cut flags)."""
    length, tf = self._cfg.mono_length, self._tf
    ds = _examples(self._cfg, self._names, 'mono', ('tokens',), self._seed, self._shard)
    ds = ds.map(lambda ex: _frame(ex['tokens'], length), num_parallel_calls=tf.data.AUTOTUNE)
    return self._numpy(ds.batch(self._cfg.mono_batch_size, drop_remainder=True))

  def mono_texts(self):
    """int32 id arrays (no specials), one text each."""
    ds = _examples(self._cfg, self._names, 'mono', ('tokens',), self._seed, self._shard)
    return self._numpy(ds.map(lambda ex: self._tf.cast(ex['tokens'], self._tf.int32)))

  def pair_texts(self):
    """(x, y) int32 id arrays (no specials), one pair each."""
    tf = self._tf
    ds = _examples(self._cfg, self._names, 'parallel', ('src', 'tgt'), self._seed, self._shard)
    return self._numpy(ds.map(lambda ex: (tf.cast(ex['src'], tf.int32),
                                          tf.cast(ex['tgt'], tf.int32))))


@functools.cache
def import_tf():
  """(tensorflow, seqio), imported once; TensorFlow sees no GPU (JAX owns the accelerators)."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # devices already initialised by an earlier import; nothing to do.
    pass
  import seqio  # pylint: disable=import-outside-toplevel
  return tf, seqio


def _examples(data_cfg, names: dict, part: str, features: tuple[str, ...], seed: int, shard):
  """The endless shuffled example stream of mixture `names[part]`, after checking it."""
  _, seqio = import_tf()
  name = names.get(part)
  if name is None:
    raise ValueError(
        f'{data_cfg.task_module}.register returned no {part} mixture (the corpus has no {part} '
        f'examples for the chosen languages), but config.data.{part}_batch_size is '
        f'{getattr(data_cfg, part + "_batch_size")}; set it to 0 or add {part} data.')
  provider = seqio.get_mixture_or_task(name)
  missing = [f for f in features if f not in provider.output_features]
  if missing:
    raise ValueError(f'{part} mixture {name!r} lacks the output features {missing}: amber_jax.data.pipeline '
                     f'expects {list(features)} (int32 token ids without [CLS]/[SEP]); it has '
                     f'{list(provider.output_features)}. Fix {data_cfg.task_module}.register.')
  for feature in features:
    _check_special_ids(provider.output_features[feature].vocabulary, f'{name}:{feature}')
  return provider.get_dataset(sequence_length=None, split='train', shuffle=True, seed=seed,
                              shard_info=shard, num_epochs=None, trim_output_features=False)


def _check_special_ids(vocab, where: str) -> None:
  """A SentencePiece vocabulary must put the specials at the ids the model and batches use."""
  _, seqio = import_tf()
  if not isinstance(vocab, seqio.SentencePieceVocabulary):
    return
  sp = vocab.tokenizer
  want = {'pad': PAD_ID, 'unk': UNK_ID, 'bos ([CLS])': CLS_ID, 'eos ([SEP])': SEP_ID,
          '[MASK]': MASK_ID}
  got = {'pad': sp.pad_id(), 'unk': sp.unk_id(), 'bos ([CLS])': sp.bos_id(),
         'eos ([SEP])': sp.eos_id(), '[MASK]': sp.piece_to_id('[MASK]')}
  if got != want:
    raise ValueError(f'The vocabulary of {where} has special ids {got}; expected {want}. '
                     'Rebuild it with amber_jax.text.vocab (which fixes these ids).')


def _frame(tokens, length: int):
  """int32 [n] ids -> ([CLS] x [SEP] PAD... as int32 [length], 1 if x was cut to length - 2)."""
  tf, _ = import_tf()
  tokens = tf.cast(tokens, tf.int32)
  framed = tf.concat([[CLS_ID], tokens[:length - 2], [SEP_ID]], axis=0)  # [<= length]
  framed = tf.pad(framed, [[0, length - tf.size(framed)]], constant_values=PAD_ID)
  return tf.ensure_shape(framed, [length]), tf.cast(tf.size(tokens) > length - 2, tf.int32)
