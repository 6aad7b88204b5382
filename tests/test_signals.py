"""SignalGuard: the first signal is noted, a second one exits at once."""

import signal
import subprocess
import sys
import time

from tests import conftest


def test_second_signal_exits_at_once():
  code = (
      'import os, signal, time\n'
      'from tftrain import signals\n'
      'with signals.SignalGuard() as guard:\n'
      '  os.kill(os.getpid(), signal.SIGTERM)\n'
      '  print("first", guard.signum, flush=True)\n'
      '  os.kill(os.getpid(), signal.SIGINT)\n'
      '  time.sleep(30)\n'
      '  print("not reached", flush=True)\n')
  start = time.time()
  result = subprocess.run([sys.executable, '-c', code],
                          cwd=conftest.REPO_ROOT, env=conftest.launcher_env(),
                          capture_output=True, text=True, timeout=120)
  assert result.stdout.split() == ['first', str(int(signal.SIGTERM))]
  assert result.returncode == 128 + signal.SIGINT
  assert time.time() - start < 25
