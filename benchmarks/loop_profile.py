"""Where the plain loop's time goes, against Keras `fit` at its best (issue 25).

The MNIST MLP 300-100 (SGD 0.3) at one batch size; every variant trains the
same steps per repetition, warm, interleaved in one process, best of N beside
the median. Each variant removes one piece of tftrain's compiled loop:

- `tftrain train_steps`: the Trainer's plain loop as the launchers call it
  (`--steps_per_loop` steps per call: a while loop over `strategy.run`, a
  SUM reduction of the loss and of the (loss sum, correct, count) stats per
  step, the per-step loss in a TensorArray, the non-finite stop in the
  loop's condition), one host sync per call;
- `+ jit step`: the same with the step XLA-compiled (`--jit_compile`);
- `no strategy.run`: the same while loop calling the replica step directly,
  no reductions (what one replica needs);
- `no strategy.run, no per-step outputs`: also no TensorArray and no finite
  check, only the stats sum (the least a loop can return);
- `in-memory batches, no iterator`: the N steps over N batches already in
  memory, without XLA (what the input iterator costs);
- `XLA on the whole loop`: the N steps in one XLA cluster, over N batches
  already in memory (no iterator: XLA cannot compile `next(iterator)`); an
  upper bound, not a usable loop;
- `fit steps_per_execution=N` with and without `jit_compile`.

  python -m benchmarks.loop_profile [--batch=256] [--repeats=7]

Prints the table; exits 1 when `tftrain train_steps` is below the best `fit`
(the issue's target).
"""

import sys

from absl import app
from absl import flags
import tensorflow as tf

from benchmarks import common
from tftrain import data
from tftrain import trainer as trainer_lib

FLAGS = flags.FLAGS
common.add_common_flags(flags)
flags.DEFINE_integer('batch', 256, 'Global batch size.')
flags.DEFINE_integer('repeats', 7, 'Timed repetitions per variant.')
flags.DEFINE_integer('steps_per_loop', 50, 'Steps per compiled call.')


def _trainer(jit_compile=False):
  return trainer_lib.Trainer(
      common.build_model('mlp'), common.build_optimizer('mlp'),
      tf.distribute.get_strategy(), FLAGS.batch, jit_compile=jit_compile)


def _batches(cached, epoch, steps):
  return data.train_batches(cached, FLAGS.batch, 0, epoch).take(steps)


def tftrain_variant(cached, steps, jit_compile=False):
  """The Trainer's own plain loop, `steps_per_loop` steps per call."""
  trainer = _trainer(jit_compile)

  def run(epoch):
    it = data.Feed(trainer.strategy, _batches(cached, epoch, steps), steps,
                   FLAGS.steps_per_loop,
                   int(trainer.optimizer.iterations.numpy()))
    done = 0
    while done < steps:
      n = min(FLAGS.steps_per_loop, steps - done)
      done += trainer.train_steps(it, n)['steps_run']
    return done * FLAGS.batch
  return run


def direct_variant(cached, steps, per_step_outputs: bool):
  """The same while loop without strategy.run and reductions (and, without
  `per_step_outputs`, without the TensorArray and the finite check)."""
  trainer = _trainer()
  step = trainer._plain_replica_step  # pylint: disable=protected-access

  @tf.function
  def loop(iterator, num_steps):
    if per_step_outputs:
      def body(i, sums, losses, finite):
        loss, stats = step(next(iterator))
        return (i + 1, sums + stats, losses.write(i, loss),
                tf.math.is_finite(loss))
      cond = lambda i, s, l, finite: tf.logical_and(i < num_steps, finite)
      out = tf.while_loop(cond, body, (
          tf.constant(0), tf.zeros([3]),
          tf.TensorArray(tf.float32, size=num_steps), tf.constant(True)))
      return out[1], out[2].stack()
    def body2(i, sums):
      _, stats = step(next(iterator))
      return i + 1, sums + stats
    _, sums = tf.while_loop(lambda i, s: i < num_steps, body2,
                            (tf.constant(0), tf.zeros([3])))
    return sums, tf.zeros([0])

  def run(epoch):
    it = iter(_batches(cached, epoch, steps))
    done = 0
    while done < steps:
      n = min(FLAGS.steps_per_loop, steps - done)
      tf.nest.map_structure(lambda t: t.numpy(),
                            loop(it, tf.constant(n, tf.int32)))
      done += n
    return done * FLAGS.batch
  return run


def whole_loop_variant(cached, steps, jit_compile=True):
  """N steps over N in-memory batches (no iterator), in one XLA cluster with
  `jit_compile` (an upper bound)."""
  trainer = _trainer()
  step = trainer._plain_replica_step  # pylint: disable=protected-access
  n = FLAGS.steps_per_loop
  chunks = []
  for images, labels in _batches(cached, 0, steps).batch(n, drop_remainder=True):
    chunks.append((images, labels))

  @tf.function(jit_compile=jit_compile)
  def loop(images, labels):
    def body(i, sums):
      _, stats = step((images[i], labels[i]))
      return i + 1, sums + stats
    return tf.while_loop(lambda i, s: i < n, body,
                         (tf.constant(0), tf.zeros([3])))[1]

  def run(epoch):
    del epoch
    for images, labels in chunks:
      loop(images, labels).numpy()
    return len(chunks) * n * FLAGS.batch
  return run


def main(argv):
  del argv
  mnist, _, _ = common.mnist_cached(FLAGS.data_dir, FLAGS.raw_data_dir)
  cached = mnist['train']
  steps = (55000 // FLAGS.batch) // FLAGS.steps_per_loop * FLAGS.steps_per_loop
  fit_default = common.fit_runner(cached, 'mlp', FLAGS.batch)
  fit_spe = common.fit_runner(cached, 'mlp', FLAGS.batch, FLAGS.steps_per_loop)
  fit_jit = common.fit_runner(cached, 'mlp', FLAGS.batch,
                              FLAGS.steps_per_loop, True)
  variants = {
      'tftrain train_steps': tftrain_variant(cached, steps),
      'tftrain train_steps + jit step': tftrain_variant(cached, steps, True),
      'no strategy.run': direct_variant(cached, steps, True),
      'no strategy.run, no per-step outputs': direct_variant(
          cached, steps, False),
      'in-memory batches, no iterator': whole_loop_variant(
          cached, steps, False),
      'XLA on the whole loop (in-memory batches)': whole_loop_variant(
          cached, steps),
      'fit (default)': lambda rep: fit_default(rep, steps),
      f'fit steps_per_execution={FLAGS.steps_per_loop}':
          lambda rep: fit_spe(rep, steps),
      f'fit steps_per_execution={FLAGS.steps_per_loop} + jit_compile':
          lambda rep: fit_jit(rep, steps),
  }
  speeds = common.interleave(variants, FLAGS.repeats)
  best = {name: max(v) for name, v in speeds.items()}
  fit_best = max(v for k, v in best.items() if k.startswith('fit'))
  ours = best['tftrain train_steps']
  rows = [common.speed_row(name, values, **{
      'vs tftrain': max(values) / ours, 'vs fit best': max(values) / fit_best})
          for name, values in speeds.items()]
  targets = [common.target(
      f'tftrain train_steps / best fit (batch {FLAGS.batch}, best of '
      f'{FLAGS.repeats})', ours / fit_best, '>=', 1.0)]
  ok = common.report(
      f'loop_profile_{FLAGS.batch}', f'Plain loop, piece by piece (MLP, batch '
      f'{FLAGS.batch}, {steps} steps per repetition)', rows,
      ['variant', 'best (ex/s)', 'median', 'min', 'n', 'vs tftrain',
       'vs fit best'], targets)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  app.run(main)
