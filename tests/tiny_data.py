"""Tiny raw datasets in the original download formats, for offline tests.

These writers produce test inputs only; tftrain itself never parses raw files
(TFDS's own builders do).
"""

import gzip
import io
import os
import struct
import tarfile

import numpy as np

CIFAR_CLASSES = ('airplane automobile bird cat deer dog frog horse ship '
                 'truck').split()


def learnable_images(labels, shape, rng):
  """uint8 images with a bright band of rows whose position encodes the label."""
  images = rng.normal(40.0, 10.0, size=(len(labels),) + shape)
  for i, label in enumerate(labels):
    images[i, ..., 2 * label:2 * label + 3, :] += 150.0
  return np.clip(images, 0, 255).astype(np.uint8)


def texture_images(labels, shape, rng):
  """uint8 images tiled with a 4x4 binary texture that encodes the label.

  Unlike `learnable_images` (a band whose position is the label), the label
  survives global pooling, so a ConvNet ending in GlobalAveragePooling2D
  learns it within a few epochs. The ten textures are fixed (seed 0), the
  noise comes from `rng`.
  """
  textures = np.random.default_rng(0).integers(0, 2, size=(10, 4, 4)) * 180.0
  reps = [-(-n // 4) for n in shape]
  tiles = np.stack([np.tile(t, reps)[:shape[0], :shape[1]] for t in textures])
  images = tiles[np.asarray(labels)] + rng.normal(40.0, 15.0,
                                                  size=(len(labels),) + shape)
  return np.clip(images, 0, 255).astype(np.uint8)


def write_tiny_cifar10(raw_dir, per_batch=40, num_test=50, seed=0):
  """Writes <raw_dir>/cifar10/cifar-10-binary.tar.gz (5 x per_batch train, num_test test)."""
  rng = np.random.default_rng(seed)
  out_dir = os.path.join(raw_dir, 'cifar10')
  os.makedirs(out_dir, exist_ok=True)

  def records(n):
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = learnable_images(labels, (3, 32, 32), rng)  # CHW, as the format
    return b''.join(bytes([l]) + img.tobytes() for l, img in zip(labels, images))

  files = {f'data_batch_{i}.bin': records(per_batch) for i in range(1, 6)}
  files['test_batch.bin'] = records(num_test)
  files['batches.meta.txt'] = ('\n'.join(CIFAR_CLASSES) + '\n').encode()
  path = os.path.join(out_dir, 'cifar-10-binary.tar.gz')
  with tarfile.open(path, 'w:gz') as tar:
    for name, payload in files.items():
      info = tarfile.TarInfo(f'cifar-10-batches-bin/{name}')
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  return path


def write_tiny_mnist(raw_dir, num_train=120, num_test=30, seed=0,
                     name='mnist', images_fn=learnable_images):
  """Writes the four MNIST IDX .gz files under <raw_dir>/<name>.

  `name='fashion_mnist'` writes Fashion-MNIST's files (same names and format).
  """
  rng = np.random.default_rng(seed)
  out_dir = os.path.join(raw_dir, name)
  os.makedirs(out_dir, exist_ok=True)
  for prefix, n in (('train', num_train), ('t10k', num_test)):
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = images_fn(labels, (28, 28), rng)
    with gzip.open(os.path.join(out_dir, f'{prefix}-images-idx3-ubyte.gz'), 'wb') as f:
      f.write(struct.pack('>IIII', 2051, n, 28, 28) + images.tobytes())
    with gzip.open(os.path.join(out_dir, f'{prefix}-labels-idx1-ubyte.gz'), 'wb') as f:
      f.write(struct.pack('>II', 2049, n) + labels.tobytes())
