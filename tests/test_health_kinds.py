"""The model/data/budget detectors: each fires on its case, none on a healthy run.

Table tests on synthetic records (the `health.analyze` input): one row per
kind, each a healthy run with one thing changed.
"""

import copy

import pytest

from tftrain import health
from tests.test_health import healthy_run


def facts(**changes):
  """Model facts of a healthy MLP on [0, 1] inputs (as checkup records)."""
  base = {'output_layer': 'logits', 'output_activation': None,
          'output_min': -7.5, 'output_max': 9.1, 'output_row_sum_error': 4.2,
          'input_abs_max': 1.0, 'input_mean': 0.13, 'input_std': 0.31,
          'trainable_variables': 6, 'weighted_layers': 3, 'frozen_layers': [],
          'linear_pairs': [], 'dropout': 0.0, 'batch_size': 32,
          'train_examples': 8000}
  return {**base, **changes}


def run_with(facts_changes=None, total_steps=750, history=None, stats=None):
  run = healthy_run()
  run['model_facts'] = facts(**(facts_changes or {}))
  run['total_steps'] = total_steps
  if history is not None:
    run['history'] = history
  if stats is not None:
    run['activation_stats'] = stats
  return run


def epochs(rows):
  """History records from (train_acc, val_acc, train_loss[, val_loss]) per
  epoch; val_loss defaults to the train loss."""
  return [{'epoch': i + 1, 'accuracy': r[0], 'val_accuracy': r[1],
           'loss': r[2], 'val_loss': r[-1]} for i, r in enumerate(rows)]


def spreads(value):
  return [(s, {'act_000': {'mean': 0.3, 'std': 0.2, 'spread': value},
               'act_001': {'mean': 0.3, 'std': 0.2, 'spread': 0.8}})
          for s in (100, 200, 300, 400)]


CASES = {
    'probabilities_as_logits': (
        run_with({'output_activation': 'softmax', 'output_min': 0.0,
                  'output_max': 0.9, 'output_row_sum_error': 1e-7}), 'error'),
    # A Lambda softmax: no activation name, but the outputs are probabilities.
    'probabilities_as_logits ': (
        run_with({'output_min': 1e-6, 'output_max': 0.7,
                  'output_row_sum_error': 2e-7}), 'error'),
    'output_activation': (
        run_with({'output_activation': 'relu', 'output_min': 0.0}), 'error'),
    'model_not_training': (
        run_with({'trainable_variables': 0,
                  'frozen_layers': ['dense_000', 'dense_001', 'logits']}),
        'error'),
    'frozen_layers': (
        run_with({'frozen_layers': ['dense_000', 'dense_001']}), 'warning'),
    'unscaled_inputs': (
        run_with({'input_abs_max': 255.0, 'input_mean': 33.3,
                  'input_std': 78.6}), 'error'),
    'linear_stack': (
        run_with({'linear_pairs': [['dense_000', 'dense_001']]}), 'warning'),
    'symmetric_units': (run_with(stats=spreads(1e-6)), 'error'),
    # All-zero kernels (batch norm between them, so no unit is 'dead' in
    # the probe: every output is exactly 0): caught before the first step.
    'symmetric_units ': (run_with({'constant_kernels': [
        {'index': i, 'layer': f'dense_{i:03d}', 'value': 0.0}
        for i in range(3)]}), 'error'),
    'too_few_steps': (run_with(total_steps=3), 'error'),
    'labels_unlearnable': (
        run_with(history=epochs([(0.3, 0.1, 2.0), (0.6, 0.11, 1.2),
                                 (0.9, 0.1, 0.4)])), 'error'),
    'label_noise': (
        run_with(history=epochs([(0.4, 0.8, 2.0), (0.45, 0.88, 1.9),
                                 (0.47, 0.9, 1.85)])), 'warning'),
    'oscillating_loss': (
        run_with(history=[{'epoch': 1, 'accuracy': 0.2, 'val_accuracy': 0.22,
                           'loss': 2.17, 'val_loss': 2.56},
                          {'epoch': 2, 'accuracy': 0.22, 'val_accuracy': 0.26,
                           'loss': 2.04, 'val_loss': 2.17},
                          {'epoch': 3, 'accuracy': 0.24, 'val_accuracy': 0.19,
                           'loss': 1.99, 'val_loss': 3.01}]), 'warning'),
    # 50% noisy training labels on a model that learns slowly (measured on
    # the 20-layer CIFAR-10 net: train 0.146, 0.158; val 0.203, 0.228): the
    # gap is small in points, but val is 2.2x as far above chance as train.
    'label_noise  ': (
        run_with(history=epochs([(0.12, 0.16, 2.37), (0.146, 0.203, 2.29),
                                 (0.158, 0.228, 2.27)])), 'warning'),
    # Nadam 0.05 with batch norm (measured): validation loss 1.27x and 1.25x
    # the training loss at equal accuracy, in a run that fits neither.
    'oscillating_loss ': (
        run_with(history=epochs([(0.201, 0.221, 2.168, 2.748),
                                 (0.222, 0.224, 2.028, 2.528),
                                 (0.245, 0.178, 1.975, 2.237)])), 'warning'),
    'too_much_regularization': (
        run_with({'dropout': 0.9}, history=epochs(
            [(0.3, 0.7, 2.0), (0.4, 0.8, 1.9), (0.45, 0.85, 1.8)])),
        'warning'),
}


def test_healthy_run_with_facts_has_no_finding():
  assert health.analyze(run_with()) == []


@pytest.mark.parametrize('case', sorted(CASES))
def test_each_kind_fires_alone_on_its_case(case):
  run, severity = CASES[case]
  found = health.analyze(run)
  kind = case.strip()
  assert [f.kind for f in found] == [kind], health.format_block(found)
  assert found[0].severity == severity
  assert found[0].remedy == health.REMEDIES[kind]
  assert found[0].tag


def test_each_new_kind_just_below_its_threshold_is_silent():
  t = health.THRESHOLDS
  below = [
      run_with({'input_abs_max': t['input_abs_max'] * 0.99}),
      run_with(total_steps=t['min_updates']),
      run_with(stats=spreads(t['symmetric_spread'] * 1.01)),
      run_with({'frozen_layers': ['dense_000']}),      # 1 of 3 < 0.5
      run_with(history=epochs([(0.8, 0.9, 0.5), (0.8, 0.94, 0.4),
                               (0.8, 0.8 + t['val_above_train'] * 0.99,
                                0.35)])),
      # The running train accuracy's lag behind a fast learner (val 1.3x
      # as far above chance), and a 1.75x ratio with too small a gap.
      run_with(history=epochs([(0.2, 0.3, 2.1), (0.33, 0.4, 1.9),
                               (0.43, 0.52, 1.7)])),
      run_with(history=epochs([(0.13, 0.17, 2.3), (0.14, 0.18, 2.28),
                               (0.15, 0.199, 2.27)])),
      # A zero-initialized output layer (its labels break the symmetry),
      # and constant kernels that feed random ones.
      run_with({'constant_kernels': [{'index': 2, 'layer': 'logits',
                                      'value': 0.0}]}),
      run_with({'constant_kernels': [{'index': 0, 'layer': 'dense_000',
                                      'value': 1.0}]}),
      # Outputs that sum to 1 only roughly: logits, not probabilities.
      run_with({'output_min': 0.0, 'output_row_sum_error': 0.05}),
  ]
  for run in below:
    assert health.analyze(run) == [], health.format_block(health.analyze(run))


def test_validation_loss_above_training_is_unstable_only_when_nothing_fits():
  t = health.THRESHOLDS
  def run(ratio, train_acc=0.22, val_acc=0.22, loss=2.0):
    return run_with(history=[
        {'epoch': e, 'accuracy': train_acc, 'val_accuracy': val_acc,
         'loss': loss, 'val_loss': ratio * loss} for e in (1, 2, 3)])
  assert [f.kind for f in health.analyze(run(1.3))] == ['oscillating_loss']
  # Just below the ratio; a model that fits its training data better than
  # the validation data (overfitting); one that fits well (the main job:
  # train loss 0.03, val 0.07 at 0.99 vs 0.98 accuracy).
  for quiet in (run(t['unstable_loss_ratio'] * 0.99),
                run(1.3, train_acc=0.3, val_acc=0.22),
                run(2.3, train_acc=0.99, val_acc=0.98, loss=0.03)):
    assert health.analyze(quiet) == [], health.format_block(
        health.analyze(quiet))


def test_first_epoch_running_accuracy_is_not_label_noise():
  # After one epoch the running train accuracy still holds the first steps:
  # a healthy deep net (measured: train 0.36, val 0.63) is not noisy.
  run = run_with(history=epochs([(0.36, 0.63, 1.9)]))
  assert health.analyze(run) == []


def test_falling_train_accuracy_at_chance_is_not_memorizing():
  # Training that gets worse (a learning rate too high for batch 1) is not
  # a labels problem, although train accuracy is above validation.
  run = run_with(history=epochs([(0.5, 0.36, 1.7), (0.34, 0.25, 1.9),
                                 (0.29, 0.11, 2.1)]))
  assert 'labels_unlearnable' not in [f.kind for f in health.analyze(run)]


def test_linear_pairs_of_a_model():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tftrain import checkup  # pylint: disable=g-import-not-at-top
  layers = tf.keras.layers
  model = tf.keras.Sequential([
      tf.keras.Input((4,)), layers.Dense(8, name='a'),
      layers.Activation('linear', name='lin'), layers.Dropout(0.1),
      layers.Dense(8, activation='relu', name='b'), layers.Dense(8, name='c'),
      layers.ReLU(name='r'), layers.Dense(3, name='logits')])
  assert checkup.linear_pairs(checkup.flat_layers(model)) == [['a', 'b']]


def test_constant_kernels_of_a_model():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tftrain import checkup  # pylint: disable=g-import-not-at-top
  layers = tf.keras.layers

  def kernels(*middle):
    model = tf.keras.Sequential([
        tf.keras.Input((4,)), layers.Dense(8, kernel_initializer='zeros',
                                           name='z'), *middle,
        layers.Dense(8, kernel_initializer='ones', name='o'),
        layers.Dense(8, name='r'), layers.Dense(1, kernel_initializer='ones',
                                                name='one_unit'),
        layers.Dense(3, kernel_initializer='zeros', name='logits')])
    weighted = [l for l in checkup.flat_layers(model) if l.weights]
    return checkup.constant_kernels(weighted)

  # Batch norm as initialized (gamma 1, beta 0) treats every unit alike:
  # z and o are neighbours, and z is trapped.
  found = kernels(layers.BatchNormalization(name='bn'))
  assert found == [{'index': 0, 'layer': 'z', 'value': 0.0},
                   {'index': 1, 'layer': 'o', 'value': 1.0},
                   {'index': 4, 'layer': 'logits', 'value': 0.0}]
  run = run_with({'constant_kernels': found})
  symmetric = [f for f in health.analyze(run) if f.kind == 'symmetric_units']
  assert len(symmetric) == 1 and symmetric[0].layers == ['z']
  # A random gamma tells z's units apart: nothing is trapped.
  varied = kernels(layers.BatchNormalization(
      gamma_initializer='random_normal', name='bn'))
  assert [c['index'] for c in varied] == [0, 2, 5]
  run = run_with({'constant_kernels': varied})
  assert 'symmetric_units' not in [f.kind for f in health.analyze(run)]


def test_slow_convergence_is_lr_too_low():
  slow = run_with(history=epochs([(0.24, 0.37, 2.2), (0.47, 0.55, 1.96),
                                  (0.6, 0.64, 1.75)]))
  slow['update_ratios'] = [[7e-5] * 3 for _ in slow['steps']]
  found = health.analyze(slow)
  assert [f.kind for f in found] == ['lr_too_low'], health.format_block(found)
  assert found[0].numbers['loss_last'] == pytest.approx(1.75)
  # The same loss curve with healthy update sizes is not "too low"; nor is
  # a decelerating curve with tiny updates (converging).
  fast = copy.deepcopy(slow)
  fast['update_ratios'] = [[5e-3] * 3 for _ in slow['steps']]
  bending = copy.deepcopy(slow)
  bending['history'] = epochs([(0.8, 0.9, 2.2), (0.9, 0.92, 0.6),
                               (0.92, 0.93, 0.5)])
  assert health.analyze(fast) == [] and health.analyze(bending) == []


def test_tiny_updates_with_a_loss_still_near_a_uniform_guess_is_lr_too_low():
  # Measured (Nadam 5e-6 on the 20-layer CIFAR-10 net): update ratio 8e-6,
  # a decelerating loss that ends at ln(10) after 3 epochs.
  guessing = run_with(history=epochs([(0.127, 0.143, 3.21), (0.159, 0.179, 2.48),
                                      (0.184, 0.197, 2.31)]))
  guessing['num_classes'] = 10
  guessing['update_ratios'] = [[8e-6] * 3 for _ in guessing['steps']]
  found = health.analyze(guessing)
  assert [f.kind for f in found] == ['lr_too_low'], health.format_block(found)
  assert found[0].numbers['guess_loss'] == pytest.approx(2.302585)
  assert 'uniform guess' in found[0].summary
  # Below the fraction of ln C (the healthy twins end at 0.49-0.78 ln C),
  # or a loss that stopped falling: not slow convergence.
  t = health.THRESHOLDS
  learned = copy.deepcopy(guessing)
  learned['history'][-1]['loss'] = t['slow_guess_loss_fraction'] * 0.99 * 2.302585
  learned['history'][-2]['loss'] = learned['history'][-1]['loss'] + 0.2
  flat = copy.deepcopy(guessing)
  flat['history'][-1]['loss'] = 2.47
  assert health.analyze(learned) == [], health.format_block(
      health.analyze(learned))
  assert health.analyze(flat) == [], health.format_block(health.analyze(flat))
  # With raw 0-255 inputs the slow convergence is their symptom: the report
  # names the cause only.
  raw = copy.deepcopy(guessing)
  raw['model_facts'].update(input_abs_max=255.0, input_mean=120.0,
                            input_std=64.0)
  assert [f.kind for f in health.analyze(raw)] == ['unscaled_inputs']


def test_saturation_of_any_activation_from_its_derivative():
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tftrain import probes  # pylint: disable=g-import-not-at-top
  layer = tf.keras.layers.Activation('hard_sigmoid')
  peak = probes.derivative_peak(layer)
  assert peak == pytest.approx(1 / 6, rel=1e-3)    # slope of x/6 + 1/2
  z = tf.constant([[-5.0, -4.0, 0.0, 1.0], [4.0, 5.0, 0.5, 2.0]])
  with tf.GradientTape() as tape:
    tape.watch(z)
    y = layer(z)
  stats = probes.activation_statistics('hard_sigmoid', y,
                                       tape.gradient(y, z), peak)
  # |z| > 3 is flat: 4 of the 8 inputs.
  assert float(stats['saturated']) == pytest.approx(0.5)
  # A sequential model's probe reports it per Activation layer, by name.
  model = tf.keras.Sequential([
      tf.keras.Input((3,)), tf.keras.layers.Dense(4, name='d',
          kernel_initializer=tf.keras.initializers.Constant(10.0)),
      tf.keras.layers.Activation('hard_sigmoid', name='hs'),
      tf.keras.layers.Dense(2, name='logits')])
  assert [l.name for l in probes.probed_layers(model)] == ['hs']
  del np


def _history(rows):
  return [{'epoch': i + 1, 'loss': loss, 'val_loss': val_loss,
           'accuracy': val_acc + 0.005, 'val_accuracy': val_acc}
          for i, (loss, val_loss, val_acc) in enumerate(rows)]


# The main job's epochs 8-14 (launch.mnist --learning_rate=auto, Intel Xeon):
# at 1cycle's peak the validation loss jumps +55%, and the run gets over it.
MAIN_JOB_PEAK = [(0.0429, 0.0977, 0.9742), (0.0377, 0.0729, 0.9786),
                 (0.0316, 0.1128, 0.9714), (0.032, 0.1019, 0.9722),
                 (0.0349, 0.0985, 0.9742), (0.0304, 0.0912, 0.9762),
                 (0.0273, 0.0766, 0.9798), (0.0166, 0.0907, 0.981)]


def test_a_jump_the_run_recovers_from_is_not_oscillating():
  assert health.analyze(run_with(history=_history(MAIN_JOB_PEAK))) == []


def test_a_jump_it_never_recovers_from_or_repeated_jumps_are_oscillating():
  never = MAIN_JOB_PEAK[:3] + [(0.04, 0.11, 0.97)] * 3   # (not overfitting)
  found = health.analyze(run_with(history=_history(never)))
  assert [f.kind for f in found] == ['oscillating_loss']
  assert found[0].numbers['epoch'] == 3
  # Three jumps of +30% or more, each followed by a new best accuracy.
  rows, acc = [], 0.90
  for _ in range(3):
    rows += [(0.1, 0.20, acc), (0.1, 0.30, acc - 0.01)]
    acc += 0.02
  rows.append((0.1, 0.2, acc))
  found = health.analyze(run_with(history=_history(rows)))
  assert [f.kind for f in found] == ['oscillating_loss']
  assert found[0].numbers['jumps'] == 3
