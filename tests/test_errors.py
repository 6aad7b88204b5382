"""User errors: one line, the exit status, and no TensorFlow to report them."""

import subprocess
import sys

from tests import conftest


def test_disk_full_is_one_line_through_the_launcher():
  """run_main prints a DiskFullError as one line with exit status 1."""
  code = (
      'import sys\n'
      'from absl import app\n'
      'from launch import flags as launch_flags\n'
      'launch_flags.define_flags()\n'
      'from tftrain import errors\n'
      'def body():\n'
      '  raise errors.DiskFullError("--workdir=w: no space left on the device '
      'while writing x; free space and rerun the same command to resume.")\n'
      'app.run(lambda argv: launch_flags.run_main(body), argv=[sys.argv[0]])\n')
  result = conftest.run_python(['-c', code], timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'error: --workdir=w: no space left on the device while writing x; free '
      'space and rerun the same command to resume.')
  assert 'Traceback' not in result.stderr


def test_errors_module_imports_neither_tftrain_nor_tensorflow():
  """A launcher reports a bad flag before TensorFlow loads (errors.py is
  imported by every layer, so it must not import any of them)."""
  code = ('import sys, tftrain.errors; '
          'print(sorted(m for m in sys.modules if m.startswith("tftrain.")), '
          '"tensorflow" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True, cwd=conftest.REPO_ROOT)
  assert out.stdout.split() == ["['tftrain.errors']", 'False']
