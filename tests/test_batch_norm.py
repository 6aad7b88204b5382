"""Batch-norm placement in the shared deep_mlp builder, and BN at inference.

The seed's placement is 'before': Dense without bias -> BN -> activation.
Evaluation (Trainer.evaluate, model(training=False)) must use the moving
statistics, not the batch's.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.test_models import dense_layers
from tftrain import data
from tftrain import models
from tftrain import trainer as trainer_lib

SHAPE = (4, 4, 3)


def kinds(model):
  names = {tf.keras.layers.Flatten: 'flatten', tf.keras.layers.Dense: 'dense',
           tf.keras.layers.BatchNormalization: 'bn',
           tf.keras.layers.Activation: 'act'}
  return [names[type(l)] for l in model.layers]


@pytest.mark.parametrize('placement,order,bias', [
    ('none', ['dense', 'act'], True),
    ('before', ['dense', 'bn', 'act'], False),
    ('after', ['dense', 'act', 'bn'], True),
])
def test_layer_order_and_bias(placement, order, bias):
  model = models.deep_mlp(SHAPE, depth=3, width=8, activation='elu',
                          kernel_initializer='he_normal', batch_norm=placement,
                          seed=1)
  assert kinds(model) == ['flatten'] + order * 3 + ['dense']
  hidden = dense_layers(model)[:-1]
  assert [l.use_bias for l in hidden] == [bias] * 3
  assert all((l.bias is not None) == bias for l in hidden)
  assert dense_layers(model)[-1].use_bias     # logits keep their bias
  bns = [l.name for l in model.layers
         if isinstance(l, tf.keras.layers.BatchNormalization)]
  assert bns == ([] if placement == 'none' else ['bn_000', 'bn_001', 'bn_002'])
  # Parameter count: BN adds 4*width (2 trainable), 'before' drops the bias.
  dense_params = 48 * 8 + 8 * 8 * 2 + (3 * 8 if bias else 0) + 8 * 10 + 10
  bn_params = 0 if placement == 'none' else 3 * 4 * 8
  assert model.count_params() == dense_params + bn_params


def test_unknown_placement_is_rejected_quoting_it():
  with pytest.raises(ValueError, match="'middle'"):
    models.deep_mlp(SHAPE, depth=2, width=4, batch_norm='middle')


def _elu(x):
  return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def manual_forward(model, x, placement):
  """The model's inference output computed by hand from its moving statistics."""
  h = x.reshape(len(x), -1).astype(np.float64)
  for layer in model.layers:
    if isinstance(layer, tf.keras.layers.Dense):
      h = h @ layer.kernel.numpy()
      if layer.use_bias:
        h = h + layer.bias.numpy()
    elif isinstance(layer, tf.keras.layers.BatchNormalization):
      gamma, beta, mean, var = (w.numpy() for w in (
          layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance))
      h = gamma * (h - mean) / np.sqrt(var + layer.epsilon) + beta
    elif isinstance(layer, tf.keras.layers.Activation):
      h = _elu(h)
  return h


@pytest.mark.parametrize('placement', ['before', 'after'])
def test_evaluation_uses_moving_statistics(placement):
  rng = np.random.default_rng(0)
  model = models.deep_mlp(SHAPE, depth=3, width=8, activation='elu',
                          kernel_initializer='he_normal', batch_norm=placement,
                          seed=2)
  optimizer = tf.keras.optimizers.SGD(0.05)
  strategy = tf.distribute.get_strategy()
  trainer = trainer_lib.Trainer(model, optimizer, strategy, global_batch_size=16)
  x = rng.normal(2.0, 3.0, size=(160,) + SHAPE).astype(np.float32)
  y = rng.integers(0, 10, size=160).astype(np.int32)
  batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
  trainer.train_steps(data.Feed(strategy, batches), 10)

  bn = model.get_layer('bn_000')
  # Training moved the moving statistics away from their initial 0 / 1.
  assert np.abs(bn.moving_mean.numpy()).max() > 1e-3
  assert np.abs(bn.moving_variance.numpy() - 1.0).max() > 1e-3

  probe = x[:32]
  inference = model(probe, training=False).numpy()
  np.testing.assert_allclose(inference, manual_forward(model, probe, placement),
                             rtol=1e-4, atol=1e-4)

  # Trainer.evaluate scores exactly the inference outputs.
  labels = y[:32]
  expected_loss = tf.reduce_mean(
      tf.nn.sparse_softmax_cross_entropy_with_logits(labels, inference)).numpy()
  expected_acc = np.mean(inference.argmax(-1) == labels)
  eval_ds = tf.data.Dataset.from_tensor_slices((probe, labels)).batch(8)
  result = trainer.evaluate(strategy.experimental_distribute_dataset(eval_ds))
  assert result['loss'] == pytest.approx(float(expected_loss), rel=1e-5)
  assert result['accuracy'] == pytest.approx(float(expected_acc))
  # Evaluating did not touch the moving statistics.
  mean = bn.moving_mean.numpy().copy()
  trainer.evaluate(strategy.experimental_distribute_dataset(eval_ds))
  np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)
  # training=True normalizes by the batch's statistics (and updates the
  # moving ones): different outputs.
  batch_stats = model(probe, training=True).numpy()
  assert np.abs(inference - batch_stats).max() > 1e-3
  assert np.abs(bn.moving_mean.numpy() - mean).max() > 0
