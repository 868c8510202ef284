"""benchmarks/gpu_check.sh, the prepared GPU check, as a dry run on the CPU (`--tiny`), with
TensorFlow, seqio, Grain, Beam and ArrayRecord made unimportable as on the lent GPU machine."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCKED = ('tensorflow', 'seqio', 'grain', 'apache_beam', 'array_record')
# A row of gpu_mfu.py's table: seq, step, packing, attention, remat, rows, pairs, ms/step,
# useful tok/s, fill, model TF/step, XLA TF/step, MFU.
ROW = re.compile(r'^\s*(\d+) (mlm|amber)\s+(packed|unpacked)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+'
                 r'([\d.]+)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)$')
RATIO = re.compile(r'^ratio \(packed / unpacked useful tokens/s\) at seq (\d+): ([\d.]+)x$')


def test_gpu_check_dry_run_on_cpu_without_tensorflow(tmp_path):
  # Every later `import tensorflow` (or seqio, ...) in the check's processes raises ImportError.
  (tmp_path / 'sitecustomize.py').write_text(
      'import sys\n' + ''.join(f'sys.modules[{m!r}] = None\n' for m in BLOCKED))
  path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get('PYTHONPATH')]))
  env = dict(os.environ, AMBER_GPU_CHECK_NO_INSTALL='1', JAX_PLATFORMS='cpu',
             PYTHON=sys.executable, PYTHONPATH=path)
  probe = subprocess.run(
      [sys.executable, '-c', 'import tensorflow'], env=env,
      capture_output=True, text=True, check=False)
  assert probe.returncode != 0 and 'import of tensorflow halted' in probe.stderr  # the block works
  out = subprocess.run(
      ['bash', str(ROOT / 'benchmarks/gpu_check.sh'), '--tiny', '--steps', '1', '--warmup', '0',
       '--tokens', '256'],
      env=env, capture_output=True, text=True, timeout=400, check=False)
  assert out.returncode == 0, out.stdout + out.stderr
  lines = out.stdout.splitlines()
  assert 'CpuDevice' in lines[0], lines[0]  # the script printed jax.devices()
  rows = [m.groups() for m in map(ROW.match, lines) if m]
  assert not [l for l in lines if ' failed: ' in l], out.stdout
  seen = {(int(seq), step, packing) for seq, step, packing, *_ in rows}
  assert seen == {(seq, step, packing) for seq in (32, 64) for step in ('mlm', 'amber')
                  for packing in ('packed', 'unpacked')}, out.stdout
  pairs_of = {(int(r[0]), r[1], r[2]): int(r[6]) for r in rows}
  for seq in (32, 64):  # the same rows hold at least as many pairs packed
    assert pairs_of[seq, 'amber', 'packed'] >= pairs_of[seq, 'amber', 'unpacked'], out.stdout
  for seq, step, packing, attention, remat, n_rows, pairs, ms, tok_s, fill, *_ in rows:
    assert (attention, remat) == ('cudnn', 'dots'), out.stdout
    assert float(ms) > 0 and float(tok_s.replace(',', '')) > 0, out.stdout
    assert 0 < float(fill) <= 1, out.stdout
    assert (int(pairs) > 0) == (step == 'amber'), out.stdout
    if step == 'amber' and packing == 'unpacked':
      assert int(pairs) == int(n_rows) // 2, out.stdout  # one pair per pair row
  ratios = {int(m.group(1)): float(m.group(2)) for m in map(RATIO.match, lines) if m}
  assert set(ratios) == {32, 64} and all(r > 0 for r in ratios.values()), out.stdout
  assert any(l.startswith('MFU goal (H100/H200), MLM/TLM step: >= 55%') for l in lines)
  assert any(l.startswith('MFU goal (H100/H200), full AMBER step: >= 45%') for l in lines)
