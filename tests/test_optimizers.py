"""tftrain.optimizers: every registered name builds the right optimizer and steps."""

import numpy as np
import pytest
import tensorflow as tf

from tftrain import config as config_lib
from tftrain import errors
from tftrain import optimizers
from tftrain import schedules

CONFIG = config_lib.Config(momentum=0.8, beta_1=0.85, beta_2=0.995,
                           weight_decay=0.01)

EXPECTED = {   # name: (class, {attribute: value})
    'sgd': (tf.keras.optimizers.SGD, {'momentum': 0.0, 'nesterov': False}),
    'momentum': (tf.keras.optimizers.SGD, {'momentum': 0.8, 'nesterov': False}),
    'nesterov': (tf.keras.optimizers.SGD, {'momentum': 0.8, 'nesterov': True}),
    'adagrad': (tf.keras.optimizers.Adagrad, {}),
    'rmsprop': (tf.keras.optimizers.RMSprop, {'rho': 0.9}),
    'adam': (tf.keras.optimizers.Adam, {'beta_1': 0.85, 'beta_2': 0.995}),
    'adamw': (tf.keras.optimizers.AdamW, {'beta_1': 0.85, 'beta_2': 0.995,
                                          'weight_decay': 0.01}),
    'nadam': (tf.keras.optimizers.Nadam, {'beta_1': 0.85, 'beta_2': 0.995}),
}


def test_registry_matches_the_flag_choices():
  assert tuple(optimizers.OPTIMIZERS) == config_lib.OPTIMIZERS
  assert set(EXPECTED) == set(optimizers.OPTIMIZERS)


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_builds_with_config_values_and_a_step_moves_weights(name):
  cls, attributes = EXPECTED[name]
  opt = optimizers.build_optimizer(name, 0.1, CONFIG)
  assert type(opt) is cls  # pylint: disable=unidiomatic-typecheck
  config = opt.get_config()
  assert config['learning_rate'] == pytest.approx(0.1)
  for key, value in attributes.items():
    assert config[key] == pytest.approx(value), key
  var = tf.Variable([1.0, -2.0, 3.0])
  grad = tf.constant([0.5, -1.0, 0.0])
  opt.apply_gradients([(grad, var)])
  after = var.numpy()
  # Each optimizer moves against the gradient; a zero gradient moves nothing
  # (except AdamW's decoupled weight decay, which shrinks the weight).
  assert after[0] < 1.0 and after[1] > -2.0
  if name == 'adamw':
    assert after[2] == pytest.approx(3.0 * (1 - 0.1 * 0.01))
  else:
    assert after[2] == pytest.approx(3.0)
  if name == 'sgd':
    np.testing.assert_allclose(after, [0.95, -1.9, 3.0], rtol=1e-6)


def test_accepts_a_schedule():
  schedule = schedules.build_schedule(
      CONFIG.replace(schedule='exponential', decay_rate=0.1, decay_epochs=1.0),
      0.1, steps_per_epoch=10)
  opt = optimizers.build_optimizer('nadam', schedule, CONFIG)
  var = tf.Variable([1.0])
  for _ in range(10):
    opt.apply_gradients([(tf.constant([1.0]), var)])
  assert float(opt.learning_rate) == pytest.approx(0.01, rel=1e-4)


def test_unknown_name_is_one_line_listing_the_choices():
  with pytest.raises(ValueError) as info:
    optimizers.build_optimizer('adamax', 0.1, CONFIG)
  message = str(info.value)
  assert '\n' not in message and 'adamax' in message
  for name in optimizers.OPTIMIZERS:
    assert name in message


def test_config_rejects_an_unknown_optimizer_naming_the_flag():
  with pytest.raises(errors.ConfigError, match='--optimizer=adamax'):
    config_lib.Config(optimizer='adamax')


def test_mixed_float16_wraps_in_a_loss_scale_optimizer():
  opt = optimizers.build_optimizer(
      'adam', 1e-3, CONFIG.replace(mixed_precision='mixed_float16'))
  assert isinstance(opt, tf.keras.mixed_precision.LossScaleOptimizer)
  assert isinstance(opt.inner_optimizer, tf.keras.optimizers.Adam)
