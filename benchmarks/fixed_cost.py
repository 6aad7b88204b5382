"""Benchmark: the fixed cost of a short run, tftrain end to end vs Keras fit.

`python -m launch.deep --activation=sigmoid --epochs=1 --max_steps_per_epoch=50`
(launch, data, graph trace, 50 steps, validation, test, export, health
report, pictures, exit) against a plain Keras script on the same model and
data: launch, TFDS load, `model.fit` until its 50th step is done (timed from
the process's start by a callback). Each runs as its own process, the two
interleaved, `--repeats` times; best-of-N beside the median.

  python -m benchmarks.fixed_cost [--repeats=3]

Target: tftrain's whole run (best of N) <= fit's time to 50 steps (best of N).
"""

import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
common.add_common_flags(flags)
flags.DEFINE_integer('repeats', 3, 'Runs of each, interleaved.')

FIT_SCRIPT = r'''
import os, sys, time
import tensorflow as tf
from tftrain import data, models
from tftrain import progress
d = data.prepare('mnist', sys.argv[1] or None, sys.argv[2] or None)
splits, _ = data.load_splits('mnist', d, 5000)
model = models.deep_mlp(depth=100, width=100, activation='sigmoid', seed=0)
model.compile(tf.keras.optimizers.Nadam(1e-4),
              tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=['accuracy'])
class Done(tf.keras.callbacks.Callback):
  def on_train_batch_end(self, batch, logs=None):
    if batch == 49:
      print('FIT_50_STEPS', progress.seconds_since_launch(), flush=True)
model.fit(data.train_batches(splits['train'].cache(), 32, 0, 0).take(50),
          epochs=1, verbose=0, callbacks=[Done()])
'''


def _env():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  if FLAGS.raw_data_dir:
    env['TFTRAIN_RAW_DATA_DIR'] = FLAGS.raw_data_dir
  return env


def tftrain_run() -> float:
  workdir = tempfile.mkdtemp(prefix='bench-fixed-cost-')
  args = [sys.executable, '-m', 'launch.deep', '--activation=sigmoid',
          '--epochs=1', '--max_steps_per_epoch=50', f'--workdir={workdir}']
  if FLAGS.data_dir:
    args.append(f'--data_dir={FLAGS.data_dir}')
  start = time.perf_counter()
  subprocess.run(args, check=True, env=_env(), capture_output=True)
  return time.perf_counter() - start


def fit_run() -> float:
  out = subprocess.run(
      [sys.executable, '-c', FIT_SCRIPT, FLAGS.data_dir or '',
       FLAGS.raw_data_dir or ''], check=True, env=_env(),
      capture_output=True, text=True).stdout
  return float(out.split('FIT_50_STEPS')[1].split()[0])


def main(argv):
  del argv
  times = {'tftrain: whole run (50 steps, eval, export, health)': [],
           'fit: launch to 50 steps done': []}
  for _ in range(FLAGS.repeats):
    for name, fn in zip(times, (tftrain_run, fit_run)):
      times[name].append(fn())
  rows = [{'variant': name, 'best (s)': min(v), 'median (s)': common.median(v),
           'n': len(v)} for name, v in times.items()]
  ours, fit = (min(v) for v in times.values())
  targets = [common.target('tftrain whole run / fit to 50 steps (best of '
                           f'{FLAGS.repeats})', ours / fit, '<=', 1.0)]
  ok = common.report('fixed_cost', 'Fixed cost: a 50-step launch.deep run',
                     rows, ['variant', 'best (s)', 'median (s)', 'n'], targets)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  app.run(main)
