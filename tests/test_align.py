"""Word alignment: subwords -> words, Pharaoh and AER on hand-written cases, both extractors, and
the model side (the WA blocks as training reads them)."""

import io

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sentencepiece as spm

from amber_jax.eval import align
from amber_jax.data import aligned
from amber_jax.core import masking
from amber_jax.core import objectives
from amber_jax.core.model import CLS_ID, PAD_ID, SEP_ID, Encoder, EncoderConfig, init_params

WORDS = ('the cat dog house tree sat ran on under big small red green a an der die das Katze '
         'Hund Haus Baum sitzt lief auf unter gross klein rot gruen ein eine').split()


def tiny_sp(vocab_size=60):
  """A SentencePiece model with our specials, trained here on random word strings (<1 s)."""
  rng = np.random.default_rng(0)
  return sp_from_lines([' '.join(rng.choice(WORDS, size=6)) for _ in range(400)], vocab_size)


def sp_from_lines(lines, vocab_size):
  """A SentencePiece model with our specials, trained in memory on `lines`."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
      pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece='[PAD]', unk_piece='[UNK]',
      bos_piece='[CLS]', eos_piece='[SEP]', user_defined_symbols=['[MASK]'], minloglevel=2)
  return spm.SentencePieceProcessor(model_proto=model.getvalue())


TINY = EncoderConfig(vocab_size=60, hidden_size=32, num_layers=2, num_heads=2,
                     intermediate_size=64, max_position_embeddings=64)


# ---- subwords -> words ----

@pytest.mark.parametrize('pieces, expected', [
    (['▁The', '▁cat', 's', '▁sat'], [0, 1, 1, 2]),
    (['Hello', '▁world'], [0, 1]),            # a first piece without '▁' still starts word 0
    (['▁', '«', 'a', '▁b'], [0, 0, 0, 1]),    # a lone '▁' starts a word that the next pieces spell
    (['▁un', 'believ', 'able', '▁!'], [0, 0, 0, 1]),
])
def test_word_index(pieces, expected):
  assert aligned.word_index(pieces) == expected


def test_words_from_pieces_links_a_word_pair_when_any_pieces_link():
  piece_links = np.zeros((4, 3), bool)  # src pieces [w0 w1 w1 w2], tgt pieces [v0 v0 v1]
  piece_links[1, 1] = piece_links[2, 0] = piece_links[3, 2] = True
  assert align.words_from_pieces(piece_links, [0, 1, 1, 2], [0, 0, 1]) == {(1, 0), (2, 1)}


# ---- Pharaoh and AER ----

def test_parse_pharaoh_sure_and_possible():
  sure, possible = align.parse_pharaoh('0-0 1?2 2-1')
  assert sure == {(0, 0), (2, 1)} and possible == {(0, 0), (1, 2), (2, 1)}
  with pytest.raises(ValueError, match='expected `i-j`'):
    align.parse_pharaoh('0-a')
  assert align.to_pharaoh({(2, 1), (0, 0), (0, 3)}) == '0-0 0-3 2-1'


def test_read_gold_adds_a_possible_file(tmp_path):
  (tmp_path / 'sure').write_text('0-0 1-1\n2-2\n')
  (tmp_path / 'possible').write_text('1-2\n\n')
  gold = align.read_gold(tmp_path / 'sure', tmp_path / 'possible')
  assert gold == [({(0, 0), (1, 1)}, {(0, 0), (1, 1), (1, 2)}), ({(2, 2)}, {(2, 2)})]


def test_aer_is_0_for_the_sure_links_and_1_for_disjoint_ones():
  gold = [({(0, 0), (1, 1)}, {(0, 0), (1, 1), (1, 2)})]
  assert align.aer([{(0, 0), (1, 1)}], gold) == 0.0
  assert align.aer([{(0, 1), (2, 2)}], gold) == 1.0


def test_aer_mixed_case_by_hand():
  # S = {0-0, 1-1}, P = S + {1-2}, A = {0-0, 1-2, 2-2}: |A∩S| = 1, |A∩P| = 2, |A| = 3, |S| = 2,
  # AER = 1 - 3/5 = 0.4. A second pair with S = P = {0-0} and A = {0-0}: counts 1, 1, 1, 1;
  # the corpus AER sums before dividing: 1 - (1 + 2 + 1 + 1) / (3 + 2 + 1 + 1) = 2/7.
  gold = [({(0, 0), (1, 1)}, {(1, 2)}), ({(0, 0)}, {(0, 0)})]
  assert align.aer([{(0, 0), (1, 2), (2, 2)}], gold[:1]) == pytest.approx(0.4)
  assert align.aer([{(0, 0), (1, 2), (2, 2)}, {(0, 0)}], gold) == pytest.approx(2 / 7)


# ---- extractors ----

def test_similarity_links_find_a_permutation():
  src = 10 * np.eye(4)
  perm = [2, 0, 3, 1]
  tgt = src[perm]  # target j is source perm[j]
  links = align.similarity_links(src, tgt)
  assert {(int(i), int(j)) for i, j in zip(*np.nonzero(links))} == {(p, j) for j, p in
                                                                       enumerate(perm)}


def test_attention_links_argmax_needs_both_directions():
  a_x2y = np.array([[0.7, 0.1], [0.6, 0.2]])   # both x pick y0
  a_y2x = np.array([[0.5, 0.3], [0.1, 0.8]])   # y0 picks x0, y1 picks x1
  assert np.array_equal(align.attention_links(a_x2y, a_y2x), [[True, False], [False, False]])
  # product after renormalisation: x0-y0 .875 * .625, x1-y0 .75 * .375, x1-y1 .25 * .889: at 0.25
  # y0 links to both x words, which the argmax rule cannot do.
  prod = align.attention_links(a_x2y, a_y2x, 'product', threshold=0.25)
  assert np.array_equal(prod, [[True, False], [True, False]])


# ---- the model side ----

@pytest.fixture(scope='module')
def aligner():
  params = nn.meta.unbox(init_params(TINY, jax.random.key(0)))
  return align.Aligner(params, TINY, tiny_sp())


def test_pieces_map_back_to_the_words(aligner):
  words = ['the', 'Katze', 'sitzt', 'under', 'a', 'tree']
  ids, pieces, index = aligner.pieces(words)
  assert index[-1] == len(words) - 1
  assert [''.join(p for p, w in zip(pieces, index) if w == k).lstrip('▁') for k in
          range(len(words))] == words


def test_attention_blocks_are_the_ones_the_wa_loss_reads(aligner):
  """Aligner.attention against objectives._cross_block on the training layout."""
  src, tgt = aligner.pieces(['the', 'big', 'cat'])[0], aligner.pieces(['die', 'Katze'])[0]
  (x2y, y2x), = aligner.attention([src], [tgt])
  n_side = 8
  def framed(a, b):
    ids = np.full((1, 2 * n_side), PAD_ID, np.int32)
    row = [CLS_ID, *a, SEP_ID, *b, SEP_ID]
    ids[0, :len(row)] = row
    seg = np.zeros_like(ids)
    seg[0, len(a) + 2:len(row)] = 1
    return jnp.asarray(ids), jnp.asarray(seg)
  def block(first, second):
    ids, seg = framed(first, second)
    mask = masking.wa_attention_mask(ids, seg, 'paper')
    probs = Encoder(TINY).apply({'params': aligner.params}, ids, seg, mask,
                                return_last_probs=True)['last_probs']
    out = objectives._cross_block(probs, jnp.array([len(first)]), n_side, n_side)
    return np.asarray(out[0].mean(0))[:len(second), :len(first)]  # [n_second, n_first]
  np.testing.assert_allclose(y2x, block(src, tgt), atol=1e-5)
  np.testing.assert_allclose(x2y, block(tgt, src), atol=1e-5)


@pytest.mark.parametrize('method', ['attention', 'similarity'])
def test_align_gives_word_links_in_range(aligner, method):
  pairs = [(['the', 'cat', 'sat'], ['die', 'Katze', 'sitzt']), (['a', 'red', 'house'],
                                                                ['ein', 'rot', 'Haus', 'gross'])]
  links = aligner.align(pairs, method)
  assert len(links) == 2
  for (s, t), found in zip(pairs, links):
    assert all(0 <= i < len(s) and 0 <= j < len(t) for i, j in found)
  # With nothing filtered out, every word pair is linked: the piece -> word map covers all words.
  everything = aligner.align(pairs, method, rule='product', threshold=0.0)
  assert everything == [{(i, j) for i in range(len(s)) for j in range(len(t))} for s, t in pairs]
  m = aligner.matrices(*pairs[0])
  assert m['attention'].shape == m['similarity'].shape == (len(m['src_pieces']),
                                                           len(m['tgt_pieces']))


def test_read_word_pairs_both_formats(tmp_path):
  (tmp_path / 'p').write_text('the cat\tdie Katze\na dog ||| ein Hund\n')
  assert aligned.read_word_pairs(tmp_path / 'p') == [(['the', 'cat'], ['die', 'Katze']),
                                                   (['a', 'dog'], ['ein', 'Hund'])]


def test_cli_align_writes_pharaoh_scores_aer_and_draws(tmp_path, capsys):
  """`amber-jax align` end to end on a transformers folder of a tiny random encoder."""
  from amber_jax import cli
  from amber_jax.export import hf
  from amber_jax.text import vocab
  sp_path = tmp_path / 'sp.model'
  sp_path.write_bytes(tiny_sp().serialized_model_proto())
  params = nn.meta.unbox(init_params(TINY, jax.random.key(1)))
  folder = hf.export(params, TINY, tmp_path / 'hf', head='base',
                     tokenizer_fn=lambda d: vocab.export_hf_tokenizer(sp_path, d,
                                                                      model_max_length=64))
  (tmp_path / 'pairs').write_text('the cat sat\tdie Katze sitzt\na red house\tein rot Haus\n')
  (tmp_path / 'gold').write_text('0-0 1-1 2-2\n0-0 1-1 2-2\n')
  cli.main(['align', str(folder), '--pairs', str(tmp_path / 'pairs'), '--method', 'similarity',
            '--threshold', '0', '--gold', str(tmp_path / 'gold'),
            '--heatmap', str(tmp_path / 'map.png')])
  lines = capsys.readouterr().out.splitlines()
  every = ' '.join(f'{i}-{j}' for i in range(3) for j in range(3))
  assert lines[:2] == [every, every]            # threshold 0 links every word pair
  assert lines[2] == 'AER 0.5000 (similarity, 2 pairs)'  # 1 - (3 + 3) / (9 + 3) per pair
  assert (tmp_path / 'map.png').stat().st_size > 5_000


def test_pieces_reject_words_the_tokenizer_cannot_start(aligner):
  with pytest.raises(ValueError, match='word starts'):
    aligner.pieces(['the', '\u200b', 'cat'])  # a zero-width word vanishes in normalisation
