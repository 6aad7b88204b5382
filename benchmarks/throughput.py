"""Benchmark 1: tftrain's loop vs Keras 3 `model.fit` on the same work.

Same MLP (300-100 ReLU), same tf.data pipeline (cached MNIST, shuffled,
batched, prefetched), same optimizer (SGD 0.3), batch 32 and 256. Each variant
keeps its own warm model; one warm-up epoch each is excluded; then the
variants run interleaved, one epoch per repetition, in the same process.

  python -m benchmarks.throughput [--repeats=3]

Targets: tftrain default >= 1.2x default fit at batch 32, >= 1.0x at 256.
"""

import sys
import tempfile

from absl import app
from absl import flags
import tensorflow as tf

from benchmarks import common
from tftrain import config as config_lib
from tftrain import data
from tftrain import models

FLAGS = flags.FLAGS
common.add_common_flags(flags)
flags.DEFINE_integer('repeats', 3, 'Timed epochs per variant.')
flags.DEFINE_list('batch_sizes', ['32', '256'], 'Batch sizes.')


def fit_epoch_fn(cached, batch, steps_per_execution=1, jit_compile=False):
  model = models.mlp(seed=0)
  model.compile(optimizer=tf.keras.optimizers.SGD(0.3),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'], steps_per_execution=steps_per_execution,
                jit_compile=jit_compile)
  steps = 55000 // batch

  def run_epoch(epoch):
    model.fit(data.train_batches(cached, batch, 0, epoch), epochs=1, verbose=0)
    return steps * batch
  return run_epoch


def run_benchmark(cached, batch_sizes, repeats):
  rows, targets = [], []
  defaults = config_lib.Config()
  for batch in batch_sizes:
    logdir = tempfile.mkdtemp()
    variants = {
        f'tftrain (defaults: steps_per_loop={defaults.steps_per_loop}, grad norms on)':
            common.tftrain_epoch_fn(cached, batch, defaults, logdir),
        'tftrain + jit_compile':
            common.tftrain_epoch_fn(cached, batch, defaults.replace(jit_compile=True),
                             logdir + '/jit'),
        'fit (default)': fit_epoch_fn(cached, batch),
        'fit steps_per_execution=50': fit_epoch_fn(cached, batch, 50),
        'fit steps_per_execution=50 + jit_compile':
            fit_epoch_fn(cached, batch, 50, True),
    }
    speeds = {name: [] for name in variants}
    for name, fn in variants.items():   # warm-up: trace, compile
      fn(0)
    for rep in range(repeats):
      for name, fn in variants.items():
        with common.Timer() as t:
          n = fn(rep + 1)
        speeds[name].append(n / t.seconds)
    med = {name: common.median(v) for name, v in speeds.items()}
    fit_default = med['fit (default)']
    fit_best = max(v for k, v in med.items() if k.startswith('fit'))
    for name, v in med.items():
      rows.append({'batch': batch, 'variant': name, 'examples/s (median)': v,
                   'min': min(speeds[name]), 'max': max(speeds[name]),
                   'vs fit default': v / fit_default, 'vs fit best': v / fit_best})
    ours = med[next(iter(variants))]
    need = 1.2 if batch == 32 else 1.0
    targets.append(common.target(
        f'batch {batch}: tftrain defaults / default fit', ours / fit_default,
        '>=', need))
    rows.append({'batch': batch, 'variant': '(best tftrain / best fit)',
                 'vs fit best': max(med[k] for k in med if k.startswith('tftrain'))
                 / fit_best})
  return rows, targets


def main(argv):
  del argv
  cached, _, _ = common.mnist_cached(FLAGS.data_dir, FLAGS.raw_data_dir)
  rows, targets = run_benchmark(cached['train'],
                                [int(b) for b in FLAGS.batch_sizes],
                                FLAGS.repeats)
  ok = common.report('throughput', 'Training throughput: tftrain vs Keras fit '
                     '(MNIST MLP 300-100, SGD)', rows,
                     ['batch', 'variant', 'examples/s (median)', 'min', 'max',
                      'vs fit default', 'vs fit best'], targets)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  app.run(main)
