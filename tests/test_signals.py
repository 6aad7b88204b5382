"""SignalGuard: the first signal is noted; a second one raises
KeyboardInterrupt in library use (a notebook survives it) and exits at once
in a launcher."""

import signal
import subprocess
import sys
import time

import pytest

from tests import conftest

# The handler before the guard is compared, not default_int_handler: a
# process started from a background job inherits SIGINT ignored (SIG_IGN).
_CODE = (
    'import os, signal, time\n'
    'from tftrain import signals\n'
    'before = signal.getsignal(signal.SIGINT)\n'
    '{setup}'
    'try:\n'
    '  with signals.SignalGuard() as guard:\n'
    '    os.kill(os.getpid(), signal.SIGTERM)\n'
    '    print("first", guard.signum, flush=True)\n'
    '    os.kill(os.getpid(), signal.SIGINT)\n'
    '    time.sleep(30)\n'
    '    print("not reached", flush=True)\n'
    'except KeyboardInterrupt:\n'
    '  print("KeyboardInterrupt", flush=True)\n'
    'print("alive", signal.getsignal(signal.SIGINT) is before, flush=True)\n')


@pytest.mark.parametrize('launcher', [False, True])
def test_second_signal_stops_at_once(launcher):
  setup = ('signals.SignalGuard.on_second_signal = '
           'lambda signum: os._exit(128 + signum)\n' if launcher else '')
  start = time.time()
  result = subprocess.run([sys.executable, '-c', _CODE.format(setup=setup)],
                          cwd=conftest.REPO_ROOT, env=conftest.launcher_env(),
                          capture_output=True, text=True, timeout=120)
  assert time.time() - start < 25
  first = ['first', str(int(signal.SIGTERM))]
  if launcher:     # launch/flags.py's setting: the process ends at once
    assert result.stdout.split() == first
    assert result.returncode == 128 + signal.SIGINT
  else:            # the library: KeyboardInterrupt, handlers restored
    assert result.stdout.split() == first + ['KeyboardInterrupt', 'alive',
                                             'True']
    assert result.returncode == 0
