"""Grid of variants of the CIFAR-10 seed: batch norm x optimizer, compared.

  python -m launch.compare --data_dir=/tmp/tfds --workdir=runs/grid
  python -m launch.compare --only='*nadam' --epochs=20       # pick variants
  python -m launch.compare --grid_optimizer=adam,rmsprop \\
      --learning_rates=adam=1e-3,bn-none_opt-rmsprop=1e-4
  python -m launch.compare --preset=chapter11 --epochs=50   # the chapter's table
  python -m launch.compare --grid_batch_norm=none --grid_optimizer=nadam \\
      --grid_activation=elu,selu --learning_rate=7e-4       # SELU on CIFAR-10
  python -m launch.compare --grid=depth=10,20 --learning_rate=1e-3

Every flag of `launch.cifar10` sets the base config (same seed defaults,
except --epochs, capped at 10 here so the default grid of 10 variants fits in
an hour on 2 CPU cores). Each variant trains in <workdir>/<variant>/ and
resumes there; <workdir>/comparison.{png,md,csv,json} are rewritten after each
variant, and `tensorboard --logdir <workdir>` shows the HParams dashboard.
"""

from absl import flags

from launch import cifar10  # pylint: disable=unused-import  (seed flags)
from launch import flags as launch_flags

FLAGS = flags.FLAGS

GRID_EPOCHS = 10
FLAGS.set_default('epochs', GRID_EPOCHS)

flags.DEFINE_list('grid_batch_norm', ['none', 'before'],
                  'Batch-norm placements of the grid (none, before, after).')
flags.DEFINE_list('grid_optimizer',
                  ['sgd', 'momentum', 'nesterov', 'adam', 'nadam'],
                  'Optimizers of the grid.')
flags.DEFINE_list('grid_activation', [],
                  'Activations of the grid (e.g. elu,selu); empty: no '
                  'activation axis. Unless --kernel_initializer is given, each '
                  'takes its own initializer (SELU: LeCun normal).')
flags.DEFINE_multi_string('grid', [],
                          'More axes, any Config field: --grid=depth=10,20 '
                          '(repeatable; tuples as 300:100).')
flags.DEFINE_list('learning_rates', [],
                  'name=lr overrides, by optimizer (adam=1e-3) or by variant '
                  '(bn-none_opt-sgd=0.02); others use --learning_rate when '
                  'given, else the built-in table '
                  '(tftrain.grid.DEFAULT_LEARNING_RATES).')
flags.DEFINE_string('preset', None,
                    'A named variant list instead of the grid: chapter11 '
                    '(no BN, BN, SELU, SELU + alpha dropout with MC dropout, '
                    '1cycle; tftrain.presets.PRESETS).')
flags.DEFINE_list('only', [],
                  'Run only variants matching these shell patterns '
                  "(e.g. 'bn-before_*,*_opt-sgd').")


def parse_learning_rates(items, defaults):
  """`defaults` updated by the name=rate items of --learning_rates."""
  from tftrain import errors  # pylint: disable=g-import-not-at-top
  rates = dict(defaults)
  for item in items:
    name, _, value = item.partition('=')
    try:
      rate = float(value)
    except ValueError:
      rate = -1.0
    if not name or not rate > 0:
      raise errors.ConfigError(
          'learning_rates', item, 'must be name=positive number, e.g. adam=1e-3.')
    rates[name] = rate
  return rates


def grid_axes():
  """{Config field: values} of the --grid_* and --grid flags; their flags."""
  from tftrain import errors  # pylint: disable=g-import-not-at-top
  axes = {'batch_norm': FLAGS.grid_batch_norm,
          'optimizer': FLAGS.grid_optimizer}
  if FLAGS.grid_activation:
    axes['activation'] = FLAGS.grid_activation
  names = {}
  for item in FLAGS.grid:
    axis, _, values = item.partition('=')
    if not values or axis in axes:
      raise errors.ConfigError('grid', item,
                               'give a new axis as field=value,value.')
    axes[axis], names[axis] = values.split(','), 'grid'
  return axes, names


def main(argv):
  del argv
  launch_flags.setup_devices()

  def body():
    from tftrain import grid  # pylint: disable=g-import-not-at-top
    base = launch_flags.config_from_flags()
    if FLAGS.grid_activation and not FLAGS['kernel_initializer'].present:
      base = base.replace(kernel_initializer=None)   # per activation
    # An explicit --learning_rate applies to every variant not named in
    # --learning_rates; without it, each optimizer takes its table rate.
    explicit = FLAGS['learning_rate'].present
    if FLAGS.preset:
      candidates = grid.preset(FLAGS.preset, base, parse_learning_rates(
          FLAGS.learning_rates, {}))
    else:
      axes, names = grid_axes()
      candidates = grid.expand(axes, base, parse_learning_rates(
          FLAGS.learning_rates,
          {} if explicit else grid.DEFAULT_LEARNING_RATES), names)
    chosen = grid.select(candidates, FLAGS.only)
    workdir = launch_flags.default_workdir('compare')
    out = grid.run(base, chosen, workdir)
    print(open(out['paths']['md']).read())
    print(f'{len(chosen)} variant(s) in {out["wall_seconds"]:.0f} s')
    for path in out['paths'].values():
      print(path)
    print(f'TensorBoard (HParams tab): tensorboard --logdir {workdir}')
    return 0
  launch_flags.run_main(body)


if __name__ == '__main__':
  launch_flags.run(main)
