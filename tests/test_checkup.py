"""checkup: model_facts.json before the first step, the live checks during
epoch 1 and --stop_on_error."""

import json
import os

import numpy as np
import tensorflow as tf

from tftrain import checkup
from tftrain import config as config_lib
from tftrain import loop


def _data(n, seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 4, size=n).astype(np.int32)
  images = rng.normal(size=(n, 6, 6, 1)).astype(np.float32)
  images[np.arange(n), labels, 0, 0] += 4.0       # learnable: a bright pixel
  return tf.data.Dataset.from_tensor_slices((images, labels))


def _softmax_model(shape, num_classes):
  return tf.keras.Sequential([
      tf.keras.Input(shape), tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(16, activation='relu', name='hidden'),
      tf.keras.layers.Dense(num_classes, activation='softmax', name='out')])


def test_softmax_into_the_logits_loss_stops_the_run_with_stop_on_error(
    tmp_path):
  workdir = str(tmp_path / 'run')
  config = config_lib.Config(batch_size=20, epochs=4, learning_rate=0.1,
                             optimizer='sgd', progress=False,
                             stop_on_error=True, seed=1)
  result = loop.train_and_evaluate(
      config, workdir, model=_softmax_model, num_classes=4,
      datasets={'train': _data(400, 0), 'validation': _data(80, 1)})
  with open(os.path.join(workdir, checkup.FACTS)) as f:
    facts = json.load(f)
  assert facts['output_layer'] == 'out'
  assert facts['output_activation'] == 'softmax'
  assert facts['train_examples'] == 400
  # The first check (a quarter into epoch 1) finds it; the run stops there.
  assert result['status'] == 'stopped_on_error'
  assert result['epochs_run'] < config.epochs
  with open(os.path.join(workdir, 'health.json')) as f:
    kinds = {x['kind']: x['severity'] for x in json.load(f)['findings']}
  assert kinds.get('probabilities_as_logits') == 'error'


def test_without_stop_on_error_the_same_run_completes_and_reports_it(tmp_path):
  workdir = str(tmp_path / 'run')
  config = config_lib.Config(batch_size=20, epochs=2, learning_rate=0.1,
                             optimizer='sgd', progress=False, seed=1)
  result = loop.train_and_evaluate(
      config, workdir, model=_softmax_model, num_classes=4,
      datasets={'train': _data(400, 0), 'validation': _data(80, 1)})
  assert result['status'] == 'completed' and result['epochs_run'] == 2
  with open(os.path.join(workdir, 'health.json')) as f:
    kinds = [x['kind'] for x in json.load(f)['findings']]
  assert 'probabilities_as_logits' in kinds
