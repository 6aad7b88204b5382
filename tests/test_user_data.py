"""User datasets: a malformed split is one line before training; encodings
train.

Every case runs the real `train_and_evaluate` on tiny generated arrays, in a
workdir that already holds a run's files, and checks the exact message (split,
example index, value) and that nothing in the workdir changed.
"""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from tftrain import config as config_lib
from tftrain import errors
from tftrain import loop
from tftrain import user_data

NUM_CLASSES = 3
SHAPE = (4, 4, 1)


def _arrays(n=96, seed=0, shape=SHAPE):
  """Separable tiny data: class c lights up pixel c (balanced classes)."""
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(n) % NUM_CLASSES)
  images = rng.normal(scale=0.3, size=(n, *shape)).astype(np.float32)
  images.reshape(n, -1)[np.arange(n), labels] += 3.0
  return images, labels.astype(np.int64)


def _ds(images, labels):
  return tf.data.Dataset.from_tensor_slices((images, labels))


def _with(array, index, value, dtype=None):
  out = np.array(array, dtype=dtype)
  out[index] = value
  return out


def _generated(shapes, dtype=tf.float32):
  """A generator dataset whose element_spec leaves the image shape open."""
  def gen():
    for i, shape in enumerate(shapes):
      yield np.zeros(shape, dtype.as_numpy_dtype), i % NUM_CLASSES
  return tf.data.Dataset.from_generator(gen, output_signature=(
      tf.TensorSpec((None, None, 1), dtype), tf.TensorSpec((), tf.int64)))


X, Y = _arrays()
XV, YV = _arrays(30, seed=1)
ONE_HOT = np.eye(NUM_CLASSES, dtype=np.float32)


def _bad_images():
  x = X.copy()
  x[9, 0, 0, 0] = np.nan
  x[9, 1, 1, 0] = np.inf
  x[40, 2, 2, 0] = -np.inf
  return x


# (case, datasets factory, num_classes, substrings of the one-line error)
BAD_CASES = [
    ('label_negative', lambda: {'train': _ds(X, _with(Y, 5, -1))}, 3,
     ["datasets['train'] example 5: label -1 is outside [0, 3)",
      '(bad labels in train: 1 of 96)', '.filter(lambda x, y: y >= 0)']),
    ('label_equal_to_num_classes', lambda: {'train': _ds(X, _with(Y, 7, 3))},
     3, ["datasets['train'] example 7: label 3 is outside [0, 3)",
         'pass num_classes=4']),
    ('label_larger_in_validation', lambda: {
        'train': _ds(X, Y), 'validation': _ds(XV, _with(YV, [2, 4], 70))}, 3,
     ["datasets['validation'] example 2: label 70 is outside [0, 3)",
      '(bad labels in validation: 2 of 30)', 'pass num_classes=71']),
    ('label_huge_id', lambda: {'train': _ds(X, _with(Y, 1, 2**40))}, 3,
     ["datasets['train'] example 1: label 1099511627776 is outside [0, 3)",
      'map the labels to class indices 0..2 first']),
    ('label_not_whole', lambda: {'train': _ds(X, _with(Y, 4, 2.5, 'f4'))}, 3,
     ["datasets['train'] example 4: label 2.5 is not a class index",
      'floats like 3.0']),
    ('label_nan', lambda: {'train': _ds(X, _with(Y, 11, np.nan, 'f8'))}, 3,
     ["datasets['train'] example 11: label nan is not a class index"]),
    ('label_vector_length', lambda: {'train': _ds(X, np.eye(5)[Y])}, 3,
     ["datasets['train']: labels are vectors of length 5 but num_classes=3",
      'pass num_classes=5']),
    ('label_row_not_probabilities', lambda: {
        'train': _ds(X, _with(ONE_HOT[Y], 6, [0.0, 0.5, 0.0]))}, 3,
     ["datasets['train'] example 6: label [0, 0.5, 0] is not a one-hot or "
      'probability vector (sums to 0.5; 1 of 96 labels are not)']),
    ('label_row_negative', lambda: {
        'train': _ds(X, _with(ONE_HOT[Y], 8, [1.5, -0.5, 0.0]))}, 3,
     ["datasets['train'] example 8: label [1.5, -0.5, 0]",
      'has the negative entry -0.5']),
    ('label_matrix', lambda: {'train': _ds(X, np.zeros((96, 2, 2)))}, 3,
     ["datasets['train']: labels have shape (2, 2)"]),
    ('image_nan_and_inf', lambda: {'train': _ds(_bad_images(), Y)}, 3,
     ["datasets['train'] example 9: image holds nan (3 non-finite values in 2 "
      'of 96 examples)', 'np.nan_to_num']),
    ('image_inf_in_test', lambda: {
        'train': _ds(X, Y), 'test': _ds(_with(XV, (3, 0, 0, 0), np.inf), YV)},
     3, ["datasets['test'] example 3: image holds inf (1 non-finite values in "
         '1 of 30 examples)']),
    ('image_beyond_float32', lambda: {
        'train': _ds(_with(X, (2, 1, 0, 0), 1e300, 'f8'), Y)}, 3,
     ["datasets['train'] example 2: image holds 1e+300, beyond float32's "
      'range']),
    ('shape_differs_between_splits', lambda: {
        'train': _ds(X, Y), 'validation': _ds(XV[:, :3], YV)}, 3,
     ["datasets['validation']: images have shape (3, 4, 1) but "
      "datasets['train']'s have (4, 4, 1)"]),
    ('shape_differs_undeclared', lambda: {
        'train': _ds(X, Y), 'test': _generated([(4, 5, 1)] * 6)}, 3,
     ["datasets['test']: images have shape (4, 5, 1) but "
      "datasets['train']'s have (4, 4, 1)"]),
    ('shape_varies_within_split', lambda: {
        'train': _generated([(4, 4, 1)] * 20 + [(5, 4, 1)] + [(4, 4, 1)] * 5)},
     3, ["datasets['train'] example 20: image shape (5, 4, 1) differs from "
         "example 0's (4, 4, 1)"]),
    ('image_strings', lambda: {
        'train': _ds(np.array(['a.png'] * 96), Y)}, 3,
     ["datasets['train']: images are tf.string", 'tf.io.decode_image']),
    ('label_strings', lambda: {
        'train': _ds(X, np.array(['cat', 'dog', 'emu'])[Y])}, 3,
     ["datasets['train']: labels are tf.string", 'StringLookup']),
    ('image_ragged', lambda: {'train': tf.data.Dataset.from_tensor_slices(
        (tf.ragged.constant([[1.0], [1.0, 2.0]]), Y[:2]))}, 3,
     ["datasets['train']: images are ragged"]),
    ('split_empty', lambda: {'train': _ds(X, Y), 'test': _ds(XV[:0], YV[:0])},
     3, ["datasets['test'] is empty (0 examples)", "leave 'test' out"]),
    ('split_empty_after_filter', lambda: {
        'train': _ds(X, Y),
        'validation': _ds(XV, YV).filter(lambda x, y: y > 5)}, 3,
     ["datasets['validation'] is empty (0 examples)"]),
    ('split_infinite', lambda: {'train': _ds(X, Y).repeat()}, 3,
     ["datasets['train'] is infinite"]),
    ('dict_other_keys', lambda: {'train': tf.data.Dataset.from_tensor_slices(
        {'pixels': X, 'target': Y})}, 3,
     ["datasets['train'] yields dicts with keys 'pixels', 'target'",
      "keys 'image' and 'label'"]),
    ('three_tuple', lambda: {'train': tf.data.Dataset.from_tensor_slices(
        (X, Y, np.ones(96)))}, 3, ["datasets['train'] yields 3-tuples"]),
    ('no_labels', lambda: {'train': tf.data.Dataset.from_tensor_slices(X)}, 3,
     ["datasets['train'] yields single tensors, not (image, label) pairs"]),
    ('batched', lambda: {'train': _ds(X, Y).batch(16)}, 3,
     ["datasets['train']: images (None, 4, 4, 1) and labels (None,) look "
      'batched']),
    ('not_a_dataset', lambda: {'train': (X, Y)}, 3,
     ["datasets['train'] is a tuple, not a tf.data.Dataset",
      'from_tensor_slices']),
]


def _config(**overrides):
  return config_lib.Config(**{
      'epochs': 1, 'batch_size': 16, 'log_every_steps': 5, 'progress': False,
      'learning_rate': 0.1, 'trace_graph': False, 'seed': 0, **overrides})


def _model(shape, num_classes):
  return tf.keras.Sequential([
      tf.keras.Input(shape), tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(8, activation='relu', name='hidden'),
      tf.keras.layers.Dense(num_classes, name='out')])


def _files(root):
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, fs in os.walk(root) for f in fs)


@pytest.mark.parametrize('case,make,num_classes,expected', BAD_CASES,
                         ids=[c[0] for c in BAD_CASES])
def test_malformed_split_is_one_line_and_workdir_kept(tmp_path, case, make,
                                                      num_classes, expected):
  del case
  workdir = tmp_path / 'run'
  (workdir / 'checkpoints').mkdir(parents=True)
  (workdir / 'checkpoints' / 'ckpt-3.index').write_text('earlier run')
  (workdir / 'notes.txt').write_text('mine')
  before = _files(workdir)
  with pytest.raises(errors.DataError) as info:
    loop.train_and_evaluate(_config(), str(workdir), model=_model,
                            datasets=make(), num_classes=num_classes)
  message = str(info.value)
  assert '\n' not in message
  for part in expected:
    assert part in message, message
  assert _files(workdir) == before
  assert (workdir / 'notes.txt').read_text() == 'mine'


def _soft(labels):
  return (0.8 * ONE_HOT[labels] + 0.2 / NUM_CLASSES).astype(np.float32)


def _tfds_style(images, labels):
  return tf.data.Dataset.from_tensor_slices(
      {'image': images, 'label': labels, 'id': np.arange(len(labels))})


def _undeclared(images, labels, label_spec=tf.TensorSpec((), tf.int64)):
  """From a generator whose output_signature leaves height and width open."""
  return tf.data.Dataset.from_generator(
      lambda: zip(images, labels),
      output_signature=(tf.TensorSpec((None, None, 1)), label_spec))


# (encoding, dataset from (images, int labels)); all give the same classes.
ENCODINGS = [
    ('int64', _ds),
    ('uint8_labels', lambda x, y: _ds(x, y.astype(np.uint8))),
    ('whole_floats', lambda x, y: _ds(x, y.astype(np.float32))),
    ('shape_1', lambda x, y: _ds(x, y[:, None])),
    ('one_hot', lambda x, y: _ds(x, ONE_HOT[y])),
    ('probabilities', lambda x, y: _ds(x, _soft(y))),
    ('tfds_dict', _tfds_style),
    ('tfds_dict_of_one_hot', lambda x, y: _tfds_style(x, ONE_HOT[y])),
    ('undeclared_image_shape', _undeclared),
    ('undeclared_shape_whole_float_shape_1', lambda x, y: _undeclared(
        x, y[:, None].astype(np.float32), tf.TensorSpec((1,), tf.float32))),
    ('float64_images', lambda x, y: _ds(x.astype(np.float64), y)),
]


@pytest.mark.parametrize('encoding,make', ENCODINGS,
                         ids=[e[0] for e in ENCODINGS])
def test_supported_encoding_becomes_class_indices(encoding, make):
  del encoding
  splits, info = user_data.user_splits({'train': make(X, Y)}, NUM_CLASSES)
  images, labels = next(iter(splits['train'].batch(1000)))
  assert images.dtype == tf.float32 and labels.dtype == tf.int32
  assert info.image_shape == SHAPE and info.num_train == len(Y)
  np.testing.assert_array_equal(labels.numpy(), Y)
  np.testing.assert_allclose(images.numpy(), X, rtol=1e-6)


# Three runs, each with another encoding per split (train, validation, test);
# every encoding trains in one of them.
ENCODING = dict(ENCODINGS)
RUNS = [('tfds_dict_of_one_hot', 'shape_1', 'whole_floats'),
        ('undeclared_shape_whole_float_shape_1', 'probabilities', 'tfds_dict'),
        ('probabilities', 'one_hot', 'undeclared_image_shape')]


@pytest.mark.parametrize('encodings', RUNS, ids=[r[0] for r in RUNS])
def test_supported_encodings_train(tmp_path, encodings):
  xt, yt = _arrays(60, seed=2)
  arrays = {'train': (X, Y), 'validation': (XV, YV), 'test': (xt, yt)}
  datasets = {split: ENCODING[name](*arrays[split])
              for split, name in zip(arrays, encodings)}
  result = loop.train_and_evaluate(_config(), str(tmp_path / 'run'),
                                   model=_model, datasets=datasets,
                                   num_classes=NUM_CLASSES)
  assert result['status'] == 'completed'
  assert result['history'][0]['loss'] < np.log(NUM_CLASSES), result
  assert result['test_accuracy'] > 0.7, result   # chance is 1/3


def test_num_classes_far_above_labels_warns_and_trains(tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    result = loop.train_and_evaluate(
        _config(), str(tmp_path / 'run'), model=_model,
        datasets={'train': _ds(X, Y)}, num_classes=1000)
  assert result['status'] == 'completed'
  assert ('num_classes=1000 but the largest label in train is 2: the model '
          'gets 1000 outputs, 997 of them for classes no example has; pass '
          'num_classes=3') in caplog.text


@pytest.mark.parametrize('datasets,num_classes,warning', [
    (lambda: {'train': _ds(X, _soft(Y))}, 3,
     "datasets['train']: 96 of 96 labels are probability vectors, not "
     'one-hot; tftrain trains on their argmax'),
    (lambda: {'train': _ds(X, np.zeros_like(Y))}, 2,
     "datasets['train']: every label is 0"),
    (lambda: {'train': _ds((X * 100).astype(np.int16), Y)}, 3,
     "datasets['train']: image values range"),
], ids=['soft_labels', 'one_class', 'unscaled_images'])
def test_legal_but_suspicious_data_warns(caplog, datasets, num_classes,
                                         warning):
  with caplog.at_level(logging.WARNING):
    user_data.user_splits(datasets(), num_classes)
  assert warning in caplog.text


def test_clean_data_warns_nothing(caplog):
  with caplog.at_level(logging.WARNING):
    user_data.user_splits({'train': _ds(X, Y), 'test': _ds(XV, YV)}, NUM_CLASSES)
  assert not caplog.records


def test_check_fills_the_cache_training_reads():
  """The check's pass is the one the first epoch would make: no second read."""
  reads = []

  def gen():
    for x, y in zip(X, Y):
      reads.append(1)
      yield x, y
  train = tf.data.Dataset.from_generator(gen, output_signature=(
      tf.TensorSpec(SHAPE), tf.TensorSpec((), tf.int64)))
  splits, _ = user_data.user_splits({'train': train}, NUM_CLASSES)
  assert len(reads) == len(Y)
  for _ in range(2):
    for _ in splits['train'].batch(32):
      pass
  assert len(reads) == len(Y)
