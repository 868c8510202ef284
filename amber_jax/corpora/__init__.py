"""Corpus builders: installed data or a user's files -> the on-disk corpus layout.

Every builder (`django_po`, `manpages`, `files`) writes the layout documented in `layout`; read any
corpus in it with `layout.read_pairs`, `layout.read_mono` and `layout.load_manifest` (no
TensorFlow).
"""
