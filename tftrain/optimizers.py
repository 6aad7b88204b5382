"""Optimizer registry: name -> tf.keras optimizer, with the seed's variants."""

from typing import Callable, Dict

import tensorflow as tf

from tftrain import schedules


def _sgd(lr, c):
  return tf.keras.optimizers.SGD(lr)


class CyclicMomentumSGD(tf.keras.optimizers.SGD):
  """SGD whose momentum follows a schedule of the step (1cycle's momentum).

  The same update as Keras' SGD with momentum, with `momentum_schedule(step)`
  in place of the constant.
  """

  def __init__(self, learning_rate, momentum_schedule, nesterov=False,
               **kwargs):
    super().__init__(learning_rate, momentum=float(momentum_schedule(0)),
                     nesterov=nesterov, **kwargs)
    self.momentum_schedule = momentum_schedule

  def update_step(self, gradient, variable, learning_rate):
    learning_rate = tf.cast(learning_rate, variable.dtype)
    gradient = tf.cast(gradient, variable.dtype)
    m = self.momentums[self._get_variable_index(variable)]
    momentum = tf.cast(self.momentum_schedule(self.iterations), variable.dtype)
    self.assign(m, m * momentum - gradient * learning_rate)
    if self.nesterov:
      self.assign_add(variable, m * momentum - gradient * learning_rate)
    else:
      self.assign_add(variable, m)


def _sgd_momentum(lr, c, nesterov):
  if isinstance(lr, schedules.OneCycle) and c.cycle_momentum:
    return CyclicMomentumSGD(lr, schedules.OneCycleMomentum(
        lr.total_steps, warmup_fraction=lr.warmup_fraction), nesterov=nesterov)
  return tf.keras.optimizers.SGD(lr, momentum=c.momentum, nesterov=nesterov)


def _momentum(lr, c):
  return _sgd_momentum(lr, c, nesterov=False)


def _nesterov(lr, c):
  return _sgd_momentum(lr, c, nesterov=True)


def _adagrad(lr, c):
  return tf.keras.optimizers.Adagrad(lr)


def _rmsprop(lr, c):
  return tf.keras.optimizers.RMSprop(lr, rho=0.9)


def _adam(lr, c):
  return tf.keras.optimizers.Adam(lr, beta_1=c.beta_1, beta_2=c.beta_2)


def _adamw(lr, c):
  return tf.keras.optimizers.AdamW(lr, weight_decay=c.weight_decay,
                                   beta_1=c.beta_1, beta_2=c.beta_2)


def _nadam(lr, c):
  return tf.keras.optimizers.Nadam(lr, beta_1=c.beta_1, beta_2=c.beta_2)


OPTIMIZERS: Dict[str, Callable] = {
    'sgd': _sgd, 'momentum': _momentum, 'nesterov': _nesterov,
    'adagrad': _adagrad, 'rmsprop': _rmsprop, 'adam': _adam, 'adamw': _adamw,
    'nadam': _nadam,
}


def build_optimizer(name: str, learning_rate, config) -> tf.keras.optimizers.Optimizer:
  """Builds optimizer `name` with `learning_rate` (a float or a schedule).

  Args:
    name: one of `OPTIMIZERS`.
    learning_rate: float or `LearningRateSchedule`.
    config: a `Config` (momentum, beta_1, beta_2, weight_decay).

  Raises:
    ValueError: unknown name; the message lists the choices.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f'--optimizer={name}: choose one of '
                     f'{", ".join(OPTIMIZERS)}.')
  optimizer = OPTIMIZERS[name](learning_rate, config)
  if config.mixed_precision == 'mixed_float16':
    optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
  return optimizer
