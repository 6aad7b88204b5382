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
  """tfds.builder, with a one-line DataError for an unusable --data_dir."""
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
  """Returns `<raw_data_dir>/<name>`; raises DataError naming missing files."""
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


# A chunk of training batches is at most this many bytes (a 224x224 RGB batch
# of 256 is ~150 MB: such batches come one per chunk).
CHUNK_BYTES = 64 << 20


def _chunk_steps(spec, steps_per_loop: int, steps: int) -> int:
  """Batches per chunk: the largest divisor of `steps_per_loop` whose chunk
  fits in CHUNK_BYTES and is no longer than the stream's `steps` (so chunks
  end where the compiled calls end, and a short run is not padded with up
  to `steps_per_loop` zero batches); 1 when a batch's shape is not static
  (its chunks cannot be padded)."""
  specs = tf.nest.flatten(spec)
  if not all(s.shape.is_fully_defined() for s in specs):
    return 1
  batch_bytes = sum(s.shape.num_elements() * s.dtype.size for s in specs)
  fits = max(1, CHUNK_BYTES // max(batch_bytes, 1))
  return max(d for d in range(1, steps_per_loop + 1)
             if steps_per_loop % d == 0 and d <= fits and d <= max(steps, 1))


class Feed:
  """Training batches for the compiled loop, K batches at a time.

  The loop does not call the input iterator once per step: each element of
  the distributed dataset is a chunk of K batches ([K, B, ...]; [B, K, ...]
  with several replicas, so that the strategy splits the batch axis), and a
  compiled call trains steps `start .. start + n` of one chunk by indexing
  it (`benchmarks.loop_profile`: the iterator's `get_next` inside the loop
  cost 12% (Intel Xeon) to 38% (AMD EPYC) of the MLP's time at batch 256;
  without it XLA can compile the whole loop). The
  batches and their order are exactly those of `batches`.

  Chunks start on global steps that are multiples of K (`start_step`: the
  global step before the first batch), so a call that ends on a
  `steps_per_loop` multiple never spans two chunks: the first chunk of a
  stream that starts off that grid is padded at its front, and the last one
  at its end, with all-zero batches that are never trained on (every chunk
  has one static shape: one trace).

  Args:
    strategy: the tf.distribute strategy the Trainer uses.
    batches: a dataset of global batches (static shapes, as `train_batches`
      gives them with drop_remainder).
    steps: how many of its batches will be used (at most its cardinality,
      the default).
    steps_per_loop: the compiled call length; K divides it.
    start_step: the global step before the first batch.
  """

  def __init__(self, strategy, batches: tf.data.Dataset,
               steps: Optional[int] = None, steps_per_loop: int = 100,
               start_step: int = 0):
    known = int(batches.cardinality())
    if steps is None:
      if known < 0:
        raise ValueError('Feed: give `steps` for a dataset of unknown length.')
      steps = known
    elif known >= 0:
      steps = min(steps, known)
    self.steps = int(steps)
    self.chunk_steps = k = _chunk_steps(batches.element_spec, steps_per_loop,
                                        self.steps)
    self.axis = 0 if strategy.num_replicas_in_sync == 1 else 1
    self._front = int(start_step) % k
    back = (-(self._front + self.steps)) % k
    padded = batches.take(self.steps)
    if self._front or back:      # K > 1: the batch shapes are static
      zeros = tf.data.Dataset.from_tensors(tf.nest.map_structure(
          lambda s: tf.zeros(s.shape, s.dtype), batches.element_spec))
    if self._front:
      padded = zeros.repeat(self._front).concatenate(padded)
    if back:
      padded = padded.concatenate(zeros.repeat(back))
    chunks = padded.batch(k, drop_remainder=True)
    if self.axis == 1:
      def swap(*x):
        x = x if len(x) > 1 else x[0]
        return tf.nest.map_structure(
            lambda t: tf.experimental.numpy.swapaxes(t, 0, 1), x)
      chunks = chunks.map(swap)
    chunks = chunks.prefetch(1).with_options(_options())
    self._iterator = iter(strategy.experimental_distribute_dataset(chunks))
    self._chunk = None
    self._chunk_index = -1
    self.consumed = 0        # batches trained on so far

  def segment(self, num_steps: int):
    """(chunk, start, n): the next `n` <= `num_steps` batches, all in one
    chunk (fetched when the current one is used up).

    Raises:
      StopIteration: when the `steps` batches are used up.
    """
    if self.consumed >= self.steps:
      raise StopIteration
    index, start = divmod(self._front + self.consumed, self.chunk_steps)
    while self._chunk_index < index:
      self._chunk = next(self._iterator)
      self._chunk_index += 1
    n = min(num_steps, self.chunk_steps - start, self.steps - self.consumed)
    return self._chunk, start, n

  def advance(self, steps_run: int) -> None:
    self.consumed += int(steps_run)


def eval_batches(cached: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
  return (cached.batch(batch_size).prefetch(AUTOTUNE)
          .with_options(_options()))


# --- The caller's own datasets ------------------------------------------------
#
