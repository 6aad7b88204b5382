"""Benchmark 1: tftrain's loop vs Keras 3 `model.fit` on the same work.

Same model, same tf.data pipeline (cached MNIST, shuffled, batched,
prefetched), same optimizer: the seed's MLP 300-100 (SGD 0.3) at batch 32 and
256, and `launch.deep`'s 100 x Dense(100) SELU model (Nadam) at batch 32.
tftrain runs with its defaults (logging on: loss, lr and per-layer gradient
norms every 100 steps); `fit` with its default settings and at its best
(`steps_per_execution=50`, with and without `jit_compile`). Each variant keeps
its own warm model; after a warm-up call each, the variants run interleaved
in one process; best-of-N is reported beside median and min.

  python -m benchmarks.throughput [--repeats=7]

Targets: tftrain defaults (best of N) >= 1.0x the best `fit` variant (best of
N) on the MLP at batch 32 and 256, and on the 100-layer model.
"""

import sys
import tempfile

from absl import app
from absl import flags

from benchmarks import common
from tftrain import config as config_lib

FLAGS = flags.FLAGS
common.add_common_flags(flags)
flags.DEFINE_integer('repeats', 7, 'Timed repetitions per variant.')
flags.DEFINE_list('cases', ['mlp:32', 'mlp:256', 'deep:32'],
                  'model:batch cases (model: mlp or deep).')
flags.DEFINE_integer('deep_steps', 300, 'Steps per repetition, deep model.')


def case_variants(cached, kind, batch, steps):
  defaults = config_lib.Config()
  logdir = tempfile.mkdtemp(prefix='bench-throughput-')
  ours = common.TftrainRunner(cached, kind, batch, defaults, logdir)
  ours_jit = common.TftrainRunner(cached, kind, batch,
                                  defaults.replace(jit_compile=True),
                                  logdir + '/jit')
  fits = {
      'fit (default)': common.fit_runner(cached, kind, batch),
      'fit steps_per_execution=50': common.fit_runner(cached, kind, batch, 50),
      'fit steps_per_execution=50 + jit_compile':
          common.fit_runner(cached, kind, batch, 50, True),
  }
  variants = {
      'tftrain defaults (logging on)': lambda rep: ours.run(rep, steps),
      'tftrain + jit_compile (logging on)': lambda rep: ours_jit.run(rep, steps),
  }
  variants.update({name: (lambda rep, fn=fn: fn(rep, steps))
                   for name, fn in fits.items()})
  return variants


def run_benchmark(cached, cases, repeats, deep_steps):
  rows, targets = [], []
  for case in cases:
    kind, batch = case.split(':')
    batch = int(batch)
    steps = deep_steps if kind == 'deep' else 55000 // batch
    speeds = common.interleave(case_variants(cached, kind, batch, steps),
                               repeats)
    best = {name: max(v) for name, v in speeds.items()}
    fit_best = max(v for k, v in best.items() if k.startswith('fit'))
    fit_default = best['fit (default)']
    for name, values in speeds.items():
      rows.append(common.speed_row(
          name, values, case=f'{kind} batch {batch}',
          **{'vs fit default': max(values) / fit_default,
             'vs fit best': max(values) / fit_best}))
    ours = best['tftrain defaults (logging on)']
    targets.append(common.target(
        f'{kind} batch {batch}: tftrain defaults / best fit (best of '
        f'{repeats})', ours / fit_best, '>=', 1.0))
  return rows, targets


def main(argv):
  del argv
  cached, _, _ = common.mnist_cached(FLAGS.data_dir, FLAGS.raw_data_dir)
  rows, targets = run_benchmark(cached['train'], FLAGS.cases, FLAGS.repeats,
                                FLAGS.deep_steps)
  ok = common.report(
      'throughput', 'Training throughput: tftrain vs Keras fit (MNIST)', rows,
      ['case', 'variant', 'best (ex/s)', 'median', 'min', 'n',
       'vs fit default', 'vs fit best'], targets)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  app.run(main)
