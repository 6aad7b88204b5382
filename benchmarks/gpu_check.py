"""GPU check: precision/XLA throughput against `fit`, and MirroredStrategy.

On one GPU (well under 8 minutes on an H200):
  1. throughput of the tftrain loop (defaults: logging on) for the MLP 300-100
     at batch 256, the 100 x Dense(100) model at batch 128 and the CNN
     (CIFAR-10-shaped) at batch 256, in float32, `mixed_float16` and
     float32 + XLA (`jit_compile`), beside Keras `fit` at its best
     (`steps_per_execution=50` + `jit_compile`, float32), best of N;
  2. MirroredStrategy over every visible device (the GPU split into two
     logical GPUs): its MLP throughput, and against the single device the
     same model, data and global batch must give the same losses and final
     metrics (up to float summation order).
Data are generated arrays (MNIST- or CIFAR-shaped, labels learnable from the
pixels), so the check needs no dataset on the GPU machine.

  python -m benchmarks.gpu_check            # on a GPU machine
  python -m benchmarks.gpu_check --tiny     # CPU, seconds (used by the tests)

On a fresh GPU machine: `pip install -e '.[gpu]'` (TensorFlow's CUDA wheels)
first. Exits 1 if no GPU is found (unless --tiny) or if the mirrored run
differs.
"""

import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_bool('tiny', False, 'Tiny models and data on CPU (for tests).')
flags.DEFINE_integer('repeats', 3, 'Timed repetitions per variant.')


def split_devices(tiny: bool) -> str:
  """Two logical devices before TF initializes; returns 'GPU' or 'CPU'."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  gpus = tf.config.list_physical_devices('GPU')
  if gpus and not tiny:
    tf.config.set_logical_device_configuration(
        gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=20000)] * 2)
    return 'GPU'
  from tftrain import distribute  # pylint: disable=g-import-not-at-top
  distribute.configure_cpu_replicas(2)
  return 'CPU'


def make_data(n, seed=0, shape=(28, 28, 1)):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, n).astype(np.int32)
  images = rng.uniform(0, 0.5, (n,) + tuple(shape)).astype(np.float32)
  images[np.arange(n), labels, :4, 0] += 0.5       # a learnable pattern
  return tf.data.Dataset.from_tensor_slices((images, labels)).cache()


def model_and_optimizer(kind, seed=0, tiny=False):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tftrain import models  # pylint: disable=g-import-not-at-top
  if kind == 'mlp':
    return models.mlp(seed=seed), tf.keras.optimizers.SGD(0.1)
  if kind == 'cnn':
    return (models.cnn(filters=(4, 8) if tiny else (16, 32, 64), seed=seed),
            tf.keras.optimizers.Nadam(5e-4))
  return (models.deep_mlp(depth=kind, width=100, seed=seed),
          tf.keras.optimizers.Nadam(1e-4))


def build(kind, strategy, batch, mixed=False, jit=False, seed=0, tiny=False):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tftrain import summaries, trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  tf.keras.mixed_precision.set_global_policy(
      'mixed_float16' if mixed else 'float32')
  with strategy.scope():
    model, opt = model_and_optimizer(kind, seed, tiny)
    if mixed:
      opt = tf.keras.mixed_precision.LossScaleOptimizer(opt)
    trainer = trainer_lib.Trainer(model, opt, strategy, batch, jit_compile=jit)
  tf.keras.mixed_precision.set_global_policy('float32')
  logger = summaries.StepLogger(None, trainer.layer_names, 100)
  return trainer, logger


def throughput(ds, kind, batch, steps, repeats, mixed, jit, strategy=None,
               tiny=False):
  """Best examples/s over `repeats` timed runs of `steps` after a warm-up."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tftrain import chunks, data  # pylint: disable=g-import-not-at-top
  strategy = strategy or tf.distribute.get_strategy()
  trainer, logger = build(kind, strategy, batch, mixed, jit, tiny=tiny)
  batches = ds.repeat().batch(batch, drop_remainder=True).prefetch(4)
  warm = 3 if tiny else 50    # tiny: float16 matmuls on CPU run ~100 ex/s
  it = data.Feed(strategy, batches, warm + repeats * steps)
  chunks.run_steps(trainer, it, warm, logger)           # warm-up, tracing
  best = 0.0
  for _ in range(repeats):
    start = time.perf_counter()
    chunks.run_steps(trainer, it, steps, logger)
    best = max(best, steps * batch / (time.perf_counter() - start))
  return best


def fit_best(ds, kind, batch, steps, repeats, tiny=False):
  """Keras `fit` at its best (steps_per_execution=50 + jit_compile)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model, opt = model_and_optimizer(kind, tiny=tiny)
  model.compile(optimizer=opt, loss=tf.keras.losses.SparseCategoricalCrossentropy(
      from_logits=True), metrics=['accuracy'],
                steps_per_execution=min(50, steps),
                jit_compile=True)
  batches = ds.repeat().batch(batch, drop_remainder=True).prefetch(4)
  model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)   # warm-up
  best = 0.0
  for _ in range(repeats):
    start = time.perf_counter()
    model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
    best = max(best, steps * batch / (time.perf_counter() - start))
  return best


def mirrored_matches(ds, kind, batch, steps):
  """Losses and eval metrics: default strategy vs two-device mirrored."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tftrain import chunks, data, distribute  # pylint: disable=g-import-not-at-top
  out = {}
  for name in ('default', 'mirrored'):
    strategy = distribute.create_strategy(name)
    trainer, logger = build(kind, strategy, batch, seed=1)
    train = ds.batch(batch, drop_remainder=True).take(steps)
    it = data.Feed(strategy, train)
    result = chunks.run_steps(trainer, it, steps, logger)
    metrics = trainer.evaluate(strategy.experimental_distribute_dataset(
        ds.batch(batch)))
    out[name] = (strategy.num_replicas_in_sync, result['losses'], metrics)
  (n1, l1, m1), (n2, l2, m2) = out['default'], out['mirrored']
  same = (n2 == 2 and np.allclose(l1, l2, rtol=1e-3, atol=1e-4)
          and abs(m1['accuracy'] - m2['accuracy']) < 1e-3
          and abs(m1['loss'] - m2['loss']) < 1e-3 * max(1.0, m1['loss']))
  return same, n2, float(np.max(np.abs(l1 - l2))), m1, m2


def main(argv):
  del argv
  device = split_devices(FLAGS.tiny)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if device == 'CPU' and not FLAGS.tiny:
    print('gpu_check: no GPU found (run with --tiny to check on CPU)')
    return 1
  tiny = FLAGS.tiny
  ds = make_data(1280 if tiny else 60000)
  cifar = make_data(640 if tiny else 20000, shape=(32, 32, 3))
  cases = [('mlp', ds, 64 if tiny else 256, 5 if tiny else 400),
           (3 if tiny else 100, ds, 32 if tiny else 128, 5 if tiny else 200),
           ('cnn', cifar, 32 if tiny else 256, 5 if tiny else 100)]
  print(f'gpu_check on {device}: {tf.config.list_logical_devices(device)}, '
        f'TF {tf.__version__}')
  print('| model | batch | float32 ex/s | mixed_float16 ex/s | '
        'float32 + XLA ex/s | fit best ex/s | best tftrain / fit best |')
  print('|---|---|---|---|---|---|---|')
  for kind, data_, batch, steps in cases:
    speeds = [throughput(data_, kind, batch, steps, FLAGS.repeats, mixed, jit,
                         tiny=tiny)
              for mixed, jit in ((False, False), (True, False), (False, True))]
    fit = fit_best(data_, kind, batch, steps, FLAGS.repeats, tiny)
    name = {'mlp': 'MLP 300-100', 'cnn': 'CNN'}.get(kind,
                                                    f'{kind} x Dense(100)')
    print(f'| {name} | {batch} | ' + ' | '.join(f'{s:,.0f}' for s in speeds)
          + f' | {fit:,.0f} | {max(speeds) / fit:.2f} |')
  mirrored = tf.distribute.MirroredStrategy(
      [d.name for d in tf.config.list_logical_devices(device)])
  speed = throughput(ds, 'mlp', 64 if tiny else 256, 20 if tiny else 400,
                     FLAGS.repeats, False, False, strategy=mirrored)
  print(f'MLP 300-100 float32, MirroredStrategy over '
        f'{mirrored.num_replicas_in_sync} {device}s: {speed:,.0f} ex/s')
  same, replicas, max_diff, m1, m2 = mirrored_matches(
      ds, 'mlp', 64, 20 if tiny else 200)
  print(f'mirrored over {replicas} logical {device}s vs one device: '
        f'max |loss diff| {max_diff:.2e}; accuracy {m1["accuracy"]:.4f} vs '
        f'{m2["accuracy"]:.4f}; loss {m1["loss"]:.4f} vs {m2["loss"]:.4f}: '
        f'{"SAME" if same else "DIFFERENT"}')
  return 0 if same else 1


if __name__ == '__main__':
  app.run(lambda argv: sys.exit(main(argv)))
