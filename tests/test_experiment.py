"""Experiment: the checks before the workdir exists."""

import pytest

from tftrain import config as config_lib
from tftrain import errors
from tftrain import experiment


def test_split_size_checks_use_the_prepared_metadata(tiny_mnist_data_dir):
  config = config_lib.Config(data_dir=tiny_mnist_data_dir, validation_size=100)
  experiment.preflight(config.replace(batch_size=500))   # exactly the split: fine
  with pytest.raises(errors.ConfigError, match=r'batch_size=501: .* 500'):
    experiment.preflight(config.replace(batch_size=501))
  with pytest.raises(errors.ConfigError, match=r'validation_size=600: .* 600'):
    experiment.preflight(config.replace(validation_size=600))


def test_built_caches_are_complete_before_any_partial_read(tiny_mnist_data_dir,
                                                           tmp_path):
  """A partly read iterator (the graph trace's batch of two, a probe batch)
  must not end a cache short: build_experiment fills every split first, so
  its sizes hold after many partial reads (the first epoch's count too)."""
  config = config_lib.Config(data_dir=tiny_mnist_data_dir, validation_size=100,
                             batch_size=25, model='mlp')
  exp = experiment.build_experiment(config, str(tmp_path / 'run'))
  assert exp.steps_per_epoch == 500 // 25
  # Without the fill, one such read in ~20 (under load) ends the cache short.
  for split, reads in (('train', 80), ('validation', 20), ('test', 20)):
    for _ in range(reads):
      next(iter(exp.datasets[split].batch(2)))
  sizes = {k: sum(int(y.shape[0]) for _, y in d.batch(64))
           for k, d in exp.datasets.items()}
  assert sizes == {'train': 500, 'validation': 100, 'test': 100}


def test_fill_counts_every_example_of_a_cache():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cached = tf.data.Dataset.from_tensor_slices(
      (tf.zeros([9001, 2]), tf.zeros([9001], tf.int32))).cache()
  assert experiment._fill(cached) == 9001   # pylint: disable=protected-access


def test_cached_splits_fill_in_the_background_and_lookups_wait():
  """`CachedSplits`: `in` and `uncached` answer at once while the fill is
  held; a lookup waits for its split's fill, then reads the whole cache."""
  import threading  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  release, reads = threading.Event(), []

  def gen():
    assert release.wait(30)
    for i in range(300):
      reads.append(i)
      yield np.float32(i), np.int32(i % 10)
  spec = (tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32))
  source = tf.data.Dataset.from_generator(gen, output_signature=spec)
  splits = experiment.CachedSplits({'train': source})
  assert 'train' in splits and 'test' not in splits and len(splits) == 1
  assert splits.uncached['train'] is source
  assert not splits._done['train'].is_set()  # pylint: disable=protected-access
  release.set()
  assert splits.size('train') == 300
  assert len(reads) == 300
  got = [float(x) for x, _ in splits['train']]    # from the cache
  assert got == [float(i) for i in range(300)] and len(reads) == 300


def test_cached_splits_raise_a_fill_error_at_the_lookup():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  def check(i):
    tf.debugging.assert_less(i, tf.constant(5, tf.int64),
                             message='label out of range')
    return tf.cast(i, tf.float32), tf.cast(i, tf.int32)
  bad = tf.data.Dataset.range(10).map(check)
  good = tf.data.Dataset.range(4).map(
      lambda i: (tf.cast(i, tf.float32), tf.cast(i, tf.int32)))
  splits = experiment.CachedSplits({'train': bad, 'test': good})
  with pytest.raises(tf.errors.InvalidArgumentError, match='label out of range'):
    splits['train']  # pylint: disable=pointless-statement
  assert splits.size('test') == 4
