"""Guided word alignment: the eflomal teacher, the aligned-pairs input, the loss and a trained run.

The loss is checked against loops written out in numpy; the input against the words it came
from; the whole recipe (configs/align.py shrunk) by training on a cipher language whose true
alignment is known and reading the alignments back with `amber-jax align`'s Aligner.
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import sentencepiece as spm

from amber_jax import errors
from amber_jax.core import losses
from amber_jax.data import aligned, teacher
import test_align

# ---- symmetrisation ----

FWD = {(0, 0), (1, 2), (2, 1), (3, 3)}
REV = {(0, 0), (1, 1), (2, 1), (3, 4)}


def test_symmetrize_by_hand():
  assert teacher.symmetrize(FWD, REV, 'intersection') == {(0, 0), (2, 1)}
  assert teacher.symmetrize(FWD, REV, 'union') == FWD | REV
  assert teacher.symmetrize(FWD, REV, 'forward') == FWD
  # grow-diag: (1, 1) and (1, 2) neighbour (2, 1)/(0, 0) and touch the unaligned source word 1;
  # (1, 1) comes first in order, then (1, 2) still touches the unaligned target word 2.
  # (3, 3) and (3, 4) neighbour nothing aligned.
  assert teacher.symmetrize(FWD, REV, 'grow-diag') == {(0, 0), (2, 1), (1, 1), (1, 2)}
  # final-and: (3, 3) joins (both words unaligned); then (3, 4) does not (source 3 is taken).
  assert teacher.symmetrize(FWD, REV, 'grow-diag-final-and') == {
      (0, 0), (2, 1), (1, 1), (1, 2), (3, 3)}
  with pytest.raises(ValueError, match='unknown symmetrization'):
    teacher.symmetrize(FWD, REV, 'grow')


def cipher_corpus(n, seed=0, length=(4, 9)):
  """Pairs of a toy language: its words are the letters a-t, each written as its capital in the
  other language; adjacent words swap half the time. Returns (pairs, gold links)."""
  words = list('abcdefghijklmnopqrst')
  rng = np.random.default_rng(seed)
  cipher = {w: w.upper() for w in words}
  pairs, gold = [], []
  for _ in range(n):
    src = list(rng.choice(words, rng.integers(*length)))
    order = list(range(len(src)))
    for i in range(0, len(order) - 1, 2):
      if rng.random() < 0.5:
        order[i], order[i + 1] = order[i + 1], order[i]
    tgt = [cipher[src[i]] for i in order]
    pairs.append((src, tgt))
    gold.append({(i, j) for j, i in enumerate(order)})
  return pairs, gold


def test_eflomal_finds_the_cipher_alignment():
  pairs, gold = cipher_corpus(300)
  links = teacher.eflomal_links([s for s, _ in pairs], [t for _, t in pairs],
                                symmetrization='intersection')
  found = sum(len(l & g) for l, g in zip(links, gold))
  wrong = sum(len(l - g) for l, g in zip(links, gold))
  assert found > 0.8 * sum(map(len, gold)) and wrong < 0.05 * found
  with pytest.raises(ValueError, match='2 source sentences but 1'):
    teacher.eflomal_directions([['a'], ['b']], [['x']])


# ---- the loss ----

def guided_reference(a_x2y, a_y2x, guide, x_mask, y_mask):
  def one_way(att, g, qmask, kmask):
    total, count = 0.0, 0
    for b in range(att.shape[0]):
      for i in range(att.shape[2]):
        if not qmask[b, i]:
          continue
        targets = [j for j in range(att.shape[3]) if kmask[b, j] and g[b, i, j]]
        if not targets:
          continue
        p = att[b].mean(0)[i] * kmask[b]
        p = p / p.sum()
        total += -sum(np.log(p[j]) for j in targets) / len(targets)
        count += 1
    return total / max(count, 1)
  return 0.5 * (one_way(a_x2y, guide, x_mask, y_mask)
                + one_way(a_y2x, guide.transpose(0, 2, 1), y_mask, x_mask))


def test_guided_loss_matches_loops():
  rng = np.random.default_rng(1)
  b, h, n = 3, 2, 5
  soft = lambda a: np.exp(a) / np.exp(a).sum(-1, keepdims=True)
  a_x2y, a_y2x = soft(rng.normal(size=(b, h, n, n))), soft(rng.normal(size=(b, h, n, n)))
  x_mask = np.arange(n)[None] < np.array([5, 3, 4])[:, None]
  y_mask = np.arange(n)[None] < np.array([4, 5, 2])[:, None]
  guide = (rng.random((b, n, n)) < 0.3).astype(np.int32)
  got = losses.guided_alignment_loss(*map(jnp.asarray, (a_x2y, a_y2x, guide, x_mask, y_mask)))
  want = guided_reference(a_x2y, a_y2x, guide, x_mask, y_mask)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  # Attention that puts all its mass on the linked tokens costs ~0.
  eye = np.broadcast_to(np.eye(n), (1, h, n, n))
  ones = np.ones((1, n), bool)
  assert float(losses.guided_alignment_loss(eye, eye, np.eye(n)[None], ones, ones)) < 1e-6


# ---- the input ----

def small_sp(pairs, vocab_size=80):
  lines = [' '.join(s) for s, _ in pairs] + [' '.join(t) for _, t in pairs]
  return test_align.sp_from_lines(lines, vocab_size)


def test_guide_rows_mark_the_pieces_of_linked_words():
  pairs, gold = cipher_corpus(60)
  sp = small_sp(pairs)
  guided = aligned.GuidedPairs(pairs, gold, sp, sentence_length=9)
  side = 7
  long = [k for k, (x, y, *_) in enumerate(guided.items) if len(x) == side][:2]
  batch = guided.rows([3] + long)
  assert batch['guide'].shape == (3, side * side) and batch['pair_ids'].shape == (3, 18)
  assert guided.cut > 0 and long  # pairs longer than 7 pieces: their guide is cut with them
  for row, k in enumerate([3] + long):
    src, tgt = pairs[k]
    _, _, xw, _ = aligned.word_pieces(sp, src, side)
    _, _, yw, _ = aligned.word_pieces(sp, tgt, side)
    g = batch['guide'][row].reshape(side, side)
    want = np.zeros((side, side), np.int32)
    for i, wi in enumerate(xw):
      for j, wj in enumerate(yw):
        want[i, j] = (wi, wj) in gold[k]
    np.testing.assert_array_equal(g, want)
    # the x pieces sit at 1.. of src_ids, the y pieces at 1.. of tgt_ids
    np.testing.assert_array_equal(batch['src_ids'][row, 1:1 + len(xw)],
                                  sp.encode(' '.join(src))[:side])


def test_an_invisible_word_is_named_by_file_and_line():
  pairs, gold = cipher_corpus(10)
  pairs[3] = (pairs[3][0][:2] + ['\u200b'], pairs[3][1])  # vanishes in normalisation
  with pytest.raises(errors.UserError, match=r'my.txt:4: 3 words gave 2 word starts'):
    aligned.GuidedPairs(pairs, gold, small_sp(cipher_corpus(60)[0]), 12, where='my.txt')


def test_batches_are_a_function_of_the_step_and_split_over_processes():
  pairs, gold = cipher_corpus(50)
  guided = aligned.GuidedPairs(pairs, gold, small_sp(pairs), sentence_length=24)
  first = guided.batches(0, 8, seed=3)
  run = [next(first) for _ in range(9)]  # 6 batches an epoch: into the second epoch
  resumed = guided.batches(7, 8, seed=3)
  for want in run[7:]:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  halves = [next(guided.batches(4, 8, seed=3, process=p, processes=2)) for p in (0, 1)]
  np.testing.assert_array_equal(np.concatenate([halves[0]['src_ids'], halves[1]['src_ids']]),
                                run[4]['src_ids'][np.r_[0:8:2, 1:8:2]])
  assert first.stats['pairs'] == 9 * 8  # the loop's input/* counts
  assert first.stats['src_truncated'] == 0 and resumed.stats['pairs'] == 2 * 8
  epochs = {tuple(run[k]['src_ids'][:, 1]) for k in (0, 6)}
  assert len(epochs) == 2  # a new order each epoch
  with pytest.raises(errors.UserError, match='cannot fill a batch of 64'):
    next(guided.batches(0, 64, seed=0))


def test_too_few_pairs_for_the_vocabulary_get_what_they_give(tmp_path):
  pairs, _ = cipher_corpus(50)
  lines = []
  aligned.ensure_vocab(pairs, tmp_path / 'v.model', 8000, seed=0, print_fn=lines.append)
  size = spm.SentencePieceProcessor(model_file=str(tmp_path / 'v.model')).vocab_size()
  assert size < 200 and lines == [f'Vocabulary: the pairs give {size:,} pieces, not 8,000; '
                                  f'using {size:,}']


def test_teacher_links_are_saved_and_checked(tmp_path):
  pairs, _ = cipher_corpus(40)
  lines = []
  links = aligned.teacher_links(pairs, tmp_path, symmetrization='intersection',
                                print_fn=lines.append)
  assert lines and (tmp_path / 'teacher-links.0.txt').exists()
  again = aligned.teacher_links(pairs, tmp_path, symmetrization='intersection',
                                print_fn=lines.append)
  assert again == links and len(lines) == 1  # read back, eflomal not run again
  with pytest.raises(errors.UserError, match='other pairs or settings'):
    aligned.teacher_links(pairs[1:], tmp_path, symmetrization='intersection')


def test_read_word_pairs_names_the_bad_line(tmp_path):
  path = tmp_path / 'pairs.txt'
  path.write_text('a b\tx y\nno tab here\n')
  with pytest.raises(errors.UserError, match=r'pairs.txt:2: expected'):
    aligned.read_word_pairs(path)
  path.write_bytes(b'a\tb\n\xff\tc\n')
  with pytest.raises(errors.UserError, match=r'pairs.txt:2: not UTF-8'):
    aligned.read_word_pairs(path)


# ---- the recipe, shrunk ----

@pytest.mark.slow
def test_guided_training_learns_the_cipher_alignment(tmp_path, monkeypatch, capsys):
  """configs/align.py at toy size: after training, the attention extractor finds the cipher's
  true links; the same model untrained does not."""
  from amber_jax.cli import train as train_cli  # pylint: disable=import-outside-toplevel
  from amber_jax.eval import align  # pylint: disable=import-outside-toplevel
  from amber_jax.export import runs  # pylint: disable=import-outside-toplevel

  monkeypatch.setenv('AMBER_JAX_CACHE', str(tmp_path / 'cache'))
  pairs, gold = cipher_corpus(600, seed=2)
  path = tmp_path / 'pairs.txt'
  path.write_text(''.join(f'{" ".join(s)}\t{" ".join(t)}\n' for s, t in pairs))
  workdir = tmp_path / 'run'
  train_cli.cmd_train([
      '--config=configs/align.py', f'--config.data.align_pairs={path}',
      f'--config.workdir={workdir}', '--config.model.vocab_size=80',
      '--config.model.hidden_size=64', '--config.model.num_layers=2',
      '--config.model.intermediate_size=128', '--config.model.num_heads=2',
      '--config.data.sentence_length=32', '--config.model.max_position_embeddings=64',
      '--config.train.steps=300', '--config.train.log_every=100',
      '--config.train.checkpoint_every=300', '--config.optimizer.learning_rate=2e-3'])
  assert (workdir / 'teacher-links.0.txt').exists()
  config = json.loads((workdir / 'config.json').read_text())
  assert 'align-' in config['data']['vocab_path']  # trained on the pairs, in the cache
  params, cfg, sp, _ = runs.load_encoder(workdir)
  test_pairs, test_gold = cipher_corpus(100, seed=9)
  gold_sp = [(g, g) for g in test_gold]
  trained = align.aer(align.Aligner(params, cfg, sp).align(test_pairs), gold_sp)
  untrained_params = jax.tree.map(lambda a: a * 0 + jax.random.normal(
      jax.random.key(0), a.shape) * 0.02, params)
  untrained = align.aer(align.Aligner(untrained_params, cfg, sp).align(test_pairs), gold_sp)
  assert trained < 0.4 and untrained > 0.7, (trained, untrained)

  # `amber-jax align` on the run: 'guided' by default (the teacher learns from the run's pairs
  # and these together), Pharaoh out, AER printed.
  from amber_jax.cli import evaluate  # pylint: disable=import-outside-toplevel
  test_path, gold_path, out = tmp_path / 'test.txt', tmp_path / 'gold.txt', tmp_path / 'out.txt'
  test_path.write_text(''.join(f'{" ".join(s)}\t{" ".join(t)}\n' for s, t in test_pairs))
  gold_path.write_text(''.join(align.to_pharaoh(g) + '\n' for g in test_gold))
  evaluate.cmd_align([str(workdir), '--pairs', str(test_path), '--gold', str(gold_path),
                      '--out', str(out)])
  printed = capsys.readouterr()
  assert 'Teacher: eflomal on 700 pairs' in printed.err
  guided = float(printed.out.split('AER ')[1].split()[0])
  assert '(guided, 100 pairs)' in printed.out and guided < min(trained, 0.1), (guided, trained)
  assert align.aer([align.parse_pharaoh(l)[0] for l in out.read_text().splitlines()],
                   gold_sp) == pytest.approx(guided, abs=1e-4)


def test_the_preset_trains_on_pairs_only():
  from configs import align as preset  # pylint: disable=import-outside-toplevel
  c = preset.get_config()
  assert isinstance(c, ml_collections.ConfigDict)
  assert c.data.mono_batch_size == 0 and not c.data.pair_packing
  assert c.objectives.guided_weight > 0 and c.objectives.sa_weight == 0


def test_full_mask_reads_both_directions_from_one_pass():
  """wa_mask='full': the training blocks (objectives.alignment_attention) are the ones
  `amber-jax align` reads (Aligner.attention), and x attends over both sentences."""
  from flax import linen as nn  # pylint: disable=import-outside-toplevel
  from amber_jax.core import objectives  # pylint: disable=import-outside-toplevel
  from amber_jax.core import model as model_lib  # pylint: disable=import-outside-toplevel
  from amber_jax.eval import align  # pylint: disable=import-outside-toplevel

  pairs, gold = cipher_corpus(20)
  sp = small_sp(pairs)
  cfg = model_lib.EncoderConfig(vocab_size=80, hidden_size=32, num_layers=2, num_heads=2,
                      intermediate_size=64, max_position_embeddings=96)
  params = nn.meta.unbox(model_lib.init_params(cfg, jax.random.key(0)))
  guided = aligned.GuidedPairs(pairs, gold, sp, sentence_length=40)
  batch = guided.rows([0, 1, 2])
  ocfg = ml_collections.ConfigDict({'wa_mask': 'full'})
  a_x2y, a_y2x, x_mask, y_mask = objectives.alignment_attention(
      model_lib.Encoder(cfg), params, batch, ocfg, jax.random.key(1), True)
  aligner = align.Aligner(params, cfg, sp, wa_mask='full')
  for row, k in enumerate([0, 1, 2]):
    ids = [aligner.pieces(words)[0] for words in pairs[k]]
    (x2y, y2x), = aligner.attention([ids[0]], [ids[1]])
    nx, ny = len(ids[0]), len(ids[1])
    assert x_mask[row].sum() == nx and y_mask[row].sum() == ny
    np.testing.assert_allclose(np.asarray(a_x2y[row].mean(0))[:nx, :ny], x2y, atol=1e-6)
    np.testing.assert_allclose(np.asarray(a_y2x[row].mean(0))[:ny, :nx], y2x, atol=1e-6)
    # under the full mask a row's mass is split over both sentences: the cross block is < 1
    assert 0.05 < x2y.sum(1).max() < 0.999


# ---- the guided extractor ----

def test_word_attention_by_hand():
  from amber_jax.eval import align  # pylint: disable=import-outside-toplevel
  # x: word 0 = pieces 0, 1; word 1 = piece 2. y: word 0 = piece 0; word 1 = pieces 1, 2.
  x2y = np.array([[0.2, 0.2, 0.0],    # rows renormalised: [.5, .5, 0]
                  [0.0, 0.5, 0.5],
                  [1.0, 1.0, 2.0]])   # [.25, .25, .5]
  y2x = np.array([[1.0, 0.0, 0.0],
                  [0.0, 0.0, 1.0],
                  [0.5, 0.5, 0.0]])
  w_x2y, w_y2x = align.word_attention(x2y, y2x, [0, 0, 1], [0, 1, 1], 3, 2)
  # x word 0: mean of piece rows [.5, .5] and [0, 1] over y words -> [.25, .75]; word 1: [.25, .75];
  # x word 2 has no pieces (cut): zeros.
  np.testing.assert_allclose(w_x2y, [[0.25, 0.75], [0.25, 0.75], [0.0, 0.0]])
  # y word 0: piece row [1, 0, 0] -> x words [1, 0, 0]; y word 1: mean of [0, 1, 0] and [1, 0, 0]
  np.testing.assert_allclose(w_y2x, [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
  np.testing.assert_allclose(w_x2y.sum(1), [1, 1, 0])


def test_vote_links_by_hand():
  from amber_jax.eval import align  # pylint: disable=import-outside-toplevel
  w_x2y = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]])
  w_y2x = np.array([[0.9, 0.1], [0.8, 0.2], [0.0, 1.0]])
  forward, reverse = {(0, 0), (1, 1)}, {(0, 0), (1, 2), (0, 1)}
  # (0,0): .25 * 1.8 + .5 = .95; (1,1): .25 * .5 + .25 = .375 (one direction, weak student);
  # (1,2): .25 * 1.5 + .25 = .625; (0,1): .25 * .9 + .25 = .475; nothing else exceeds .4.
  assert align.vote_links(w_x2y, w_y2x, forward, reverse) == {(0, 0), (1, 2), (0, 1)}
  # without the teacher only the student's two-way confidence (sum > 1.6) links
  assert align.vote_links(w_x2y, w_y2x, set(), set()) == {(0, 0)}
  # a teacher link past the student's words (a cut sentence) is ignored, not an error
  assert align.vote_links(w_x2y, w_y2x, {(5, 5)}, {(5, 5)}) == {(0, 0)}
