"""Bring your own model: the README example runs as written; user datasets."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import tftrain
from tftrain import config as config_lib
from tftrain import loop
from tftrain import workdir as workdir_lib
from tests import conftest
from tests import testing

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'README.md')


def readme_example(name):
  text = open(README).read()
  match = re.search(rf'<!-- example: {name} -->\s*```python\n(.*?)```', text,
                    re.S)
  assert match, f'README example {name} not found'
  return match.group(1)


def test_readme_user_model_example_runs(tiny_fashion_mnist_data_dir, tmp_path,
                                        monkeypatch):
  """Executes the README's code as written, on tiny data in a temp dir."""
  real = config_lib.Config
  monkeypatch.chdir(tmp_path)
  # Tiny data stand in for the real dataset: same TFDS name and format, a
  # texture per class (global pooling keeps it: the example's CNN learns it).
  monkeypatch.setattr(tftrain, 'Config', lambda **kw: real(**{
      **kw, 'data_dir': tiny_fashion_mnist_data_dir, 'validation_size': 100,
      'progress': False, 'log_every_steps': 5}), raising=False)
  namespace = {}
  exec(readme_example('user-model'), namespace)  # pylint: disable=exec-used
  result = namespace['result']
  # Chance is 0.1; measured 0.985 (3 epochs, 1900 training examples).
  assert result['test_accuracy'] > 0.6
  assert result['history'][-1]['val_accuracy'] > 0.6
  assert result['status'] == 'completed' and len(result['history']) == 3
  run = tmp_path / 'runs' / 'my-cnn'
  for name in ('health.md', 'metrics.json', 'export/saved_model',
               'observations.jsonl'):
    assert (run / name).exists(), name
  tags = testing.read_tags(str(run / 'train'))
  for layer in ('conv1', 'bn1', 'conv2', 'logits'):
    assert f'grad_norm/{layer}' in tags and f'update_ratio/{layer}' in tags


class Subclassed(tf.keras.Model):
  """A subclassed model with a nested block and a frozen layer."""

  def __init__(self, num_classes):
    super().__init__(name='sub')
    self.flat = tf.keras.layers.Flatten()
    self.block = tf.keras.Sequential([tf.keras.layers.Dense(16, name='a'),
                                      tf.keras.layers.Dense(8, name='b')],
                                     name='block')
    self.frozen = tf.keras.layers.Dense(8, name='frozen', trainable=False)
    self.head = tf.keras.layers.Dense(num_classes, name='head')

  def call(self, x, training=False):
    return self.head(self.frozen(self.block(self.flat(x))))


def test_user_datasets_and_subclassed_model(tmp_path):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 240).astype(np.int32)
  images = rng.normal(size=(240, 4, 4, 1)).astype(np.float32)
  images[:, 0, 0, 0] += 3.0 * labels                 # learnable
  ds = lambda a, b: tf.data.Dataset.from_tensor_slices((images[a:b],
                                                        labels[a:b]))
  config = config_lib.Config(optimizer='adam', learning_rate=1e-2, epochs=3,
                             batch_size=20, log_every_steps=3, progress=False,
                             trace_graph=False)
  result = loop.train_and_evaluate(
      config, str(tmp_path / 'run'), model=lambda shape, n: Subclassed(n),
      datasets={'train': ds(0, 160), 'validation': ds(160, 200),
                'test': ds(200, 240)}, num_classes=3)
  assert result['history'][-1]['loss'] < result['history'][0]['loss']
  tags = testing.read_tags(str(tmp_path / 'run' / 'train'))
  for layer in ('block/a', 'block/b', 'head'):
    assert f'grad_norm/{layer}' in tags, layer
  assert not any('frozen' in t for t in tags)


def _toy_datasets():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, 200).astype(np.int32)
  images = rng.normal(size=(200, 4, 4, 1)).astype(np.float32)
  images[:, 0, 0, 0] += 3.0 * labels
  ds = lambda a, b: tf.data.Dataset.from_tensor_slices((images[a:b],
                                                        labels[a:b]))
  return {'train': ds(0, 160), 'test': ds(160, 200)}


def _toy_model(shape, num_classes, batch_norm=True):
  return tf.keras.Sequential([
      tf.keras.Input(shape), tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(16, activation='relu', name='hidden')] + (
          [tf.keras.layers.BatchNormalization(name='bn')] if batch_norm
          else []) + [
              tf.keras.layers.Dense(num_classes, dtype='float32', name='out')])


@pytest.mark.parametrize('options', [dict(jit_compile=True),
                                     dict(mixed_precision='mixed_float16')])
def test_user_model_with_xla_or_mixed_precision(tmp_path, options):
  config = config_lib.Config(optimizer='adam', learning_rate=1e-2, epochs=2,
                             batch_size=20, log_every_steps=4,
                             histogram_every_steps=8, progress=False,
                             trace_graph=False, **options)
  try:
    result = loop.train_and_evaluate(config, str(tmp_path / 'run'),
                                     model=_toy_model, datasets=_toy_datasets(),
                                     num_classes=3)
  finally:
    tf.keras.mixed_precision.set_global_policy('float32')
  assert result['history'][-1]['loss'] < result['history'][0]['loss']
  assert 'val_accuracy' not in result and 0 <= result['test_accuracy'] <= 1
  records = [json.loads(l) for l in open(tmp_path / 'run' / workdir_lib.OBSERVATIONS)]
  assert [r['step'] for r in records] == [4, 8, 12, 16]
  assert all(np.isfinite(r['grad_norms']).all() and len(r['grad_norms']) == 3
             for r in records)


MIRRORED_USER_SCRIPT = r'''
import json, sys
from tftrain import distribute
distribute.configure_cpu_replicas(2)
import numpy as np, tensorflow as tf
from tests import test_user_model as t
from tftrain import config as config_lib, loop
out = {}
for strategy in ('default', 'mirrored'):
  config = config_lib.Config(optimizer='sgd', learning_rate=0.05, epochs=2,
                             batch_size=20, log_every_steps=4, progress=False,
                             trace_graph=False, strategy=strategy, seed=3)
  r = loop.train_and_evaluate(config, sys.argv[1] + '/' + strategy,
                              # No batch norm: per-replica batch statistics
                              # differ from one device's by design.
                              model=lambda s, n: t._toy_model(s, n, False),
                              datasets=t._toy_datasets(),
                              num_classes=3)
  out[strategy] = [r['history'][-1]['loss'], r['test_loss']]
print('RESULT' + json.dumps(out))
'''


@pytest.mark.slow
def test_user_model_mirrored_matches_single_device(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = conftest.run_python(
      ['-c', MIRRORED_USER_SCRIPT, str(tmp_path)],
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=root),
      timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT')][0]
  out = json.loads(line[len('RESULT'):])
  np.testing.assert_allclose(out['mirrored'], out['default'], rtol=1e-3)
