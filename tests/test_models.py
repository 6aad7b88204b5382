"""Model builders: per-activation initializers, layer names and order."""

import numpy as np
import pytest
import tensorflow as tf

from tftrain import config as config_lib
from tftrain import models


def dense_layers(model):
  """The Dense layers in depth order (hidden layers, then `logits`)."""
  return [l for l in model.layers if isinstance(l, tf.keras.layers.Dense)]


@pytest.mark.parametrize('activation, expected', [
    ('sigmoid', 'glorot_uniform'), ('tanh', 'glorot_uniform'),
    ('relu', 'he_normal'), ('leaky_relu', 'he_normal'), ('elu', 'he_normal'),
    ('gelu', 'he_normal'), ('swish', 'he_normal'), ('selu', 'lecun_normal')])
def test_default_initializer_per_activation(activation, expected):
  assert models.default_initializer(activation) == expected


def test_every_configured_activation_has_a_default():
  assert set(config_lib.ACTIVATIONS) == set(models.DEFAULT_INITIALIZER)


def test_unknown_activation_is_named_in_the_error():
  with pytest.raises(ValueError, match="'softplus'"):
    models.default_initializer('softplus')


# First Dense layer: fan_in 784, fan_out 64; the std tells the initializers
# apart: LeCun sqrt(1/784)=0.0357, Glorot sqrt(2/848)=0.0486, He sqrt(2/784)=0.0505.
@pytest.mark.parametrize('activation, initializer, expected_std', [
    ('selu', None, np.sqrt(1 / 784)),
    ('sigmoid', None, np.sqrt(2 / (784 + 64))),
    ('relu', None, np.sqrt(2 / 784)),
    ('selu', 'he_normal', np.sqrt(2 / 784)),      # the flag overrides
    ('sigmoid', 'lecun_normal', np.sqrt(1 / 784)),
])
def test_kernel_std_follows_the_initializer(activation, initializer,
                                            expected_std):
  model = models.deep_mlp((28, 28, 1), depth=2, width=64,
                          activation=activation,
                          kernel_initializer=initializer, seed=0)
  kernel = model.get_layer('dense_000').kernel.numpy()
  assert kernel.shape == (784, 64)
  assert kernel.std() == pytest.approx(expected_std, rel=0.04)
  assert abs(kernel.mean()) < 0.1 * expected_std


def test_layer_names_sort_by_depth_and_activation_is_applied():
  model = models.deep_mlp((4, 4, 1), depth=12, width=8, activation='tanh',
                          seed=1)
  dense = dense_layers(model)
  names = [l.name for l in dense]
  assert names == [f'dense_{i:03d}' for i in range(12)] + ['logits']
  assert sorted(names[:-1]) == names[:-1]        # TensorBoard order == depth
  acts = [l.name for l in model.layers if l.name.startswith('act_')]
  assert acts == [f'act_{i:03d}' for i in range(12)]
  x = tf.random.normal([5, 4, 4, 1], seed=2) * 100.0
  y = model.get_layer('act_011')(model.get_layer('dense_011')(
      tf.random.normal([5, 8]) * 100.0))
  assert np.all(np.abs(y.numpy()) <= 1.0)        # tanh bounds
  logits = model(x)
  assert logits.shape == (5, 10) and logits.dtype == tf.float32
  assert model.get_layer('logits').kernel.shape == (8, 10)


@pytest.mark.parametrize('activation', config_lib.ACTIVATIONS)
def test_every_activation_builds_finite_logits(activation):
  model = models.deep_mlp((4, 4, 1), depth=3, width=6, activation=activation,
                          seed=0)
  out = model(tf.ones([2, 4, 4, 1]))
  assert out.shape == (2, 10)
  assert np.all(np.isfinite(out.numpy()))


def test_selu_standardizes_inputs_by_default_others_do_not():
  assert config_lib.Config(activation='selu').standardize_inputs
  assert not config_lib.Config(activation='relu').standardize_inputs
  assert not config_lib.Config(activation='selu',
                               standardize=False).standardize_inputs
  assert config_lib.Config(activation='sigmoid',
                           standardize=True).standardize_inputs


def test_build_model_uses_depth_width_and_initializer():
  config = config_lib.Config(model='deep_mlp', depth=7, width=9,
                             activation='elu', kernel_initializer='he_uniform')
  model = models.build_model(config, (4, 4, 1), 10)
  dense = dense_layers(model)
  assert len(dense) == 8
  assert all(l.kernel.shape[-1] == 9 for l in dense[:-1])
  assert type(dense[0].kernel_initializer).__name__ == 'HeUniform'
  assert model.get_layer('act_000').activation.__name__ == 'elu'


def test_cnn_layers_and_every_weighted_layer_observed():
  model = models.cnn((8, 8, 3), filters=(4, 8), seed=0)
  assert model(tf.zeros([2, 8, 8, 3])).shape == (2, 10)
  names = [l.name for l in models.weighted_layers(model)]
  assert names == ['conv_00', 'bn_00', 'conv_01', 'bn_01', 'conv_10', 'bn_10',
                   'conv_11', 'bn_11', 'logits']
  assert [l.name for l in model.layers if l.name.startswith('act_')] == [
      'act_00', 'act_01', 'act_10', 'act_11']


def test_weighted_layers_nested_frozen_and_weightless():
  inner = tf.keras.Sequential([tf.keras.layers.Dense(4, name='a'),
                               tf.keras.layers.Dense(3, name='b')],
                              name='block')
  inputs = tf.keras.Input((5,))
  x = tf.keras.layers.Dense(6, name='stem')(inputs)
  x = tf.keras.layers.Dropout(0.1, name='drop')(x)      # no weights
  x = inner(x)
  frozen = tf.keras.layers.Dense(3, name='frozen')
  frozen.trainable = False
  x = frozen(x)
  outputs = tf.keras.layers.Dense(2, name='head')(x)
  model = tf.keras.Model(inputs, outputs, name='user')
  layers = models.weighted_layers(model)
  assert [l.name for l in layers] == ['stem', 'block/a', 'block/b', 'head']
  assert all(len(l.indices) == 2 and l.kernel is not None for l in layers)


def test_has_convolutions_finds_nested_and_user_conv_layers():
  assert models.has_convolutions(models.cnn((8, 8, 3), filters=(4,), seed=0))
  assert not models.has_convolutions(models.mlp(seed=0))
  assert not models.has_convolutions(models.deep_mlp((4, 4, 1), depth=2,
                                                     width=3))
  inner = tf.keras.Sequential([tf.keras.layers.DepthwiseConv2D(3)],
                              name='block')
  inputs = tf.keras.Input((6, 6, 2))
  model = tf.keras.Model(inputs, tf.keras.layers.Flatten()(inner(inputs)))
  assert models.has_convolutions(model)

  class MyConv(tf.keras.layers.Layer):     # a user's own conv layer
    def call(self, x):
      return x
  assert models.has_convolutions(tf.keras.Sequential(
      [tf.keras.Input((3,)), MyConv()]))
