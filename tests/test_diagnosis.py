"""benchmarks.diagnosis: its fault operators, verdicts and (on demand) --quick."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import diagnosis
from tftrain import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_mlp():
  return models.build_dense_stack((4, 4, 1), [8, 8], 3, 'relu', seed=0)


def test_model_operators_change_what_they_name():
  base = tiny_mlp()
  soft = diagnosis.FAULTS['softmax_output'].model(tiny_mlp())
  assert soft.layers[-1].activation.__name__ == 'softmax'
  assert base.layers[-1].activation.__name__ == 'linear'
  linear = diagnosis.FAULTS['linear'].model(tiny_mlp())
  acts = [l.activation.__name__ for l in linear.layers
          if isinstance(l, tf.keras.layers.Activation)]
  assert acts == ['linear', 'linear']
  zeros = diagnosis.FAULTS['init_zeros'].model(tiny_mlp())
  assert all(not np.any(l.kernel.numpy()) for l in zeros.layers
             if isinstance(l, tf.keras.layers.Dense))
  frozen = diagnosis.FAULTS['frozen'].model(tiny_mlp())
  assert not frozen.trainable_variables
  hidden = diagnosis.FAULTS['frozen_hidden'].model(tiny_mlp())
  assert [v.path.split('/')[-2] for v in hidden.trainable_variables] == [
      'logits', 'logits']


def test_data_operators_and_standardization():
  rng = np.random.default_rng(0)
  x = rng.random((100, 4, 4, 1)).astype(np.float32)
  y = rng.integers(0, 10, 100)
  arrays = {'train': (x, y), 'test': (x, y)}
  assert diagnosis.FAULTS['unscaled'].data(arrays, 0)['train'][0].max() == (
      pytest.approx(255 * x.max()))
  shuffled = diagnosis.FAULTS['labels_shuffled'].data(arrays, 0)['train'][1]
  assert sorted(shuffled) == sorted(y) and (shuffled != y).mean() > 0.5
  noisy = diagnosis.FAULTS['labels_noise50'].data(arrays, 0)['train'][1]
  assert 0.3 < (noisy != y).mean() < 0.6        # 50% redrawn, 1/10 unchanged
  standard = diagnosis.standardized(arrays)['train'][0]
  assert abs(standard.mean()) < 1e-5 and standard.std() == pytest.approx(1, 1e-4)


def test_verdict_is_from_the_outcome():
  ok = {'finite': True}
  assert diagnosis.verdict({**ok, 'test_accuracy': 0.93}, 0.95) == 'not hurt'
  assert diagnosis.verdict({**ok, 'test_accuracy': 0.80}, 0.95).startswith(
      'broken (-15')
  assert diagnosis.verdict({**ok, 'test_accuracy': 0.11}, 0.95) == (
      'broken (chance)')
  assert diagnosis.verdict({'finite': False, 'test_accuracy': math.nan},
                           0.95) == 'broken (non-finite)'


def test_every_case_names_a_known_fault_with_fitting_kinds():
  from tftrain import health  # pylint: disable=g-import-not-at-top
  for base, faults in diagnosis.CASES.items():
    assert base in diagnosis.BASES
    for fault in faults:
      kinds = diagnosis.FAULTS[fault].kinds
      assert kinds, fault
  known = set(health.KINDS)
  for name, fault in diagnosis.FAULTS.items():
    unknown = [k for k in fault.kinds if k not in known and k not in (
        'oscillating_loss', 'slow_convergence', 'under_training')]
    assert not unknown, (name, unknown)


@pytest.mark.benchmark
def test_quick_benchmark_scores(tmp_path):
  """The --quick subset end to end (minutes; `pytest -m benchmark`)."""
  if not os.environ.get('TFTRAIN_RAW_DATA_DIR'):
    pytest.fail('set TFTRAIN_RAW_DATA_DIR to the raw dataset mirror')
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.diagnosis', '--quick',
       f'--workdir={tmp_path}'], cwd=ROOT, capture_output=True, text=True,
      timeout=1200, check=False)
  results = os.path.join(ROOT, 'benchmarks', 'results', 'diagnosis_quick.json')
  with open(results) as f:
    report = json.load(f)
  cases = {r['case'] for r in report['rows']}
  assert len(cases) == len(diagnosis.QUICK) + 1, proc.stderr[-2000:]
  assert [t['name'].split(' (')[0] for t in report['targets']] == [
      'detection recall', 'false alarms', 'symptom precision']
