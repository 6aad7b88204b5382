"""benchmarks.gpu_check in its tiny CPU mode: the table and the mirrored check."""

import os
import pytest

from tests import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_check_tiny_mode_on_cpu():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
  proc = conftest.run_python(
      ['-m', 'benchmarks.gpu_check', '--tiny', '--repeats=1'], env=env,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert 'gpu_check on CPU' in out
  rows = [l for l in out.splitlines() if l.startswith('| MLP') or
          l.startswith('| 3 x Dense') or l.startswith('| CNN')]
  assert len(rows) == 3
  for row in rows:   # three tftrain throughputs, fit at its best, the ratio
    cells = [c.strip() for c in row.strip('|').split('|')]
    speeds = [float(c.replace(',', '')) for c in cells[2:6]]
    assert all(v > 0 for v in speeds), row
    assert float(cells[6]) == pytest.approx(max(speeds[:3]) / speeds[3],
                                            rel=0.02), row
  assert 'MirroredStrategy over 2 CPUs' in out
  assert 'mirrored over 2 logical CPUs vs one device' in out
  assert out.rstrip().endswith('SAME')
