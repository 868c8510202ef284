"""Pictures are written, are PNGs of a sensible size, and say what is wrong with bad inputs."""

import json

import matplotlib.image
import numpy as np
import pytest

from amber_jax.eval import plots


def _image(path):
  assert path.exists() and path.stat().st_size > 5_000  # not a blank canvas
  img = matplotlib.image.imread(path)
  assert img.ndim == 3 and img.shape[0] > 150 and img.shape[1] > 200
  assert img[..., :3].std() > 0.05  # something is drawn
  return img


def test_alignment_heatmap(tmp_path):
  rng = np.random.default_rng(0)
  src, tgt = ['▁the', '▁cat', 's', '▁sat'], ['▁die', '▁Katze', 'n', '▁sa', 'ßen']
  mats = {'attention': rng.random((4, 5)), 'similarity': rng.random((4, 5))}
  out = plots.alignment_heatmap(mats, src, tgt, tmp_path / 'a.png',
                                links={'attention': [(0, 0), (1, 1)]}, title='en-de')
  one = plots.alignment_heatmap({'attention': mats['attention']}, src, tgt, tmp_path / 'b.png')
  assert _image(out).shape[1] > _image(one).shape[1]  # two panels are wider than one
  with pytest.raises(ValueError, match=r'expected \(4, 5\)'):
    plots.alignment_heatmap({'x': np.zeros((5, 4))}, src, tgt, tmp_path / 'c.png')


def test_retrieval_by_layer_accepts_a_table_or_per_language(tmp_path):
  acc = np.array([[0.1, 0.12], [0.3, 0.28], [0.6, 0.5], [0.55, 0.52]])
  _image(plots.retrieval_by_layer(acc, tmp_path / 'r.png'))
  _image(plots.retrieval_by_layer({'de': acc, 'fr': acc[:, ::-1]}, tmp_path / 'r2.png'))
  with pytest.raises(ValueError, match='expected'):
    plots.retrieval_by_layer(np.zeros(4), tmp_path / 'r3.png')


def test_training_curves_from_metrics_jsonl(tmp_path):
  path = tmp_path / 'run' / 'metrics.jsonl'
  path.parent.mkdir()
  with open(path, 'w') as f:
    for step in range(1, 101, 10):
      f.write(json.dumps({'step': step, 'loss': 20 / step ** 0.3, 'mlm_loss': 9 / step ** 0.2,
                          'tlm_loss': 8 / step ** 0.2, 'sa_loss': 3 / step ** 0.5,
                          'wa_loss': 0.9, 'tokens_per_s': 3000 + step}) + '\n')
  _image(plots.training_curves(path, tmp_path / 'curves.png'))
  path.write_text('{"step": 1, "loss": 1.0}\nnot json\n')
  with pytest.raises(ValueError, match='metrics.jsonl:2: not JSON'):
    plots.training_curves(path, tmp_path / 'bad.png')
