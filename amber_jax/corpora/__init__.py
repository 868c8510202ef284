"""Corpus builders: installed data or a user's files -> the on-disk corpus layout (see `layout`).

Every builder writes the layout documented in `layout`; `read_pairs`, `read_mono` and
`load_manifest` read any corpus in that layout without TensorFlow.
"""

from amber_jax.corpora.django_po import build_django_corpus
from amber_jax.corpora.layout import load_manifest
from amber_jax.corpora.layout import read_mono
from amber_jax.corpora.layout import read_pairs

__all__ = ['build_django_corpus', 'load_manifest', 'read_mono', 'read_pairs']
