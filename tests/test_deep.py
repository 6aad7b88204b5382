"""launch.deep end to end on tiny MNIST: a grid over activation with a depth probe."""

import csv
import glob
import json
import os

import pytest

from launch import deep
from tftrain import errors
from tests import testing


def test_parse_activations_validates_each_name():
  assert deep.parse_activations('sigmoid, relu,selu') == ['sigmoid', 'relu',
                                                          'selu']
  for bad in ('sigmoid,softplus', '', 'relu,relu'):
    with pytest.raises(errors.ConfigError) as e:
      deep.parse_activations(bad)
    assert str(e.value).startswith(f'--activation={bad}:')
    assert 'sigmoid, tanh, relu, leaky_relu, elu, selu, gelu, swish' in str(
        e.value)


@pytest.mark.slow
def test_launcher_compares_activations(tiny_mnist_data_dir, run_launcher,
                                       tmp_path):
  workdir = str(tmp_path / 'deep')
  proc = run_launcher(
      'launch.deep', '--activation=sigmoid,relu', '--depth=6', '--width=8',
      '--epochs=2', '--batch_size=25', '--validation_size=100',
      '--steps_per_loop=5', '--log_every_steps=5',
      '--histogram_every_steps=10', '--noprogress',
      f'--data_dir={tiny_mnist_data_dir}', f'--workdir={workdir}',
      timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = proc.stdout
  assert '== sigmoid (glorot_uniform, standardized inputs: False)' in out
  assert '== relu (he_normal' in out
  assert out.count('grad norm start: first layer') == 2
  assert out.count('val accuracy per epoch:') == 2
  with open(os.path.join(workdir, 'comparison.csv')) as f:
    rows = list(csv.DictReader(f))
  assert [r['activation'] for r in rows] == ['sigmoid', 'relu']
  for r in rows:
    assert r['health']     # 'healthy' or the finding kinds of its run
    with open(os.path.join(workdir, r['activation'], 'health.json')) as f:
      kinds = [x['kind'] for x in json.load(f)['findings']]
    assert r['health'] == (', '.join(kinds) or 'healthy')
    assert 0.0 <= float(r['val_acc_e1']) <= 1.0
    assert float(r['final_val_acc']) == float(r['val_acc_e2'])
    assert float(r['ratio_start']) == pytest.approx(
        float(r['grad_first_start']) / float(r['grad_last_start']), rel=1e-6)
  assert list(rows[0])[:8] == [
      'activation', 'initializer', 'standardized', 'optimizer',
      'learning_rate', 'status', 'val_acc_e1', 'val_acc_e2']
  assert list(rows[0])[8:] == [
      'final_val_acc', 'test_acc', 'grad_first_start', 'grad_last_start',
      'ratio_start', 'grad_first_end', 'grad_last_end', 'ratio_end', 'health',
      'wall_seconds', 'probe_seconds']
  for name in ('comparison.md', 'grad_norm_vs_depth.png', 'val_accuracy.png'):
    assert os.path.getsize(os.path.join(workdir, name)) > 100
  # One HParams row per activation (a grid over activation).
  assert [e.tag for e in testing.read_events(workdir)
          if e.plugin == 'hparams'] == ['_hparams_/experiment']
  assert '_hparams_/session_start_info' in testing.read_tags(
      os.path.join(workdir, 'relu'))
  # Each activation is its own TensorBoard run with the probe's summaries.
  tags = testing.read_values(os.path.join(workdir, 'sigmoid', 'train'))
  # 500 train examples / 25 = 20 steps per epoch: probes at 0, 10, 20, 30, 40.
  assert [s for s, _ in tags['activation_saturated/act_005']] == [
      0, 10, 20, 30, 40]
  assert 'grad_norm_vs_depth' in tags and 'grad_norm/dense_000' in tags
  assert 'grad/dense_003' in tags
  relu_tags = testing.read_tags(os.path.join(workdir, 'relu', 'train'))
  assert 'activation_dead/act_000' in relu_tags
  assert glob.glob(os.path.join(workdir, 'relu', 'validation', 'events.*'))


def test_launcher_rejects_unknown_activation(run_launcher, tmp_path):
  proc = run_launcher('launch.deep', '--activation=sigmoid,softmax',
                      f'--workdir={tmp_path}', timeout=60)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: --activation=sigmoid,softmax: give one or a comma list of '
      'distinct names from sigmoid, tanh, relu, leaky_relu, elu, selu, gelu, '
      'swish.')


@pytest.mark.slow
def test_launcher_jit_compile_with_every_logging_option(tiny_mnist_data_dir,
                                                        run_launcher, tmp_path):
  """The issue's failing command: XLA with norms, histograms and the probe."""
  workdir = str(tmp_path / 'deep')
  proc = run_launcher(
      'launch.deep', '--jit_compile', '--activation=sigmoid', '--depth=5',
      '--width=8', '--epochs=1', '--max_steps_per_epoch=12', '--batch_size=25',
      '--validation_size=100', '--steps_per_loop=4', '--log_every_steps=3',
      '--histogram_every_steps=10', '--noprogress',
      f'--data_dir={tiny_mnist_data_dir}', f'--workdir={workdir}',
      timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  # The first hook call comes at the first multiple of --steps_per_loop (4);
  # its steps include the first observed step (3), in the same compiled loop.
  assert 'first training loop done: 4 steps' in proc.stderr
  tags = testing.read_values(os.path.join(workdir, 'sigmoid', 'train'))
  assert [s for s, _ in tags['grad_norm/dense_004']] == [3, 6, 9, 10, 12]
  assert [s for s, _ in tags['update_ratio/logits']] == [3, 6, 9, 10, 12]
  for kind in ('grad', 'weight', 'grad_log10'):
    assert [s for s, _ in tags[f'{kind}/dense_000']] == [10]
  # Hooks run at 4, 8, 12: the probe runs after the one crossing step 10.
  assert [s for s, _ in tags['activation_saturated/act_004']] == [0, 12]
  # Sigmoid at depth 5: the first layer's gradient is the smallest.
  norms = [float(v) for _, v in tags['grad_norm/dense_000']]
  last = [float(v) for _, v in tags['grad_norm/dense_004']]
  assert all(a < b for a, b in zip(norms, last))
