"""Learning-rate schedules written by hand, driven by the optimizer's step.

Each is a `tf.keras.optimizers.schedules.LearningRateSchedule` with
`get_config`/`from_config`, so it is serialized with the optimizer and, being a
pure function of the optimizer's `iterations`, survives checkpoint/resume.
"""

import math
from typing import Sequence

import tensorflow as tf

_Base = tf.keras.optimizers.schedules.LearningRateSchedule


def _step(step):
  return tf.cast(step, tf.float32)


class Constant(_Base):
  """lr(step) = value."""

  def __init__(self, value: float):
    self.value = float(value)

  def __call__(self, step):
    del step
    return tf.constant(self.value, tf.float32)

  def get_config(self):
    return {'value': self.value}


class ExponentialGrowth(_Base):
  """lr(step) = start * factor ** (step - offset): the LR finder's sweep."""

  def __init__(self, start: float, factor: float, offset: int = 0):
    self.start = float(start)
    self.factor = float(factor)
    self.offset = int(offset)

  @classmethod
  def from_range(cls, start: float, end: float, num_steps: int,
                 offset: int = 0) -> 'ExponentialGrowth':
    """The growth that goes from `start` to `end` in `num_steps` steps."""
    factor = (end / start) ** (1.0 / max(num_steps - 1, 1))
    return cls(start, factor, offset)

  def __call__(self, step):
    n = _step(step) - float(self.offset)
    return self.start * tf.exp(n * math.log(self.factor))

  def get_config(self):
    return {'start': self.start, 'factor': self.factor, 'offset': self.offset}


class ExponentialDecay(_Base):
  """lr(step) = initial * rate ** (step / decay_steps) (smooth)."""

  def __init__(self, initial: float, decay_steps: float, rate: float):
    self.initial = float(initial)
    self.decay_steps = float(decay_steps)
    self.rate = float(rate)

  def __call__(self, step):
    return self.initial * tf.pow(self.rate, _step(step) / self.decay_steps)

  def get_config(self):
    return {'initial': self.initial, 'decay_steps': self.decay_steps,
            'rate': self.rate}


class PiecewiseConstant(_Base):
  """values[i] while boundaries[i-1] <= step < boundaries[i]."""

  def __init__(self, boundaries: Sequence[int], values: Sequence[float]):
    if len(values) != len(boundaries) + 1:
      raise ValueError(f'PiecewiseConstant needs len(values) == '
                       f'len(boundaries) + 1, got {len(values)} and '
                       f'{len(boundaries)}')
    self.boundaries = [int(b) for b in boundaries]
    self.values = [float(v) for v in values]

  def __call__(self, step):
    step = _step(step)
    index = tf.reduce_sum(tf.cast(
        step >= tf.constant(self.boundaries, tf.float32), tf.int32)) \
        if self.boundaries else 0
    return tf.gather(tf.constant(self.values, tf.float32), index)

  def get_config(self):
    return {'boundaries': self.boundaries, 'values': self.values}


class OneCycle(_Base):
  """1cycle: linear warm-up from max/div to max, linear cool-down back, then
  a final linear annihilation to max/final_div over the last steps.

  Phases (fractions of `total_steps`): warm-up `warmup_fraction`, cool-down of
  the same length, annihilation the rest.
  """

  def __init__(self, max_lr: float, total_steps: int, div: float = 10.0,
               final_div: float = 1000.0, warmup_fraction: float = 0.45):
    self.max_lr = float(max_lr)
    self.total_steps = int(total_steps)
    self.div = float(div)
    self.final_div = float(final_div)
    self.warmup_fraction = float(warmup_fraction)

  def __call__(self, step):
    step = _step(step)
    hi, lo, end = self.max_lr, self.max_lr / self.div, self.max_lr / self.final_div
    up = max(self.warmup_fraction * self.total_steps, 1.0)
    down = 2.0 * up
    last = max(float(self.total_steps - 1), down + 1.0)
    warm, cool = _one_cycle_ramp(step, lo, hi, up)
    anneal = lo - (lo - end) * tf.minimum((step - down) / (last - down), 1.0)
    return tf.where(step < up, warm, tf.where(step < down, cool, anneal))

  def get_config(self):
    return {'max_lr': self.max_lr, 'total_steps': self.total_steps,
            'div': self.div, 'final_div': self.final_div,
            'warmup_fraction': self.warmup_fraction}


def _one_cycle_ramp(step, start, peak, up):
  """The two linear 1cycle ramps: start -> peak over [0, up], back by 2*up."""
  warm = start + (peak - start) * step / up
  cool = peak - (peak - start) * (step - up) / up
  return warm, cool


class OneCycleMomentum(_Base):
  """Smith's 1cycle momentum: max -> min while the LR warms up, back to max
  while it cools down, then max through the annihilation (default 0.95 ->
  0.85 -> 0.95), on the same phases as `OneCycle`."""

  def __init__(self, total_steps: int, max_momentum: float = 0.95,
               min_momentum: float = 0.85, warmup_fraction: float = 0.45):
    self.total_steps = int(total_steps)
    self.max_momentum = float(max_momentum)
    self.min_momentum = float(min_momentum)
    self.warmup_fraction = float(warmup_fraction)

  def __call__(self, step):
    step = _step(step)
    hi, lo = self.max_momentum, self.min_momentum
    up = max(self.warmup_fraction * self.total_steps, 1.0)
    down = 2.0 * up
    warm, cool = _one_cycle_ramp(step, hi, lo, up)
    return tf.where(step < up, warm, tf.where(step < down, cool, hi))

  def get_config(self):
    return {'total_steps': self.total_steps, 'max_momentum': self.max_momentum,
            'min_momentum': self.min_momentum,
            'warmup_fraction': self.warmup_fraction}


def build_schedule(config, learning_rate: float, steps_per_epoch: int) -> _Base:
  """The training schedule a `Config` asks for, peaking at `learning_rate`."""
  total = steps_per_epoch * config.epochs
  if config.lr_schedule == 'constant':
    return Constant(learning_rate)
  if config.lr_schedule == 'exponential':
    return ExponentialDecay(learning_rate, config.decay_epochs * steps_per_epoch,
                            config.decay_rate)
  if config.lr_schedule == 'piecewise':
    return PiecewiseConstant(
        [round(b * steps_per_epoch) for b in config.boundaries_epochs],
        [learning_rate * f for f in config.piecewise_factors])
  if config.lr_schedule == 'onecycle':
    return OneCycle(learning_rate, total)
  raise ValueError(f'unknown schedule {config.lr_schedule!r}')
