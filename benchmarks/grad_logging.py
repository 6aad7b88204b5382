"""Benchmark 2: the cost of gradient observability.

One warm tftrain Trainer and one data stream per model; each repetition
trains the same number of steps with logging off and at the launcher
defaults, interleaved in one process (so only the logging toggles); a third
runner (its own model) shows logging at every step:
  off:        no summaries at all (plain in-graph loops only);
  launcher defaults: loss, lr, per-layer gradient norms and update ratios
              every 100 steps; for the deep model (`launch.deep`'s defaults)
              also histograms (linear and log10) and the depth probe
              (activation statistics on a probe batch) every 500;
  every step: all of it observed and written at every step.
Models: `launch.deep`'s 100 x Dense(100) SELU (Nadam) and the MLP 300-100
(SGD), batch 32.

  python -m benchmarks.grad_logging [--repeats=7 --steps=1000]

Targets: defaults cost <= 3% on the 100-layer model and <= 1% on the MLP
(best of N against best of N; medians shown too). Beside them, each
repetition's cost by its own timers (`common.logging_cost`: the observed
calls beyond as many plain steps, the hooks and the wait for the writes, over
the plain steps' time), which this machine's speed flips between repetitions
do not move.
"""

import sys
import tempfile

from absl import app
from absl import flags

from benchmarks import common
from tftrain import config as config_lib
from tftrain import probes

FLAGS = flags.FLAGS
common.add_common_flags(flags)
flags.DEFINE_integer('steps', 1000, 'Timed steps per repetition.')
flags.DEFINE_integer('repeats', 7, 'Repetitions per variant.')
flags.DEFINE_list('models', ['deep', 'mlp'], 'Models: deep, mlp.')
flags.DEFINE_bool('every_step', True, 'Also time logging at every step.')

TARGETS = {'deep': 0.03, 'mlp': 0.01}   # issue 25
# (model, variant) -> each repetition's cost by its own timers
# (`common.logging_cost`): robust to speed flips between repetitions.
IN_REP_COSTS = {}


# The launchers' defaults: launch.deep logs histograms and probes every 500
# steps; launch.mnist logs no histograms.
DEFAULTS = {'deep': dict(log_every_steps=100, histogram_every_steps=500),
            'mlp': dict(log_every_steps=100, histogram_every_steps=0)}


def model_variants(cached, kind, steps):
  base = config_lib.Config(**DEFAULTS[kind])
  logdir = tempfile.mkdtemp(prefix='bench-grad-logging-')
  hooks = []
  if kind == 'deep':
    images, labels = next(iter(cached.batch(128)))   # probes.PROBE_SIZE
    hooks.append(probes.DepthProbe(images, labels, 500, 'selu'))
  runner = common.TftrainRunner(cached, kind, 32, base, logdir, hooks)
  every = common.TftrainRunner(cached, kind, 32, base.replace(
      log_every_steps=1, histogram_every_steps=1), logdir + '/every')
  every.hooks = ([probes.DepthProbe(images, labels, 1, 'selu')]
                 if kind == 'deep' else [])
  # The same defaults with the per-layer norms fused into segment sums over
  # flat vectors (Trainer.fused_norms=True; off by default, see BUILD.md).
  fused = common.TftrainRunner(
      cached, kind, 32, base, logdir + '/fused',
      [probes.DepthProbe(images, labels, 500, 'selu')] if kind == 'deep'
      else [])
  fused.trainer.fused_norms = True
  def timed(name, r, rep_steps, logging=True):
    def run(rep):
      n = r.run(rep, rep_steps, logging=logging)
      if rep:          # not the warm-up
        IN_REP_COSTS.setdefault((kind, name), []).append(r.last_cost)
      return n
    return run
  variants = {
      'logging off': timed('logging off', runner, steps, logging=False),
      'launcher defaults': timed('launcher defaults', runner, steps),
      'launcher defaults, fused norms (fused_norms=True)':
          timed('launcher defaults, fused norms (fused_norms=True)', fused,
                steps),
      'every step (norms, histograms, probe per loop)':
          timed('every step (norms, histograms, probe per loop)', every,
                steps // 10),
  }
  if not FLAGS.every_step:
    del variants['every step (norms, histograms, probe per loop)']
  return variants


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
             'cost (median)': 1.0 - common.median(values) / common.median(off),
             'cost (in-rep timers, median)':
                 common.median(IN_REP_COSTS.get((kind, name), [0.0])),
             'in-rep max': max(IN_REP_COSTS.get((kind, name), [0.0]))}))
    default = speeds['launcher defaults']
    targets.append(common.target(
        f'{kind}: cost of default logging (best of {FLAGS.repeats})',
        1.0 - max(default) / max(off), '<=', TARGETS[kind], '{:.1%}'))
  ok = common.report(
      'grad_logging', 'Cost of gradient observability (MNIST, batch 32)',
      rows, ['model', 'variant', 'best (ex/s)', 'median', 'min', 'n',
             'cost (best)', 'cost (median)', 'cost (in-rep timers, median)',
             'in-rep max'], targets)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  app.run(main)
