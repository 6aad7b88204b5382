"""Benchmark 3: the tf.data pipeline alone vs what training consumes.

Reads one epoch of the training pipeline (cached MNIST, per-epoch shuffle,
batch, prefetch) without training, and compares with the training
throughput of the seed's MLP (tftrain defaults) at the same batch size.

  python -m benchmarks.input_pipeline

Target: pipeline examples/s >= 2x training examples/s (not the bottleneck).
"""

import sys
import tempfile

from absl import app
from absl import flags

from benchmarks import common
from tftrain import config as config_lib
from tftrain import data

FLAGS = flags.FLAGS
common.add_common_flags(flags)
flags.DEFINE_integer('repeats', 3, 'Epochs per measurement.')


def main(argv):
  del argv
  cached, _, _ = common.mnist_cached(FLAGS.data_dir, FLAGS.raw_data_dir)
  train = cached['train']
  rows, targets = [], []
  for batch in (32, 256):
    pipe = []
    for epoch in range(FLAGS.repeats + 1):
      with common.Timer() as t:
        n = sum(int(y.shape[0]) for _, y in data.train_batches(train, batch, 0, epoch))
      if epoch:                     # first pass excluded (shuffle buffer fill)
        pipe.append(n / t.seconds)
    runner = common.TftrainRunner(train, 'mlp', batch, config_lib.Config(),
                                  tempfile.mkdtemp())
    run_epoch = lambda epoch: runner.run(epoch, 55000 // batch)  # pylint: disable=cell-var-from-loop
    run_epoch(0)
    trained = []
    for epoch in range(FLAGS.repeats):
      with common.Timer() as t:
        n = run_epoch(epoch + 1)
      trained.append(n / t.seconds)
    p, tr = common.median(pipe), common.median(trained)
    rows.append({'batch': batch, 'pipeline examples/s': p,
                 'training examples/s': tr, 'headroom': p / tr})
    targets.append(common.target(f'batch {batch}: pipeline / training',
                                 p / tr, '>=', 2.0))
  ok = common.report('input_pipeline', 'Input pipeline vs training (MNIST)',
                     rows, ['batch', 'pipeline examples/s',
                            'training examples/s', 'headroom'], targets)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  app.run(main)
