"""Hand-written LR schedules: (step, expected lr) tables and config round trips."""


import numpy as np
import pytest
import tensorflow as tf

from tftrain import config as config_lib
from tftrain import schedules

TABLES = [
    (schedules.Constant(0.3), [(0, 0.3), (1, 0.3), (10**6, 0.3)]),
    (schedules.ExponentialGrowth(1e-3, 1.005),
     [(0, 1e-3), (1, 1.005e-3), (100, 1e-3 * 1.005**100),
      (1000, 1e-3 * 1.005**1000)]),
    (schedules.ExponentialGrowth(1e-3, 2.0, offset=10),   # starts at step 10
     [(10, 1e-3), (11, 2e-3), (13, 8e-3)]),
    (schedules.ExponentialGrowth.from_range(1e-5, 10.0, 7),  # 1 decade/step
     [(0, 1e-5), (1, 1e-4), (3, 1e-2), (6, 10.0)]),
    (schedules.ExponentialDecay(0.1, decay_steps=100, rate=0.1),
     [(0, 0.1), (50, 0.1 * 0.1**0.5), (100, 0.01), (200, 0.001)]),
    (schedules.PiecewiseConstant([10, 20], [1.0, 0.5, 0.25]),
     [(0, 1.0), (9, 1.0), (10, 0.5), (19, 0.5), (20, 0.25), (10**5, 0.25)]),
    # 1cycle over 101 steps: up 45.45 steps 0.1 -> 1, down to 0.1 at 90.9,
    # then 0.1 -> 0.001 by the last step (100).
    (schedules.OneCycle(1.0, 101, div=10.0, final_div=1000.0,
                        warmup_fraction=0.45),
     [(0, 0.1), (45.45 / 2, 0.55), (45.45, 1.0), (45.45 * 1.5, 0.55),
      (90.9, 0.1), (90.9 + 9.1 / 2, (0.1 + 0.001) / 2), (100, 0.001),
      (150, 0.001)]),
]


@pytest.mark.parametrize('schedule,table', TABLES,
                         ids=[type(s).__name__ for s, _ in TABLES])
def test_table(schedule, table):
  for step, expected in table:
    got = float(schedule(tf.constant(step, tf.float32)))
    assert got == pytest.approx(expected, rel=2e-4), (step, got, expected)


@pytest.mark.parametrize('schedule', [s for s, _ in TABLES],
                         ids=[type(s).__name__ for s, _ in TABLES])
def test_config_round_trip(schedule):
  clone = type(schedule).from_config(schedule.get_config())
  assert clone.get_config() == schedule.get_config()
  for step in (0, 7, 33, 250):
    assert float(clone(step)) == float(schedule(step))
  # Also through Keras' own (de)serialization, as an optimizer stores it.
  config = tf.keras.optimizers.schedules.serialize(schedule)
  restored = tf.keras.optimizers.schedules.deserialize(
      config, custom_objects={type(schedule).__name__: type(schedule)})
  assert restored.get_config() == schedule.get_config()


def test_one_cycle_shape():
  s = schedules.OneCycle(0.5, 1000)
  lrs = np.array([float(s(i)) for i in range(1000)])
  peak = int(np.argmax(lrs))
  assert lrs[peak] == pytest.approx(0.5, rel=1e-3)
  assert 440 <= peak <= 460
  assert np.all(np.diff(lrs[:peak + 1]) > 0)       # linear warm-up
  assert np.all(np.diff(lrs[peak + 1:]) < 0)       # cool-down + annihilation
  assert lrs[0] == pytest.approx(0.05)
  assert lrs[-1] == pytest.approx(0.5 / 1000, rel=1e-3)


def test_exponential_growth_factor_and_range_agree():
  by_range = schedules.ExponentialGrowth.from_range(1e-5, 10.0, 1001)
  by_factor = schedules.ExponentialGrowth(1e-5, by_range.factor)
  assert by_range.factor == pytest.approx(10 ** (6 / 1000))
  for step in (0, 500, 1000):
    assert float(by_range(step)) == pytest.approx(float(by_factor(step)),
                                                  rel=1e-5)
  assert float(by_range(1000)) == pytest.approx(10.0, rel=1e-4)


def test_driven_by_optimizer_step_survives_checkpoint(tmp_path):
  """A resumed optimizer (restored iterations) continues the schedule."""
  schedule = schedules.OneCycle(1.0, 100)
  var = tf.Variable([1.0])
  opt = tf.keras.optimizers.SGD(schedule)
  opt.build([var])
  for _ in range(30):
    opt.apply_gradients([(tf.constant([0.1]), var)])
  path = tf.train.Checkpoint(optimizer=opt, var=var).save(str(tmp_path / 'c'))
  expected = float(opt.learning_rate)
  assert expected == pytest.approx(float(schedule(30)))
  fresh_var = tf.Variable([0.0])
  fresh = tf.keras.optimizers.SGD(schedules.OneCycle(1.0, 100))
  fresh.build([fresh_var])
  assert float(fresh.learning_rate) == pytest.approx(0.1)
  tf.train.Checkpoint(optimizer=fresh, var=fresh_var).restore(path)
  assert int(fresh.iterations) == 30
  assert float(fresh.learning_rate) == pytest.approx(expected)


@pytest.mark.parametrize('name,expected', [
    ('constant', [(0, 0.2), (500, 0.2)]),
    ('exponential', [(0, 0.2), (100 * 10, 0.02)]),     # rate 0.1 per 10 epochs
    ('piecewise', [(0, 0.2), (499, 0.2), (500, 0.02), (1500, 0.002)]),
    ('onecycle', [(0, 0.02), (900, 0.2), (1999, 0.0002)]),
])
def test_build_schedule(name, expected):
  config = config_lib.Config(schedule=name, epochs=20, decay_rate=0.1,
                             decay_epochs=10.0, boundaries_epochs=(5.0, 15.0),
                             piecewise_factors=(1.0, 0.1, 0.01))
  schedule = schedules.build_schedule(config, 0.2, steps_per_epoch=100)
  for step, lr in expected:
    assert float(schedule(step)) == pytest.approx(lr, rel=1e-3), (name, step)


def test_piecewise_rejects_mismatched_lengths():
  with pytest.raises(ValueError, match='len'):
    schedules.PiecewiseConstant([10, 20], [1.0, 0.5])


@pytest.mark.parametrize('step, expected', [
    (0, 0.95), (45, 0.85), (22.5, 0.90), (67.5, 0.90), (90, 0.95),
    (99, 0.95)])
def test_one_cycle_momentum_table(step, expected):
  # 100 steps: momentum falls while the LR warms up (45 steps), rises back
  # while it cools down, then stays at the maximum.
  schedule = schedules.OneCycleMomentum(100)
  assert float(schedule(step)) == pytest.approx(expected, abs=1e-6)
  lr = schedules.OneCycle(1.0, 100)
  assert (float(lr(45)) == pytest.approx(1.0)) and float(lr(0)) < 0.2


def test_cyclic_momentum_sgd_matches_keras_sgd_at_constant_momentum():
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tftrain import optimizers  # pylint: disable=g-import-not-at-top
  for nesterov in (False, True):
    a, b = tf.Variable([1.0, -2.0]), tf.Variable([1.0, -2.0])
    ours = optimizers.CyclicMomentumSGD(0.1, lambda step: 0.9,
                                        nesterov=nesterov)
    keras = tf.keras.optimizers.SGD(0.1, momentum=0.9, nesterov=nesterov)
    for g in ([0.5, 1.0], [-1.0, 0.25], [2.0, 2.0]):
      ours.apply_gradients([(tf.constant(g), a)])
      keras.apply_gradients([(tf.constant(g), b)])
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_onecycle_with_momentum_optimizer_cycles_momentum():
  from tftrain import config as config_lib  # pylint: disable=g-import-not-at-top
  from tftrain import optimizers  # pylint: disable=g-import-not-at-top
  config = config_lib.Config(optimizer='momentum', schedule='onecycle')
  opt = optimizers.build_optimizer(
      'momentum', schedules.build_schedule(config, 0.1, 10), config)
  assert isinstance(opt, optimizers.CyclicMomentumSGD)
  assert float(opt.momentum_schedule(0)) == pytest.approx(0.95)
  plain = optimizers.build_optimizer(
      'momentum', schedules.build_schedule(config.replace(
          cycle_momentum=False), 0.1, 10), config.replace(cycle_momentum=False))
  assert not isinstance(plain, optimizers.CyclicMomentumSGD)
