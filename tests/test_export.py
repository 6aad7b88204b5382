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
  mc = export.mc_dropout_forward(model, x, 20)
  np.testing.assert_allclose(mc.numpy().sum(-1), 1.0, rtol=1e-5)
  assert np.abs(mc.numpy() - det.numpy()).max() > 1e-3    # dropout was on
  dropped = trainer_lib.Trainer(model, tf.keras.optimizers.SGD(0.1), strategy,
                                16)
  out = dropped.evaluate(ds, mc_samples=5)
  assert 0.0 <= out['accuracy'] <= 1.0 and np.isfinite(out['loss'])
  assert out['loss'] != pytest.approx(dropped.evaluate(ds)['loss'], rel=1e-6)
