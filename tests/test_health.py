"""Health report: each detector fires on a clear case, not on healthy runs."""

import json
import math
import os
import sys

import numpy as np
import pytest

from tftrain import health

NUM_STEPS = 40


def names_for(depth):
  """`depth` hidden layers plus the output layer, as the models name them."""
  return [f'dense_{i:03d}' for i in range(depth)] + ['logits']


def healthy_run(depth=2, num_steps=NUM_STEPS, seed=0, activation='relu'):
  """An MLP that trains well: norms 0.1-1, update ratios ~1e-3, loss falls."""
  rng = np.random.default_rng(seed)
  names = names_for(depth)
  steps = [100 * (i + 1) for i in range(num_steps)]
  t = np.linspace(0, 1, num_steps)
  loss = 2.3 * np.exp(-3 * t) + 0.1 + rng.normal(0, 0.02, num_steps)
  acts = [f'act_{i:03d}' for i in range(depth)]
  key = 'dead' if activation == 'relu' else 'saturated'
  stats = [(s, {a: {'mean': 0.3, 'std': 0.5, key: 0.05 + 0.1 * rng.random()}
                for a in acts}) for s in steps[::4]]
  history = [{'epoch': e, 'loss': 0.3 / e, 'accuracy': 0.9 + 0.01 * e,
              'val_loss': 0.35 / e ** 0.5, 'val_accuracy': 0.9 + 0.005 * e}
             for e in range(1, 6)]
  return {
      'layer_names': names, 'steps': steps,
      'grad_norms': rng.uniform(0.1, 1.0, (num_steps, len(names))).tolist(),
      'update_ratios': (1e-3 * rng.uniform(0.5, 2, (num_steps, len(names)))
                        ).tolist(),
      'loss': loss.tolist(), 'learning_rate': [1e-2] * num_steps,
      'activation': activation, 'activation_stats': stats,
      'history': history, 'num_classes': 10, 'status': 'completed',
      'lr_finder': {'suggestion': 2e-2,
                    'suggestions': {'minimum': 1e-1, 'divergence': 1.0}},
      'schedule_peak_lr': 1e-2,
  }


def kinds(run, **thresholds):
  return [f.kind for f in health.analyze(run, thresholds or None)]


def only(run, kind):
  found = [f for f in health.analyze(run) if f.kind == kind]
  assert len(found) == 1, health.format_block(health.analyze(run))
  return found[0]


# ------------------------------------------------------------ healthy runs --

@pytest.mark.parametrize('depth,activation', [(1, 'relu'), (2, 'relu'),
                                              (3, 'sigmoid'), (3, 'selu')])
def test_healthy_runs_have_no_findings(depth, activation):
  assert health.analyze(healthy_run(depth, activation=activation)) == []


def test_healthy_deep_adam_run_with_tiny_updates_is_not_lr_too_low():
  run = healthy_run(depth=20)
  run['update_ratios'] = np.full((NUM_STEPS, 21), 3e-6).tolist()
  assert health.analyze(run) == []   # the loss fell: slow, not stuck


def test_missing_keys_are_skipped():
  assert health.analyze({'layer_names': names_for(3)}) == []
  assert health.analyze({'layer_names': ['logits'],
                         'history': [{'epoch': 1, 'loss': 1.0}]}) == []


def test_series_that_do_not_match_layer_names_raise():
  run = healthy_run(depth=2)
  run['grad_norms'] = [[1.0, 1.0]] * NUM_STEPS
  with pytest.raises(ValueError, match='grad_norms has shape'):
    health.analyze(run)
  with pytest.raises(ValueError, match='vanishing_ration'):
    health.analyze(healthy_run(), {'vanishing_ration': 1.0})


# --------------------------------------------------------------- gradients --

def vanishing_run(depth=30, zero_below=10):
  """Sigmoid stack: norms shrink 5x per layer toward the input, then 0."""
  run = healthy_run(depth=depth, activation='sigmoid')
  per_layer = 0.5 * 0.2 ** np.arange(depth)[::-1]
  per_layer[:zero_below] = 0.0
  noise = np.random.default_rng(1).uniform(0.8, 1.2, (NUM_STEPS, depth + 1))
  run['grad_norms'] = (np.append(per_layer, 0.8) * noise).tolist()
  return run


def test_vanishing_gradients_names_the_depth_where_norms_underflow():
  f = only(vanishing_run(), 'vanishing_gradients')
  assert f.severity == 'error'
  assert f.numbers['ratio_median'] == 0.0
  assert f.numbers['zero_depth'] == 9
  assert f.numbers['vanish_depth'] == 24   # 0.2**5 < 1e-3 < 0.2**4
  assert 'reaches 0 at dense_009' in f.summary
  assert 'falls below 0.001x the last hidden layer\'s at dense_024' in f.summary
  assert '0 (float32 underflow)' in f.summary
  assert f.layers == [f'dense_{i:03d}' for i in range(25)]
  assert f.tag == 'grad_norm_heatmap'
  assert f.remedy.startswith('Replace sigmoid')
  assert f.steps == [2100, 4000]


def test_vanishing_without_underflow_is_a_warning():
  f = only(vanishing_run(zero_below=0), 'vanishing_gradients')
  assert f.severity == 'warning'
  assert 'zero_depth' not in f.numbers
  assert f.numbers['ratio_median'] == pytest.approx(0.2 ** 28, rel=0.5)


def test_vanishing_needs_three_layers():
  run = healthy_run(depth=1)
  run['grad_norms'] = [[1e-9, 1.0]] * NUM_STEPS
  assert 'vanishing_gradients' not in kinds(run)


def test_vanishing_for_a_few_steps_is_not_sustained():
  run = healthy_run(depth=3)
  grads = np.array(run['grad_norms'])
  grads[-5:, 0] = 0.0      # 5 of the 20 judged steps
  run['grad_norms'] = grads.tolist()
  assert 'vanishing_gradients' not in kinds(run)
  grads[-16:, 0] = 0.0     # 16 of 20: sustained
  run['grad_norms'] = grads.tolist()
  assert 'vanishing_gradients' in kinds(run)


def test_exploding_ratio_toward_the_input():
  run = healthy_run(depth=4)
  grads = np.array(run['grad_norms'])
  grads[:, 0] *= 1e5
  run['grad_norms'] = grads.tolist()
  f = only(run, 'exploding_gradients')
  assert f.numbers['ratio_median'] > 1e3
  assert f.layers == ['dense_000', 'dense_003']
  assert f.severity == 'warning'


def test_exploding_growth_over_training():
  run = healthy_run(depth=2)
  growth = np.logspace(0, 4, NUM_STEPS)[:, None]
  run['grad_norms'] = (np.array(run['grad_norms']) * growth).tolist()
  f = only(run, 'exploding_gradients')
  assert f.numbers['growth'] > 100
  assert f.tag.startswith('grad_norm/')


def test_exploding_non_finite_norm_is_an_error():
  run = healthy_run(depth=2)
  run['grad_norms'][30][1] = math.inf
  run['grad_norms'][31][1] = math.nan
  f = only(run, 'exploding_gradients')
  assert f.severity == 'error'
  assert f.steps == [3100, 3200]
  assert f.layers == ['dense_001']
  assert f.tag == 'grad_norm/dense_001'


def test_a_single_gradient_spike_is_not_exploding():
  run = healthy_run(depth=3)
  run['grad_norms'][35] = [1e6, 1e2, 1e2, 1e2]
  assert health.analyze(run) == []


# ------------------------------------------------------------- activations --

def with_stats(run, key, values_per_layer, num_records=10):
  steps = run['steps'][::NUM_STEPS // num_records]
  run['activation_stats'] = [
      (s, {f'act_{i:03d}': {'mean': 0.5, 'std': 0.4, key: v}
           for i, v in enumerate(values_per_layer)}) for s in steps]
  return run


def test_saturated_units_named_with_fraction():
  run = with_stats(healthy_run(depth=4, activation='sigmoid'), 'saturated',
                   [0.9, 0.8, 0.7, 0.1])
  f = only(run, 'saturated_units')
  assert f.layers == ['act_000', 'act_001', 'act_002']
  assert f.numbers['worst_fraction'] == pytest.approx(0.9)
  assert f.numbers['layers_hit'] == 3
  assert f.tag == 'activation_saturated/act_000'
  assert 'in 3 of 4 hidden layers (act_000, act_001, act_002)' in f.summary


def test_saturation_below_threshold_or_only_early_does_not_fire():
  run = with_stats(healthy_run(depth=4, activation='sigmoid'), 'saturated',
                   [0.4] * 4)
  assert 'saturated_units' not in kinds(run)
  for _, stats in run['activation_stats'][:5]:   # early records only
    stats['act_000']['saturated'] = 0.99
  assert 'saturated_units' not in kinds(run)


def test_saturation_in_many_layers_is_summarized_compactly():
  run = with_stats(healthy_run(depth=60, activation='tanh'), 'saturated',
                   [0.9] * 58 + [0.1, 0.1])
  f = only(run, 'saturated_units')
  assert 'act_000..act_057 (58 layers)' in f.summary


def test_dead_units_in_one_layer():
  run = with_stats(healthy_run(depth=3), 'dead', [0.0, 0.7, 0.1])
  f = only(run, 'dead_units')
  assert f.layers == ['act_001']
  assert f.numbers['worst_fraction'] == pytest.approx(0.7)
  assert f.tag == 'activation_dead/act_001'
  assert f.severity == 'warning'
  run = with_stats(healthy_run(depth=3), 'dead', [0.0, 0.3, 0.1])
  assert 'dead_units' not in kinds(run)


def test_a_layer_with_every_unit_dead_is_an_error():
  """No gradient passes back through it (e.g. zero-initialized ReLU nets)."""
  run = with_stats(healthy_run(depth=3), 'dead', [0.0, 1.0, 0.1])
  f = only(run, 'dead_units')
  assert f.severity == 'error' and f.layers == ['act_001']
  run = with_stats(healthy_run(depth=3), 'dead', [0.0, 0.98, 0.1])
  assert only(run, 'dead_units').severity == 'warning'


# ----------------------------------------------------------- learning rate --

def test_lr_too_high_from_update_ratios():
  run = healthy_run(depth=3)
  run['update_ratios'] = np.full((NUM_STEPS, 4), 0.3).tolist()
  f = only(run, 'lr_too_high')
  assert f.numbers['update_ratio_median'] == pytest.approx(0.3)
  assert f.tag.startswith('update_ratio/dense_')


def test_lr_too_high_from_a_rising_loss():
  run = healthy_run(depth=2)
  run['loss'] = np.linspace(1.0, 3.0, NUM_STEPS).tolist()
  f = only(run, 'lr_too_high')
  assert f.tag == 'loss'
  assert f.numbers['loss_change'] > 1.0


def test_lr_too_low_needs_tiny_updates_and_a_flat_loss():
  run = healthy_run(depth=2)
  run['update_ratios'] = np.full((NUM_STEPS, 3), 1e-6).tolist()
  assert 'lr_too_low' not in kinds(run)        # loss still fell
  run['loss'] = (2.30 - 0.001 * np.arange(NUM_STEPS) / NUM_STEPS).tolist()
  f = only(run, 'lr_too_low')
  assert f.numbers['update_ratio_median'] == pytest.approx(1e-6)
  assert abs(f.numbers['loss_change']) < 0.01


def test_lr_too_low_is_not_reported_when_gradients_vanish():
  run = vanishing_run()
  run['update_ratios'] = np.full((NUM_STEPS, 31), 1e-7).tolist()
  run['loss'] = [2.30] * NUM_STEPS
  assert kinds(run) == ['vanishing_gradients']


def test_lr_too_low_is_not_reported_when_units_died():
  # SGD 0.3 on CIFAR-10 with the MNIST MLP: every ReLU dead, zero updates,
  # flat loss. The cause is the dead units (too high a rate at the start),
  # so "raise the learning rate" must not be advised.
  run = with_stats(healthy_run(depth=2), 'dead', [1.0, 1.0])
  run['update_ratios'] = np.zeros((NUM_STEPS, 3)).tolist()
  run['loss'] = [2.30] * NUM_STEPS
  found = kinds(run)
  assert 'dead_units' in found and 'lr_too_low' not in found
  run = with_stats(healthy_run(depth=2), 'dead', [0.0, 0.0])
  run['update_ratios'] = np.zeros((NUM_STEPS, 3)).tolist()
  run['loss'] = [2.30] * NUM_STEPS
  assert 'lr_too_low' in kinds(run)              # no dead units: it is the LR


def test_lr_far_from_finder_either_side():
  run = healthy_run()
  run['schedule_peak_lr'] = 1.0
  f = only(run, 'lr_far_from_finder')
  assert f.numbers['factor'] == pytest.approx(50.0)
  assert '50x above' in f.summary
  run['schedule_peak_lr'] = 1e-4
  assert '200x below' in only(run, 'lr_far_from_finder').summary
  run['schedule_peak_lr'] = 5e-3           # 4x below: fine
  assert kinds(run) == []


# ------------------------------------------------------ accuracy and loss --

def test_chance_accuracy():
  run = healthy_run()
  for h in run['history']:
    h['val_accuracy'] = h['accuracy'] = 0.11   # (train above: memorizing)
  f = only(run, 'chance_accuracy')
  assert f.severity == 'error'
  assert f.numbers['threshold'] == pytest.approx(0.15)
  assert 'validation accuracy is 0.11 after 5 epochs' in f.summary


def test_chance_threshold_for_two_classes_is_near_one_half():
  run = healthy_run()
  run['num_classes'] = 2
  for h in run['history']:
    h['val_accuracy'] = 0.7       # well above chance for 2 classes
  assert 'chance_accuracy' not in kinds(run)
  for h in run['history']:
    h['val_accuracy'] = h['accuracy'] = 0.52
  assert only(run, 'chance_accuracy').numbers['threshold'] == pytest.approx(
      0.55)


def test_diverged_status_and_non_finite_loss():
  run = healthy_run()
  run.update(status='diverged', diverged_step=1234, diverged_loss=math.inf)
  f = only(run, 'diverged')
  assert f.steps == [1234]
  assert 'step 1234' in f.summary
  assert f.to_dict()['numbers']['loss'] == 'inf'
  run = healthy_run()
  run['loss'][20] = math.nan
  assert only(run, 'diverged').steps == [2100]


def test_overfitting_reports_the_best_epoch():
  run = healthy_run()
  val = [1.0, 0.8, 0.7, 0.72, 0.76, 0.8, 0.85]
  run['history'] = [{'epoch': e + 1, 'loss': 1.0 - 0.1 * e, 'accuracy': 0.95,
                     'val_loss': v, 'val_accuracy': 0.9}
                    for e, v in enumerate(val)]
  f = only(run, 'overfitting')
  assert f.numbers['best_epoch'] == 3
  assert f.numbers['epochs_since_best'] == 4
  assert f.tag == 'epoch_loss'


def test_noisy_plateau_is_not_overfitting():
  run = healthy_run()
  val = [1.0, 0.8, 0.7, 0.72, 0.71, 0.72, 0.715]   # within 5% of the best
  run['history'] = [{'epoch': e + 1, 'loss': 1.0 - 0.1 * e, 'accuracy': 0.95,
                     'val_loss': v, 'val_accuracy': 0.9}
                    for e, v in enumerate(val)]
  assert kinds(run) == []


def test_findings_are_sorted_errors_first_then_by_kind():
  run = healthy_run()
  run['schedule_peak_lr'] = 10.0
  run['update_ratios'] = np.full((NUM_STEPS, 3), 0.5).tolist()
  run.update(status='diverged', diverged_step=5, diverged_loss=1e9)
  assert kinds(run) == ['diverged', 'lr_too_high', 'lr_far_from_finder']


# ----------------------------------------------------------------- reports --

def test_write_report_round_trips(tmp_path):
  findings = health.analyze(vanishing_run())
  paths = health.write_report(str(tmp_path / 'run'), findings, 'deep sigmoid')
  assert sorted(os.listdir(tmp_path / 'run')) == ['health.json', 'health.md']
  with open(paths['json']) as f:
    report = json.load(f)
  assert report['healthy'] is False
  assert report['kinds'] == list(health.KINDS)
  assert report['findings'] == [f.to_dict() for f in findings]
  with open(paths['markdown']) as f:
    text = f.read()
  assert text.startswith('# deep sigmoid\n')
  assert 'Vanishing gradients (error)' in text
  assert '`grad_norm_heatmap`' in text


def test_healthy_report_says_so(tmp_path):
  assert 'No problems found' in health.format_markdown([], 'ok run')
  assert health.format_block([]) == 'health: no problems found'
  paths = health.write_report(str(tmp_path), [], 'ok run')
  with open(paths['json']) as f:
    assert json.load(f) == {'findings': [], 'healthy': True,
                            'kinds': list(health.KINDS)}


def test_format_block_is_short():
  run = vanishing_run()
  run['history'][-1]['val_accuracy'] = 0.1
  block = health.format_block(health.analyze(run))
  lines = block.splitlines()
  assert lines[0] == 'health: 2 problems (2 errors, 0 warnings)'
  assert len(lines) == 5
  assert '[error] vanishing_gradients:' in lines[1]


def test_finding_rejects_unknown_kind():
  with pytest.raises(ValueError, match="'slow'"):
    health.Finding('slow', 'warning', 'x')


# ---------------------------------------------------------------- heatmaps --

ZERO_RGB = (255, 0, 0)              # red: exactly 0 (float32 underflow)
NON_FINITE_RGB = (255, 255, 255)    # white: inf / nan


def _runs(pixels):
  """[(start, length, rgb)] of runs of equal colour along a row/column."""
  change = np.flatnonzero((pixels[1:] != pixels[:-1]).any(-1)) + 1
  starts = np.concatenate([[0], change])
  ends = np.concatenate([change, [len(pixels)]])
  return [(int(a), int(b - a), tuple(int(c) for c in pixels[a]))
          for a, b in zip(starts, ends)]


def _luminance(rgb):
  return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


@pytest.mark.parametrize('num_steps', [1, 30])
def test_depth_time_heatmap_png(num_steps):
  """The PNG's cells: exact 0 red, inf/nan white, brighter = larger norm
  (what its colour bar's label promises)."""
  from tests import testing  # pylint: disable=g-import-not-at-top
  names = ['dense_000', 'dense_001', 'dense_002', 'dense_003', 'logits']
  grads = np.tile([0.0, 1e-6, 1e-3, 1e-1, 1.0], (num_steps, 1))
  grads[-1, 4] = np.nan           # the output layer's last step
  png = health.depth_time_heatmap_png(names, list(range(0, 10 * num_steps,
                                                        10)), grads, 'test')
  pixels = testing.decode_png(png)
  # The zero row (dense_000, at the top) is one red band across the whole
  # heatmap: the widest red run of any pixel row (the colour bar's 'under'
  # triangle is red too, but narrow).
  red = (pixels == ZERO_RGB).all(-1)
  y0 = int(red.sum(1).argmax())
  x0, width, _ = max((r for r in _runs(pixels[y0]) if r[2] ==
                      ZERO_RGB), key=lambda r: r[1])
  assert width > pixels.shape[1] // 2
  first, last = x0 + width // 4, x0 + width - 2      # first and last step
  bands = {}
  for x in (first, last):
    column = [r for r in _runs(pixels[:, x]) if r[0] >= y0]
    assert column[0][2] == ZERO_RGB
    height = column[0][1]
    assert height >= 10
    # One band per layer, equal heights, top to bottom in depth order.
    bands[x] = [rgb for _, n, rgb in column[:5]]
    assert [n for _, n, _ in column[:5]] == pytest.approx([height] * 5, abs=1)
  # At the last step the output layer is nan: white.
  assert bands[last][4] == NON_FINITE_RGB
  assert bands[first][:4] == bands[last][:4]
  finite = bands[first][1:4] if num_steps == 1 else bands[first][1:5]
  # The smallest positive norm is viridis' dark end, the largest its bright
  # end, and brightness grows with the norm in between.
  np.testing.assert_allclose(finite[0], (68, 1, 84), atol=1)
  np.testing.assert_allclose(finite[-1], (253, 231, 37), atol=1)
  lum = [_luminance(rgb) for rgb in finite]
  assert lum == sorted(lum) and len(set(lum)) == len(lum), finite
  for rgb in finite:
    assert rgb not in (ZERO_RGB, NON_FINITE_RGB)


def test_health_module_does_not_import_tensorflow():
  assert 'tensorflow' not in getattr(health, '__dict__')
  code = ('import sys, tftrain.health; '
          'print("tensorflow" in sys.modules, "matplotlib" in sys.modules)')
  import subprocess  # pylint: disable=g-import-not-at-top
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.stdout.split() == ['False', 'False']


def test_rising_val_loss_with_improving_val_accuracy_is_not_overfitting():
  """The MNIST MLP's pattern: val loss up 19% after its minimum at epoch 7
  while val accuracy still climbs (growing confidence, better accuracy)."""
  run = healthy_run()
  val = [0.142, 0.12, 0.092, 0.082, 0.083, 0.072, 0.071, 0.078, 0.075, 0.078,
         0.080, 0.082, 0.085]
  acc = [0.959, 0.966, 0.973, 0.977, 0.976, 0.979, 0.981, 0.981, 0.979,
         0.982, 0.983, 0.984, 0.983]
  run['history'] = [{'epoch': e + 1, 'loss': 0.3 / (e + 1), 'accuracy': 0.99,
                     'val_loss': v, 'val_accuracy': a}
                    for e, (v, a) in enumerate(zip(val, acc))]
  assert 'overfitting' not in kinds(run)
  # The same losses with val accuracy falling after the minimum: overfitting.
  run['history'] = [dict(h, val_accuracy=0.981 - 0.002 * max(0, i - 6))
                    for i, h in enumerate(run['history'])]
  assert 'overfitting' in kinds(run)


def _std_records(stds_by_step):
  return [(step, {f'act_{i:03d}': {'mean': 0.0, 'std': s, 'saturated': 0.0}
                  for i, s in enumerate(stds)})
          for step, stds in stds_by_step]


def test_activation_std_growing_with_depth_is_exploding():
  """Measured shapes: SELU with He init and raw inputs (0.5 -> 17 over 100
  layers) vs the launcher's SELU (1.0 -> 1.4)."""
  run = healthy_run()
  run['activation'] = 'selu'
  bad = np.linspace(0.5, 17.0, 10)
  run['activation_stats'] = _std_records([(0, bad), (500, bad), (800, bad)])
  found = [f for f in health.analyze(run) if f.kind == 'exploding_gradients']
  assert found and found[0].numbers['std_growth_median'] > 30
  assert found[0].tag == 'activation_std/act_009'
  good = np.linspace(1.0, 1.4, 10)
  run['activation_stats'] = _std_records([(0, good), (500, good), (800, good)])
  assert 'exploding_gradients' not in kinds(run)
