"""Reliability through the real launchers (subprocesses, tiny prepared MNIST).

Bad input: one line naming the flag, non-zero exit, no traceback, nothing
created or changed (also for the checks that need TensorFlow: batch size vs
replicas, a corrupt raw file to prepare, in every launcher), and no TFDS
progress bars. Divergence: message naming the step, partial metrics, last
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
import re
import shutil
import signal
import subprocess
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


def run_launcher_process(module, *args):
  return conftest.run_module(module, *args, timeout=300)


def popen_launcher(module, *args):
  """A launcher as a real subprocess, for tests that signal or kill it."""
  return conftest.popen_python(['-m', module, *args])


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


def wait_for_logged_step(workdir, proc, step, timeout=120.0):
  """Polls observations.jsonl (one record per logged step) until `step`."""
  path = os.path.join(workdir, 'observations.jsonl')
  deadline = time.time() + timeout
  while True:
    assert proc.poll() is None, proc.communicate()
    assert time.time() < deadline, f'step {step} was not logged'
    if os.path.exists(path):
      with open(path) as f:
        steps = [json.loads(l)['step'] for l in f if l.endswith('\n')]
      if steps and max(steps) >= step:
        return
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

MIRRORED_33 = ['--strategy=mirrored', '--cpu_replicas=2', '--batch_size=33']
CORRUPT = ['--raw_data_dir={raw_corrupt}', '--data_dir={fresh}']

# (launcher, flags, text the one error line must contain). Flags that fail in
# config_from_flags never import TensorFlow in launch.mnist.
BAD_FLAGS = [
    ('launch.mnist', ['--dataset=svhn'], '--dataset=svhn: TFDS has no dataset'),
    ('launch.mnist', ['--dataset=imdb_reviews'],
     '--dataset=imdb_reviews: tftrain trains image classifiers'),
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
    # Checks that need TensorFlow (replicas, preparing the data) also run
    # before any folder is created, in every launcher; (…, exit status).
    ('launch.mnist', MIRRORED_33, '--batch_size=33: must be divisible by the 2 replicas', 2),
    ('launch.lr_find', MIRRORED_33, '--batch_size=33: must be divisible', 2),
    ('launch.deep', MIRRORED_33, '--batch_size=33: must be divisible', 2),
    ('launch.compare', MIRRORED_33 + ['--dataset=mnist', '--only=bn-none_opt-sgd'],
     '--batch_size=33: must be divisible', 2),
    ('launch.mnist', CORRUPT, 'dataset mnist: preparation failed', 1),
    ('launch.lr_find', CORRUPT, 'dataset mnist: preparation failed', 1),
    ('launch.deep', CORRUPT, 'dataset mnist: preparation failed', 1),
    ('launch.compare', CORRUPT + ['--dataset=mnist', '--only=bn-none_opt-sgd'],
     'dataset mnist: preparation failed', 1),
    ('launch.mnist', ['--raw_data_dir={raw_garbage}', '--data_dir={fresh}'],
     'dataset mnist: preparation failed (ExtractError', 1),
    # A damaged prepared dataset is found before the workdir, not mid-run.
    ('launch.mnist', ['--data_dir={a_file}'], '--data_dir=', 1),
    ('launch.mnist', ['--data_dir={tfds_badinfo}'],
     'the prepared mnist there cannot be read', 1),
    ('launch.mnist', ['--data_dir={tfds_truncated}'],
     'dataset mnist: the prepared train split has', 1),
    ('launch.mnist', ['--data_dir={tfds_no_test}'],
     'mnist-test.tfrecord-00000-of-00001 is missing', 1),
]


def _case_id(case):
  return f'{case[0].split(".")[1]}:{" ".join(case[1])}'


@pytest.fixture(scope='module')
def bad_flag_results(tiny_mnist_data_dir, tmp_path_factory):
  """Runs every BAD_FLAGS case (3 at a time); maps case id -> (result, workdir)."""
  from tests import tiny_data  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('bad_flags')
  a_file = root / 'a_file'
  a_file.write_text('not a folder')
  (root / 'raw_empty').mkdir()
  (root / 'empty').mkdir()
  # A raw folder whose train images were cut short (an interrupted copy).
  raw_corrupt = str(root / 'raw_corrupt')
  tiny_data.write_tiny_mnist(raw_corrupt)
  images = os.path.join(raw_corrupt, 'mnist', 'train-images-idx3-ubyte.gz')
  with open(images, 'r+b') as f:
    f.truncate(os.path.getsize(images) // 2)
  raw_garbage = root / 'raw_garbage' / 'mnist'     # not gzip at all
  raw_garbage.mkdir(parents=True)
  for name in os.listdir(os.path.join(raw_corrupt, 'mnist')):
    (raw_garbage / name).write_bytes(b'\x7f' * 1000)
  # Copies of the prepared tiny dataset, each damaged in one way.
  damaged = {}
  for name in ('tfds_badinfo', 'tfds_truncated', 'tfds_no_test'):
    damaged[name] = str(root / name)
    shutil.copytree(tiny_mnist_data_dir, damaged[name])
  version_dir = glob.glob(os.path.join(damaged['tfds_badinfo'], 'mnist', '*'))[0]
  with open(os.path.join(version_dir, 'dataset_info.json'), 'w') as f:
    f.write('{not json')
  train = glob.glob(os.path.join(damaged['tfds_truncated'], 'mnist', '*',
                                 'mnist-train.tfrecord-*'))[0]
  with open(train, 'r+b') as f:
    f.truncate(os.path.getsize(train) // 2)
  os.remove(glob.glob(os.path.join(damaged['tfds_no_test'], 'mnist', '*',
                                   'mnist-test.tfrecord-*'))[0])
  subs = {'raw_empty': str(root / 'raw_empty'), 'empty': str(root / 'empty'),
          'a_file': str(a_file), 'raw_corrupt': raw_corrupt,
          'raw_garbage': str(root / 'raw_garbage'), **damaged}

  def run(index_case):
    index, (module, flags, *_) = index_case
    workdir = str(root / f'run{index}')
    fresh = root / f'fresh{index}'     # a fresh TFDS data dir per case
    fresh.mkdir()
    args = [f.format(fresh=str(fresh), **subs) for f in flags]
    defaults = [f'--data_dir={tiny_mnist_data_dir}', f'--workdir={workdir}',
                '--validation_size=100', '--progress=false']
    given = {a.split('=')[0] for a in args}
    args = [d for d in defaults if d.split('=')[0] not in given] + args
    return conftest.run_module(module, *args), workdir

  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    results = list(pool.map(run, enumerate(BAD_FLAGS)))
  return {_case_id(c): r for c, r in zip(BAD_FLAGS, results)}


@pytest.mark.parametrize('case', BAD_FLAGS, ids=[_case_id(c) for c in BAD_FLAGS])
def test_bad_flag_is_one_line_error_and_creates_nothing(case, bad_flag_results):
  result, workdir = bad_flag_results[_case_id(case)]
  # Every launcher the table names exists: a missing one fails here (with
  # Python's 'No module named') rather than being skipped.
  assert os.path.exists(os.path.join(conftest.REPO_ROOT,
                                     *case[0].split('.')) + '.py'), case[0]
  assert 'No module named' not in result.stderr, result.stderr[-1000:]
  line = assert_one_line_error(result, case[2])
  if len(case) > 3:
    assert result.returncode == case[3], line
  else:
    assert result.returncode in (1, 2), line
  assert not os.path.exists(workdir), line
  # No TFDS progress bars (stderr is not a terminal): a few lines in all
  # (TensorFlow's start-up lines, one log line, the error).
  assert '%|' not in result.stderr and 'it/s]' not in result.stderr, result.stderr
  assert len(result.stderr.splitlines()) <= 10, result.stderr


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
  proc = run_launcher_process('launch.mnist', *train_args(tiny_mnist_data_dir, workdir))
  stdout, stderr = proc.stdout, proc.stderr
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
  # End of epoch 1 is checkpointed; the signal is sent once epoch 2 has
  # logged its step 400 (the loop checks it after each in-graph loop, so at
  # least one more step runs).
  wait_for(os.path.join(workdir, 'checkpoints', 'checkpoint'), proc)
  wait_for_logged_step(workdir, proc, STEPS_PER_EPOCH + 100)
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
  proc = run_launcher_process('launch.mnist', *args)
  stdout, stderr = proc.stdout, proc.stderr
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

  proc = run_launcher_process('launch.mnist', *args)
  stdout, stderr = proc.stdout, proc.stderr
  assert proc.returncode == 0, (stdout, stderr)
  resumed = read_json(os.path.join(workdir, 'metrics.json'))
  assert resumed['resumed'] and resumed['status'] == 'completed'
  assert comparable(resumed) == comparable(reference[1])



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
  # The run's config.json says so too (a resume with another learning rate
  # would be refused).
  saved = read_json(os.path.join(workdir, 'config.json'))
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(dict(saved, learning_rate=1e30), f)
  args = train_args(tiny_mnist_data_dir, workdir, f'--epochs={EPOCHS + 1}',
                    '--learning_rate=1e30')
  proc = run_launcher_process('launch.mnist', *args)
  stdout, stderr = proc.stdout, proc.stderr
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
    starts = {
        'corrupt': train_args(tiny_mnist_data_dir, workdirs['corrupt'],
                              f'--epochs={EPOCHS + 1}'),
        'locked': train_args(tiny_mnist_data_dir, workdirs['locked'],
                             f'--epochs={EPOCHS + 1}'),
        'batch': train_args(tiny_mnist_data_dir, workdirs['batch'],
                            '--batch_size=301'),
    }
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
      futures = {name: pool.submit(run_launcher_process, 'launch.mnist', *a)
                 for name, a in starts.items()}
      results = {name: f.result() for name, f in futures.items()}
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
  from tftrain import errors  # pylint: disable=g-import-not-at-top
  from tftrain import loop  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv(data.RAW_DATA_ENV, raising=False)
  monkeypatch.setattr(data, '_network_reachable', lambda urls: False)
  workdir = tmp_path / 'run'
  config = config_lib.Config(data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(errors.DataError) as e:
    loop.train_and_evaluate(config, str(workdir))
  message = str(e.value)
  assert 'download host is unreachable' in message and '--raw_data_dir' in message
  assert 'train-images-idx3-ubyte.gz' in message and '\n' not in message
  assert not workdir.exists()


# --------------------------------------------------------- quiet, piped logs --

def test_piped_run_logs_one_line_per_epoch(tiny_mnist_data_dir, tmp_path,
                                           run_launcher):
  """stdout to a pipe (CI, nohup): no progress bar, one log line per epoch."""
  epochs = 2
  workdir = str(tmp_path / 'run')
  # --progress (the default) is asked for; without a terminal it is not drawn.
  result = run_launcher('launch.mnist', *train_args(
      tiny_mnist_data_dir, workdir, f'--epochs={epochs}', '--progress'),
                        timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  both = result.stdout + result.stderr
  assert '━' not in both and '\r' not in both and '\b' not in both, both
  epoch_lines = [l for l in result.stderr.splitlines()
                 if re.search(rf'\] epoch \d/{epochs} step \d+ ', l)]
  assert len(epoch_lines) == epochs, result.stderr
  for line in epoch_lines:
    for needle in ('loss=', 'accuracy=', 'val_accuracy=', 'examples/s=',
                   ' eta '):
      assert needle in line, (needle, line)
  # Start-up, the epochs and the end: a handful of lines, not one per update.
  assert len(result.stderr.splitlines()) <= 6 + 2 * epochs, result.stderr
  assert len(result.stdout.splitlines()) <= 12, result.stdout


# ------------------------------------------------------- LR finder, stopped --

def _small_experiment(data_dir, workdir, **overrides):
  from tftrain import config as config_lib  # pylint: disable=g-import-not-at-top
  from tftrain import experiment  # pylint: disable=g-import-not-at-top
  values = dict(data_dir=data_dir, validation_size=100, batch_size=10,
                hidden=(16,), steps_per_loop=1, learning_rate='auto',
                progress=False, epochs=1, patience=0, seed=3)
  values.update(overrides)
  return experiment.build_experiment(config_lib.Config(**values), workdir)


def test_lr_finder_stopped_restores_the_model_and_writes_nothing(
    tiny_mnist_data_dir, tmp_path):
  from tftrain import errors  # pylint: disable=g-import-not-at-top
  from tftrain import lr_finder  # pylint: disable=g-import-not-at-top
  exp = _small_experiment(tiny_mnist_data_dir, str(tmp_path / 'run'))
  outdir = os.path.join(exp.workdir, 'lr_finder')
  stale = outdir + '.tmp-99999999'       # left by a killed earlier attempt
  os.makedirs(stale)
  before = [v.numpy() for v in exp.trainer.model.variables]
  checks = []

  def stop_on_third_check():
    checks.append(1)
    return len(checks) >= 3

  with pytest.raises(errors.Interrupted) as e:
    lr_finder.find(exp, outdir, should_stop=stop_on_third_check)
  assert e.value.steps_done == 2          # two one-step calls ran
  assert 'interrupted during the LR finder' in str(e.value)
  assert 'rerun the same command' in str(e.value)
  assert not os.path.exists(outdir)
  for got, want in zip(exp.trainer.model.variables, before):
    np.testing.assert_array_equal(got.numpy(), want)
  assert int(exp.trainer.optimizer.iterations.numpy()) == 0
  # Run again: the outputs appear whole, the stale temporary folder is gone.
  result = lr_finder.find(exp, outdir)
  assert sorted(n for n in os.listdir(outdir) if not n.startswith('events')) == [
      'lr_finder.csv', 'lr_finder.json', 'lr_finder.png']
  assert any(n.startswith('events.out.tfevents') for n in os.listdir(outdir))
  assert glob.glob(outdir + '.*') == []
  assert result.paths['json'] == os.path.join(outdir, 'lr_finder.json')


def _wait_for_line(stream, needle, timeout=180.0):
  """Reads `stream` line by line until one contains `needle`; returns the lines."""
  deadline = time.time() + timeout
  lines = []
  while time.time() < deadline:
    line = stream.readline()
    if not line:
      break
    lines.append(line)
    if needle in line:
      return lines
  raise AssertionError(f'{needle!r} not seen: {"".join(lines)[-3000:]}')


# A sweep of ~600 one-step calls on a wide MLP: seconds long, so the signal
# sent when it starts lands in it (1024 wide: ~3x cheaper than 2048, whose
# rerun, a whole sweep and epoch, dominated these tests).
FINDER_ARGS = ('--validation_size=0', '--batch_size=1', '--steps_per_loop=1',
               '--hidden=1024,1024', '--learning_rate=auto',
               '--lr_find_start=1e-6', '--lr_find_end=1e-4', '--epochs=1',
               '--max_steps_per_epoch=600', '--patience=0', '--seed=7',
               '--progress=false')


@pytest.mark.slow
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT],
                         ids=['SIGTERM', 'SIGINT'])
def test_signal_during_the_lr_finder_stops_cleanly_and_the_rerun_works(
    sig, tiny_mnist_data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  args = conftest.launcher_command(
      'launch.mnist', f'--data_dir={tiny_mnist_data_dir}',
      f'--workdir={workdir}', *FINDER_ARGS)
  # A child of a non-interactive shell ignores SIGINT (TF-NOTES).
  proc = conftest.popen_python(args[1:], sigint_default=True)
  try:
    seen = _wait_for_line(proc.stderr, 'LR finder: sweeping')
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  stderr = ''.join(seen) + stderr
  assert proc.returncode == 130, (stdout, stderr)
  assert 'Traceback' not in stderr, stderr
  assert stdout.strip().splitlines() == [
      stdout.strip()], stdout                       # one line
  assert stdout.startswith('interrupted during the LR finder'), stdout
  assert 'rerun the same command' in stdout
  assert not os.path.exists(os.path.join(workdir, 'lr_finder'))
  assert glob.glob(os.path.join(workdir, 'lr_finder*')) == []
  assert not os.path.exists(os.path.join(workdir, '.lock'))
  assert read_json(os.path.join(workdir, 'metrics.json'))['status'] == 'interrupted'
  if sig == signal.SIGINT:
    return   # the same state on disk as SIGTERM's, whose rerun follows

  proc = conftest.run_python(args[1:], timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = read_json(os.path.join(workdir, 'metrics.json'))
  assert metrics['status'] == 'completed' and metrics['epochs_run'] == 1
  assert metrics['learning_rate'] == metrics['lr_finder']['suggestion']
  names = os.listdir(os.path.join(workdir, 'lr_finder'))
  assert {'lr_finder.csv', 'lr_finder.json', 'lr_finder.png'} <= set(names)
  assert glob.glob(os.path.join(workdir, 'lr_finder.*')) == []


@pytest.mark.slow
def test_ctrl_c_during_launch_lr_find_is_one_line(tiny_mnist_data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  proc = conftest.popen_python(
      ['-m', 'launch.lr_find', f'--data_dir={tiny_mnist_data_dir}',
       f'--workdir={workdir}', *FINDER_ARGS], sigint_default=True)
  try:
    seen = _wait_for_line(proc.stderr, 'LR finder: sweeping')
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout,
                                       ''.join(seen) + stderr)
  line = assert_one_line_error(result, 'interrupted during the LR finder',
                               'rerun the same command')
  assert proc.returncode == 130, line
  assert glob.glob(os.path.join(workdir, 'lr_finder*')) == []
  assert not os.path.exists(os.path.join(workdir, '.lock'))


# ------------------------------------------------- data damaged in place --

def test_damaged_prepared_record_is_one_line(tiny_mnist_data_dir, tmp_path):
  """Same size, bad CRC: found only when read, still a one-line DataError."""
  from tftrain import config as config_lib  # pylint: disable=g-import-not-at-top
  from tftrain import errors  # pylint: disable=g-import-not-at-top
  from tftrain import loop  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path / 'tfds')
  shutil.copytree(tiny_mnist_data_dir, data_dir)
  train = glob.glob(os.path.join(data_dir, 'mnist', '*', 'mnist-train.tfrecord-*'))[0]
  with open(train, 'r+b') as f:
    f.seek(os.path.getsize(train) // 3)
    f.write(b'\xff' * 64)
  config = config_lib.Config(data_dir=data_dir, validation_size=100,
                             batch_size=20, hidden=(8,), epochs=1,
                             progress=False, activation_stats=False)
  with pytest.raises(errors.DataError) as e:
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  message = str(e.value)
  assert message.startswith('dataset mnist: a prepared file is damaged')
  assert 'rerun to prepare it again' in message and '\n' not in message


# ------------------------------------------------------- TF_CONFIG checked --

@pytest.mark.parametrize('tf_config,needle', [
    ('{not json', 'TF_CONFIG is not valid JSON'),
    (json.dumps({'cluster': {'worker': ['127.0.0.1:1']},
                 'task': {'type': 'worker', 'index': 3}}),
     'TF_CONFIG task index 3 is not in 0..0'),
    (json.dumps({'cluster': {'worker': 'host:1'},
                 'task': {'type': 'worker', 'index': 0}}),
     'TF_CONFIG "cluster" must map job names'),
], ids=['json', 'index', 'cluster'])
def test_bad_tf_config_is_one_line_before_the_workdir(tf_config, needle,
                                                      tiny_mnist_data_dir,
                                                      tmp_path):
  workdir = str(tmp_path / 'run')
  env = dict(conftest.launcher_env(), TF_CONFIG=tf_config)
  result = conftest.run_python(
      ['-m', 'launch.mnist', '--strategy=multi_worker',
       f'--data_dir={tiny_mnist_data_dir}', f'--workdir={workdir}'],
      env=env, timeout=180)
  line = assert_one_line_error(result, '--strategy=multi_worker: ', needle)
  assert result.returncode == 2, line
  assert not os.path.exists(workdir)


@pytest.mark.slow
def test_real_full_disk_on_a_tiny_tmpfs(tiny_mnist_data_dir, tmp_path):
  """The same on a real full filesystem (needs root to mount a tmpfs)."""
  mount_point = tmp_path / 'small'
  mount_point.mkdir()
  # Room for the first epoch's checkpoint and best weights, not the second's.
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=700k', 'tmpfs',
                            str(mount_point)], capture_output=True)
  if mounted.returncode != 0:
    pytest.skip('cannot mount a tmpfs here (needs root)')
  try:
    workdir = str(mount_point / 'run')
    args = (f'--data_dir={tiny_mnist_data_dir}', f'--workdir={workdir}',
            '--validation_size=100', '--batch_size=10', '--hidden=64',
            '--epochs=6', '--patience=0', '--learning_rate=0.05',
            '--monitor=val_loss', '--progress=false')
    proc = run_launcher_process('launch.mnist', *args)
    stdout, stderr = proc.stdout, proc.stderr
    result = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
    line = assert_one_line_error(result, f'--workdir={workdir}: no space left '
                                 'on the device while writing')
    assert line.endswith('free space and rerun the same command to resume.')
    assert proc.returncode == 1
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    latest = tf.train.latest_checkpoint(os.path.join(workdir, 'checkpoints'))
    assert latest and f'({os.path.basename(latest)}) is kept' in line
    tf.train.load_checkpoint(latest).get_tensor('epoch/.ATTRIBUTES/VARIABLE_VALUE')
    assert not glob.glob(os.path.join(workdir, '*', '*_temp*'))
    # Free space, rerun: it resumes from that checkpoint and completes.
    subprocess.run(['mount', '-o', 'remount,size=20m', str(mount_point)],
                   check=True)
    proc = run_launcher_process('launch.mnist', *args)
    stdout, stderr = proc.stdout, proc.stderr
    assert proc.returncode == 0, stderr[-3000:]
    metrics = read_json(os.path.join(workdir, 'metrics.json'))
    assert metrics['resumed'] and metrics['status'] == 'completed'
    assert [h['epoch'] for h in metrics['history']] == [1, 2, 3, 4, 5, 6]
  finally:
    subprocess.run(['umount', str(mount_point)], capture_output=True)
