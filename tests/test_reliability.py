"""Reliability through the real launchers (subprocesses, tiny prepared MNIST).

Bad input: one line naming the flag, non-zero exit, no traceback, nothing
created or changed. Divergence: message naming the step, partial metrics, last
finite checkpoint kept. Interruption: SIGTERM checkpoints mid-epoch and exits
cleanly; SIGKILL mid-epoch; both resume to the same final metrics as an
uninterrupted run. Corrupt checkpoints and busy workdirs are refused, and a
failed start never changes an existing run's files.
"""

import concurrent.futures
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import conftest

EPOCHS = 3
STEPS_PER_EPOCH = 300     # 600 train - 300 validation, batch 1


def train_args(data_dir, workdir, *extra):
  """A tiny, deterministic run: 3 epochs x 300 single-step loops (~0.5 s each)."""
  return (f'--data_dir={data_dir}', f'--workdir={workdir}',
          '--validation_size=300', '--batch_size=1', '--steps_per_loop=1',
          '--hidden=32', '--learning_rate=0.05', f'--epochs={EPOCHS}',
          '--patience=0', '--seed=7', '--deterministic', '--progress=false',
          *extra)


def popen_launcher(module, *args):
  return subprocess.Popen(conftest.launcher_command(module, *args),
                          cwd=conftest.REPO_ROOT, env=conftest.launcher_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def read_json(path):
  with open(path) as f:
    return json.load(f)


def file_hashes(workdir):
  """md5 of every checkpoint, best-weights and log file of a run."""
  paths = [p for p in glob.glob(os.path.join(workdir, '**'), recursive=True)
           if os.path.isfile(p)]
  return {os.path.relpath(p, workdir): hashlib.md5(open(p, 'rb').read()).hexdigest()
          for p in paths}


def wait_for(path, proc, timeout=120.0):
  """Polls until `path` exists (while `proc` is alive)."""
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert proc.poll() is None, proc.communicate()
    assert time.time() < deadline, f'{path} did not appear'
    time.sleep(0.01)


def dead_pid():
  proc = subprocess.Popen(['true'])
  proc.wait()
  return proc.pid


def assert_one_line_error(proc_result, *needles):
  stderr = proc_result.stderr
  assert proc_result.returncode != 0, (proc_result.stdout, stderr)
  assert 'Traceback' not in stderr, stderr
  errors = [l for l in stderr.splitlines()
            if l.startswith('error: ') or 'Flags parsing error' in l]
  assert len(errors) == 1, stderr
  for needle in needles:
    assert needle in errors[0], (needle, errors[0])
  return errors[0]


def comparable(metrics):
  """Final metrics without wall times or resume bookkeeping."""
  history = [{k: v for k, v in r.items() if k != 'seconds'}
             for r in metrics['history']]
  keep = ('status', 'epochs_run', 'best_epoch', 'best_val_accuracy',
          'val_loss', 'val_accuracy', 'test_loss', 'test_accuracy')
  return dict({k: metrics[k] for k in keep}, history=history)


# ---------------------------------------------------------------- bad input --

# (launcher, flags, text the one error line must contain). Flags that fail in
# config_from_flags never import TensorFlow in launch.mnist.
BAD_FLAGS = [
    ('launch.mnist', ['--dataset=svhn'], '--dataset=svhn'),
    ('launch.mnist', ['--optimizer=adamax'], '--optimizer=adamax'),
    ('launch.mnist', ['--strategy=tpu'], '--strategy=tpu'),
    ('launch.mnist', ['--schedule=cosine'], '--schedule=cosine'),
    ('launch.mnist', ['--activation=relu6'], '--activation=relu6: choose one of'),
    ('launch.mnist', ['--learning_rate=-1'], '--learning_rate=-1.0'),
    ('launch.mnist', ['--learning_rate=nan'], '--learning_rate=nan'),
    ('launch.mnist', ['--learning_rate=fast'], '--learning_rate=fast'),
    ('launch.mnist', ['--batch_size=0'], '--batch_size=0'),
    ('launch.mnist', ['--epochs=-2'], '--epochs=-2'),
    ('launch.mnist', ['--model=deep_mlp', '--depth=0'], '--depth=0'),
    ('launch.mnist', ['--width=0'], '--width=0'),
    ('launch.mnist', ['--hidden=300,x'], '--hidden=300,x'),
    ('launch.mnist', ['--momentum=1.5'], '--momentum=1.5'),
    ('launch.mnist', ['--lr_find_start=1', '--lr_find_end=0.1'],
     '--lr_find_end=0.1: must be larger than --lr_find_start'),
    ('launch.mnist', ['--validation_size=-1'], '--validation_size=-1'),
    # These need the dataset's metadata (TensorFlow), still before the workdir.
    ('launch.mnist', ['--batch_size=1000'], '--batch_size=1000: must not exceed the 500'),
    ('launch.mnist', ['--validation_size=600'], '--validation_size=600: must be smaller than the 600'),
    ('launch.mnist', ['--raw_data_dir={raw_empty}', '--data_dir={empty}'],
     '--raw_data_dir='),
    ('launch.mnist', ['--workdir={a_file}/run'], '--workdir='),
    # The other launchers share the flags and the checks.
    ('launch.deep', ['--optimizer=adamax'], '--optimizer=adamax'),
    ('launch.deep', ['--activation=relu,relu6'], 'relu6'),
    ('launch.cifar10', ['--schedule=cosine'], '--schedule=cosine'),
    ('launch.cifar10', ['--learning_rate=0'], '--learning_rate=0'),
    ('launch.lr_find', ['--strategy=tpu'], '--strategy=tpu'),
    ('launch.lr_find', ['--lr_find_factor=0.5'], '--lr_find_factor=0.5'),
]


def _case_id(case):
  return f'{case[0].split(".")[1]}:{" ".join(case[1])}'


@pytest.fixture(scope='module')
def bad_flag_results(tiny_mnist_data_dir, tmp_path_factory):
  """Runs every BAD_FLAGS case (3 at a time); maps case id -> (result, workdir)."""
  root = tmp_path_factory.mktemp('bad_flags')
  a_file = root / 'a_file'
  a_file.write_text('not a folder')
  (root / 'raw_empty').mkdir()
  (root / 'empty').mkdir()
  subs = {'raw_empty': str(root / 'raw_empty'), 'empty': str(root / 'empty'),
          'a_file': str(a_file)}

  def run(index_case):
    index, (module, flags, _) = index_case
    workdir = str(root / f'run{index}')
    args = [f.format(**subs) for f in flags]
    defaults = [f'--data_dir={tiny_mnist_data_dir}', f'--workdir={workdir}',
                '--validation_size=100', '--progress=false']
    given = {a.split('=')[0] for a in args}
    args = [d for d in defaults if d.split('=')[0] not in given] + args
    if not os.path.exists(os.path.join(conftest.REPO_ROOT,
                                       *module.split('.')) + '.py'):
      return None, workdir
    return subprocess.run(conftest.launcher_command(module, *args),
                          cwd=conftest.REPO_ROOT, env=conftest.launcher_env(),
                          capture_output=True, text=True, timeout=180), workdir

  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    results = list(pool.map(run, enumerate(BAD_FLAGS)))
  return {_case_id(c): r for c, r in zip(BAD_FLAGS, results)}


@pytest.mark.parametrize('case', BAD_FLAGS, ids=[_case_id(c) for c in BAD_FLAGS])
def test_bad_flag_is_one_line_error_and_creates_nothing(case, bad_flag_results):
  result, workdir = bad_flag_results[_case_id(case)]
  if result is None:
    pytest.skip(f'{case[0]} does not exist')
  line = assert_one_line_error(result, case[2])
  assert result.returncode in (1, 2), line
  assert not os.path.exists(workdir), line


def test_verbose_shows_the_traceback(run_launcher):
  result = run_launcher('launch.mnist', '--learning_rate=0', '--verbose')
  assert result.returncode == 2
  assert 'Traceback' in result.stderr
  assert result.stderr.rstrip().splitlines()[-1] == (
      'error: --learning_rate=0.0: must be a positive finite number.')


# ------------------------------------------------------ an uninterrupted run --

@pytest.fixture(scope='module')
def reference(tiny_mnist_data_dir, tmp_path_factory):
  """An uninterrupted run, started over a stale lock left by a dead process."""
  workdir = str(tmp_path_factory.mktemp('reference') / 'run')
  os.makedirs(workdir)
  stale = dead_pid()
  with open(os.path.join(workdir, '.lock'), 'w') as f:
    json.dump({'pid': stale, 'host': os.uname().nodename}, f)
  proc = popen_launcher('launch.mnist', *train_args(tiny_mnist_data_dir, workdir))
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, (stdout, stderr)
  return workdir, read_json(os.path.join(workdir, 'metrics.json'))


@pytest.mark.slow
def test_stale_lock_is_taken_over_and_released(reference):
  workdir, metrics = reference
  assert metrics['status'] == 'completed' and metrics['epochs_run'] == EPOCHS
  assert not metrics['resumed']
  assert not os.path.exists(os.path.join(workdir, '.lock'))
  assert os.path.exists(os.path.join(workdir, 'checkpoints',
                                     f'ckpt-{EPOCHS * STEPS_PER_EPOCH}.index'))
  losses = [r['loss'] for r in metrics['history']]
  assert losses[-1] < losses[0]


# ------------------------------------------------------------- interruption --

@pytest.mark.slow
def test_sigterm_checkpoints_mid_epoch_and_resume_matches(
    reference, tiny_mnist_data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  args = train_args(tiny_mnist_data_dir, workdir)
  proc = popen_launcher('launch.mnist', *args)
  # End of epoch 1 is checkpointed; the signal then lands in epoch 2 (the
  # loop checks it after each in-graph loop, so at least one step runs).
  wait_for(os.path.join(workdir, 'checkpoints', 'checkpoint'), proc)
  proc.send_signal(signal.SIGTERM)
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 130, (stdout, stderr)
  assert 'Traceback' not in stderr
  metrics = read_json(os.path.join(workdir, 'metrics.json'))
  assert metrics['status'] == 'interrupted'
  step = metrics['interrupted_step']
  assert STEPS_PER_EPOCH < step < EPOCHS * STEPS_PER_EPOCH
  assert f'interrupted at step {step}' in stdout
  assert os.path.exists(os.path.join(workdir, 'checkpoints', f'ckpt-{step}.index'))
  assert not os.path.exists(os.path.join(workdir, '.lock'))

  # The same command resumes from that step and ends where the reference did.
  proc = popen_launcher('launch.mnist', *args)
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, (stdout, stderr)
  resumed = read_json(os.path.join(workdir, 'metrics.json'))
  assert resumed['resumed'] and resumed['status'] == 'completed'
  assert comparable(resumed) == comparable(reference[1])


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches(reference, tiny_mnist_data_dir,
                                               tmp_path):
  workdir = str(tmp_path / 'run')
  args = train_args(tiny_mnist_data_dir, workdir)
  proc = popen_launcher('launch.mnist', *args)
  wait_for(os.path.join(workdir, 'checkpoints', 'checkpoint'), proc)
  time.sleep(0.1)
  proc.kill()
  _, stderr = proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  # Killed mid-epoch 2: epoch 1 was logged, epoch 2 never finished.
  assert f'epoch 1/{EPOCHS}' in stderr and f'epoch 2/{EPOCHS}' not in stderr
  assert not os.path.exists(os.path.join(workdir, 'metrics.json'))
  # The dead process's lock stays behind; the rerun takes it over.
  assert read_json(os.path.join(workdir, '.lock'))['pid'] == proc.pid

  proc = popen_launcher('launch.mnist', *args)
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, (stdout, stderr)
  resumed = read_json(os.path.join(workdir, 'metrics.json'))
  assert resumed['resumed'] and resumed['status'] == 'completed'
  assert comparable(resumed) == comparable(reference[1])



def test_second_signal_exits_at_once():
  code = (
      'import os, signal, time\n'
      'from tftrain import loop\n'
      'with loop._SignalGuard() as guard:\n'
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

# --------------------------------------------- divergence and failed starts --

@pytest.mark.slow
def test_divergence_names_the_step_and_keeps_the_last_finite_checkpoint(
    reference, tiny_mnist_data_dir, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference[0], workdir)
  before = file_hashes(os.path.join(workdir, 'checkpoints'))
  # Resume for one more epoch with an absurd learning rate: the weights
  # overflow float32 within two steps (1e6 only gives a huge finite loss).
  args = train_args(tiny_mnist_data_dir, workdir, f'--epochs={EPOCHS + 1}',
                    '--learning_rate=1e30')
  proc = popen_launcher('launch.mnist', *args)
  stdout, stderr = proc.communicate(timeout=300)
  result = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
  line = assert_one_line_error(result, 'non-finite loss or gradient at step',
                               '--learning_rate')
  assert proc.returncode == 1
  metrics = read_json(os.path.join(workdir, 'metrics.json'))
  assert metrics['status'] == 'diverged'
  step = metrics['diverged_step']
  assert f'at step {step} ' in line
  assert EPOCHS * STEPS_PER_EPOCH < step <= (EPOCHS + 1) * STEPS_PER_EPOCH
  assert not np.isfinite(metrics['diverged_loss'])
  assert len(metrics['history']) == EPOCHS    # the finished epochs are kept
  # The last finite checkpoint is still the latest, untouched and finite.
  assert file_hashes(os.path.join(workdir, 'checkpoints')) == before
  latest = tf.train.latest_checkpoint(os.path.join(workdir, 'checkpoints'))
  assert latest.endswith(f'ckpt-{EPOCHS * STEPS_PER_EPOCH}')
  reader = tf.train.load_checkpoint(latest)
  for name, dtype in reader.get_variable_to_dtype_map().items():
    if dtype.is_floating:
      assert np.all(np.isfinite(reader.get_tensor(name))), name
  assert not os.path.exists(os.path.join(workdir, '.lock'))


@pytest.mark.slow
def test_failed_starts_leave_an_existing_run_untouched(
    reference, tiny_mnist_data_dir, tmp_path):
  """Corrupt checkpoint, busy workdir, bad batch size: refused, nothing changed."""
  workdirs = {}
  for name in ('corrupt', 'locked', 'batch'):
    workdirs[name] = str(tmp_path / name)
    shutil.copytree(reference[0], workdirs[name])
  data_file = os.path.join(workdirs['corrupt'], 'checkpoints',
                           f'ckpt-{EPOCHS * STEPS_PER_EPOCH}.data-00000-of-00001')
  with open(data_file, 'r+b') as f:
    f.truncate(os.path.getsize(data_file) // 2)
  holder = subprocess.Popen(['sleep', '120'])     # a live process holds the lock
  try:
    with open(os.path.join(workdirs['locked'], '.lock'), 'w') as f:
      json.dump({'pid': holder.pid, 'host': os.uname().nodename}, f)
    before = {k: file_hashes(w) for k, w in workdirs.items()}
    procs = {
        'corrupt': popen_launcher('launch.mnist', *train_args(
            tiny_mnist_data_dir, workdirs['corrupt'], f'--epochs={EPOCHS + 1}')),
        'locked': popen_launcher('launch.mnist', *train_args(
            tiny_mnist_data_dir, workdirs['locked'], f'--epochs={EPOCHS + 1}')),
        'batch': popen_launcher('launch.mnist', *train_args(
            tiny_mnist_data_dir, workdirs['batch'], '--batch_size=301')),
    }
    results = {}
    for name, proc in procs.items():
      stdout, stderr = proc.communicate(timeout=300)
      results[name] = subprocess.CompletedProcess(proc.args, proc.returncode,
                                                  stdout, stderr)
  finally:
    holder.kill()
    holder.wait()
  assert_one_line_error(results['corrupt'], 'corrupt', 'start fresh',
                        f'ckpt-{EPOCHS * STEPS_PER_EPOCH}')
  assert_one_line_error(results['locked'], '--workdir=', 'in use by another run',
                        f'pid {holder.pid}')
  assert_one_line_error(results['batch'], '--batch_size=301')
  assert results['batch'].returncode == 2
  for name, workdir in workdirs.items():
    after = file_hashes(workdir)
    # A failed start may add an empty event file, nothing else; it changes
    # and deletes nothing.
    added = set(after) - set(before[name])
    assert all('events.out.tfevents' in p for p in added), (name, added)
    assert {k: after[k] for k in before[name]} == before[name], name


# ------------------------------------------------- checks before the workdir --

def test_unprepared_data_without_raw_dir_or_network_fails_before_the_workdir(
    tmp_path, monkeypatch):
  from tftrain import config as config_lib  # pylint: disable=g-import-not-at-top
  from tftrain import data  # pylint: disable=g-import-not-at-top
  from tftrain import loop  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv(data.RAW_DATA_ENV, raising=False)
  monkeypatch.setattr(data, '_network_reachable', lambda urls: False)
  workdir = tmp_path / 'run'
  config = config_lib.Config(data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(data.DataError) as e:
    loop.train_and_evaluate(config, str(workdir))
  message = str(e.value)
  assert 'download host is unreachable' in message and '--raw_data_dir' in message
  assert 'train-images-idx3-ubyte.gz' in message and '\n' not in message
  assert not workdir.exists()


def test_split_size_checks_use_the_prepared_metadata(tiny_mnist_data_dir):
  from tftrain import config as config_lib  # pylint: disable=g-import-not-at-top
  from tftrain import loop  # pylint: disable=g-import-not-at-top
  config = config_lib.Config(data_dir=tiny_mnist_data_dir, validation_size=100)
  loop.check_config(config.replace(batch_size=500))   # exactly the split: fine
  with pytest.raises(config_lib.ConfigError, match=r'--batch_size=501: .* 500'):
    loop.check_config(config.replace(batch_size=501))
  with pytest.raises(config_lib.ConfigError, match=r'--validation_size=600: .* 600'):
    loop.check_config(config.replace(validation_size=600))
