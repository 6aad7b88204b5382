"""Shared test fixtures: tiny real MNIST data prepared once per session, launchers.

`tfds.testing.mock_data` only patches the current process and ignores split
slicing, so launcher tests (subprocesses) and split-size tests need a real
prepared TFDS data dir. `tiny_mnist_data_dir` writes tiny raw files in the
original IDX .gz format (`tests/tiny_data.py`) and runs TFDS's own mnist
builder on them through `tftrain.data.prepare`, the offline path users take.
TFDS's mnist builder hard-codes 60000/10000 examples, so its two module
constants are patched for that one preparation; afterwards
`tfds.load('mnist', data_dir=D, download=False)` reads the tiny dataset in any
process, e.g. `python -m launch.mnist --data_dir=D`.
"""

import atexit
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Any, Dict

import pytest

from tests import tiny_data

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_MNIST_TRAIN = 600
TINY_MNIST_TEST = 100


def shared_dir(tmp_path_factory, name, make):
  """A folder `make(path)` fills once per test run; returns its path.

  Under pytest-xdist every worker process has its own session, so a session
  fixture would prepare its data once per worker. Here the first worker to
  ask makes the folder (beside the workers' own temp folders) under a file
  lock, and the others wait for it and reuse it. Tests only read these
  folders (a test that damages data copies it first).
  """
  if not os.environ.get('PYTEST_XDIST_WORKER'):
    path = str(tmp_path_factory.mktemp(name))
    make(path)
    return path
  root = tmp_path_factory.getbasetemp().parent
  path, done = root / name, root / f'{name}.done'
  with open(root / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(path, ignore_errors=True)   # a worker that failed midway
      path.mkdir()
      make(str(path))
      done.touch()
  return str(path)


@pytest.fixture(scope='session')
def tiny_mnist_raw_dir(tmp_path_factory):
  """A raw-data folder holding tiny MNIST download files (`<dir>/mnist/*.gz`)."""
  return shared_dir(tmp_path_factory, 'raw_mnist', lambda raw: (
      tiny_data.write_tiny_mnist(raw, num_train=TINY_MNIST_TRAIN,
                                 num_test=TINY_MNIST_TEST)))


def _prepare_tiny_mnist_format(name, raw_dir, data_dir, num_train, num_test):
  """Runs TFDS's mnist/fashion_mnist builder on tiny raw files."""
  from tensorflow_datasets.image_classification import mnist as tfds_mnist  # pylint: disable=g-import-not-at-top
  from tftrain import data  # pylint: disable=g-import-not-at-top
  saved = tfds_mnist._TRAIN_EXAMPLES, tfds_mnist._TEST_EXAMPLES  # pylint: disable=protected-access
  tfds_mnist._TRAIN_EXAMPLES = num_train  # pylint: disable=protected-access
  tfds_mnist._TEST_EXAMPLES = num_test  # pylint: disable=protected-access
  try:
    data.prepare(name, data_dir, raw_dir)
  finally:
    tfds_mnist._TRAIN_EXAMPLES, tfds_mnist._TEST_EXAMPLES = saved  # pylint: disable=protected-access
  return data_dir


@pytest.fixture(scope='session')
def tiny_mnist_data_dir(tmp_path_factory, tiny_mnist_raw_dir):
  """A TFDS data dir with mnist prepared from tiny raw files (600 train, 100 test)."""
  return shared_dir(tmp_path_factory, 'tfds_mnist', lambda d: (
      _prepare_tiny_mnist_format('mnist', tiny_mnist_raw_dir, d,
                                 TINY_MNIST_TRAIN, TINY_MNIST_TEST)))


TINY_FASHION_TRAIN = 2000
TINY_FASHION_TEST = 200


@pytest.fixture(scope='session')
def tiny_fashion_mnist_data_dir(tmp_path_factory):
  """A TFDS data dir with fashion_mnist prepared from tiny raw files (2000
  train, 200 test) whose label is a texture: learnable by a ConvNet with
  global pooling (the tiny mnist's band position is not)."""
  def make(data_dir):
    raw = os.path.join(data_dir, 'raw')
    tiny_data.write_tiny_mnist(raw, TINY_FASHION_TRAIN, TINY_FASHION_TEST,
                               name='fashion_mnist',
                               images_fn=tiny_data.texture_images)
    _prepare_tiny_mnist_format('fashion_mnist', raw, data_dir,
                               TINY_FASHION_TRAIN, TINY_FASHION_TEST)
  return shared_dir(tmp_path_factory, 'tfds_fashion', make)


def launcher_env() -> dict:
  """Environment for launcher subprocesses: quiet, offline, CPU only."""
  env = dict(os.environ)
  env.update(TF_CPP_MIN_LOG_LEVEL='3', CUDA_VISIBLE_DEVICES='',
             PYTHONPATH=REPO_ROOT + os.pathsep + env.get('PYTHONPATH', ''))
  env.pop('TFTRAIN_RAW_DATA_DIR', None)   # tests say where data comes from
  env.pop('TFDS_DATA_DIR', None)
  return env


def launcher_command(module: str, *args: str):
  return [sys.executable, '-m', module, *args]


class ForkedProcess:
  """What the tests use of a text-mode `subprocess.Popen` with piped stdout
  and stderr, for a process the fork server forked."""

  def __init__(self, server, rid: int, pid: int, args, stdout, stderr):
    self._server, self._rid = server, rid
    self.pid, self.args = pid, args
    self.stdout, self.stderr = stdout, stderr
    self.returncode = None

  def poll(self):
    if self.returncode is None:
      self.returncode = self._server.returncode(self._rid, 0)
    return self.returncode

  def wait(self, timeout=None):
    if self.returncode is None:
      self.returncode = self._server.returncode(self._rid, timeout)
      if self.returncode is None:
        raise subprocess.TimeoutExpired(self.args, timeout)
    return self.returncode

  def send_signal(self, sig):
    if self.poll() is None:
      os.kill(self.pid, sig)

  def kill(self):
    self.send_signal(signal.SIGKILL)

  def communicate(self, timeout=None):
    """The rest of stdout and stderr, once the process ended."""
    texts = {}
    def read(name, stream):
      texts[name] = stream.read()
      stream.close()
    readers = [threading.Thread(target=read, args=(n, s), daemon=True)
               for n, s in (('out', self.stdout), ('err', self.stderr))]
    for r in readers:
      r.start()
    self.wait(timeout)
    for r in readers:
      r.join(timeout)
    return texts.get('out', ''), texts.get('err', '')


class ForkServer:
  """The client of `tests/forkserver.py` (one server per test process,
  started on first use): `popen(argv)` is `subprocess.Popen([python, *argv],
  stdout=PIPE, stderr=PIPE, text=True)` for a process forked from a server
  that has TensorFlow imported already; `run(argv)` is `subprocess.run`."""

  def __init__(self):
    self._lock = threading.Lock()
    self._proc = None
    self._sock = None
    self._replies: Dict[int, Dict[str, Any]] = {}
    self._changed = threading.Condition(self._lock)
    self._next = 0
    self._gone = False
    self._log = None
    self._log_name = None

  def _start(self):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    self._log = tempfile.NamedTemporaryFile(  # pylint: disable=consider-using-with
        'w', prefix='forkserver-', suffix='.log', delete=False)
    self._log_name = self._log.name
    self._proc = subprocess.Popen(
        [sys.executable, '-m', 'tests.forkserver', str(theirs.fileno())],
        cwd=REPO_ROOT, env=launcher_env(), stdin=subprocess.DEVNULL,
        stdout=self._log, stderr=self._log, pass_fds=(theirs.fileno(),))
    theirs.close()
    self._sock = ours
    threading.Thread(target=self._read, daemon=True).start()
    atexit.register(self.close)

  def _read(self):
    while True:
      try:
        message = self._sock.recv(1 << 16)
      except OSError:
        message = b''
      with self._lock:
        if not message:
          self._gone = True
          self._changed.notify_all()
          return
        reply = json.loads(message)
        self._replies.setdefault(reply['id'], {}).update(reply)
        self._changed.notify_all()

  def _wait(self, rid: int, key: str, timeout):
    """The reply's `key` once given (None after `timeout` seconds)."""
    with self._lock:
      self._changed.wait_for(
          lambda: key in self._replies.get(rid, {}) or self._gone, timeout)
      if key not in self._replies.get(rid, {}) and self._gone:
        raise RuntimeError(f'the fork server died; see {self._log_name}')
      return self._replies.get(rid, {}).get(key)

  def returncode(self, rid: int, timeout):
    return self._wait(rid, 'returncode', timeout)

  def popen(self, argv, env=None, cwd=REPO_ROOT, sigint_default=False
            ) -> ForkedProcess:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    with self._lock:
      if self._proc is None:
        self._start()
      self._next += 1
      rid = self._next
      request = {'id': rid, 'argv': list(argv), 'cwd': str(cwd),
                 'env': dict(launcher_env() if env is None else env),
                 'sigint_default': sigint_default}
      socket.send_fds(self._sock, [json.dumps(request).encode()],
                      [out_w, err_w])
    os.close(out_w)
    os.close(err_w)
    pid = self._wait(rid, 'pid', 60)
    return ForkedProcess(self, rid, pid, [sys.executable, *argv],
                         os.fdopen(out_r, errors='replace'),
                         os.fdopen(err_r, errors='replace'))

  def run(self, argv, env=None, cwd=REPO_ROOT, timeout: float = 180
          ) -> subprocess.CompletedProcess:
    proc = self.popen(argv, env=env, cwd=cwd)
    try:
      out, err = proc.communicate(timeout)
    except subprocess.TimeoutExpired:
      proc.kill()
      raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

  def close(self):
    if self._proc is not None and self._proc.poll() is None:
      # shutdown, not only close: it wakes the reader thread's recv and
      # gives the server its end of file.
      self._sock.shutdown(socket.SHUT_RDWR)
      self._sock.close()
      self._proc.wait(timeout=60)
    if self._log is not None:
      self._log.close()
      os.remove(self._log.name)
      self._log = None


FORK_SERVER = ForkServer()


def popen_python(argv, env=None, cwd=REPO_ROOT, sigint_default=False
                 ) -> ForkedProcess:
  """`subprocess.Popen([python, *argv], stdout=PIPE, stderr=PIPE,
  text=True)` through the fork server (`sigint_default`: the child takes
  SIGINT's default action, as a shell's background child would not)."""
  return FORK_SERVER.popen(argv, env=env, cwd=cwd,
                           sigint_default=sigint_default)


def run_python(argv, env=None, cwd=REPO_ROOT, timeout: float = 180
               ) -> subprocess.CompletedProcess:
  """`python *argv` with its output captured (text), through the fork
  server: what `subprocess.run` gives, without importing TensorFlow again."""
  return FORK_SERVER.run(argv, env=env, cwd=cwd, timeout=timeout)


def run_module(module: str, *args: str, timeout: float = 180
               ) -> subprocess.CompletedProcess:
  """`python -m module *args` from the repo root to its end (text output),
  in a process forked from the fork server (`run_python`)."""
  return run_python(['-m', module, *args], timeout=timeout)


@pytest.fixture(scope='session')
def run_launcher():
  """`run_launcher('launch.mnist', '--flag=v', ..., timeout=s)` -> CompletedProcess
  (`run_module`)."""
  return run_module


@pytest.fixture(scope='session')
def tiny_cifar_data_dir(tmp_path_factory):
  """A TFDS data dir with cifar10 prepared from a tiny raw archive (240 train, 60 test).

  TFDS's cifar10 builder reads records until the end of each file, so no
  patching is needed. Images carry a label-coded bright band: learnable.
  """
  def make(data_dir):
    from tftrain import data  # pylint: disable=g-import-not-at-top
    raw = os.path.join(data_dir, 'raw')
    tiny_data.write_tiny_cifar10(raw, per_batch=48, num_test=60)
    data.prepare('cifar10', data_dir, raw)
  return shared_dir(tmp_path_factory, 'tfds_cifar', make)


def free_ports(n):
  """n free TCP ports on 127.0.0.1 (for local multi-worker clusters)."""
  import socket  # pylint: disable=g-import-not-at-top
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


MODULE_SECONDS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              'module_seconds.json')


def pytest_addoption(parser):
  parser.addoption(
      '--write-module-seconds', action='store_true',
      help=f'write each test module\'s measured seconds to {MODULE_SECONDS} '
           '(the order the modules are handed to the xdist workers)')


def _module_seconds() -> Dict[str, float]:
  try:
    with open(MODULE_SECONDS) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def pytest_collection_modifyitems(items):
  """The longest modules first (xdist's loadscope hands whole modules out in
  this order, so neither worker ends alone on a long one: longest processing
  time first). A module's length is its seconds in `module_seconds.json`
  (measured with `--write-module-seconds`); a module not in it counts 5 s
  per `slow` test. The order inside a module is kept."""
  seconds = _module_seconds()
  cost = {}
  for item in items:
    name = item.nodeid.split('::')[0]
    if name in seconds:
      cost[name] = seconds[name]
    elif item.get_closest_marker('slow') is not None:
      cost[name] = cost.get(name, 0.0) + 5.0
    else:
      cost.setdefault(name, 0.0)
  order = {name: i for i, name in enumerate(cost)}
  items.sort(key=lambda item: (-cost[item.nodeid.split('::')[0]],
                               order[item.nodeid.split('::')[0]]))


_MEASURED: Dict[str, float] = {}


def pytest_runtest_logreport(report):
  # Setup + call + teardown of every test, by module (on the xdist controller
  # too: it receives every worker's reports).
  if os.environ.get('PYTEST_XDIST_WORKER') is None:
    name = report.nodeid.split('::')[0]
    _MEASURED[name] = _MEASURED.get(name, 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus):
  del exitstatus
  if (session.config.getoption('--write-module-seconds') and _MEASURED
      and os.environ.get('PYTEST_XDIST_WORKER') is None):
    seconds = _module_seconds()   # the modules not run keep their seconds
    seconds.update({k: round(v, 1) for k, v in _MEASURED.items()})
    with open(MODULE_SECONDS, 'w') as f:
      json.dump(dict(sorted(seconds.items())), f, indent=1)
      f.write('\n')
