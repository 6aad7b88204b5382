"""train_and_evaluate end to end on tiny real (TFDS-prepared) data."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tftrain import config as config_lib
from tftrain import loop
from tftrain import workdir as workdir_lib
from tests import testing


def small_config(data_dir, **overrides):
  values = dict(dataset='cifar10', data_dir=data_dir, validation_size=40,
                model='mlp', hidden=(32,), optimizer='adam', learning_rate=3e-3,
                batch_size=20, eval_batch_size=50, epochs=3, patience=0,
                steps_per_loop=4, log_every_steps=2, progress=False, seed=3)
  values.update(overrides)
  return config_lib.Config(**values)


def test_learns_and_writes_metrics_checkpoints_and_summaries(tiny_cifar_data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  result = loop.train_and_evaluate(small_config(tiny_cifar_data_dir, epochs=4), workdir)
  history = result['history']
  assert [h['epoch'] for h in history] == [1, 2, 3, 4]
  assert history[-1]['loss'] < 0.7 * history[0]['loss']
  assert result['test_accuracy'] > 0.5          # brightness encodes the label
  assert result['status'] == 'completed'
  with open(os.path.join(workdir, workdir_lib.METRICS_JSON)) as f:
    saved = json.load(f)
  assert saved['test_accuracy'] == pytest.approx(result['test_accuracy'])
  assert tf.train.latest_checkpoint(os.path.join(workdir, 'checkpoints'))
  train_tags = testing.read_tags(os.path.join(workdir, 'train'))
  for tag in ('loss', 'learning_rate', 'grad_norm/dense_000',
              'grad_norm/logits', 'epoch_loss', 'epoch_accuracy',
              'examples_per_second', 'model'):
    assert tag in train_tags, tag
  # The Graphs tab reads the traced model graph from this plugin.
  assert train_tags['model'].startswith('graph_run_metadata')
  # 200 train examples / 20 = 10 steps per epoch, 40 steps, logged every 2.
  assert len(testing.read_scalars(os.path.join(workdir, 'train'))['loss']) == 20
  val_scalars = testing.read_scalars(os.path.join(workdir, 'validation'))
  assert len(val_scalars['epoch_accuracy']) == 4
  assert not os.path.exists(os.path.join(workdir, '.lock'))


def sabotage_after_each_epoch():
  """A hook scrambling the weights after every epoch: later epochs validate
  worse than the first."""
  rng = np.random.default_rng(0)

  def sabotage(exp, event, outputs):
    if event == 'epoch' and outputs['epoch'] >= 1:
      for v in exp.trainer.model.trainable_variables:
        v.assign(v.numpy() + rng.normal(0, 3.0, v.shape).astype(np.float32))
  return sabotage


def test_early_stopping_restores_best_weights(tiny_cifar_data_dir, tmp_path):
  sabotage = sabotage_after_each_epoch()
  config = small_config(tiny_cifar_data_dir, epochs=10, patience=2, monitor='val_loss',
                        learning_rate=1e-5)
  result = loop.train_and_evaluate(config, str(tmp_path / 'run'), hooks=[sabotage])
  history = result['history']
  assert result['status'] == 'early_stopped'
  assert len(history) == 3 and result['best_epoch'] == 1
  assert history[1]['val_loss'] > history[0]['val_loss']
  # The reported validation loss is that of the restored best epoch.
  assert result['val_loss'] == pytest.approx(history[0]['val_loss'], rel=1e-5)


def test_onecycle_runs_its_whole_cycle_and_keeps_its_last_weights(
    tiny_cifar_data_dir, tmp_path):
  sabotage = sabotage_after_each_epoch()
  config = small_config(tiny_cifar_data_dir, epochs=4, patience=2,
                        monitor='val_loss', learning_rate=1e-5,
                        schedule='onecycle')
  assert config.early_stopping_patience == 0
  assert not config.restore_best_weights
  result = loop.train_and_evaluate(config, str(tmp_path / 'run'),
                                   hooks=[sabotage])
  history = result['history']
  assert result['status'] == 'completed' and len(history) == 4
  assert result['best_epoch'] == 1 and not result['restored_best_weights']
  # The evaluated model is the last epoch's (sabotaged after epoch 4, so
  # worse than epoch 4's own validation).
  assert result['val_loss'] > history[0]['val_loss']


def test_schedule_auto_is_onecycle_after_the_lr_finder_only():
  assert config_lib.Config(learning_rate='auto').lr_schedule == 'onecycle'
  assert config_lib.Config(learning_rate=0.1).lr_schedule == 'constant'
  assert config_lib.Config(learning_rate='auto',
                           schedule='constant').lr_schedule == 'constant'
  assert config_lib.Config(learning_rate='auto').restore_best_weights is False
  assert config_lib.Config(learning_rate=0.1).early_stopping_patience == 5


def test_health_report_flags_vanishing_gradients(tiny_cifar_data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  config = small_config(tiny_cifar_data_dir, model='deep_mlp', depth=30,
                        width=8, activation='sigmoid', optimizer='sgd',
                        learning_rate=0.01, epochs=2, trace_graph=False)
  result = loop.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'health.json')) as f:
    report = json.load(f)
  kinds = [f['kind'] for f in report['findings']]
  assert 'vanishing_gradients' in kinds and not report['healthy']
  assert result['health']['findings'] == kinds
  finding = report['findings'][kinds.index('vanishing_gradients')]
  assert finding['numbers']['ratio_median'] < 1e-3
  with open(os.path.join(workdir, 'health.md')) as f:
    assert 'Vanishing gradients' in f.read()
  assert os.path.getsize(os.path.join(workdir, 'grad_norm_heatmap.png')) > 1000
  tags = testing.read_tags(os.path.join(workdir, 'train'))
  assert tags['health'] == 'text' and tags['grad_norm_heatmap'] == 'images'
  assert 'activation_saturated/act_029' in tags   # the automatic probe
  records = [json.loads(l) for l in open(os.path.join(
      workdir, workdir_lib.OBSERVATIONS))]
  assert [r['step'] for r in records] == list(range(2, 21, 2))
  assert all(len(r['grad_norms']) == 31 for r in records)
