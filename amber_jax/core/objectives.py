"""A batch -> the encoder passes -> the weighted AMBER losses, from a registry of objectives.

The extension point for losses is `OBJECTIVES`. An `Objective` declares everything the rest of the
package reads about a loss: its name ('mlm'), its weight field in `config.objectives`
('mlm_weight'), the batch keys it reads, the metric keys it logs and its function
  fn(model, params, batch, keys: Keys, ocfg, deterministic) -> (loss, {metric key: value}).
`amber_losses` runs every registered objective whose batch keys are in the batch and whose weight
is non-zero and sums weight * loss; the model card (`amber_jax.export.runs`), the training curves
(`amber_jax.eval.plots`) and the demo's table read their names from the registry. Adding a loss is
its function, its entry and its test: write the function, append an `Objective` to `OBJECTIVES`,
add its weight field to configs/default.py (0.0 keeps it off) and test it in tests/. A loss that
needs new batch arrays also adds them to the batch contract (`amber_jax.data.batches`).

Passes per step:
  mono rows:      one masked pass                        -> MLM
  parallel rows:  one masked pass on [x; y]              -> TLM
                  one unmasked pass on x and y (stacked) -> SA
                  two passes with the WA mask, [x; y] and [y; x], last layer's probabilities -> WA
                  (with wa_mask 'full' one [x; y] pass holds both directions)
  guided rows:    the WA passes' attention against a teacher's links (batch key `guide`,
                  config.data.align_pairs, configs/align.py)                   -> guided
A loss whose weight is 0 costs nothing: its passes are not traced.

Packed monolingual rows (several texts per row) add one optional batch key:
  mono_seq  int32 [batch, length]: 1, 2, 3, ... = which text of the row a token belongs to,
            0 on padding.
When it is present, the MLM pass lets a token attend only to tokens of its own text
(attention_mask = mono_seq[:, :, None] == mono_seq[:, None, :]; pads are masked as keys anyway)
and restarts position ids at 0 at the first token of each text (`packed_positions`), so each text
is encoded exactly as it would be alone in its own row. Masking still picks ~mask_rate of the
row's real tokens, so the number of predictions per text can differ from the unpacked layout;
the loss is the mean over every prediction of the batch either way. Without `mono_seq` a row is
one text with positions 0..length-1.

Packed translation pairs (config.data.pair_packing; the layout is in amber_jax.data.batches) run
the same four losses on rows of several pairs, each pass given the row's `pair_seq` or `sent_seq`
(`Encoder(..., seq=...)`: attention within a pair, or within a sentence for SA, and positions
restarted there):
  TLM  the masked pass over pair_ids with seq=pair_seq (masking as for packed mono rows).
  SA   one pass over sent_ids with seq=sent_seq; each sentence is mean-pooled over its own tokens
       into slot k of its row (`packed_sentence_embeddings`; P = max_pairs_per_row slots of
       pairs per row), and the in-batch softmax runs over every (row, slot) of the global batch,
       empty slots being neither queries nor negatives.
  WA   the [x; y] and [y; x] passes with the WA mask cut to each pair; the [y; x] probabilities are
       moved to [x; y] coordinates (`swap_index`) and each pair's agreement is summed over its own
       block (`packed_word_alignment`).
On the same pairs SA and WA equal the one-pair-per-row losses, and TLM does for the same masked
tokens, with their gradients (tests/test_pair_packing.py, on one device and on a
data x fsdp x tensor mesh).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from amber_jax.core import losses, masking
from amber_jax.core.model import Encoder, PAD_ID
from amber_jax.core.packing import packed_attention_mask, packed_positions

Array = jax.Array


def max_predictions(length: int, rate: float) -> int:
  """Candidate positions per row: enough for `rate` of the row's tokens, rounded up."""
  return max(1, min(length, math.ceil(rate * length) + 1))


def max_pairs_per_row(row_length: int) -> int:
  """The most pairs a packed row of `row_length` holds: one per 6 tokens (the SA unit
  [CLS] x [SEP] [CLS] y [SEP] of a pair with one token a side). A static bound: the packed SA
  and WA losses pool into this many slots per row (amber_jax.data.pairs packs within it)."""
  return max(1, row_length // 6)


def _masked_lm(model: Encoder, params, ids, segments, rng, ocfg, dropout_rng, deterministic,
               seq=None):
  """MLM loss of one masked pass; `seq` int [batch, length] marks the texts of packed rows."""
  m = masking.mask_tokens(rng, ids, vocab_size=model.cfg.vocab_size,
                          max_predictions=max_predictions(ids.shape[1], ocfg.mask_rate),
                          rate=ocfg.mask_rate)
  return masked_lm_pass(model, params, m, segments, dropout_rng, deterministic, seq=seq)


def masked_lm_pass(model: Encoder, params, m: masking.Masked, segments, dropout_rng,
                   deterministic, seq=None):
  """(loss, accuracy) of the encoder's predictions at the masked tokens `m` (MLM and TLM)."""
  out = model.apply({'params': params}, m.ids, segments, seq=seq,
                    deterministic=deterministic, rngs={'dropout': dropout_rng})
  logits = model.apply({'params': params}, out['hidden'], m.positions,
                       method=Encoder.mlm_logits)  # [batch, k, vocab]
  return losses.masked_lm_loss(logits, m.labels, m.weights)


def _side_lengths(src_ids, tgt_ids):
  """Number of real tokens of x and y (no [CLS]/[SEP]/pads): int [batch] each."""
  count = lambda ids: (~masking.is_special(ids)).sum(axis=1)
  return count(src_ids), count(tgt_ids)


def _cross_block(probs, first_len, n_first, n_second):
  """From [batch, heads, L, L] probabilities of a [CLS] a [SEP] b [SEP] input, the block of
  b queries over a keys: [batch, heads, n_second, n_first] (token j of b, token i of a)."""
  a_pos = 1 + jnp.arange(n_first)                                  # [n_first]
  b_pos = first_len[:, None] + 2 + jnp.arange(n_second)[None, :]  # [batch, n_second]
  b_pos = jnp.minimum(b_pos, probs.shape[-1] - 1)
  rows = jnp.take_along_axis(probs, b_pos[:, None, :, None], axis=2)  # [batch, heads, n_b, L]
  return rows[..., a_pos]                                          # [batch, heads, n_b, n_a]


def alignment_attention(model: Encoder, params, batch, ocfg, dropout_rng, deterministic):
  """The WA passes' cross blocks (one pair per row): (A_x2y [b, h, nx, ny], A_y2x
  [b, h, ny, nx], x_mask [b, nx], y_mask [b, ny]), nx = ny = L_s - 2. Two passes, [x; y] and
  [y; x]; with wa_mask 'full' the one [x; y] pass holds both blocks."""
  n_side = batch['src_ids'].shape[1] - 2
  len_x, len_y = _side_lengths(batch['src_ids'], batch['tgt_ids'])
  r1, r2 = jax.random.split(dropout_rng)

  def last_probs(ids, segs, rng):
    mask = masking.wa_attention_mask(ids, segs, ocfg.wa_mask)
    out = model.apply({'params': params}, ids, segs, mask, deterministic=deterministic,
                      return_last_probs=True, rngs={'dropout': rng})
    return out['last_probs']  # [batch, heads, L, L]

  p_xy = last_probs(batch['pair_ids'], batch['pair_segments'], r1)   # [x; y]
  a_y2x = _cross_block(p_xy, len_x, n_side, n_side)  # y queries over x keys [b, h, ny, nx]
  if ocfg.wa_mask == 'full':
    # x queries over y keys: the y-over-x block of the transposed probabilities, transposed.
    a_x2y = jnp.swapaxes(_cross_block(jnp.swapaxes(p_xy, -1, -2), len_x, n_side, n_side), -1, -2)
  else:
    p_yx = last_probs(batch['swap_ids'], batch['swap_segments'], r2)   # [y; x]
    a_x2y = _cross_block(p_yx, len_y, n_side, n_side)  # x queries over y keys [b, h, nx, ny]
  x_mask = jnp.arange(n_side)[None, :] < len_x[:, None]
  y_mask = jnp.arange(n_side)[None, :] < len_y[:, None]
  return a_x2y, a_y2x, x_mask, y_mask


def word_alignment(model: Encoder, params, batch, ocfg, dropout_rng, deterministic):
  """L_WA from the two masked passes. Returns (loss, per-pair loss)."""
  return losses.word_alignment_loss(
      *alignment_attention(model, params, batch, ocfg, dropout_rng, deterministic))


def sentence_embeddings(model: Encoder, params, ids, dropout_rng, deterministic):
  """Mean of the last layer over non-pad tokens, x and y encoded separately: [batch, embed]."""
  out = model.apply({'params': params}, ids, None, deterministic=deterministic,
                    rngs={'dropout': dropout_rng})
  # float32 sums: a bfloat16 mean over a row loses digits the SA scores need.
  return losses.mean_pool(out['hidden'].astype(jnp.float32), ids != PAD_ID)


def _slots(seq: Array, count: int) -> Array:
  """float32 [rows, length, count]: 1 where a token belongs to text 1..count of its row."""
  return (seq[..., None] == jnp.arange(1, count + 1)).astype(jnp.float32)


def _per_slot(values: Array, slots: Array) -> Array:
  """Sums of `values` [rows, length(, e)] over each slot's tokens: [rows, count(, e)], in fp32."""
  equation = 'rl,rls->rs' if values.ndim == 2 else 'rle,rls->rse'
  return jnp.einsum(equation, values.astype(jnp.float32), slots,
                    precision=jax.lax.Precision.HIGHEST)


def packed_sentence_embeddings(model: Encoder, params, ids, seq, dropout_rng, deterministic):
  """Packed SA rows ([CLS] x1 [SEP] [CLS] y1 [SEP] ..., sentence k of a row marked k in `seq`):
  each sentence encoded alone (block-diagonal attention, positions restarted) and mean-pooled over
  its tokens, as `sentence_embeddings` pools a row. Returns (float32 [rows, 2 P, embed],
  float32 [rows, 2 P] token counts; 0 for an empty slot), P = max_pairs_per_row(length)."""
  out = model.apply({'params': params}, ids, None, seq=seq, deterministic=deterministic,
                    rngs={'dropout': dropout_rng})
  slots = _slots(seq, 2 * max_pairs_per_row(ids.shape[1]))  # [rows, length, 2P]
  sizes = slots.sum(axis=1)  # [rows, 2P]
  return _per_slot(out['hidden'], slots) / jnp.maximum(sizes, 1.0)[..., None], sizes


def swap_index(seq: Array, segments: Array, ids: Array) -> Array:
  """For packed pair rows, where each x and y token of a row sits in its swap row: int32
  [rows, length] (specials and pads map to themselves). A pair's unit [CLS] x [SEP] y [SEP]
  starting at s holds x_i at s + 1 + i and y_j at s + |x| + 2 + j; its swap unit
  [CLS] y [SEP] x [SEP] holds them at s + |y| + 2 + i and s + 1 + j."""
  index = jnp.broadcast_to(jnp.arange(ids.shape[1], dtype=jnp.int32), ids.shape)
  offset = packed_positions(seq)  # [rows, length]
  start = index - offset
  same = packed_attention_mask(seq) & (ids != PAD_ID)[:, None, :]  # [rows, q, k]
  size = same.sum(axis=-1)  # tokens of the unit: |x| + |y| + 3
  first = (same & (segments == 0)[:, None, :]).sum(axis=-1)  # [CLS] x [SEP]: |x| + 2
  n_x, n_y = first - 2, size - first - 1
  real = ~masking.is_special(ids)
  x_to = start + n_y + 1 + offset  # x_i: offset 1 + i -> s + |y| + 2 + i
  y_to = start + offset - n_x - 1  # y_j: offset |x| + 2 + j -> s + 1 + j
  return jnp.where(real & (segments == 0), x_to,
                   jnp.where(real & (segments == 1), y_to, index)).astype(jnp.int32)


def packed_word_alignment(model: Encoder, params, batch, ocfg, dropout_rng, deterministic):
  """L_WA of packed pair rows: the [x; y] and [y; x] passes with the WA mask restricted to each
  pair, then each pair's agreement from its own block of the last layer's probabilities. The
  [y; x] probabilities are moved to the [x; y] row's coordinates (`swap_index`), so a pair's
  sum_ij A_x2y[i, j] A_y2x[j, i] is a sum over its (x query, y key) entries. Returns (loss,
  per-pair loss [rows, P], valid [rows, P])."""
  ids, segments, seq = batch['pair_ids'], batch['pair_segments'], batch['pair_seq']
  r1, r2 = jax.random.split(dropout_rng)

  def last_probs(ids, segs, rng):
    mask = masking.wa_attention_mask(ids, segs, ocfg.wa_mask)
    out = model.apply({'params': params}, ids, segs, mask, seq=seq, deterministic=deterministic,
                      return_last_probs=True, rngs={'dropout': rng})
    return out['last_probs'].astype(jnp.float32)  # [rows, heads, L, L]

  p_xy = last_probs(ids, segments, r1)
  p_yx = last_probs(batch['swap_ids'], batch['swap_segments'], r2)
  index = swap_index(seq, segments, ids)  # [rows, L]
  p_yx = jnp.take_along_axis(p_yx, index[:, None, :, None], axis=2)  # queries, then keys, moved
  p_yx = jnp.take_along_axis(p_yx, index[:, None, None, :], axis=3)
  real = ~masking.is_special(ids)
  is_x, is_y = real & (segments == 0), real & (segments == 1)  # [rows, L]
  block = packed_attention_mask(seq) & is_x[:, :, None] & is_y[:, None, :]  # x query, y key
  # p_yx[q, k]: x token q over y token k (A_x2y); p_xy[k, q]: y token k over x token q (A_y2x).
  agree = (p_yx * jnp.swapaxes(p_xy, -1, -2) * block[:, None]).sum(-1).mean(1)  # [rows, L]
  slots = _slots(seq, max_pairs_per_row(ids.shape[1]))  # [rows, L, P]
  shorter = jnp.minimum(_per_slot(is_x, slots), _per_slot(is_y, slots))  # [rows, P]
  per_pair = 1.0 - _per_slot(agree, slots) / jnp.maximum(shorter, 1.0)
  valid = (shorter > 0).astype(jnp.float32)
  return (per_pair * valid).sum() / jnp.maximum(valid.sum(), 1.0), per_pair, valid


class Keys(NamedTuple):
  """The PRNG keys one objective gets in a step (see `objective_keys`)."""

  mask: Array | None  # which tokens to mask; None for an objective that masks nothing
  dropout: Array      # dropout of its passes


# fn(model, params, batch, keys, ocfg, deterministic) -> (loss, {metric key: scalar})
LossFn = Callable[[Encoder, Any, Mapping[str, Array], Keys, Any, bool],
                  tuple[Array, dict[str, Array]]]


@dataclasses.dataclass(frozen=True)
class Objective:
  """One loss: what it is called, where its weight lives, what it reads and logs, how it runs.

  Attributes:
    name: short name, e.g. 'mlm'; its loss is logged as f'{name}_loss'.
    weight: its weight field in config.objectives, e.g. 'mlm_weight' (0 turns it off).
    batch_keys: the batch arrays it needs, e.g. ('mono_ids', 'mono_segments'); without them in a
      batch it is skipped.
    metrics: the metric keys its function returns, the loss key among them.
    fn: a `LossFn`.
    masks: whether it draws a masking key (`Keys.mask`).
    optional_keys: batch arrays it reads when present (e.g. MLM's 'mono_seq').
    packed_keys: the batch arrays of its packed-pairs layout (config.data.pair_packing), read
      instead of `batch_keys` when they are all present.
    passes: batch shapes ({key: shape}) -> its encoder passes, each (rows, length, masked: whether
      the MLM head runs on its masked positions); what `amber_jax.training.flops` counts.
  """

  name: str
  weight: str
  batch_keys: tuple[str, ...]
  metrics: tuple[str, ...]
  fn: LossFn
  masks: bool = False
  optional_keys: tuple[str, ...] = ()
  packed_keys: tuple[str, ...] = ()
  passes: Callable[[Mapping[str, tuple[int, ...]]], tuple[tuple[int, int, bool], ...]] = (
      lambda shapes: ())

  def __post_init__(self):
    if self.loss_key not in self.metrics:
      raise ValueError(f'Objective {self.name!r} logs {self.metrics}, which lacks its loss key '
                       f'{self.loss_key!r}; add it to `metrics`.')

  @property
  def loss_key(self) -> str:
    return f'{self.name}_loss'

  def keys_of(self, batch) -> tuple[str, ...]:
    """The batch keys it reads from `batch` (a dict or {key: shape}): the packed layout's when
    they are all there, else `batch_keys`."""
    if self.packed_keys and all(k in batch for k in self.packed_keys):
      return self.packed_keys
    return self.batch_keys


def _mlm(model, params, batch, keys, ocfg, deterministic):
  """MLM: one masked pass over the monolingual rows (packed rows when mono_seq is given)."""
  loss, acc = _masked_lm(model, params, batch['mono_ids'], batch['mono_segments'], keys.mask,
                         ocfg, keys.dropout, deterministic, seq=batch.get('mono_seq'))
  return loss, {'mlm_loss': loss, 'mlm_accuracy': acc}


def _tlm(model, params, batch, keys, ocfg, deterministic):
  """TLM: one masked pass over the joined pairs [x; y] (packed rows when pair_seq is given)."""
  loss, acc = _masked_lm(model, params, batch['pair_ids'], batch['pair_segments'], keys.mask,
                         ocfg, keys.dropout, deterministic, seq=batch.get('pair_seq'))
  return loss, {'tlm_loss': loss, 'tlm_accuracy': acc}


def _sa(model, params, batch, keys, ocfg, deterministic):
  """SA: one unmasked pass over the sentences x and y, then the in-batch softmax of their
  embeddings: x and y stacked as rows, or packed rows (sent_ids) with the negatives drawn from
  every sentence of every row."""
  valid = None
  if 'sent_ids' in batch:
    emb, sizes = packed_sentence_embeddings(model, params, batch['sent_ids'], batch['sent_seq'],
                                            keys.dropout, deterministic)  # [rows, 2P, embed]
    c_x = emb[:, 0::2].reshape(-1, emb.shape[-1])  # [rows * P, embed]
    c_y = emb[:, 1::2].reshape(-1, emb.shape[-1])
    valid = (sizes[:, 0::2] > 0).reshape(-1).astype(jnp.float32)
  else:
    n = batch['src_ids'].shape[0]
    both = jnp.concatenate([batch['src_ids'], batch['tgt_ids']], axis=0)  # one pass, [2n, L_s]
    c = sentence_embeddings(model, params, both, keys.dropout, deterministic)  # [2n, embed]
    c_x, c_y = c[:n], c[n:]
  loss = losses.sentence_alignment_loss(
      c_x, c_y, valid, cosine=ocfg.sa_cosine, temperature=ocfg.sa_temperature,
      margin=ocfg.sa_margin, bidirectional=ocfg.sa_bidirectional)
  return loss, {'sa_loss': loss}


def _wa(model, params, batch, keys, ocfg, deterministic):
  """WA: the attention symmetry of the [x; y] and [y; x] passes' last layers."""
  if 'pair_seq' in batch:
    loss, _, _ = packed_word_alignment(model, params, batch, ocfg, keys.dropout, deterministic)
  else:
    loss, _ = word_alignment(model, params, batch, ocfg, keys.dropout, deterministic)
  return loss, {'wa_loss': loss}


def _guided(model, params, batch, keys, ocfg, deterministic):
  """Guided alignment: the WA passes' attention against a teacher's links (`batch['guide']`,
  amber_jax.data.aligned; one pair per row)."""
  a_x2y, a_y2x, x_mask, y_mask = alignment_attention(model, params, batch, ocfg, keys.dropout,
                                                     deterministic)
  side = a_x2y.shape[-1]
  guide = batch['guide'].reshape(-1, side, side)
  loss = losses.guided_alignment_loss(a_x2y, a_y2x, guide, x_mask, y_mask)
  return loss, {'guided_loss': loss}


_PAIR_KEYS = ('pair_ids', 'pair_segments')
_SWAP_KEYS = ('swap_ids', 'swap_segments')
_SENTENCE_KEYS = ('src_ids', 'tgt_ids')

# The registry, in the order the losses run (and their PRNG keys are drawn).
OBJECTIVES: tuple[Objective, ...] = (
    Objective('mlm', 'mlm_weight', ('mono_ids', 'mono_segments'), ('mlm_loss', 'mlm_accuracy'),
              _mlm, masks=True, optional_keys=('mono_seq',),
              passes=lambda s: ((*s['mono_ids'], True),)),
    Objective('tlm', 'tlm_weight', _PAIR_KEYS, ('tlm_loss', 'tlm_accuracy'), _tlm, masks=True,
              optional_keys=('pair_seq',), passes=lambda s: ((*s['pair_ids'], True),)),
    Objective('sa', 'sa_weight', _SENTENCE_KEYS, ('sa_loss',), _sa,
              packed_keys=('sent_ids', 'sent_seq'),
              passes=lambda s: (((*s['sent_ids'], False),) if 'sent_ids' in s else
                                ((2 * s['src_ids'][0], s['src_ids'][1], False),))),
    Objective('wa', 'wa_weight', _SENTENCE_KEYS + _PAIR_KEYS + _SWAP_KEYS, ('wa_loss',), _wa,
              packed_keys=_PAIR_KEYS + _SWAP_KEYS + ('pair_seq',),
              passes=lambda s: ((*s['pair_ids'], False), (*s['swap_ids'], False))),
    Objective('guided', 'guided_weight', _SENTENCE_KEYS + _PAIR_KEYS + _SWAP_KEYS + ('guide',),
              ('guided_loss',), _guided,
              passes=lambda s: ((*s['pair_ids'], False), (*s['swap_ids'], False))),
)


def loss_keys() -> tuple[str, ...]:
  """'loss' (the weighted total) and each registered objective's loss key, in registry order."""
  return ('loss',) + tuple(o.loss_key for o in OBJECTIVES)


def weights(ocfg) -> dict[str, float]:
  """{weight field: value} of every registered objective, read from config.objectives."""
  return {o.weight: getattr(ocfg, o.weight) for o in OBJECTIVES}


def objective_keys(rng: Array, registry: tuple[Objective, ...]) -> dict[str, Keys]:
  """Each objective's keys: one split of `rng` gives a masking key per masking objective (in
  order) and a last key, whose split gives each objective its dropout key (in order). Every key is
  drawn whether its objective runs or not, so turning a loss off leaves the others' keys alone."""
  masking = [o.name for o in registry if o.masks]
  *mask_keys, k_drop = jax.random.split(rng, len(masking) + 1)
  drop_keys = jax.random.split(k_drop, len(registry))
  mask_of = dict(zip(masking, mask_keys))
  return {o.name: Keys(mask_of.get(o.name), d) for o, d in zip(registry, drop_keys)}


def _runs(o: Objective, batch: Mapping[str, Array], ocfg) -> bool:
  """Whether `o` runs on `batch`: its arrays are there and its weight is non-zero (a config
  without the weight field, e.g. one written before the objective existed, leaves it off)."""
  keys = o.keys_of(batch)
  present = [k in batch for k in keys]
  if not any(present) or not getattr(ocfg, o.weight, 0.0):
    return False
  if not all(present):
    missing = [k for k, p in zip(keys, present) if not p]
    raise ValueError(f'Objective {o.name!r} reads {keys}; the batch lacks {missing} '
                     f'(it has {sorted(batch)}). Yield every key of a batch part '
                     f'(amber_jax.data.batches), or set config.objectives.{o.weight}=0.')
  return True


def amber_losses(model: Encoder, params, batch: Mapping[str, Array], rng: Array, ocfg: Any,
                 deterministic: bool = False) -> tuple[Array, dict[str, Array]]:
  """The weighted total loss of one batch and its parts: every objective of `OBJECTIVES`.

  Args:
    model: the Encoder module.
    params: its (unboxed) parameters.
    batch: arrays as `amber_jax.data.pipeline` yields them (mono_* and/or src/tgt/pair/swap_*; the
      optional mono_seq marks packed rows, see the module docstring).
    rng: PRNG key for masking and dropout (split by `objective_keys`).
    ocfg: config.objectives (weights, mask_rate, sa_* options, wa_mask).
    deterministic: disable dropout.

  Returns:
    (total loss, metrics dict with each loss and accuracy, and 'loss' = the total).
  """
  registry = OBJECTIVES
  keys = objective_keys(rng, registry)
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  for o in registry:
    if not _runs(o, batch, ocfg):
      continue
    loss, logged = o.fn(model, params, batch, keys[o.name], ocfg, deterministic)
    if set(logged) != set(o.metrics):
      raise ValueError(f'Objective {o.name!r} returned metrics {sorted(logged)}; its entry '
                       f'declares {o.metrics}. Make the two agree.')
    total += getattr(ocfg, o.weight) * loss
    metrics.update(logged)
  metrics['loss'] = total
  return total, metrics
