"""tftrain.data: air-gapped preparation through TFDS builders, splits, pipelines."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from tftrain import data
from tftrain import errors
from tests import tiny_data


@pytest.fixture(scope='module')
def cifar_dirs(tmp_path_factory):
  raw = tmp_path_factory.mktemp('raw')
  tiny_data.write_tiny_cifar10(str(raw), per_batch=40, num_test=50)
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  data.prepare('cifar10', data_dir, str(raw))
  return str(raw), data_dir


def test_prepare_from_raw_files_and_split_sizes(cifar_dirs):
  _, data_dir = cifar_dirs
  splits, info = data.load_splits('cifar10', data_dir, validation_size=30)
  counts = {k: int(d.reduce(0, lambda c, _: c + 1).numpy())
            for k, d in splits.items()}
  assert counts == {'train': 170, 'validation': 30, 'test': 50}
  assert (info.num_train, info.num_validation, info.num_test) == (170, 30, 50)
  assert info.num_classes == 10 and info.image_shape == (32, 32, 3)
  image, label = next(iter(splits['train']))
  assert image.dtype == tf.float32 and image.shape == (32, 32, 3)
  assert 0.0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(image)) <= 1.0
  assert 0 <= int(label) < 10
  # Prepared once: no downloads/extraction left behind.
  assert not os.path.exists(os.path.join(data_dir, 'downloads', 'cifar10'))


def test_validation_is_the_last_n_of_train(cifar_dirs):
  _, data_dir = cifar_dirs
  full, _ = data.load_splits('cifar10', data_dir, validation_size=0)
  parts, _ = data.load_splits('cifar10', data_dir, validation_size=30)
  all_labels = [int(y) for _, y in full['train']]
  assert 'validation' not in full
  assert [int(y) for _, y in parts['validation']] == all_labels[-30:]
  assert [int(y) for _, y in parts['train']] == all_labels[:-30]


def test_standardize_uses_train_statistics(cifar_dirs):
  _, data_dir = cifar_dirs
  splits, info = data.load_splits('cifar10', data_dir, validation_size=30,
                                  standardize=True)
  images = np.stack([x.numpy() for x, _ in splits['train']])
  np.testing.assert_allclose(images.mean(axis=(0, 1, 2)), 0.0, atol=1e-3)
  np.testing.assert_allclose(images.std(axis=(0, 1, 2)), 1.0, atol=1e-3)
  assert len(info.mean) == 3 and len(info.std) == 3


def test_missing_raw_file_fails_cleanly_then_recovers(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_mnist, '_TRAIN_EXAMPLES', 120)
  monkeypatch.setattr(tfds_mnist, '_TEST_EXAMPLES', 30)
  raw = str(tmp_path / 'raw')
  data_dir = str(tmp_path / 'tfds')
  tiny_data.write_tiny_mnist(raw, num_train=120, num_test=30)
  os.remove(os.path.join(raw, 'mnist', 't10k-labels-idx1-ubyte.gz'))
  with pytest.raises(errors.DataError) as e:
    data.prepare('mnist', data_dir, raw)
  message = str(e.value)
  assert 't10k-labels-idx1-ubyte.gz' in message and '--raw_data_dir' in message
  assert '\n' not in message
  mnist_dir = os.path.join(data_dir, 'mnist')
  assert not os.path.exists(mnist_dir) or not any(
      n.startswith('incomplete') for n in os.listdir(mnist_dir))
  # Put the file back: the next attempt prepares through TFDS's mnist builder.
  tiny_data.write_tiny_mnist(raw, num_train=120, num_test=30)
  data.prepare('mnist', data_dir, raw)
  splits, info = data.load_splits('mnist', data_dir, validation_size=20)
  assert (info.num_train, info.num_validation, info.num_test) == (100, 20, 30)
  assert sorted(os.listdir(mnist_dir)) == ['3.0.1']


def test_raw_dir_from_environment(monkeypatch):
  monkeypatch.setenv(data.RAW_DATA_ENV, '/somewhere')
  assert data.resolve_raw_data_dir(None) == '/somewhere'
  assert data.resolve_raw_data_dir('/flag') == '/flag'
  assert data.resolve_raw_data_dir('rel') == os.path.abspath('rel')


def test_train_batches_order_depends_only_on_seed_and_epoch():
  ds = tf.data.Dataset.from_tensor_slices(
      (tf.zeros([20, 2]), tf.range(20))).cache()
  def order(seed, epoch):
    return [int(v) for _, y in data.train_batches(ds, 4, seed, epoch)
            for v in y]
  assert order(1, 0) == order(1, 0)
  assert order(1, 0) != order(1, 1)
  assert sorted(order(1, 3)) == list(range(20))
  assert len(list(data.train_batches(ds, 6, 0, 0))) == 3   # drop remainder


def test_channel_stats_match_numpy():
  rng = np.random.default_rng(0)
  x = rng.random((50, 4, 4, 3)).astype(np.float32)
  ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(50, np.int32)))
  mean, std = data.channel_stats(ds)
  np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), rtol=1e-4)
