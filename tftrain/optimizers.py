"""Optimizer registry: name -> tf.keras optimizer, with the seed's variants."""

from typing import Callable, Dict

from keras import ops
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


class _StepScalars:
  """Mixin: an `update_step`'s scalars (bias corrections, momentum schedule)
  computed once per step instead of once per variable.

  Keras's Adam and Nadam recompute them for every variable: a 100-layer MLP's
  observed step had 13,352 Nadam ops for 202 variables (66 each) of 18,792,
  which tracing and the first call's graph optimization pay for (17 s and
  11 s here). The cache lives for one `_backend_update_step` (one apply: the
  iterations and Nadam's u-product do not change within it), so its tensors
  are in the graph (or control-flow branch) that uses them.
  """

  _step_cache = None

  def _backend_update_step(self, grads, trainable_variables, learning_rate):
    self._step_cache = {}
    try:
      super()._backend_update_step(grads, trainable_variables, learning_rate)
    finally:
      self._step_cache = None

  def _step_scalars(self, dtype, compute):
    """`compute()` once per step and dtype (every call outside an apply)."""
    if self._step_cache is None:
      return compute()
    if dtype not in self._step_cache:
      self._step_cache[dtype] = compute()
    return self._step_cache[dtype]


class Adam(_StepScalars, tf.keras.optimizers.Adam):
  """Keras's Adam, the same update to the bit (`_StepScalars`)."""

  def update_step(self, gradient, variable, learning_rate):
    dtype = variable.dtype

    def scalars():
      local_step = ops.cast(self.iterations + 1, dtype)
      beta_1_power = ops.power(ops.cast(self.beta_1, dtype), local_step)
      beta_2_power = ops.power(ops.cast(self.beta_2, dtype), local_step)
      lr = ops.cast(learning_rate, dtype)
      return lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    alpha = self._step_scalars(dtype, scalars)
    gradient = ops.cast(gradient, dtype)
    m = self._momentums[self._get_variable_index(variable)]
    v = self._velocities[self._get_variable_index(variable)]
    self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
    self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v),
                                    1 - self.beta_2))
    if self.amsgrad:
      v_hat = self._velocity_hats[self._get_variable_index(variable)]
      self.assign(v_hat, ops.maximum(v_hat, v))
      v = v_hat
    self.assign_sub(variable, ops.divide(ops.multiply(m, alpha),
                                         ops.add(ops.sqrt(v), self.epsilon)))


class AdamW(_StepScalars, tf.keras.optimizers.AdamW):
  """Keras's AdamW (its decoupled weight decay, then Adam's step, `Adam`)."""

  update_step = Adam.update_step


class Nadam(_StepScalars, tf.keras.optimizers.Nadam):
  """Keras's Nadam, the same update to the bit (`_StepScalars`)."""

  def update_step(self, gradient, variable, learning_rate):
    dtype = variable.dtype

    def scalars():
      lr = ops.cast(learning_rate, dtype)
      local_step = ops.cast(self.iterations + 1, dtype)
      next_step = ops.cast(self.iterations + 2, dtype)
      decay = ops.cast(0.96, dtype)
      beta_1 = ops.cast(self.beta_1, dtype)
      beta_2 = ops.cast(self.beta_2, dtype)
      u_t = beta_1 * (1.0 - 0.5 * (ops.power(decay, local_step)))
      u_t_1 = beta_1 * (1.0 - 0.5 * (ops.power(decay, next_step)))
      u_product_t = ops.cast(self._u_product, dtype)
      u_product_t_1 = u_product_t * u_t_1
      beta_2_power = ops.power(beta_2, local_step)
      return (lr, u_t_1, 1 - u_product_t_1, 1 - u_t, 1 - u_product_t,
              1 - beta_1, 1 - beta_2, 1 - beta_2_power)
    (lr, u_t_1, one_minus_u_product_t_1, one_minus_u_t, one_minus_u_product_t,
     one_minus_beta_1, one_minus_beta_2, one_minus_beta_2_power) = (
         self._step_scalars(dtype, scalars))
    gradient = ops.cast(gradient, dtype)
    m = self._momentums[self._get_variable_index(variable)]
    v = self._velocities[self._get_variable_index(variable)]
    self.assign_add(m, ops.multiply(ops.subtract(gradient, m),
                                    one_minus_beta_1))
    self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v),
                                    one_minus_beta_2))
    m_hat = ops.add(
        ops.divide(ops.multiply(u_t_1, m), one_minus_u_product_t_1),
        ops.divide(ops.multiply(one_minus_u_t, gradient),
                   one_minus_u_product_t))
    v_hat = ops.divide(v, one_minus_beta_2_power)
    self.assign_sub(variable, ops.divide(ops.multiply(m_hat, lr),
                                         ops.add(ops.sqrt(v_hat),
                                                 self.epsilon)))


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
  return Adam(lr, beta_1=c.beta_1, beta_2=c.beta_2)


def _adamw(lr, c):
  return AdamW(lr, weight_decay=c.weight_decay, beta_1=c.beta_1,
               beta_2=c.beta_2)


def _nadam(lr, c):
  return Nadam(lr, beta_1=c.beta_1, beta_2=c.beta_2)


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
