"""Export round trip, MC dropout, dropout placement."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tftrain import data
from tftrain import export
from tftrain import models
from tftrain import trainer as trainer_lib

SHAPE = (6, 6, 1)


def info(mean=None, std=None):
  return data.DataInfo(num_classes=10, image_shape=SHAPE, num_train=None,
                       num_validation=None, num_test=None, mean=mean, std=std)


@pytest.mark.parametrize('dropout', [0.0, 0.3])
def test_export_round_trip_gives_equal_predictions(tmp_path, dropout):
  model = models.build_dense_stack(SHAPE, [16, 8], seed=1, dropout=dropout)
  paths = export.export(model, info(mean=(0.4,), std=(0.2,)), str(tmp_path),
                        dataset='mnist')
  images = np.random.default_rng(0).integers(0, 256, (5, *SHAPE), np.uint8)
  x = (images.astype(np.float32) / 255.0 - 0.4) / 0.2
  expected = model(x, training=False).numpy()
  serve = tf.saved_model.load(paths['saved_model']).signatures[
      'serving_default']
  out = serve(images=tf.constant(images))
  np.testing.assert_allclose(out['logits'].numpy(), expected, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(out['probabilities'].numpy().sum(-1), 1.0,
                             rtol=1e-5)
  loaded = tf.keras.models.load_model(paths['keras'])
  np.testing.assert_allclose(loaded(x, training=False).numpy(), expected,
                             rtol=1e-5, atol=1e-6)
  with open(os.path.join(paths['dir'], 'export.json')) as f:
    meta = json.load(f)
  assert meta['dropout'] == (dropout > 0) and meta['dataset'] == 'mnist'
  assert meta['mean'] == [0.4] and meta['image_shape'] == list(SHAPE)
  assert not os.path.exists(paths['dir'] + '.tmp')


def test_dropout_placement_and_alpha_for_selu():
  last = models.build_dense_stack(SHAPE, [8, 8, 8], dropout=0.2)
  names = [l.name for l in last.layers]
  assert names[-2:] == ['dropout_002', 'logits']
  assert sum(n.startswith('dropout') for n in names) == 1
  assert isinstance(last.get_layer('dropout_002'), tf.keras.layers.Dropout)
  every = models.build_dense_stack(SHAPE, [8, 8, 8], activation='selu',
                                   dropout=0.2, dropout_placement='every')
  drops = [l for l in every.layers if l.name.startswith('dropout')]
  assert [l.name for l in drops] == ['dropout_000', 'dropout_001',
                                     'dropout_002']
  assert all(isinstance(l, tf.keras.layers.AlphaDropout) for l in drops)
  standard = models.build_dense_stack(SHAPE, [8], activation='selu',
                                      dropout=0.2, dropout_kind='standard')
  assert not isinstance(standard.get_layer('dropout_000'),
                        tf.keras.layers.AlphaDropout)
  assert models.has_dropout(every) and not models.has_dropout(
      models.build_dense_stack(SHAPE, [8]))


def _dataset(n=40):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(n, *SHAPE)).astype(np.float32)
  y = rng.integers(0, 10, n).astype(np.int32)
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def test_mc_dropout_evaluation():
  strategy = tf.distribute.get_strategy()
  plain = trainer_lib.Trainer(models.build_dense_stack(SHAPE, [16], seed=3),
                              tf.keras.optimizers.SGD(0.1), strategy, 16)
  ds = _dataset()
  a, b = plain.evaluate(ds), plain.evaluate(ds, mc_samples=3)
  # Without dropout every pass is the same: MC equals the plain metrics.
  assert b['accuracy'] == a['accuracy']
  assert b['loss'] == pytest.approx(a['loss'], rel=1e-5)
  model = models.build_dense_stack(SHAPE, [64], seed=3, dropout=0.5)
  x = next(iter(ds))[0]
  det = tf.nn.softmax(model(x, training=False))
  mc = models.mc_dropout_probabilities(model, x, 20)
  np.testing.assert_allclose(mc.numpy().sum(-1), 1.0, rtol=1e-5)
  assert np.abs(mc.numpy() - det.numpy()).max() > 1e-3    # dropout was on
  dropped = trainer_lib.Trainer(model, tf.keras.optimizers.SGD(0.1), strategy,
                                16)
  out = dropped.evaluate(ds, mc_samples=5)
  assert 0.0 <= out['accuracy'] <= 1.0 and np.isfinite(out['loss'])
  assert out['loss'] != pytest.approx(dropped.evaluate(ds)['loss'], rel=1e-6)


@pytest.mark.slow
def test_launchers_cnn_with_dropout_then_evaluate_from_the_export(
    tiny_cifar_data_dir, run_launcher, tmp_path):
  """launch.cifar10 --model=cnn --dropout --mc_dropout_samples, then
  launch.evaluate reproduces the run's test metrics from export/ alone."""
  workdir = str(tmp_path / 'cnn')
  proc = run_launcher(
      'launch.cifar10', '--model=cnn', '--filters=4,8', '--dropout=0.3',
      '--mc_dropout_samples=3', '--epochs=2', '--batch_size=20',
      '--validation_size=40', '--noprogress', f'--data_dir={tiny_cifar_data_dir}',
      f'--workdir={workdir}', timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(os.path.join(workdir, 'metrics.json')) as f:
    metrics = json.load(f)
  assert metrics['mc_dropout_samples'] == 3
  for key in ('mc_test_accuracy', 'mc_val_accuracy', 'test_accuracy'):
    assert 0.0 <= metrics[key] <= 1.0, key
  with open(os.path.join(workdir, 'export', 'export.json')) as f:
    meta = json.load(f)
  assert meta['dropout'] and meta['dataset'] == 'cifar10'
  proc = run_launcher('launch.evaluate', f'--workdir={workdir}',
                      f'--data_dir={tiny_cifar_data_dir}',
                      '--mc_dropout_samples=3', timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  assert lines[-2].startswith(
      f'test accuracy: {metrics["test_accuracy"]:.4f}  test loss: '
      f'{metrics["test_loss"]:.4f}')
  assert lines[-1].startswith('MC dropout (3 samples): test accuracy ')
  proc = run_launcher('launch.evaluate', f'--workdir={tmp_path}/none',
                      timeout=60)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith(
      f'error: --workdir={tmp_path}/none: no export/ in it')
