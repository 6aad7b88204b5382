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

import fcntl
import os
import shutil
import subprocess
import sys

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


@pytest.fixture(scope='session')
def run_launcher():
  """`run_launcher('launch.mnist', '--flag=v', ..., timeout=s)` -> CompletedProcess.

  Runs the real launcher as `python -m` from the repo root (text output).
  """
  def run(module: str, *args: str, timeout: float = 180):
    return subprocess.run(launcher_command(module, *args), cwd=REPO_ROOT,
                          env=launcher_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
  return run


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
