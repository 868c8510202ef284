"""Debian packages without root: `apt-get download` the .deb files, `dpkg-deb -x` them.

Used by the man-page corpus (`amber_jax.corpora.manpages`) to get the `manpages-<lang>`
packages into a cache folder outside git.
"""

from __future__ import annotations

from collections.abc import Sequence
import pathlib
import shutil
import subprocess

DOWNLOAD_TIMEOUT_S = 900
EXTRACT_TIMEOUT_S = 300


class FetchError(RuntimeError):
  """`apt-get download` or `dpkg-deb -x` is missing or failed."""


def fetch_packages(cache_dir: str | pathlib.Path, packages: Sequence[str]) -> pathlib.Path:
  """Downloads and unpacks Debian packages without root; returns the unpacked tree's root.

  `apt-get download` puts the `.deb` files into `cache_dir/debs` (packages already there are not
  downloaded again) and `dpkg-deb -x` unpacks each into `cache_dir/root` (once: a marker file
  `cache_dir/root/.unpacked-<deb name>` records it). The man pages are then under
  `<root>/usr/share/man`.

  Raises:
    FetchError: apt-get or dpkg-deb is missing, or a download or unpacking failed (its stderr is
      in the message).
  """
  cache_dir = pathlib.Path(cache_dir)
  debs_dir, root = cache_dir / 'debs', cache_dir / 'root'
  debs_dir.mkdir(parents=True, exist_ok=True)
  root.mkdir(parents=True, exist_ok=True)

  def deb_of(package: str) -> pathlib.Path | None:
    found = sorted(debs_dir.glob(f'{package}_*.deb'))
    return found[-1] if found else None

  missing = [p for p in packages if deb_of(p) is None]
  if missing:
    apt_get = shutil.which('apt-get')
    if apt_get is None:
      raise FetchError(
          f'apt-get not found, needed to download {missing}: run on Debian/Ubuntu, or put the '
          f'.deb files (e.g. from packages.debian.org) into {debs_dir} yourself')
    try:
      result = subprocess.run([apt_get, 'download', *missing], cwd=debs_dir, capture_output=True,
                              text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as error:
      raise FetchError(f'`apt-get download {" ".join(missing)}` took over {DOWNLOAD_TIMEOUT_S} '
                       's; check the network and retry') from error
    still_missing = [p for p in missing if deb_of(p) is None]
    if result.returncode != 0 or still_missing:
      raise FetchError(
          f'`apt-get download {" ".join(missing)}` (in {debs_dir}) failed with exit status '
          f'{result.returncode}; missing: {still_missing}. If it says "Unable to locate package", '
          f'run `sudo apt-get update` first. stderr:\n{result.stderr.strip()}')
  dpkg_deb = None
  for package in packages:
    deb = deb_of(package)
    marker = root / f'.unpacked-{deb.name}'
    if marker.exists():
      continue
    dpkg_deb = dpkg_deb or shutil.which('dpkg-deb')
    if dpkg_deb is None:
      raise FetchError(f'dpkg-deb not found, needed to unpack {deb}: install the `dpkg` package '
                       '(or unpack the .deb with `ar x` and tar yourself)')
    try:
      result = subprocess.run([dpkg_deb, '-x', str(deb), str(root)], capture_output=True,
                              text=True, timeout=EXTRACT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as error:
      raise FetchError(f'`dpkg-deb -x {deb} {root}` took over {EXTRACT_TIMEOUT_S} s') from error
    if result.returncode != 0:
      raise FetchError(f'`dpkg-deb -x {deb} {root}` failed with exit status {result.returncode} '
                       f'(delete {deb} to download it again). stderr:\n{result.stderr.strip()}')
    marker.touch()
  return root

