"""The Bible word-alignment test bed: OSIS cleaning, pairing and book split, FreeDict parsing,
the proxy gold rule and its scorer, and the benchmark on a hand-made corpus (no apt, no network).
"""

import collections
import gzip
import json

import pytest

from amber_jax import errors
from amber_jax.corpora import bible, layout
from amber_jax.data import aligned
from amber_jax.eval import proxy_gold

# ---- tokenizing and cleaning ----


def test_tokenize_words_apostrophes_and_punctuation():
  assert bible.tokenize('Now Yahweh’s word came: “Arise, go!” don\'t') == [
      'Now', 'Yahweh’s', 'word', 'came', ':', '“', 'Arise', ',', 'go', '!', '”', "don't"]
  assert bible.tokenize('Beth-lehem 12 ¿Quién?') == [
      'Beth', '-', 'lehem', '12', '¿', 'Quién', '?']
  assert bible.tokenize('  ') == []


def test_clean_osis_drops_notes_and_separates_words():
  raw = ('<w lemma="strong:H3068">Yahweh’s</w><note placement="foot"><reference '
         'type="annotateRef">1:1 </reference>“Yahweh” is God’s <catchWord>Name</catchWord>.'
         '</note>'
         '<w lemma="strong:H1697">word</w> <w>came</w>,<note type="crossReference"><reference>'
         'Exodus 30:12</reference></note>to &amp; fro')
  assert bible.clean_osis(raw) == 'Yahweh’s word came , to & fro'


def test_clean_osis_spanish_transchange():
  # Between words it separates them; inside a word (a clitic) it joins.
  raw = ('<w>Gracia</w><transChange type="added">sea</transChange><w>á vosotros</w>, '
         'haciéndo<transChange type="added">les</transChange> <w>errar</w>')
  assert bible.clean_osis(raw) == 'Gracia sea á vosotros , haciéndoles errar'


def test_clean_osis_titles_speakers_and_glossary():
  raw = ('<title type="section">Section heading</title><title canonical="true" type="psalm">'
         'A Psalm by David.</title> <speaker>Beloved</speaker> Let him kiss me. '
         '<div canonical="true" eID="x" osisID="Rev" type="book"/> <div sID="g" type="glossary"/>'
         ' Abaddon is Hebrew for destruction.')
  assert bible.clean_osis(raw) == 'A Psalm by David. Let him kiss me.'
  assert bible.clean_osis('<title type="x"/>Amen.') == 'Amen.'  # a self-closing title


# ---- pairing and splitting ----


def test_pair_verses_needs_both_sides_non_empty():
  english = {('Gen', 1, 1): 'In the beginning', ('Gen', 1, 2): '<w>The</w> earth',
             ('Tob', 1, 1): 'Deuterocanon', ('Gen', 1, 3): '<note>only a note</note>'}
  spanish = {('Gen', 1, 1): 'EN el principio', ('Gen', 1, 2): 'Y la tierra',
             ('Gen', 1, 3): 'Y dijo Dios', ('Exod', 1, 1): 'Estos'}
  skipped = collections.Counter()
  pairs = bible.pair_verses(english, spanish, skipped)
  assert pairs == {('Gen', 1, 1): ('In the beginning', 'EN el principio'),
                   ('Gen', 1, 2): ('The earth', 'Y la tierra')}
  assert skipped == {'missing_es': 1, 'missing_en': 1, 'empty': 1}
  assert bible.pair_line('The earth,', 'Y la tierra,') == 'The earth ,\tY la tierra ,'


def test_split_by_books_is_whole_books_and_deterministic():
  keys = [(book, c, v) for book in ('Gen', 'Ruth', 'Mark', 'Rom', 'Jude')
          for c in (1, 2) for v in range(1, 11)]
  train, heldout = bible.split_by_books(keys, ('Ruth', 'Rom'), train_limit=15, seed=3)
  assert {k[0] for k in heldout} == {'Ruth', 'Rom'} and len(heldout) == 40
  assert len(train) == 15 and not {k[0] for k in train} & {'Ruth', 'Rom'}
  assert train == sorted(train, key=keys.index)  # written in canon order
  assert bible.split_by_books(keys, ('Ruth', 'Rom'), train_limit=15, seed=3) == (train, heldout)
  other, _ = bible.split_by_books(keys, ('Ruth', 'Rom'), train_limit=15, seed=4)
  assert other != train
  everything, _ = bible.split_by_books(keys, ('Ruth',), train_limit=None)
  assert len(everything) == 80


def test_build_bible_corpus_writes_the_files(tmp_path, monkeypatch):
  english = {('Gen', 1, v): f'<w>Word</w> {v} here.' for v in range(1, 7)}
  english.update({('Ruth', 1, v): f'Ruth says {v}.' for v in range(1, 4)})
  spanish = {k: f'Palabra {k[2]} aquí.' for k in english}

  def fake_read(sword_dir, module):
    return (english if module == bible.MODULES['en'] else spanish), {
        'description': module, 'version': '1', 'versification': 'KJV'}

  monkeypatch.setattr(bible, 'read_module', fake_read)
  manifest = bible.build_bible_corpus(tmp_path, train_limit=4, heldout_books=('Ruth',),
                                      sword_dir=tmp_path, dictionary={},
                                      layout_dir=tmp_path / 'layout')
  assert manifest['counts'] == {'train': 4, 'heldout': 3, 'train_available': 6}
  assert manifest['skipped']['versification_drift'] == 0
  assert manifest['heldout_books'] == {'Ruth': 3}
  lines = (tmp_path / 'heldout.txt').read_text(encoding='utf-8').splitlines()
  assert lines[0] == 'Ruth says 1 .\tPalabra 1 aquí .'
  assert (tmp_path / 'heldout.refs').read_text().split() == ['Ruth.1.1', 'Ruth.1.2', 'Ruth.1.3']
  assert len(aligned.read_word_pairs(tmp_path / 'train.txt')) == 4
  assert json.loads((tmp_path / 'manifest.json').read_text())['train_limit'] == 4
  held = layout.read_pairs(tmp_path / 'layout', 'validation')
  assert held == {'es': [tuple(line.split('\t')) for line in lines]}
  assert len(layout.read_pairs(tmp_path / 'layout', 'train')['es']) == 4
  assert layout.load_manifest(tmp_path / 'layout')['pairs'] == {
      'en-es': {'train': 4, 'validation': 3}}
  with pytest.raises(ValueError, match='Jonah'):
    bible.build_bible_corpus(tmp_path, heldout_books=('Jonah',), sword_dir=tmp_path,
                             dictionary={})


def test_drifted_keys_finds_a_shifted_chapter_end():
  # Chapter 1 is aligned throughout; in chapter 2 the Spanish verses 5-10 hold the English 4-9.
  words = [('king', 'rey'), ('house', 'casa'), ('water', 'agua'), ('bread', 'pan'),
           ('sword', 'espada'), ('horse', 'caballo'), ('gold', 'oro'), ('tree', 'árbol'),
           ('stone', 'piedra'), ('fire', 'fuego')]
  dictionary = {en: {es} for en, es in words}
  english, spanish = {}, {}
  for chapter in (1, 2):
    for v, (en, es) in enumerate(words, 1):
      english[('Gen', chapter, v)] = f'the {en} and the {words[v % 10][0]} of Moab'
      shift = 1 if chapter == 2 and v >= 4 else 0
      spanish[('Gen', chapter, v + shift)] = f'el {es} y el {words[v % 10][1]} de Moab'
  spanish[('Gen', 2, 4)] = 'Y nada'
  drifted = bible.drifted_keys(english, spanish, dictionary)
  assert drifted and all(k[1] == 2 and k[2] >= 3 for k in drifted)
  assert {('Gen', 2, v) for v in range(6, 11)} <= drifted
  # Without a dictionary, names still count (`Moab` is in every verse: no offset wins).
  assert not bible.drifted_keys(english, spanish, {})


# ---- dictd ----


def _b64(n: int) -> str:
  digits = ''
  while True:
    digits = bible._DICTD_B64[n % 64] + digits  # pylint: disable=protected-access
    n //= 64
    if not n:
      return digits


def _write_dictd(folder, name, entries, compress=True):
  """entries: (index headword, entry text) -> `name.index` + `name.dict(.dz)`."""
  data, index = b'', ['00databaseshort\tA\tB']
  for head, text in entries:
    blob = text.encode('utf-8')
    index.append(f'{head}\t{_b64(len(data))}\t{_b64(len(blob))}')
    data += blob
  (folder / f'{name}.index').write_text('\n'.join(index) + '\n', encoding='utf-8')
  if compress:
    (folder / f'{name}.dict.dz').write_bytes(gzip.compress(data))
  else:
    (folder / f'{name}.dict').write_bytes(data)


def test_dictd_numbers():
  assert bible.dictd_number('A') == 0 and bible.dictd_number('B') == 1
  assert bible.dictd_number('BA') == 64 and bible.dictd_number('x2E') == 49 * 4096 + 54 * 64 + 4
  assert all(bible.dictd_number(_b64(n)) == n for n in (0, 63, 64, 4095, 192176))


@pytest.mark.parametrize('compress', [True, False])
def test_read_dictd(tmp_path, compress):
  _write_dictd(tmp_path, 'freedict-eng-spa', [
      ('cinta', 'Ribbon /ribən/\n1. cinta, lazo\n2. banda de música; Listón\n'),
      # `the day before yesterday`, run together:
      ('the', 'the /ðdeibfɔːrjestədiː/\nanteayer\n'),
      ('a', 'a bordo /a bordo/\naboard\n'),  # a multi-word headword
      ('god', 'God /gɔd/\nDios\n'),
  ], compress)
  assert bible.read_dictd(tmp_path / 'freedict-eng-spa.index') == {
      'ribbon': {'cinta', 'lazo', 'listón'}, 'god': {'dios'}}


def test_load_dictionary_adds_reverse_entries(tmp_path):
  _write_dictd(tmp_path, 'freedict-eng-spa', [('house', 'house /haus/\ncasa\n')])
  _write_dictd(tmp_path, 'freedict-spa-eng', [('hogar', 'hogar /oɣˈaɾ/\nhome, house\n')])
  assert bible.load_dictionary(tmp_path) == {'house': {'casa', 'hogar'}, 'home': {'hogar'}}


# ---- the proxy gold rule ----

DICTIONARY = {'god': {'dios'}, 'word': {'palabra', 'verbo'}, 'the': {'el', 'la'},
              'son': {'hijo'}, 'and': {'y'}, 'he': {'él'}, 'no': {'no'}}


def gold(src, tgt, dictionary=DICTIONARY):
  return proxy_gold.gold_links(src.split(), tgt.split(), dictionary)


def test_gold_unambiguous_dictionary_links():
  assert gold('God said the word', 'Dios dijo la palabra') == {(0, 0), (2, 2), (3, 3)}


def test_gold_ambiguity_gives_no_link():
  # `word` matches two Spanish words (palabra, verbo): no link for it; `the` still links.
  assert gold('the word', 'la palabra verbo') == {(0, 0)}
  # Two English words translate to one Spanish word: neither is linked.
  assert gold('the word', 'el verbo', {'the': {'el'}, 'word': {'verbo', 'el'}}) == set()


def test_fold():
  assert bible.fold('Jesús') == 'jesus' and bible.fold('PEÑA') == 'pena'


def test_gold_repeated_words_give_no_link():
  assert gold('God and God', 'Dios y Dios') == {(1, 1)}
  assert gold('the word', 'la palabra la') == {(1, 1)}


def test_gold_names_and_numbers():
  assert gold('Jesus said 12 words', 'Jesús dijo 12 palabras') == {(0, 0), (2, 2)}
  # A capitalised dictionary word is not a name (`He`/`He` is "I have"); punctuation never links.
  assert gold('He went .', 'He ido .') == set()
  assert gold('No !', 'No !') == {(0, 0)}  # via the dictionary
  assert gold('jesus', 'jesús') == set()  # lowercase: not a name
  assert gold('Moab Moab', 'Moab') == set()  # repeated
  assert gold('Job found a job', 'Job halló') == set()  # `job` repeated, in another case


def test_build_gold_and_diagonal():
  pairs = [('God said'.split(), 'dijo Dios'.split()), (['Amen'], [])]
  assert proxy_gold.build_gold(pairs, DICTIONARY) == [{(0, 1)}, set()]
  assert proxy_gold.diagonal_links(4, 2) == {(0, 0), (1, 1), (2, 1), (3, 1)}
  assert proxy_gold.diagonal_links(2, 5) == {(0, 0), (1, 3)}
  assert proxy_gold.diagonal_links(0, 3) == set()


# ---- the scorer ----


def test_score_hand_worked():
  gold_links = [{(0, 0), (2, 2)}, {(1, 0)}]
  predicted = [{(0, 0), (0, 1), (1, 1), (2, 3)},  # (1, 1): word 1 has no gold, not judged
               {(1, 0), (3, 3)}]
  src = [['God', 'said', 'it', '.'], ['And', 'God', '!']]
  result = proxy_gold.score(predicted, gold_links, src)
  # A_c = {(0,0), (0,1), (2,3)} + {(1,0)} = 4 links, of which (0,0) and (1,0) are gold.
  assert result['predicted'] == 6 and result['predicted_covered'] == 4
  assert result['correct'] == 2 and result['gold'] == 3
  assert result['precision'] == pytest.approx(2 / 4)
  assert result['recall'] == pytest.approx(2 / 3)
  assert result['aer'] == pytest.approx(1 - 2 * 2 / (4 + 3))
  assert result['gold_per_verse'] == pytest.approx(1.5)
  assert result['words_covered'] == pytest.approx(3 / 5)  # 3 of 5 English words ('.', '!' out)
  perfect = proxy_gold.score(gold_links, gold_links)
  assert perfect['precision'] == perfect['recall'] == 1.0 and perfect['aer'] == 0.0
  assert perfect['words_covered'] is None
  with pytest.raises(ValueError, match='2 gold'):
    proxy_gold.score([set()], gold_links)


def test_pharaoh_round_trip(tmp_path):
  links = [{(0, 1), (2, 0)}, set(), {(10, 3)}]
  proxy_gold.write_pharaoh(tmp_path / 'a.pharaoh', links)
  assert (tmp_path / 'a.pharaoh').read_text() == '0-1 2-0\n\n10-3\n'
  assert proxy_gold.read_pharaoh(tmp_path / 'a.pharaoh') == links
  (tmp_path / 'b.pharaoh').write_text('1?2 0-0\n')
  assert proxy_gold.read_pharaoh(tmp_path / 'b.pharaoh') == [{(1, 2), (0, 0)}]
  (tmp_path / 'c.pharaoh').write_text('0-0\n1:2\n')
  with pytest.raises(errors.UserError, match='c.pharaoh:2: .*0-based'):
    proxy_gold.read_pharaoh(tmp_path / 'c.pharaoh')


# ---- the benchmark, on a hand-made corpus ----


def test_benchmark_scores_pharaoh_files(tmp_path, monkeypatch, capsys):
  from benchmarks import word_alignment  # pylint: disable=import-outside-toplevel
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  (corpus / 'heldout.txt').write_text('God said the word\tDios dijo la palabra\n'
                                      'the son\tel hijo\n', encoding='utf-8')
  (corpus / 'train.txt').write_text('the God\tel Dios\n', encoding='utf-8')
  (corpus / 'heldout.refs').write_text('Ruth.1.1\nRom.1.1\n', encoding='utf-8')
  (tmp_path / 'hand.tsv').write_text('Ruth.1.1\t0-0 1-1 2?2 3-3\n', encoding='utf-8')
  (corpus / 'manifest.json').write_text(json.dumps({
      'train_limit': 8000, 'counts': {'heldout': 2, 'train': 1},
      'heldout_books': {'Ruth': 2}}), encoding='utf-8')
  monkeypatch.setattr(bible, 'load_dictionary', lambda *a, **k: DICTIONARY)
  (tmp_path / 'pred.pharaoh').write_text('0-0 2-2 3-1\n0-1\n', encoding='utf-8')
  result = word_alignment.main(['--cache', str(corpus), '--pharaoh',
                                f'mine={tmp_path}/pred.pharaoh',
                                '--hand', str(tmp_path / 'hand.tsv'),
                                '--json', str(tmp_path / 'out.json')])
  assert (corpus / 'heldout.gold').read_text() == '0-0 2-2 3-3\n0-0 1-1\n'
  mine = result['rows']['mine']
  assert (mine['correct'], mine['predicted_covered'], mine['gold']) == (2, 4, 5)
  assert result['rows']['diagonal']['precision'] == 1.0  # these pairs are monotone, same length
  # `content`: gold links on English words that are not frequent in train.txt (`the`, `God`).
  content = result['content_rows']['mine']
  assert (content['correct'], content['predicted_covered'], content['gold']) == (0, 1, 2)
  assert 'mine' in capsys.readouterr().out
  assert json.loads((tmp_path / 'out.json').read_text())['rows']['mine']['recall'] == 0.4
  # the test books leave out Romans (the second verse): 'mine' has 0-0 and 2-2 right of 3 there
  assert result['test_rows']['mine']['correct'] == 2 and result['test_rows']['mine']['gold'] == 3
  # hand gold of Ruth.1.1 (S = 3 sure, P adds 2?2): 'mine' has A = 3, A∩S = 1 (0-0),
  # A∩P = 2 (0-0, 2-2): AER = 1 - 3/6; the diagonal links i-i: 1 - (3 + 4) / (4 + 3) = 0
  hand = result['hand']['rows']
  assert hand['mine']['aer'] == pytest.approx(0.5) and hand['diagonal']['aer'] == 0.0
  assert 'minus_baseline' not in hand['mine']  # no eflomal row to compare with
  (tmp_path / 'short.pharaoh').write_text('0-0\n', encoding='utf-8')
  with pytest.raises(SystemExit, match='1 lines'):
    word_alignment.main(['--cache', str(corpus), '--pharaoh', f'{tmp_path}/short.pharaoh'])
