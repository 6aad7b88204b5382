"""User datasets (`train_and_evaluate(datasets=...)`): checked, then converted.

Everything a malformed user dataset would otherwise turn into a raw
TensorFlow error mid-training, a NaN blamed on the learning rate or a silent
wrong result is checked before the model is built: the layout from each
split's element_spec (free), the values in one batched `reduce` over each
cached split (the pass also fills the cache the first epoch would fill).
Reasonable encodings (one-hot or probability labels, whole-number float
labels, labels of shape (1,), TFDS-style dicts) are converted instead of
refused. `user_splits` is the entry point.
"""

import dataclasses
from typing import Dict, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from tftrain import data
from tftrain import errors

AUTOTUNE = tf.data.AUTOTUNE

USER_SPLITS = ('train', 'validation', 'test')
_SCAN_BATCH_BYTES = 1 << 24    # images per scanned batch: about 16 MB
_MAX_SCAN_BATCH = 4096
_LARGE_PIXEL = 100.0           # |x| beyond this: unscaled images (0..255?)
_MAX_SUGGESTED_CLASSES = 1 << 20   # larger labels get no num_classes= advice


@dataclasses.dataclass(frozen=True)
class _Layout:
  """How one user split lays out its examples (read from its element_spec)."""
  image: tf.TensorSpec
  label: tf.TensorSpec
  from_dict: bool     # TFDS-style {'image': ..., 'label': ...}
  label_kind: str     # 'index': shape () or (1,); 'vector': shape (num_classes,)


def _name(split: str) -> str:
  return f"datasets['{split}']"


def _shape_text(shape) -> str:
  if isinstance(shape, tf.TensorShape):
    if shape.rank is None:
      return '(unknown rank)'
    shape = shape.as_list()
  return str(tuple(shape))


def _number_text(value: float, dtype: tf.DType) -> str:
  if not dtype.is_floating and np.isfinite(value):
    return str(int(value))
  return f'{value:g}'


def _check_tensor(split: str, what: str, spec) -> None:
  """`spec` is one numeric tensor per example; `what`: 'images' or 'labels'."""
  name = _name(split)
  if isinstance(spec, tf.RaggedTensorSpec):
    raise errors.DataError(
        f'{name}: {what} are ragged (their sizes vary); pad or resize them '
        'to one shape first.')
  if not isinstance(spec, tf.TensorSpec):
    kind = ('sparse tensors' if isinstance(spec, tf.SparseTensorSpec)
            else f'{type(spec).__name__}s of tensors')
    raise errors.DataError(
        f'{name}: {what} are {kind}; give one dense tensor per example for '
        'each of image and label.')
  dtype = spec.dtype
  if dtype.is_floating or dtype.is_integer or dtype.is_bool:
    return
  if dtype == tf.string:
    fix = ('decode them to numbers first, e.g. .map(lambda x, y: '
           '(tf.io.decode_image(x, expand_animations=False), y))'
           if what == 'images' else
           'map them to class indices 0..num_classes-1 first, e.g. with '
           'tf.keras.layers.StringLookup(vocabulary=..., num_oov_indices=0)')
    raise errors.DataError(
        f'{name}: {what} are tf.string; tftrain needs numbers: {fix}.')
  raise errors.DataError(f'{name}: {what} are {dtype.name}; give real numbers '
                         '(integers or floats).')


def _empty_error(split: str) -> errors.DataError:
  fix = ('give it examples' if split == 'train'
         else f"give it examples or leave '{split}' out")
  return errors.DataError(f'{_name(split)} is empty (0 examples); {fix}.')


def _structure(split: str, dataset):
  """(image spec, label spec, from_dict): the dataset's type and structure."""
  name = _name(split)
  if not isinstance(dataset, tf.data.Dataset):
    raise errors.DataError(
        f'{name} is a {type(dataset).__name__}, not a tf.data.Dataset; wrap '
        'arrays as tf.data.Dataset.from_tensor_slices((images, labels)).')
  cardinality = int(dataset.cardinality().numpy())
  if cardinality == tf.data.INFINITE_CARDINALITY:
    raise errors.DataError(
        f'{name} is infinite (a .repeat()?); give each example once: '
        'tftrain makes the epochs itself.')
  if cardinality == 0:
    raise _empty_error(split)
  spec = dataset.element_spec
  from_dict = isinstance(spec, dict)
  if from_dict:
    if 'image' not in spec or 'label' not in spec:
      keys = ', '.join(repr(k) for k in sorted(spec, key=str)) or 'none'
      raise errors.DataError(
          f"{name} yields dicts with keys {keys}; give dicts with keys "
          "'image' and 'label' (other keys are ignored) or (image, label) "
          'pairs.')
    image, label = spec['image'], spec['label']
  elif isinstance(spec, tuple) and len(spec) == 2:
    image, label = spec
  elif isinstance(spec, tuple):
    raise errors.DataError(
        f'{name} yields {len(spec)}-tuples; give (image, label) pairs '
        '(tftrain takes no sample weights or extra inputs).')
  else:
    what = ('tensor' if isinstance(spec, tf.TensorSpec)
            else type(spec).__name__)
    raise errors.DataError(
        f'{name} yields single {what}s, not (image, label) pairs; e.g. '
        'tf.data.Dataset.from_tensor_slices((images, labels)).')
  return image, label, from_dict


def _layout(split: str, dataset, num_classes: int) -> _Layout:
  """Checks what is knowable without reading: type, structure, dtypes, shapes.

  Raises:
    errors.DataError: naming the split, what it holds and what to give
      instead.
  """
  name = _name(split)
  image, label, from_dict = _structure(split, dataset)
  _check_tensor(split, 'images', image)
  _check_tensor(split, 'labels', label)
  image_shape, label_shape = image.shape, label.shape
  if image_shape.rank == 0:
    raise errors.DataError(
        f'{name}: images are scalars (shape ()); give arrays, e.g. '
        '(height, width, channels) or a feature vector.')
  if image_shape.is_fully_defined() and image_shape.num_elements() == 0:
    raise errors.DataError(
        f'{name}: images have shape {_shape_text(image_shape)}, no values; '
        'give images with at least one value.')
  if label_shape.rank is None:
    raise errors.DataError(
        f"{name}: the labels' shape is unknown; declare it, e.g. "
        '.map(lambda x, y: (x, tf.ensure_shape(y, []))).')
  dims = label_shape.as_list()
  if dims in ([], [1]):
    kind = 'index'
  elif dims == [num_classes]:
    kind = 'vector'
  elif (len(dims) == 1 and image_shape.rank is not None
        and image_shape.rank >= 2 and image_shape.as_list()[0] == dims[0]):
    raise errors.DataError(
        f'{name}: images {_shape_text(image_shape)} and labels '
        f'{_shape_text(label_shape)} look batched; pass unbatched examples '
        '(drop the .batch(), or add .unbatch()): tftrain batches them itself.')
  elif len(dims) == 1 and dims[0] is not None:
    raise errors.DataError(
        f'{name}: labels are vectors of length {dims[0]} but '
        f'num_classes={num_classes}; give class indices (shape ()) or '
        f'one-hot/probability vectors of length {num_classes} (or pass '
        f'num_classes={dims[0]} if there are {dims[0]} classes).')
  else:
    raise errors.DataError(
        f'{name}: labels have shape {_shape_text(label_shape)}; give one '
        'class index (shape ()) or one one-hot/probability vector of length '
        f'{num_classes} per example.')
  return _Layout(image, label, from_dict, kind)


def _pairs(dataset: tf.data.Dataset, layout: _Layout) -> tf.data.Dataset:
  """(image, label) pairs in the given dtypes; a (1,)-shaped label squeezed."""
  squeeze = layout.label_kind == 'index' and layout.label.shape.rank == 1
  if not layout.from_dict and not squeeze:
    return dataset

  def pair(*element):
    if layout.from_dict:
      x, y = element[0]['image'], element[0]['label']
    else:
      x, y = element
    return x, (tf.reshape(y, []) if squeeze else y)
  return dataset.map(pair, num_parallel_calls=AUTOTUNE)


def _scan_shapes(split: str, cached: tf.data.Dataset) -> Tuple[int, ...]:
  """The one image shape of a split whose element_spec leaves it open.

  Per example (shapes may vary, so no batching); only for such splits.

  Raises:
    errors.DataError: the split is empty, or an image's shape differs from the
      first one's (batching would fail).
  """
  def step(state, element):
    index, (x, _) = element
    shape = tf.strings.reduce_join(tf.strings.as_string(tf.shape(x)),
                                   separator=',')
    first = tf.where(index == 0, shape, state['first'])
    differs = (shape != first) & (state['index'] < 0)
    return {'n': state['n'] + 1, 'first': first,
            'index': tf.where(differs, index, state['index']),
            'shape': tf.where(differs, shape, state['shape'])}
  init = {'n': tf.constant(0, tf.int64), 'first': tf.constant(''),
          'index': tf.constant(-1, tf.int64), 'shape': tf.constant('')}
  out = {k: v.numpy() for k, v in cached.enumerate().reduce(init, step).items()}
  if out['n'] == 0:
    raise _empty_error(split)
  parse = lambda s: tuple(int(d) for d in s.decode().split(',') if d)
  first = parse(out['first'])
  if out['index'] >= 0:
    raise errors.DataError(
        f"{_name(split)} example {out['index']}: image shape "
        f"{_shape_text(parse(out['shape']))} differs from example 0's "
        f'{_shape_text(first)}; resize or pad the images to one shape '
        '(e.g. tf.image.resize_with_pad) before passing them.')
  if not first or 0 in first:
    raise errors.DataError(
        f'{_name(split)}: images have shape {_shape_text(first)}; give '
        'arrays with at least one value.')
  return first


def _first_of(state_index, state_value, bad, index, value):
  """Keeps the first flagged example over the scan: (its index, its value)."""
  take = (state_index < 0) & tf.reduce_any(bad)
  j = tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int32)
  return (tf.where(take, tf.gather(index, j), state_index),
          tf.where(take, tf.gather(value, j), state_value))


def _label_checks(y, kind: str, num_classes: int):
  """Per example: (bad, class, soft, top, value) for a batch of labels.

  bad: not a class index in [0, num_classes) (or not a one-hot/probability
  row); class: the index trained on; soft: a valid row that is not one-hot;
  top: the whole-number label even when out of range (-1 if none); value:
  [batch, width] float64 for the message.
  """
  f64 = tf.float64
  yf = tf.cast(y, f64)
  if kind == 'vector':
    finite = tf.math.is_finite(yf)
    total = tf.reduce_sum(tf.where(finite, yf, 0.0), 1)
    tolerance = 1e-2 if y.dtype in (tf.float16, tf.bfloat16) else 1e-3
    bad = (~tf.reduce_all(finite, 1) | tf.reduce_any(yf < 0, 1)
           | (tf.abs(total - 1.0) > tolerance))
    cls = tf.argmax(tf.where(finite, yf, 0.0), 1, output_type=tf.int64)
    soft = ~bad & (tf.reduce_max(yf, 1) < 1.0)
    return bad, cls, soft, tf.where(bad, tf.constant(-1, tf.int64), cls), yf
  if y.dtype.is_floating:
    whole = tf.math.is_finite(yf) & (tf.floor(yf) == yf)
    # Clipped before the cast: a float beyond int64's range has no int64.
    cls = tf.cast(tf.clip_by_value(tf.where(whole, yf, -1.0), -1.0, 2.0**62),
                  tf.int64)
  else:
    whole = tf.ones_like(yf, tf.bool)
    cls = tf.cast(y, tf.int64)
  bad = ~whole | (cls < 0) | (cls >= num_classes)
  top = tf.where(whole, cls, tf.constant(-1, tf.int64))
  return bad, cls, tf.zeros_like(bad), top, yf[:, None]


def _image_finite_step(s, flat, index) -> Dict[str, tf.Tensor]:
  """`_scan_values`' non-finite image counts and first bad value, one batch."""
  bad_values = ~tf.math.is_finite(tf.cast(flat, tf.float32))
  per_example = tf.reduce_sum(tf.cast(bad_values, tf.int64), 1)
  bad_examples = per_example > 0
  j = tf.argmax(tf.cast(bad_examples, tf.int32), output_type=tf.int32)
  k = tf.argmax(tf.cast(bad_values[j], tf.int32), output_type=tf.int32)
  first_value = tf.fill(tf.shape(index), tf.cast(flat[j, k], tf.float64))
  out = {'image_bad': s['image_bad'] + tf.reduce_sum(per_example),
         'image_bad_examples': s['image_bad_examples'] + tf.reduce_sum(
             tf.cast(bad_examples, tf.int64))}
  out['image_index'], out['image_value'] = _first_of(
      s['image_index'], s['image_value'], bad_examples, index, first_value)
  return out


def _scan_values(dataset: tf.data.Dataset, kind: str,
                 num_classes: int) -> Dict[str, np.ndarray]:
  """One batched `reduce` over a split: counts, first bad label and image.

  Returns:
    numpy values: n; label_bad (count), label_index (first, -1: none),
    label_value; label_min/label_max (over valid labels), label_top (largest
    whole-number label, valid or not), soft (rows not one-hot); image_bad
    (non-finite values), image_bad_examples, image_index, image_value;
    image_min/image_max.
  """
  image_spec, _ = dataset.element_spec
  size = image_spec.shape.num_elements() * max(1, image_spec.dtype.size)
  batch = int(min(_MAX_SCAN_BATCH, max(1, _SCAN_BATCH_BYTES // size)))
  width = num_classes if kind == 'vector' else 1
  i64 = lambda v: tf.constant(v, tf.int64)
  f64 = lambda v: tf.constant(v, tf.float64)
  init = {'n': i64(0), 'label_bad': i64(0), 'label_index': i64(-1),
          'label_value': tf.zeros([width], tf.float64),
          'label_min': i64(np.iinfo(np.int64).max), 'label_max': i64(-1),
          'label_top': i64(-1), 'soft': i64(0),
          'image_bad': i64(0), 'image_bad_examples': i64(0),
          'image_index': i64(-1), 'image_value': f64(0.0),
          'image_min': f64(np.inf), 'image_max': f64(-np.inf)}
  check_finite = image_spec.dtype.is_floating
  count = lambda b: tf.reduce_sum(tf.cast(b, tf.int64))

  def step(s, element):
    index, (x, y) = element
    out = dict(s)
    out['n'] = s['n'] + tf.size(index, out_type=tf.int64)
    bad, cls, soft, top, value = _label_checks(y, kind, num_classes)
    out['label_bad'] = s['label_bad'] + count(bad)
    out['label_index'], out['label_value'] = _first_of(
        s['label_index'], s['label_value'], bad, index, value)
    out['label_min'] = tf.minimum(s['label_min'], tf.reduce_min(
        tf.where(bad, i64(np.iinfo(np.int64).max), cls)))
    out['label_max'] = tf.maximum(s['label_max'], tf.reduce_max(
        tf.where(bad, i64(-1), cls)))
    out['label_top'] = tf.maximum(s['label_top'], tf.reduce_max(top))
    out['soft'] = s['soft'] + count(soft)
    flat = tf.reshape(x, [tf.shape(x)[0], -1])
    if flat.dtype == tf.bool:
      flat = tf.cast(flat, tf.uint8)      # min/max have no bool kernels
    if check_finite:
      out.update(_image_finite_step(s, flat, index))
    out['image_min'] = tf.minimum(s['image_min'],
                                  tf.cast(tf.reduce_min(flat), tf.float64))
    out['image_max'] = tf.maximum(s['image_max'],
                                  tf.cast(tf.reduce_max(flat), tf.float64))
    return out
  result = dataset.enumerate().batch(batch).reduce(init, step)
  return {k: v.numpy() for k, v in result.items()}


def _row_text(row: np.ndarray, dtype: tf.DType, limit: int = 6) -> str:
  items = [_number_text(v, dtype) for v in row[:limit]]
  return '[' + ', '.join(items + (['...'] if len(row) > limit else [])) + ']'


def _value_error(split: str, stats, layout: _Layout,
                 num_classes: int) -> Optional[errors.DataError]:
  """The one-line error for what the scan found in `split`; None if clean."""
  name, n = _name(split), int(stats['n'])
  if n == 0:
    return _empty_error(split)
  dtype = layout.label.dtype
  index = int(stats['label_index'])
  if index >= 0 and layout.label_kind == 'vector':
    row = stats['label_value']
    if not np.isfinite(row).all():
      why = f'holds {_number_text(row[~np.isfinite(row)][0], dtype)}'
    elif (row < 0).any():
      why = f'has the negative entry {_number_text(row[row < 0][0], dtype)}'
    else:
      why = f'sums to {_number_text(row.sum(), tf.float64)}'
    return errors.DataError(
        f'{name} example {index}: label {_row_text(row, dtype)} is not a '
        f"one-hot or probability vector ({why}; {stats['label_bad']} of {n} "
        f'labels are not); give rows of {num_classes} non-negative numbers '
        'that sum to 1, or class indices.')
  if index >= 0:
    value = float(stats['label_value'][0])
    text = _number_text(value, dtype)
    counted = f"bad labels in {split}: {stats['label_bad']} of {n}"
    if not np.isfinite(value) or value != np.floor(value):
      return errors.DataError(
          f'{name} example {index}: label {text} is not a class index '
          f'({counted}); give whole numbers 0..{num_classes - 1} (integers, '
          f'or floats like 3.0) or one-hot vectors of length {num_classes}.')
    top = int(stats['label_top'])
    if value < 0:
      fix = ('fix or drop those examples (e.g. .filter(lambda x, y: y >= 0))'
             ' before passing them')
    elif top < _MAX_SUGGESTED_CLASSES:
      fix = (f'pass num_classes={top + 1} if there are {top + 1} classes, '
             'or fix those labels')
    else:       # an id or an unmapped code, not a class count to suggest
      fix = f'map the labels to class indices 0..{num_classes - 1} first'
    return errors.DataError(
        f'{name} example {index}: label {text} is outside [0, {num_classes}) '
        f'for num_classes={num_classes} ({counted}); {fix}.')
  index = int(stats['image_index'])
  if index >= 0:
    value = float(stats['image_value'])
    what = (_number_text(value, tf.float64) if not np.isfinite(value) else
            f"{value:g}, beyond float32's range")
    return errors.DataError(
        f'{name} example {index}: image holds {what} '
        f"({stats['image_bad']} non-finite values in "
        f"{stats['image_bad_examples']} of {n} examples); replace or drop them "
        '(e.g. np.nan_to_num, or .filter(lambda x, y: '
        'tf.reduce_all(tf.math.is_finite(x)))): training would end in a '
        'non-finite loss.')
  return None


def _warn(stats: Dict[str, Dict[str, np.ndarray]], num_classes: int) -> None:
  """Legal but probably unintended: logged, not refused."""
  top = max(int(s['label_max']) for s in stats.values())
  if top + 1 <= num_classes // 2:
    logging.warning(
        'num_classes=%d but the largest label in %s is %d: the model gets %d '
        'outputs, %d of them for classes no example has; pass num_classes=%d '
        'unless those classes are missing on purpose.', num_classes,
        '/'.join(stats), top, num_classes, num_classes - top - 1, top + 1)
  for split, s in stats.items():
    if s['soft']:
      logging.warning(
          '%s: %d of %d labels are probability vectors, not one-hot; tftrain '
          'trains on their argmax (the most likely class), not on the soft '
          'targets.', _name(split), s['soft'], s['n'])
  train = stats['train']
  if train['label_min'] == train['label_max']:
    logging.warning('%s: every label is %d; the model can only learn that one '
                    'class.', _name('train'), train['label_max'])
  largest = max(abs(float(train['image_min'])), abs(float(train['image_max'])))
  if largest > _LARGE_PIXEL:
    logging.warning(
        '%s: image values range %g..%g; tftrain uses them as given: scale '
        'them (e.g. x / 255) if the loss diverges.', _name('train'),
        train['image_min'], train['image_max'])


def _model_inputs(layout: _Layout):
  """Map fn to what the Trainer takes: float32 image, int32 class index."""
  def convert(x, y):
    if layout.label_kind == 'vector':
      y = tf.argmax(tf.cast(y, tf.float32), output_type=tf.int32)
    else:
      y = tf.cast(y, tf.int32)       # whole-number floats: 3.0 -> 3
    return tf.cast(x, tf.float32), y
  return convert


def check_user_data(datasets: Dict[str, tf.data.Dataset], num_classes: int):
  """Checks the caller's splits and turns them into cached model inputs.

  Supported as given: (image, label) pairs or TFDS-style dicts with keys
  'image' and 'label'; labels as integer class indices, whole-number floats
  (3.0), shape (1,), or one-hot/probability vectors of length num_classes
  (trained on their argmax); images of any real dtype (cast to float32, scaled
  as given) and one shape, declared or not.

  Args:
    datasets: {'train', 'validation'?, 'test'?} unbatched tf.data datasets.
    num_classes: the number of classes (>= 2).

  Returns:
    ({split: cached dataset of (float32 image, int32 label)},
     {split: number of examples}, image shape).

  Raises:
    errors.DataError: one line naming the split, the example and its value
      and the fix: a label outside [0, num_classes) or not a whole number, a
      label vector of another length or not one-hot/probabilities, NaN or
      inf in an image, image shapes that differ between examples or splits,
      ragged or non-numeric images or labels, an empty or infinite split, an
      already batched split, or examples that are not (image, label) pairs.
  """
  order = [k for k in USER_SPLITS if k in datasets]
  layouts = {k: _layout(k, datasets[k], num_classes) for k in order}
  train_shape = layouts['train'].image.shape
  for split in order[1:]:
    shape = layouts[split].image.shape
    if (train_shape.is_fully_defined() and shape.is_fully_defined()
        and shape != train_shape):
      raise _shape_error(split, shape, train_shape)
  splits, counts, stats, shapes = {}, {}, {}, {}
  for split in order:
    layout = layouts[split]
    cached = _pairs(datasets[split], layout).cache()
    if layout.image.shape.is_fully_defined():
      shapes[split] = tuple(layout.image.shape.as_list())
    else:
      shape = shapes[split] = _scan_shapes(split, cached)
      cached = cached.map(lambda x, y, s=shape: (tf.ensure_shape(x, s), y))
    if shapes[split] != shapes['train']:
      raise _shape_error(split, shapes[split], shapes['train'])
    stats[split] = _scan_values(cached, layout.label_kind, num_classes)
    error = _value_error(split, stats[split], layout, num_classes)
    if error is not None:
      raise error
    counts[split] = int(stats[split]['n'])
    splits[split] = cached.map(_model_inputs(layout),
                               num_parallel_calls=AUTOTUNE)
  _warn(stats, num_classes)
  return splits, counts, shapes['train']


def _shape_error(split: str, shape, train_shape) -> errors.DataError:
  return errors.DataError(
      f'{_name(split)}: images have shape {_shape_text(shape)} but '
      f"{_name('train')}'s have {_shape_text(train_shape)}; give every split "
      'the same image shape.')


def user_splits(datasets: Dict[str, tf.data.Dataset], num_classes: int):
  """(splits, DataInfo) from the user's unbatched (image, label) datasets.

  The splits are checked (`check_user_data`) and cached; images are cast to
  float32 (scaled as given), labels to int32 class indices.

  Raises:
    errors.ConfigError: no 'train' split, an unknown split name, or
      num_classes missing.
    errors.DataError: a malformed split (see `check_user_data`).
  """
  names = datasets if isinstance(datasets, dict) else {}
  unknown = set(names) - set(USER_SPLITS)
  if 'train' not in names or unknown:
    given = (','.join(sorted(map(str, names))) if isinstance(datasets, dict)
             else type(datasets).__name__)
    raise errors.ConfigError(
        'datasets', given,
        "give a dict of 'train' and optionally 'validation' and 'test' "
        'datasets.')
  if not num_classes or num_classes < 2:
    raise errors.ConfigError('num_classes', num_classes,
                             'give the number of classes (>= 2).')
  splits, counts, shape = check_user_data(datasets, int(num_classes))
  return splits, data.DataInfo(num_classes=int(num_classes), image_shape=shape,
                          num_train=counts['train'],
                          num_validation=counts.get('validation'),
                          num_test=counts.get('test'))
