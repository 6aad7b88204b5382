"""tf.distribute: MirroredStrategy over 2 logical CPUs, multi-worker, mixed precision.

Logical CPU devices must be set before TensorFlow initializes, so the
strategy tests run in fresh subprocesses.
"""

import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from tests import conftest

from tftrain import config as config_lib
from tftrain import experiment
from tftrain import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)

MIRRORED_SCRIPT = r'''
import json, sys
from tftrain import distribute
distribute.configure_cpu_replicas(2)
from tftrain import config as config_lib, experiment, loop
data_dir, workdir = sys.argv[1], sys.argv[2]
out = {}
for strategy in ('default', 'mirrored'):
  config = config_lib.Config(
      dataset='cifar10', data_dir=data_dir, validation_size=40, model='mlp',
      hidden=(32, 16), optimizer='momentum', learning_rate=0.05, batch_size=20,
      epochs=2, patience=0, steps_per_loop=5, progress=False, seed=7,
      strategy=strategy, histogram_every_steps=5)
  exp = experiment.build_experiment(config, f'{workdir}/{strategy}')
  losses = []
  hook = lambda exp, event, o: losses.extend(o['losses'].tolist()) if event == 'train' else None
  result = loop.run(exp, [hook])
  out[strategy] = {'replicas': exp.strategy.num_replicas_in_sync,
                   'losses': losses, 'test_loss': result['test_loss'],
                   'grad_norms': exp.trainer.layer_names}
print('RESULT' + json.dumps(out))
'''


def test_mirrored_follows_single_device_trajectory(tiny_cifar_data_dir, tmp_path):
  proc = conftest.run_python(
      ['-c', MIRRORED_SCRIPT, tiny_cifar_data_dir, str(tmp_path)], env=ENV,
      timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT')][0]
  out = json.loads(line[len('RESULT'):])
  assert out['default']['replicas'] == 1 and out['mirrored']['replicas'] == 2
  single, mirrored = out['default']['losses'], out['mirrored']['losses']
  assert len(single) == len(mirrored) == 20
  # Same global batch, seed and data order: the same trajectory up to float
  # summation order (tolerance 1e-4 relative).
  np.testing.assert_allclose(mirrored, single, rtol=1e-4, atol=1e-5)
  assert out['mirrored']['test_loss'] == pytest.approx(
      out['default']['test_loss'], rel=1e-4)
  assert single[-1] < single[0]


@pytest.mark.slow
def test_multi_worker_two_processes_agree(tiny_cifar_data_dir, tmp_path):
  ports = conftest.free_ports(2)
  cluster = {'worker': [f'127.0.0.1:{p}' for p in ports]}
  workdir = str(tmp_path / 'run')
  procs = []
  for index in range(2):
    env = dict(ENV, TF_CONFIG=json.dumps(
        {'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
    procs.append(conftest.popen_python(
        ['-m', 'launch.mnist', '--dataset=cifar10',
         f'--data_dir={tiny_cifar_data_dir}', '--validation_size=40', '--hidden=16',
         '--batch_size=20', '--epochs=2', '--steps_per_loop=5',
         '--progress=false', '--strategy=multi_worker', f'--workdir={workdir}',
         '--learning_rate=0.05'], env=env))
  deadline = time.time() + 240
  try:
    outputs = [p.communicate(timeout=max(deadline - time.time(), 1))
               for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  # The chief writes the run; worker 1 writes only to its own temp folder.
  chief = json.load(open(os.path.join(workdir, 'metrics.json')))
  other = json.load(open(os.path.join(workdir, 'workertemp_1', 'metrics.json')))
  assert os.path.isdir(os.path.join(workdir, 'train'))
  assert tf.train.latest_checkpoint(os.path.join(workdir, 'checkpoints'))
  assert chief['test_loss'] == pytest.approx(other['test_loss'], rel=1e-6)
  a = tf.train.load_checkpoint(os.path.join(workdir, 'checkpoints'))
  b = tf.train.load_checkpoint(os.path.join(workdir, 'workertemp_1', 'checkpoints'))
  shapes = a.get_variable_to_shape_map()
  weights = [n for n, shape in shapes.items() if len(shape) == 2]
  assert len(weights) == 2, sorted(shapes)    # hidden and logits kernels
  for name in shapes:
    if name != '_CHECKPOINTABLE_OBJECT_GRAPH':
      np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name))


def test_mixed_precision_keeps_float32_master_weights(tiny_cifar_data_dir, tmp_path):
  config = config_lib.Config(
      dataset='cifar10', data_dir=tiny_cifar_data_dir, validation_size=40, model='mlp',
      hidden=(32,), optimizer='adam', learning_rate=3e-3, batch_size=20,
      epochs=3, patience=0, steps_per_loop=5, progress=False,
      mixed_precision='mixed_float16')
  try:
    exp = experiment.build_experiment(config, str(tmp_path / 'run'))
    model = exp.trainer.model
    assert all(v.dtype == tf.float32 for v in model.trainable_variables)
    assert model.get_layer('dense_000').compute_dtype == 'float16'
    assert model.get_layer('logits').compute_dtype == 'float32'
    assert isinstance(exp.trainer.optimizer,
                      tf.keras.mixed_precision.LossScaleOptimizer)
    result = loop.run(exp)
  finally:
    tf.keras.mixed_precision.set_global_policy('float32')
  history = result['history']
  assert history[-1]['loss'] < 0.7 * history[0]['loss']
  assert result['test_accuracy'] > 0.5
