"""Benchmark 2: the cost of gradient observability.

One warm tftrain Trainer and one data stream per model; each repetition
trains the same number of steps with logging off, at the launcher defaults,
and at every step, interleaved in one process (so only the logging toggles):
  off:        no summaries at all (plain in-graph loops only);
  defaults:   loss, lr, per-layer gradient norms and update ratios every 100
              steps; histograms (linear and log10) every 500; for the deep
              model also `launch.deep`'s depth probe (activation statistics on
              a probe batch) every 500;
  every step: all of it observed and written at every step.
Models: `launch.deep`'s 100 x Dense(100) SELU (Nadam) and the MLP 300-100
(SGD), batch 32.

  python -m benchmarks.grad_logging [--repeats=7 --steps=1000]

Targets: defaults cost <= 3% on the 100-layer model and <= 2% on the MLP
(best of N against best of N; medians shown too).
"""

import sys
import tempfile

from absl import app
from absl import flags

from benchmarks import common
from tftrain import config as config_lib
from tftrain import summaries

FLAGS = flags.FLAGS
common.add_common_flags(flags)
flags.DEFINE_integer('steps', 1000, 'Timed steps per repetition.')
flags.DEFINE_integer('repeats', 7, 'Repetitions per variant.')
flags.DEFINE_list('models', ['deep', 'mlp'], 'Models: deep, mlp.')

TARGETS = {'deep': 0.03, 'mlp': 0.02}


def model_variants(cached, kind, steps):
  base = config_lib.Config(log_every_steps=100, histogram_every_steps=500)
  logdir = tempfile.mkdtemp(prefix='bench-grad-logging-')
  hooks = []
  if kind == 'deep':
    images, labels = next(iter(cached.batch(256)))
    hooks.append(summaries.DepthProbe(images, labels, 500, 'selu'))
  runner = common.TftrainRunner(cached, kind, 32, base, logdir, hooks)
  every = common.TftrainRunner.__new__(common.TftrainRunner)
  every.__dict__.update(runner.__dict__)       # same trainer and data stream
  every.logger = summaries.StepLogger(runner.logger.writer,
                                      runner.trainer.layer_names, 1, 1)
  every.hooks = ([summaries.DepthProbe(images, labels, 1, 'selu')]
                 if kind == 'deep' else [])
  return {
      'logging off': lambda rep: runner.run(rep, steps, logging=False),
      'defaults (/100, histograms and probe /500)':
          lambda rep: runner.run(rep, steps),
      'every step (norms, histograms, probe per loop)':
          lambda rep: every.run(rep, steps // 10),
  }


def main(argv):
  del argv
  cached, _, _ = common.mnist_cached(FLAGS.data_dir, FLAGS.raw_data_dir)
  rows, targets = [], []
  for kind in FLAGS.models:
    speeds = common.interleave(model_variants(cached['train'], kind,
                                              FLAGS.steps), FLAGS.repeats)
    off = speeds['logging off']
    for name, values in speeds.items():
      rows.append(common.speed_row(
          name, values, model=kind,
          **{'cost (best)': 1.0 - max(values) / max(off),
             'cost (median)': 1.0 - common.median(values) / common.median(off)}))
    default = speeds['defaults (/100, histograms and probe /500)']
    targets.append(common.target(
        f'{kind}: cost of default logging (best of {FLAGS.repeats})',
        1.0 - max(default) / max(off), '<=', TARGETS[kind], '{:.1%}'))
  ok = common.report(
      'grad_logging', 'Cost of gradient observability (MNIST, batch 32)',
      rows, ['model', 'variant', 'best (ex/s)', 'median', 'min', 'n',
             'cost (best)', 'cost (median)'], targets)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  app.run(main)
