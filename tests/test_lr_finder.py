"""LR finder: state restored exactly, suggestion rules, outputs, launchers."""

import csv
import dataclasses
import json
import math
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from tftrain import checkup
from tftrain import config as config_lib
from tftrain import data
from tftrain import experiment
from tftrain import loop
from tftrain import lr_finder
from tftrain import schedules
from tests import testing


def small_config(data_dir, **overrides):
  values = dict(dataset='mnist', data_dir=data_dir, validation_size=100,
                model='mlp', hidden=(16,), optimizer='adam',
                learning_rate='auto', batch_size=20, eval_batch_size=100,
                epochs=1, patience=0, steps_per_loop=4, log_every_steps=1,
                progress=False, trace_graph=False, seed=5,
                lr_find_start=1e-4, lr_find_end=1e3)
  values.update(overrides)
  return config_lib.Config(**values)


def seed_all(seed):
  """Seeds Python, NumPy, TF's global generator and Keras' global generator."""
  tf.keras.utils.set_random_seed(seed)    # Python, NumPy, Keras (recreated)
  tf.random.get_global_generator().reset_from_seed(seed)


def draws():
  """One draw from every random-number generator the finder restores."""
  return (random.random(), float(np.random.rand()),
          float(tf.random.get_global_generator().normal([])),
          float(tf.keras.random.normal([])))


@pytest.fixture(scope='module')
def swept(tiny_mnist_data_dir, tmp_path_factory):
  """An Experiment trained a few steps, its state before, and a finder run."""
  workdir = str(tmp_path_factory.mktemp('finder'))
  seed_all(11)     # whatever other tests seeded: the same sweep every time
  exp = experiment.build_experiment(small_config(tiny_mnist_data_dir), workdir)
  # Train a little first: non-zero slots and a non-zero step counter.
  batches = data.train_batches(exp.datasets['train'], 20, 1, 0)
  exp.trainer.train_steps(data.Feed(exp.strategy, batches), 7)
  opt = exp.trainer.optimizer
  before = {
      'model': [v.numpy() for v in exp.trainer.model.variables],
      'optimizer': {v.path: v.numpy() for v in opt.variables},
      'iterations': int(opt.iterations.numpy()),
      'schedule': opt._learning_rate,  # pylint: disable=protected-access
      'lrs': [exp.trainer.learning_rate_at(s) for s in (0, 7, 8, 100)],
  }
  seed_all(11)
  draws()                   # creates Keras' global generator before the sweep
  expected_draws = draws()
  seed_all(11)
  draws()
  # The sweep consumes every generator between its calls (as data
  # augmentation or dropout would): the finder must put them back.
  consumed = []

  def should_stop():
    consumed.append(draws())
    return False

  outdir = os.path.join(workdir, 'lr_finder')
  result = lr_finder.find(exp, outdir, should_stop=should_stop)
  after_draws = draws()
  return dict(exp=exp, before=before, result=result, outdir=outdir,
              expected_draws=expected_draws, draws=after_draws,
              consumed=consumed)


def test_restores_weights_slots_step_schedule_and_rng(swept):
  exp, before, result = swept['exp'], swept['before'], swept['result']
  opt = exp.trainer.optimizer
  assert len(result.lrs) > 5                      # it really trained
  # The step counter: 7 before the sweep, 7 + len(lrs) during it, 7 after.
  assert before['iterations'] == 7
  assert int(opt.iterations.numpy()) == 7
  # Weights: every model variable (kernels, biases) as before, and the sweep
  # did change them (else this would prove nothing).
  variables = exp.trainer.model.variables
  assert len(variables) == len(before['model']) == 4    # Dense(16), logits
  for got, want in zip(variables, before['model']):
    np.testing.assert_array_equal(got.numpy(), want, err_msg=got.path)
  # Optimizer slots (Adam's momentum and velocity) and iterations.
  slots = {v.path: v.numpy() for v in opt.variables}
  assert slots.keys() == before['optimizer'].keys()
  assert sum('momentum' in k for k in slots) == 4
  assert sum('velocity' in k for k in slots) == 4
  for path, value in before['optimizer'].items():
    np.testing.assert_array_equal(slots[path], value, err_msg=path)
    if 'momentum' in path or 'velocity' in path:
      assert np.abs(value).sum() > 0              # slots were non-trivial
  # The schedule: until the finder's suggestion is set, --learning_rate=auto
  # holds a 1cycle over the run's 25 steps peaking at 1e-3; the sweep's
  # exponential growth is gone.
  placeholder = schedules.OneCycle(1e-3, 25)
  expected_lrs = [float(placeholder(s)) for s in (0, 7, 8, 100)]
  assert before['lrs'] == pytest.approx(expected_lrs, rel=1e-6)
  assert [exp.trainer.learning_rate_at(s) for s in (0, 7, 8, 100)] == (
      pytest.approx(expected_lrs, rel=1e-6))
  assert opt._learning_rate is before['schedule']  # pylint: disable=protected-access
  # The sweep ran plain steps only: no step summaries, no observations.
  assert not os.path.exists(os.path.join(exp.workdir, checkup.OBSERVATIONS))
  exp.writers['train'].flush()
  assert testing.event_files(os.path.join(exp.workdir, 'train'))
  assert testing.read_events(os.path.join(exp.workdir, 'train')) == []
  # Random-number generators: the sweep drew from each of them between its
  # calls, and afterwards each yields the draws it would have yielded.
  assert len(swept['consumed']) >= 2
  assert swept['consumed'][0] == swept['expected_draws']
  assert swept['draws'] == swept['expected_draws']


def test_sweep_is_exponential_within_one_epoch_and_stops(swept):
  exp, result = swept['exp'], swept['result']
  lrs, losses = result.lrs, result.losses
  # (600 - 100 validation) / 20 = 25 steps per epoch; 1e-4 .. 1e3 over them.
  assert exp.steps_per_epoch == 25
  factor = (1e3 / 1e-4) ** (1 / 24)
  np.testing.assert_allclose(lrs, 1e-4 * factor ** np.arange(len(lrs)),
                             rtol=1e-5)
  # Adam at LRs up to 1000 blows up long before the end of the sweep
  # (measured: at step 14 of 25, lr ~ 0.6, smoothed loss ~ 9x its minimum);
  # every loss of that sweep is finite, so it stops on the smoothed-loss rule.
  assert result.stop_reason == 'diverged'
  assert 8 <= len(lrs) < 25
  assert np.isfinite(losses).all()
  # 25 steps over 7 decades: the moving average would span 0.22 decade =
  # 0.75 step; it is clamped to a 2-step window, beta = 1 - 1/2.
  beta = 0.5
  assert result.settings['beta'] == beta
  # The bias-corrected EMA, by hand: avg_i = b avg_{i-1} + (1 - b) loss_i,
  # smoothed_i = avg_i / (1 - b^i).
  expected, avg = [], 0.0
  for i, loss in enumerate(losses, start=1):
    avg = beta * avg + (1 - beta) * loss
    expected.append(avg / (1 - beta ** i))
  expected = np.array(expected)
  np.testing.assert_allclose(result.smoothed, expected, rtol=1e-12)
  # It stopped at the first step whose smoothed loss exceeded 4x the
  # minimum so far, and not before.
  running_min = np.minimum.accumulate(expected)
  assert expected[-1] > 4.0 * running_min[-2]
  assert (expected[1:-1] <= 4.0 * running_min[1:-1]).all()
  assert result.min_loss == pytest.approx(expected.min())
  assert result.min_lr == pytest.approx(lrs[np.argmin(expected)])
  assert set(result.suggestions) == set(lr_finder.SUGGESTIONS)
  assert result.suggestions['divergence'] == pytest.approx(lrs[-1] / 10)
  assert result.suggestions['minimum'] == pytest.approx(
      lrs[np.argmin(expected)] / 10)
  # --schedule=auto with --learning_rate=auto trains 1cycle: the suggestion
  # is its peak, the LR at the smoothed-loss minimum.
  assert result.schedule == 'onecycle'
  assert result.suggestion == pytest.approx(lrs[np.argmin(expected)])
  constant = dataclasses.replace(result, schedule='constant')
  assert constant.suggestion == pytest.approx(lrs[-1] / 10)


def test_writes_png_csv_json_and_summaries(swept):
  result, outdir = swept['result'], swept['outdir']
  n = len(result.lrs)
  with open(os.path.join(outdir, 'lr_finder.png'), 'rb') as f:
    png = f.read()
  assert png[:8] == b'\x89PNG\r\n\x1a\n'
  image = tf.image.decode_png(png)
  assert image.shape[0] >= 400 and image.shape[1] >= 600
  with open(os.path.join(outdir, 'lr_finder.csv')) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['step', 'lr', 'loss', 'smoothed_loss']
  assert len(rows) == n
  assert [int(r['step']) for r in rows] == list(range(n))
  np.testing.assert_allclose([float(r['lr']) for r in rows], result.lrs)
  with open(os.path.join(outdir, 'lr_finder.json')) as f:
    summary = json.load(f)
  assert summary == json.loads(json.dumps(result.summary()))
  assert summary['steps'] == n
  assert summary['suggestion'] == pytest.approx(result.suggestion)
  scalars = testing.read_scalars(outdir)
  images = set(testing.read_images(outdir))
  assert [s for s, _ in scalars['lr_finder/lr']] == list(range(n))
  np.testing.assert_allclose([v for _, v in scalars['lr_finder/lr']],
                             result.lrs, rtol=1e-6)
  finite = int(np.isfinite(result.losses).sum())
  assert len(scalars['lr_finder/loss']) == finite
  assert images == {'lr_finder/plot'}


def synthetic_curve(n=600):
  """Loss falls (steepest at lr=1e-2), is lowest near 0.3, explodes after."""
  lrs = np.logspace(-5, 1, n)
  x = np.log10(lrs)
  loss = 2.5 - 2.0 / (1.0 + np.exp(-3.0 * (x + 2.0))) + 0.05 * np.exp(
      4.0 * (x + 0.5))
  return lrs, loss


def test_suggestion_rules_on_a_synthetic_curve():
  lrs, loss = synthetic_curve()
  i_min = int(np.argmin(loss))
  assert lr_finder.suggest_minimum(lrs, loss) == pytest.approx(lrs[i_min] / 10)
  steepest = lr_finder.suggest_steepest(lrs, loss)
  assert abs(np.log10(steepest) - (-2.0)) < 0.05     # the inflection point
  valley = lr_finder.suggest_valley(lrs, loss)
  # fastai's valley: halfway along the longest descent, which here runs from
  # the trimmed start (first 10% dropped) to the minimum.
  begin = len(lrs) // 10
  halfway = (np.log10(lrs[begin]) + np.log10(lrs[i_min])) / 2
  assert abs(np.log10(valley) - halfway) < 0.02
  assert lr_finder.suggest_divergence(lrs[:500], 'diverged') == pytest.approx(
      lrs[499] / 10)
  assert lr_finder.suggest_divergence(lrs, 'end_lr') is None
  # Capped at the minimum's LR: a blow-up far above it (an adaptive
  # optimizer's long rise) does not drag the pick past the minimum.
  assert lr_finder.suggest_divergence(lrs, 'diverged', smoothed=loss) == \
      pytest.approx(lrs[i_min])
  assert lr_finder.suggest_divergence(lrs[:500], 'diverged',
                                      smoothed=loss[:500]) == pytest.approx(
                                          lrs[499] / 10)


def test_smoothing_is_098_for_slow_sweeps_and_spans_a_fifth_of_a_decade():
  config = config_lib.Config()
  one_epoch_mnist = math.exp(math.log(1e6) / 1717)     # 1718 steps, 6 decades
  assert lr_finder.smoothing(config, one_epoch_mnist) == 0.98
  fast = math.exp(math.log(1e6) / 214)                  # batch 256
  beta = lr_finder.smoothing(config, fast)
  window = 1 / (1 - beta)                               # steps
  assert window * math.log10(fast) == pytest.approx(0.22)
  assert lr_finder.smoothing(config.replace(lr_find_beta=0.9), fast) == 0.9


def test_smoothing_is_bias_corrected():
  np.testing.assert_allclose(lr_finder.smooth([2.0] * 50, 0.98), 2.0)
  np.testing.assert_allclose(lr_finder.smooth([3.0, 1.0], 0.0), [3.0, 1.0])
  # Second value: (0.02*0.98*a + 0.02*b) / (1 - 0.98**2).
  a, b = 3.0, 1.0
  assert lr_finder.smooth([a, b], 0.98)[1] == pytest.approx(
      (0.98 * 0.02 * a + 0.02 * b) / (1 - 0.98 ** 2))


def test_default_falls_back_when_the_sweep_never_blew_up():
  lrs, loss = synthetic_curve(200)
  result = lr_finder.Result(
      lrs=lrs, losses=loss, smoothed=loss,
      suggestions=lr_finder.suggestions_for(lrs, loss, 'end_lr'),
      default='divergence', stop_reason='end_lr', min_lr=1.0, min_loss=0.5)
  assert result.suggestions['divergence'] is None
  assert result.suggestion == result.suggestions['minimum']


def test_auto_learning_rate_trains_from_restored_weights(tiny_mnist_data_dir,
                                                         tmp_path):
  workdir = str(tmp_path / 'run')
  config = small_config(tiny_mnist_data_dir, lr_find_end=10.0,
                        optimizer='momentum', schedule='onecycle',
                        eval_test_every_epoch=True)
  result = loop.train_and_evaluate(config, workdir)
  found = result['lr_finder']
  assert result['learning_rate'] == pytest.approx(found['suggestion'])
  assert found['default'] == 'divergence'
  # 1cycle peaks at the LR of the smoothed-loss minimum, not at 'divergence'.
  assert found['suggestion'] == found['onecycle_max'] == pytest.approx(
      found['lr_at_min_smoothed_loss'])
  assert found['suggestions']['minimum'] == pytest.approx(
      found['onecycle_max'] / 10)
  assert os.path.exists(os.path.join(workdir, 'lr_finder', 'lr_finder.png'))
  # The training summaries start at the restored step 0, not after the sweep.
  scalars = testing.read_scalars(os.path.join(workdir, 'train'))
  steps = [s for s, _ in scalars['learning_rate']]
  assert min(steps) <= 1 and max(steps) <= 25
  first_lr = dict(scalars['learning_rate'])[min(steps)]
  one_cycle = schedules.OneCycle(found['suggestion'], (600 - 100) // 20)
  # Tagged at step s: the LR step s trained with (iteration s - 1).
  assert first_lr == pytest.approx(float(one_cycle(min(steps) - 1)), rel=1e-4)
  assert np.isfinite(result['test_loss'])
  # eval_test_every_epoch: the last epoch's test metrics are the final ones
  # (one epoch, so the best weights are that epoch's).
  assert result['history'][-1]['test_accuracy'] == pytest.approx(
      result['test_accuracy'])


def test_launcher_prints_suggestions_and_paths(tiny_mnist_data_dir, tmp_path,
                                               run_launcher):
  workdir = str(tmp_path / 'find')
  proc = run_launcher('launch.lr_find', f'--data_dir={tiny_mnist_data_dir}',
                      f'--workdir={workdir}', '--model=deep_mlp', '--depth=3',
                      '--width=16', '--validation_size=100', '--batch_size=20',
                      '--lr_suggestion=valley', timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = proc.stdout
  for name in lr_finder.SUGGESTIONS:
    assert f'  {name}' in out
  assert '<- default' in out.split('valley', 1)[1].splitlines()[0]
  png = os.path.join(workdir, 'lr_finder', 'lr_finder.png')
  assert f'png: {png}' in out
  assert os.path.exists(png)
  with open(os.path.join(workdir, 'lr_finder', 'lr_finder.json')) as f:
    assert json.load(f)['default'] == 'valley'


def test_auto_learning_rate_with_op_determinism(tiny_mnist_data_dir,
                                                run_launcher, tmp_path):
  """`--deterministic` with the LR finder: op determinism forbids creating
  TF's global generator, which the sweep's state restore used to ask for
  (a fresh process has none). Two runs give the same pick and results."""
  results = []
  for name in ('a', 'b'):
    workdir = str(tmp_path / name)
    proc = run_launcher(
        'launch.mnist', '--deterministic', '--learning_rate=auto',
        f'--data_dir={tiny_mnist_data_dir}', f'--workdir={workdir}',
        '--validation_size=100', '--hidden=16', '--batch_size=20',
        '--epochs=1', '--lr_find_start=1e-4', '--lr_find_end=10',
        '--progress=false', timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(workdir, 'metrics.json')) as f:
      results.append(json.load(f))
  first, second = results
  assert first['lr_finder']['suggestion'] > 0
  assert first['learning_rate'] == first['lr_finder']['suggestion']
  for key in ('learning_rate', 'test_loss', 'test_accuracy'):
    assert first[key] == second[key], key
