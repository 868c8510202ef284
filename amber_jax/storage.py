"""Local paths and bucket URLs (`gs://bucket/...`) behind one pathlib-like type.

A TPU pod has no shared disk: a run's workdir must be a bucket that every host sees. `path(p)`
gives a `pathlib.Path` for a local path and an `etils.epath.Path` (fsspec; gcsfs for gs://) for a
URL; both read, write, list and rename alike, so the code that writes a run's files does not care
which it got. What object stores lack is covered here:
- no appends and no atomic rename of a file: `write_text` replaces an object whole (a GCS object
  write is atomic) and a local file through a temporary and a rename;
- no folders: `makedirs` creates nothing in a bucket but checks that the bucket exists (gcsfs
  would otherwise create a bucket for a mistyped name);
- no memory maps or SentencePiece/TensorFlow readers of URLs: `local` mirrors a remote file or
  folder into this host's cache once (`<cache>/mirror/gs/<bucket>/...`; a file is fetched again
  when its size or modification time changes), and `upload` copies a local folder to a bucket.

Only the storage libraries' own settings are read: credentials on GCP, and for a local emulator
`STORAGE_EMULATOR_HOST` (gcsfs), `TENSORSTORE_GCS_HTTP_URL` and `GOOGLE_AUTH_TOKEN_FOR_TESTING`
(tensorstore, which writes orbax's arrays). epath is kept off its TensorFlow backend (the GPU
machines have no TensorFlow; `EPATH_USE_TF=true` brings it back).
"""

from __future__ import annotations

import json
import os
import pathlib
import posixpath
import shutil
import tempfile
from typing import Union

from etils import epath
import fsspec

from amber_jax import errors, paths

# epath picks tf.io.gfile for gs:// whenever TensorFlow is installed; fsspec works everywhere.
os.environ.setdefault('EPATH_USE_TF', 'false')

Path = Union[pathlib.Path, epath.Path]  # what `path` returns
_CHUNK = 16 << 20


def is_url(p) -> bool:
  """Whether `p` names an object store (`gs://...`, `s3://...`) rather than a local path."""
  return '://' in str(p)


def path(p) -> Path:
  """A pathlib-like path: `pathlib.Path` (user-expanded) for a local path, `epath.Path` for a URL."""
  if is_url(p):
    if os.environ.get('STORAGE_EMULATOR_HOST'):
      # gcsfs (imported at the first URL) probes a bucket's type over gRPC, which an emulator does
      # not serve: a 60 s stall per bucket.
      os.environ.setdefault('GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT', 'false')
    return epath.Path(str(p))
  return pathlib.Path(p).expanduser()


def makedirs(p) -> Path:
  """Creates the local folder `p` (and its parents); for a URL, checks that its bucket exists.

  Raises:
    FileNotFoundError: the bucket of a URL does not exist.
  """
  target = path(p)
  if not is_url(p):
    target.mkdir(parents=True, exist_ok=True)
    return target
  scheme, rest = str(p).split('://', 1)
  bucket = path(f'{scheme}://{rest.split("/", 1)[0]}')
  if not bucket.exists():
    raise FileNotFoundError(f'the bucket {bucket} does not exist (create it first, e.g. '
                            f'`gcloud storage buckets create {bucket}`)')
  return target


def read_text(p, what: str = 'file') -> str:
  """The UTF-8 text of the file `p` (local or a URL).

  Raises:
    errors.UserError: `p` is not a file, or not UTF-8 (naming `p` and the line), `what` saying
      which file it is in the first message.
  """
  file = path(p)
  if not file.is_file():
    raise errors.UserError(f'the {what} {p} does not exist (or is not a file).')
  data = file.read_bytes()
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b'\n') + 1
    raise errors.UserError(f'{p}:{line}: not UTF-8 text ({e.reason}); save the file as '
                           'UTF-8.') from None


def write_text(p, text: str) -> None:
  """Replaces the file `p` by `text` whole: readers see the old or the new text, never a part."""
  target = path(p)
  if is_url(p):
    target.write_text(text, encoding='utf-8')
    return
  tmp = target.with_name(f'.{target.name}.tmp-{os.getpid()}')
  tmp.write_text(text, encoding='utf-8')
  os.replace(tmp, target)


def _listing(url: str) -> tuple[dict[str, list], bool]:
  """({relative path ('.' for a file): [size, modification stamp]}, is a folder) of a URL, from
  one listing of the store (a folder's every file)."""
  fs, root = fsspec.core.url_to_fs(url)
  info = fs.info(root)
  stamp = lambda i: [int(i.get('size') or 0), str(i.get('updated') or i.get('mtime') or '')]
  if info['type'] != 'directory':
    return {'.': stamp(info)}, False
  found = fs.find(root, detail=True)
  return {posixpath.relpath(name, root): stamp(i) for name, i in found.items()
          if i['type'] != 'directory'}, True


def local(p) -> pathlib.Path:
  """`p` itself when local; else this host's mirror of the remote file or folder `p`.

  The mirror lives in `<cache>/mirror/<scheme>/<bucket>/<path>` and records each file's size and
  modification time (`<mirror>.mirrored.json`): a file that did not change is not fetched again.

  Raises:
    FileNotFoundError: nothing is at the URL.
  """
  if not is_url(p):
    return pathlib.Path(p).expanduser()
  url = str(p).rstrip('/')
  path(url)  # the emulator's settings, before gcsfs is imported
  scheme, rest = url.split('://', 1)
  dst = paths.cache_dir() / 'mirror' / scheme / rest
  try:
    files, is_dir = _listing(url)
  except FileNotFoundError:
    raise FileNotFoundError(f'{url} does not exist') from None
  record_path = dst.with_name(dst.name + '.mirrored.json')
  try:
    record = json.loads(record_path.read_text())
  except (OSError, ValueError):
    record = {}
  for rel, stamp in sorted(files.items()):
    mirror = dst / rel if is_dir else dst
    if record.get(rel) == stamp and mirror.exists():
      continue
    mirror.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{mirror.name}.', dir=mirror.parent)
    with os.fdopen(fd, 'wb') as out, path(f'{url}/{rel}' if is_dir else url).open('rb') as inp:
      shutil.copyfileobj(inp, out, _CHUNK)
    os.replace(tmp, mirror)
    record[rel] = stamp
  dst.parent.mkdir(parents=True, exist_ok=True)
  tmp = record_path.with_name(f'{record_path.name}.{os.getpid()}')
  tmp.write_text(json.dumps(record))
  os.replace(tmp, record_path)
  return dst


def upload(local_dir, url, last: str | None = None) -> None:
  """Copies the files under the local folder `local_dir` to the folder `url` (overwriting).

  `last` names a file (relative to `local_dir`) that readers open first, such as a manifest: its
  old copy is removed before anything is copied and the new one is copied after everything else,
  so a reader never pairs it with half-copied files.
  """
  src, dst = pathlib.Path(local_dir), path(url)
  if last is not None and (dst / last).exists():
    (dst / last).unlink()
  files = sorted(str(f.relative_to(src)) for f in src.rglob('*') if f.is_file())
  for rel in sorted(files, key=lambda rel: rel == last):
    copy_file(src / rel, dst / rel)


def copy_file(src, dst) -> None:
  """Copies one file between any two of local paths and URLs."""
  dst = path(dst)
  if not is_url(dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
  with path(src).open('rb') as inp, dst.open('wb') as out:
    shutil.copyfileobj(inp, out, _CHUNK)
