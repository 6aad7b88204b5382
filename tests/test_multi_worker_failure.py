"""A dead worker in a two-process MultiWorkerMirroredStrategy run on loopback.

The survivor's next collective fails; it must stop with one line naming the
lost peer and saying that rerunning all workers resumes from the last
checkpoint, and the rerun of both workers must resume and complete.
"""

import json
import os
import signal
import time

import pytest

from tests import conftest

EPOCHS = 12


def _start_workers(cluster, args, **env_overrides):
  procs = []
  for index in range(2):
    env = dict(conftest.launcher_env(), **env_overrides, TF_CONFIG=json.dumps(
        {'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
    procs.append(conftest.popen_python(['-m', 'launch.mnist', *args],
                                       env=env))
  return procs


def _finish(procs, timeout):
  deadline = time.time() + timeout
  try:
    return [p.communicate(timeout=max(deadline - time.time(), 1)) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


@pytest.mark.slow
def test_killed_worker_stops_the_survivor_with_one_line_and_rerun_resumes(
    tiny_mnist_data_dir, tmp_path):
  ports = conftest.free_ports(2)
  cluster = {'worker': [f'127.0.0.1:{p}' for p in ports]}
  workdir = str(tmp_path / 'run')
  args = (f'--data_dir={tiny_mnist_data_dir}', f'--workdir={workdir}',
          '--validation_size=100', '--hidden=16', '--batch_size=10',
          '--steps_per_loop=5', f'--epochs={EPOCHS}', '--patience=0',
          '--learning_rate=0.05', '--progress=false', '--strategy=multi_worker')
  procs = _start_workers(cluster, args)
  try:
    # Kill worker 1 once the chief has written its first epoch checkpoint.
    index = os.path.join(workdir, 'checkpoints', 'checkpoint')
    deadline = time.time() + 300
    while not os.path.exists(index):
      assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
      assert time.time() < deadline, 'no checkpoint after 300 s'
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.time()
    (_, stderr), _ = _finish(procs, timeout=180)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  survivor = procs[0]
  assert survivor.returncode == 1, stderr[-3000:]
  assert time.time() - killed_at < 120
  assert 'Traceback' not in stderr, stderr[-3000:]
  errors = [l for l in stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1, stderr[-3000:]
  assert errors[0].startswith(
      f'error: --strategy=multi_worker: lost worker 1 ({cluster["worker"][1]})'
  ), errors[0]
  assert 'Rerun the same command on all workers to resume from the last ' \
         'checkpoint (ckpt-' in errors[0], errors[0]
  assert not os.path.exists(os.path.join(workdir, '.lock'))

  # Rerunning both workers with the same command resumes and completes,
  # without coordination-service errors at the end (C++ errors shown here).
  procs = _start_workers(cluster, args, TF_CPP_MIN_LOG_LEVEL='2')
  outputs = _finish(procs, timeout=400)
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
    assert 'Traceback' not in err, err[-3000:]
    assert 'The tasks have crashed' not in err, err[-3000:]
  metrics = json.load(open(os.path.join(workdir, 'metrics.json')))
  assert metrics['resumed'] and metrics['status'] == 'completed'
  assert metrics['epochs_run'] == EPOCHS
  assert [h['epoch'] for h in metrics['history']] == list(range(1, EPOCHS + 1))
  assert metrics['test_accuracy'] > 0.5
