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
    'adam': (optimizers.Adam, {'beta_1': 0.85, 'beta_2': 0.995}),
    'adamw': (optimizers.AdamW, {'beta_1': 0.85, 'beta_2': 0.995,
                                 'weight_decay': 0.01}),
    'nadam': (optimizers.Nadam, {'beta_1': 0.85, 'beta_2': 0.995}),
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


KERAS_TWIN = {optimizers.Adam: tf.keras.optimizers.Adam,
              optimizers.AdamW: tf.keras.optimizers.AdamW,
              optimizers.Nadam: tf.keras.optimizers.Nadam}


def _train(cls, compile_fn, **kwargs):
  """Weights after 4 steps of `cls` on 3 variables (two dtypes' worth of
  shapes), each step's update compiled by `compile_fn`."""
  variables = [tf.Variable(np.random.RandomState(i).randn(*shape)
                           .astype(np.float32))
               for i, shape in enumerate([(5, 3), (3,), (2, 2, 2)])]
  opt = cls(**{'learning_rate': 0.01, **kwargs})
  opt.build(variables)

  def step(k):
    opt.apply_gradients(zip([tf.sin(v * (k + 1.0)) for v in variables],
                            variables))
  step = compile_fn(step)
  for k in range(4):
    step(tf.constant(float(k)))
  return [v.numpy() for v in variables], opt


@pytest.mark.parametrize('cls,kwargs,compile_fn', [
    (optimizers.Adam, {}, 'function'), (optimizers.Adam, {'amsgrad': True}, 'xla'),
    (optimizers.AdamW, {'weight_decay': 0.01}, 'eager'),
    (optimizers.Nadam, {}, 'function'), (optimizers.Nadam, {}, 'xla')])
def test_step_scalars_once_give_keras_updates_to_the_bit(cls, kwargs,
                                                         compile_fn):
  compile_fn = {'eager': lambda f: f, 'function': tf.function,
                'xla': lambda f: tf.function(f, jit_compile=True)}[compile_fn]
  ours, _ = _train(cls, compile_fn, **kwargs)
  keras, _ = _train(KERAS_TWIN[cls], compile_fn, **kwargs)
  initial = _train(cls, compile_fn, learning_rate=0.0, **kwargs)[0]
  for a, b, start in zip(ours, keras, initial):
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - start).min() > 1e-4     # every weight moved


@pytest.mark.parametrize('cls', [optimizers.Adam, optimizers.Nadam])
def test_step_scalars_once_cut_the_graph(cls):
  """The per-step scalars are computed once, not once per variable: the
  update of 20 variables has far fewer ops than Keras's."""
  def ops_of(opt_cls):
    variables = [tf.Variable(tf.ones([4])) for _ in range(20)]
    opt = opt_cls(learning_rate=0.01)
    opt.build(variables)
    fn = tf.function(lambda: opt.apply_gradients(
        zip([tf.ones([4])] * 20, variables)))
    return len(fn.get_concrete_function().graph.get_operations())
  ours, keras = ops_of(cls), ops_of(KERAS_TWIN[cls])
  assert ours < 0.7 * keras, (ours, keras)   # measured: Adam 0.60, Nadam 0.4


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
  with pytest.raises(errors.ConfigError, match="optimizer='adamax'"):
    config_lib.Config(optimizer='adamax')


def test_mixed_float16_wraps_in_a_loss_scale_optimizer():
  opt = optimizers.build_optimizer(
      'adam', 1e-3, CONFIG.replace(mixed_precision='mixed_float16'))
  assert isinstance(opt, tf.keras.mixed_precision.LossScaleOptimizer)
  assert isinstance(opt.inner_optimizer, tf.keras.optimizers.Adam)
