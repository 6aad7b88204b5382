"""TFDS -> tf.data: prepare (online or from a local mirror), load, preprocess, batch.

Air-gapped preparation uses TFDS's own builder: the original raw download
files are taken from a manual-download folder, and the builder's registered
checksums are replaced, for that preparation only, by the checksums of the
local files (computed with TFDS's own `compute_url_info`), so TFDS still
verifies every file it reads. No IDX/CIFAR parsing happens here.

The caller's own datasets (`user_splits`) are checked before training
(`check_user_data`): one line per malformed split instead of a TensorFlow
error, a NaN loss or a silently wrong run mid-training.
"""

import dataclasses
import os
import shutil
import socket
import sys
from typing import Dict, Optional, Tuple
import urllib.parse

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums as tfds_checksums

from tftrain import errors

RAW_DATA_ENV = 'TFTRAIN_RAW_DATA_DIR'
DATA_DIR_ENV = 'TFDS_DATA_DIR'
AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class DataInfo:
  num_classes: int
  image_shape: Tuple[int, ...]
  num_train: Optional[int]        # None when TFDS does not know (mock data)
  num_validation: Optional[int]
  num_test: Optional[int]
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None


def resolve_raw_data_dir(raw_data_dir: Optional[str]) -> Optional[str]:
  """The flag wins; otherwise $TFTRAIN_RAW_DATA_DIR; otherwise None (online)."""
  path = raw_data_dir or os.environ.get(RAW_DATA_ENV) or None
  return os.path.abspath(os.path.expanduser(path)) if path else None


def expected_raw_files(name: str) -> Dict[str, str]:
  """Maps each download URL of TFDS's `name` builder to its original file name."""
  builder_cls = tfds.builder_cls(name)
  return {url: info.filename or url.rsplit('/', 1)[-1]
          for url, info in (builder_cls.url_infos or {}).items()}


def _is_prepared(builder) -> bool:
  return (builder.data_path / 'dataset_info.json').exists()


def _builder(name: str, data_dir: Optional[str]):
  """tfds.builder, with a one-line errors.DataError for an unusable --data_dir."""
  if data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise errors.DataError(f'--data_dir={data_dir}: is a file, not a folder; '
                           'choose a folder for the TFDS data.')
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.DataError(
        f'--dataset={name}: TFDS has no dataset of that name; give a TFDS '
        'image-classification dataset (e.g. mnist, fashion_mnist, cifar10, '
        'kmnist, emnist, svhn_cropped).') from None
  except Exception as e:  # pylint: disable=broad-except
    where = data_dir or os.environ.get(DATA_DIR_ENV) or '~/tensorflow_datasets'
    first = errors.first_line(e, default='')
    raise errors.DataError(
        f'--data_dir={where}: the prepared {name} there cannot be read '
        f'({type(e).__name__}: {first[:300]}); delete {os.path.join(where, name)} '
        'and rerun to prepare it again.') from e
  check_features(name, builder.info.features)
  return builder


def check_features(name: str, features) -> None:
  """tftrain trains image classifiers: an `image` and a class `label`."""
  keys = list(features.keys()) if hasattr(features, 'keys') else []
  image = features['image'] if 'image' in keys else None
  label = features['label'] if 'label' in keys else None
  if (image is None or label is None
      or not isinstance(label, tfds.features.ClassLabel)
      or len(getattr(image, 'shape', ()) or ()) != 3):
    raise errors.DataError(
        f'--dataset={name}: tftrain trains image classifiers and needs TFDS '
        f'features image (H, W, C) and label (a class label); {name} has '
        f'{", ".join(keys) or "no named features"}; pick an image '
        'classification dataset or pass your own datasets to '
        'train_and_evaluate(..., datasets=...).')


_TFRECORD_OVERHEAD = 16   # bytes per record: length, its CRC, the data CRC


def verify_prepared(builder) -> None:
  """Checks a prepared dataset's files against its metadata (sizes only).

  A truncated or missing file would otherwise fail in the middle of
  training; a tfrecord file is exactly its examples' bytes plus 16 bytes per
  record, which dataset_info.json records.

  Raises:
    errors.DataError: a split file is missing or has the wrong size.
  """
  info = builder.info
  name = info.name
  fix = (f'delete {builder.data_path} and rerun to prepare it again (from '
         '--raw_data_dir or the download).')
  if str(getattr(info, 'file_format', '')).lower().find('tfrecord') < 0:
    return
  for split_name, split in info.splits.items():
    paths = [str(p) for p in split.filepaths]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
      raise errors.DataError(
          f'dataset {name}: prepared file {missing[0]} is missing; {fix}')
    expected = int(split.num_bytes) + _TFRECORD_OVERHEAD * sum(
        split.shard_lengths)
    actual = sum(os.path.getsize(p) for p in paths)
    if split.num_bytes and actual != expected:
      raise errors.DataError(
          f'dataset {name}: the prepared {split_name} split has {actual} bytes '
          f'instead of {expected} (a truncated or damaged file in '
          f'{builder.data_path}); {fix}')


def _remove_incomplete(builder) -> None:
  """Deletes half-written preparation folders so the next attempt starts clean."""
  parent = builder.data_path.parent
  if parent.exists():
    for child in parent.iterdir():
      if child.name.startswith('incomplete.') or child.name.startswith('tmp'):
        shutil.rmtree(child, ignore_errors=True)


def _network_reachable(urls) -> bool:
  host = urllib.parse.urlparse(next(iter(urls))).hostname
  try:
    socket.create_connection((host, 443), timeout=5).close()
    return True
  except OSError:
    return False


def _check_raw_files(name: str, raw_data_dir: str, urls: Dict[str, str]) -> str:
  """Returns `<raw_data_dir>/<name>`; raises errors.DataError naming missing files."""
  manual_dir = os.path.join(raw_data_dir, name)
  missing = [f for f in urls.values()
             if not os.path.isfile(os.path.join(manual_dir, f))]
  if missing:
    raise errors.DataError(
        f'--raw_data_dir={raw_data_dir}: dataset {name}: missing '
        f'{", ".join(sorted(missing))} in {manual_dir}; set --raw_data_dir '
        f'(or ${RAW_DATA_ENV}) to a folder holding '
        f'{name}/{{{",".join(sorted(urls.values()))}}}.')
  return manual_dir


def _data_source(name: str, where: str, raw_data_dir: Optional[str]):
  """Where `prepare` will take `name` from: (manual dir or None, url -> file name).

  Raises:
    errors.DataError: the raw files are missing from the raw dir or, without
      a raw dir, the download host is unreachable.
  """
  raw_data_dir = resolve_raw_data_dir(raw_data_dir)
  urls = expected_raw_files(name)
  if raw_data_dir:
    return _check_raw_files(name, raw_data_dir, urls), urls
  if not _network_reachable(urls):
    raise errors.DataError(
        f'dataset {name}: not prepared in {where} and its download host is '
        f'unreachable; set --raw_data_dir (or ${RAW_DATA_ENV}) to a folder '
        f'holding {name}/{{{",".join(sorted(urls.values()))}}}.')
  return None, urls


def split_sizes(name: str, data_dir: Optional[str] = None
                ) -> Optional[Dict[str, int]]:
  """Examples per split of a prepared dataset (metadata only); None if unknown."""
  builder = _builder(name, data_dir)
  if not _is_prepared(builder) or not builder.info.splits:
    return None
  return {k: s.num_examples for k, s in builder.info.splits.items()}


def _quiet_progress_unless_terminal() -> None:
  """TFDS's preparation bars only on a terminal: in a log file each bar
  update is a new line (dozens per preparation)."""
  try:
    interactive = sys.stderr.isatty()
  except (AttributeError, ValueError):
    interactive = False
  if not interactive:
    tfds.disable_progress_bar()


def prepare(name: str, data_dir: Optional[str] = None,
            raw_data_dir: Optional[str] = None) -> str:
  """Makes sure TFDS dataset `name` is prepared in `data_dir`; returns data_dir.

  Args:
    name: TFDS dataset name (mnist, fashion_mnist, cifar10).
    data_dir: TFDS data dir; None for TFDS's default (~/tensorflow_datasets).
    raw_data_dir: folder of original download files laid out as
      `<raw_data_dir>/<name>/<original file name>`; None to download.

  Raises:
    errors.DataError: the files are missing or the download is impossible, or
      the prepared dataset's files do not match its metadata.
  """
  builder = _builder(name, data_dir)
  data_dir = str(builder.data_dir_root)
  if _is_prepared(builder):
    verify_prepared(builder)
    return data_dir
  manual_dir, urls = _data_source(name, data_dir, raw_data_dir)
  _quiet_progress_unless_terminal()
  downloads = os.path.join(data_dir, 'downloads', name)
  if manual_dir:
    local_infos = {
        url: tfds_checksums.compute_url_info(os.path.join(manual_dir, f))
        for url, f in urls.items()}
    cls = type(builder)
    # Same dataset (name, version, data path); only the expected checksums
    # differ: those of the local files, so TFDS still verifies them.
    local_cls = type(cls.__name__, (cls,),
                     {'name': cls.name, 'url_infos': local_infos},
                     skip_registration=True)
    builder = local_cls(data_dir=data_dir)
    logging.info('Preparing %s from %s into %s', name, manual_dir, data_dir)
  download_config = tfds.download.DownloadConfig(
      manual_dir=manual_dir, extract_dir=os.path.join(downloads, 'extracted'))
  try:
    builder.download_and_prepare(download_dir=downloads,
                                 download_config=download_config)
  except Exception as e:  # pylint: disable=broad-except
    _remove_incomplete(builder)
    shutil.rmtree(downloads, ignore_errors=True)
    # Folders this attempt created and left empty (nothing else is touched).
    for path in (os.path.dirname(downloads), str(builder.data_path),
                 str(builder.data_path.parent)):
      try:
        os.rmdir(path)
      except OSError:
        pass
    raise errors.DataError(
        f'dataset {name}: preparation failed ({type(e).__name__}: '
        f'{errors.first_line(e, default="")}); check the files in '
        '--raw_data_dir or the network.') from e
  finally:
    shutil.rmtree(downloads, ignore_errors=True)
  return data_dir


def split_names(validation_size: int) -> Dict[str, str]:
  """TFDS split strings: train minus its last N, the last N, and test."""
  if validation_size == 0:
    return {'train': 'train', 'test': 'test'}
  return {'train': f'train[:-{validation_size}]',
          'validation': f'train[-{validation_size}:]',
          'test': 'test'}


def load_splits(name: str, data_dir: Optional[str], validation_size: int,
                standardize: bool = False):
  """Loads train/validation/test as (float32 image in [0,1] or standardized, int32 label).

  `validation_size` must be smaller than the train split (checked, with the
  flag's error, by `experiment.preflight`).

  Returns:
    (dict split -> tf.data.Dataset of single examples, uncached, DataInfo).
  """
  builder = tfds.builder(name, data_dir=data_dir)
  info = builder.info
  splits = split_names(validation_size)
  datasets = {
      key: tfds.load(name, split=split, data_dir=data_dir, download=False,
                     as_supervised=True, shuffle_files=False)
      for key, split in splits.items()}
  datasets = {k: d.map(_to_float, num_parallel_calls=AUTOTUNE)
              for k, d in datasets.items()}
  mean = std = None
  if standardize:
    mean, std = channel_stats(datasets['train'])
    datasets = {k: d.map(lambda x, y: ((x - mean) / std, y),
                         num_parallel_calls=AUTOTUNE)
                for k, d in datasets.items()}
    mean, std = tuple(mean.tolist()), tuple(std.tolist())

  def count(split):
    if not info.splits or split not in splits:
      return None
    return info.splits[splits[split]].num_examples

  data_info = DataInfo(
      num_classes=info.features['label'].num_classes,
      image_shape=tuple(info.features['image'].shape),
      num_train=count('train'), num_validation=count('validation'),
      num_test=count('test'), mean=mean, std=std)
  return datasets, data_info


def _to_float(image, label):
  return tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int32)


def channel_stats(dataset: tf.data.Dataset):
  """Per-channel mean and std of images in `dataset` (one pass, float64)."""
  def reduce_fn(acc, batch):
    x = tf.cast(batch, tf.float64)
    axes = list(range(len(x.shape) - 1))
    return (acc[0] + tf.reduce_sum(x, axes), acc[1] + tf.reduce_sum(x * x, axes),
            acc[2] + tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float64))
  channels = dataset.element_spec[0].shape[-1]
  zero = tf.zeros([channels], tf.float64)
  s, ss, n = dataset.map(lambda x, y: x).batch(4096).reduce(
      (zero, zero, tf.constant(0.0, tf.float64)), reduce_fn)
  mean = (s / n).numpy()
  std = np.sqrt(np.maximum((ss / n).numpy() - mean ** 2, 1e-12))
  return mean.astype(np.float32), std.astype(np.float32)


def _options() -> tf.data.Options:
  options = tf.data.Options()
  # TFDS splits are one file: shard by data under multi-worker.
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  options.deterministic = True
  return options


def train_batches(cached: tf.data.Dataset, batch_size: int, seed: int,
                  epoch: int, shuffle_buffer: int = 60000) -> tf.data.Dataset:
  """One epoch of shuffled global batches; the order depends only on (seed, epoch).

  A per-epoch seed keeps the data order reproducible across resumes.
  """
  return (cached
          .shuffle(shuffle_buffer, seed=seed * 100003 + epoch,
                   reshuffle_each_iteration=False)
          .batch(batch_size, drop_remainder=True)
          .prefetch(AUTOTUNE)
          .with_options(_options()))


def eval_batches(cached: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
  return (cached.batch(batch_size).prefetch(AUTOTUNE)
          .with_options(_options()))


# --- The caller's own datasets ------------------------------------------------
#
# Everything a malformed user dataset would otherwise turn into a raw
# TensorFlow error mid-training, a NaN blamed on the learning rate or a silent
# wrong result is checked before the model is built: the layout from each
# split's element_spec (free), the values in one batched `reduce` over each
# cached split (the pass also fills the cache the first epoch would fill).

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
    raise errors.DataError(f'{name}: {what} are ragged (their sizes vary); pad or '
                    'resize them to one shape first.')
  if not isinstance(spec, tf.TensorSpec):
    kind = ('sparse tensors' if isinstance(spec, tf.SparseTensorSpec)
            else f'{type(spec).__name__}s of tensors')
    raise errors.DataError(f'{name}: {what} are {kind}; give one dense tensor per '
                    'example for each of image and label.')
  dtype = spec.dtype
  if dtype.is_floating or dtype.is_integer or dtype.is_bool:
    return
  if dtype == tf.string:
    fix = ('decode them to numbers first, e.g. .map(lambda x, y: '
           '(tf.io.decode_image(x, expand_animations=False), y))'
           if what == 'images' else
           'map them to class indices 0..num_classes-1 first, e.g. with '
           'tf.keras.layers.StringLookup(vocabulary=..., num_oov_indices=0)')
    raise errors.DataError(f'{name}: {what} are tf.string; tftrain needs numbers: '
                    f'{fix}.')
  raise errors.DataError(f'{name}: {what} are {dtype.name}; give real numbers '
                  '(integers or floats).')


def _empty_error(split: str) -> errors.DataError:
  fix = ('give it examples' if split == 'train'
         else f"give it examples or leave '{split}' out")
  return errors.DataError(f'{_name(split)} is empty (0 examples); {fix}.')


def _layout(split: str, dataset, num_classes: int) -> _Layout:
  """Checks what is knowable without reading: type, structure, dtypes, shapes.

  Raises:
    errors.DataError: naming the split, what it holds and what to give instead.
  """
  name = _name(split)
  if not isinstance(dataset, tf.data.Dataset):
    raise errors.DataError(
        f'{name} is a {type(dataset).__name__}, not a tf.data.Dataset; wrap '
        'arrays as tf.data.Dataset.from_tensor_slices((images, labels)).')
  cardinality = int(dataset.cardinality().numpy())
  if cardinality == tf.data.INFINITE_CARDINALITY:
    raise errors.DataError(f'{name} is infinite (a .repeat()?); give each example '
                    'once: tftrain makes the epochs itself.')
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
    raise errors.DataError(
        f'{name} yields single '
        f"{'tensor' if isinstance(spec, tf.TensorSpec) else type(spec).__name__}s"
        ', not (image, label) pairs; e.g. '
        'tf.data.Dataset.from_tensor_slices((images, labels)).')
  _check_tensor(split, 'images', image)
  _check_tensor(split, 'labels', label)
  image_shape, label_shape = image.shape, label.shape
  if image_shape.rank == 0:
    raise errors.DataError(f'{name}: images are scalars (shape ()); give arrays, '
                    'e.g. (height, width, channels) or a feature vector.')
  if image_shape.is_fully_defined() and image_shape.num_elements() == 0:
    raise errors.DataError(f'{name}: images have shape {_shape_text(image_shape)}, '
                    'no values; give images with at least one value.')
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
    raise errors.DataError(f'{_name(split)}: images have shape {_shape_text(first)}; '
                    'give arrays with at least one value.')
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
      bad_values = ~tf.math.is_finite(tf.cast(flat, tf.float32))
      per_example = tf.reduce_sum(tf.cast(bad_values, tf.int64), 1)
      bad_examples = per_example > 0
      j = tf.argmax(tf.cast(bad_examples, tf.int32), output_type=tf.int32)
      k = tf.argmax(tf.cast(bad_values[j], tf.int32), output_type=tf.int32)
      first_value = tf.fill(tf.shape(index), tf.cast(flat[j, k], tf.float64))
      out['image_bad'] = s['image_bad'] + tf.reduce_sum(per_example)
      out['image_bad_examples'] = s['image_bad_examples'] + count(bad_examples)
      out['image_index'], out['image_value'] = _first_of(
          s['image_index'], s['image_value'], bad_examples, index, first_value)
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
    errors.DataError: one line naming the split, the example and its value and the
      fix: a label outside [0, num_classes) or not a whole number, a label
      vector of another length or not one-hot/probabilities, NaN or inf in
      an image, image shapes that differ between examples or splits,
      non-numeric images or labels, an empty or infinite split, or examples
      that are not (image, label) pairs.
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
    errors.ConfigError: no 'train' split, an unknown split name, or num_classes
      missing.
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
  return splits, DataInfo(num_classes=int(num_classes), image_shape=shape,
                          num_train=counts['train'],
                          num_validation=counts.get('validation'),
                          num_test=counts.get('test'))
