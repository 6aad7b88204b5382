"""Benchmark 2: the cost of gradient observability on the 100-layer model.

Training throughput of `launch.deep`'s model (100 x Dense(100), MNIST,
batch 32) with gradient logging off, at the launcher's default intervals
(per-layer grad norms every --log_every_steps=100, histograms and the
probe-batch activation/gradient-vs-depth summaries every 500 steps), and at
every step. Variants run interleaved in one process after a warm-up.

  python -m benchmarks.grad_logging [--steps=600 --repeats=3]

Target: defaults cost <= 10% of the throughput with logging off.
"""

import sys
import tempfile

from absl import app
from absl import flags

from benchmarks import common
from tftrain import config as config_lib
from tftrain import data
from tftrain import loop
from tftrain import summaries

FLAGS = flags.FLAGS
common.add_common_flags(flags)
flags.DEFINE_integer('steps', 600, 'Timed steps per repetition.')
flags.DEFINE_integer('repeats', 3, 'Repetitions per variant.')

VARIANTS = {
    'logging off': dict(grad_norms=False, histogram_every_steps=0,
                        log_every_steps=100, probe_every=0),
    'defaults (norms /100, histograms + probe /500)': dict(
        grad_norms=True, histogram_every_steps=500, log_every_steps=100,
        probe_every=500),
    'every step (norms, histograms /1, probe per loop)': dict(
        grad_norms=True, histogram_every_steps=1, log_every_steps=1,
        probe_every=1),
}


def make_runner(name, options, base, data_dir):
  options = dict(options)
  probe_every = options.pop('probe_every')
  config = base.replace(**options)
  exp = loop.build_experiment(config, tempfile.mkdtemp(prefix='bench-'))
  hooks = []
  if probe_every:
    images, labels = next(iter(exp.datasets['train'].batch(256)))
    hooks.append(summaries.DepthProbe(images, labels, probe_every,
                                      config.activation))
  state = {'epoch': 0}

  def run(steps):
    it = iter(exp.strategy.experimental_distribute_dataset(
        data.train_batches(exp.datasets['train'], config.batch_size,
                           config.seed, state['epoch'])))
    state['epoch'] += 1
    done = 0
    while done < steps:
      n = min(config.steps_per_loop, steps - done)
      out = exp.trainer.train_steps(it, n)
      done += n
      step = int(exp.trainer.optimizer.iterations.numpy())
      for hook in hooks:
        hook(exp, 'train', dict(out, step=step, epoch=0))
    return steps * config.batch_size
  return run


def main(argv):
  del argv
  base = config_lib.Config(
      dataset='mnist', data_dir=FLAGS.data_dir, raw_data_dir=FLAGS.raw_data_dir,
      model='deep_mlp', depth=100, width=100, activation='selu',
      optimizer='nadam', learning_rate=3e-5, batch_size=32, progress=False,
      trace_graph=False)
  runners = {name: make_runner(name, opts, base, FLAGS.data_dir)
             for name, opts in VARIANTS.items()}
  for run in runners.values():
    run(2 * base.steps_per_loop)          # warm-up: tracing, caches
  speeds = {name: [] for name in runners}
  for _ in range(FLAGS.repeats):
    for name, run in runners.items():
      with common.Timer() as t:
        n = run(FLAGS.steps)
      speeds[name].append(n / t.seconds)
  off = common.median(speeds['logging off'])
  rows = []
  for name, values in speeds.items():
    med = common.median(values)
    rows.append({'variant': name, 'examples/s (median)': med,
                 'min': min(values), 'max': max(values),
                 'slowdown vs off': 1.0 - med / off})
  default = common.median(speeds[list(VARIANTS)[1]])
  targets = [common.target('slowdown at defaults', 1.0 - default / off, '<=',
                           0.10, '{:.1%}')]
  ok = common.report('grad_logging', 'Cost of gradient observability '
                     '(100 x Dense(100), MNIST, batch 32)', rows,
                     ['variant', 'examples/s (median)', 'min', 'max',
                      'slowdown vs off'], targets)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  app.run(main)
