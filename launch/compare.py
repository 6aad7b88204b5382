"""Grid of variants of the CIFAR-10 seed: batch norm x optimizer, compared.

  python -m launch.compare --data_dir=/tmp/tfds --workdir=runs/grid
  python -m launch.compare --only='*nadam' --epochs=20       # pick variants
  python -m launch.compare --grid_optimizer=adam,rmsprop \\
      --learning_rates=adam=1e-3,bn-none_opt-rmsprop=1e-4
  python -m launch.compare --preset=chapter11 --epochs=50   # the chapter's table

Every flag of `launch.cifar10` sets the base config (same seed defaults,
except --epochs, capped at 10 here so the default grid of 10 variants fits in
an hour on 2 CPU cores). Each variant trains in <workdir>/<variant>/ and
resumes there; <workdir>/comparison.{png,md,json} are rewritten after each
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
flags.DEFINE_list('learning_rates', [],
                  'name=lr overrides, by optimizer (adam=1e-3) or by variant '
                  '(bn-none_opt-sgd=0.02); others use the built-in table '
                  '(tftrain.variants.DEFAULT_LEARNING_RATES).')
flags.DEFINE_string('preset', None,
                    'A named variant list instead of the grid: chapter11 '
                    '(no BN, BN, SELU, SELU + alpha dropout with MC dropout, '
                    '1cycle; tftrain.variants.PRESETS).')
flags.DEFINE_list('only', [],
                  'Run only variants matching these shell patterns '
                  "(e.g. 'bn-before_*,*_opt-sgd').")


def _parse_learning_rates(items):
  from tftrain import config as config_lib  # pylint: disable=g-import-not-at-top
  from tftrain import variants  # pylint: disable=g-import-not-at-top
  rates = dict(variants.DEFAULT_LEARNING_RATES)
  for item in items:
    name, _, value = item.partition('=')
    try:
      rate = float(value)
    except ValueError:
      rate = -1.0
    if not name or not rate > 0:
      raise config_lib.ConfigError(
          'learning_rates', item, 'must be name=positive number, e.g. adam=1e-3.')
    rates[name] = rate
  return rates


def main(argv):
  del argv
  launch_flags.setup_devices()

  def body():
    from tftrain import variants  # pylint: disable=g-import-not-at-top
    base = launch_flags.config_from_flags()
    grid = {'batch_norm': FLAGS.grid_batch_norm,
            'optimizer': FLAGS.grid_optimizer}
    if FLAGS.preset:
      candidates = variants.preset(FLAGS.preset, base)
    else:
      candidates = variants.expand_grid(
          grid, base, _parse_learning_rates(FLAGS.learning_rates))
    chosen = variants.select(candidates, FLAGS.only)
    workdir = launch_flags.default_workdir('compare')
    out = variants.run_grid(base, chosen, workdir)
    print(open(out['paths']['md']).read())
    print(f'{len(chosen)} variant(s) in {out["wall_seconds"]:.0f} s')
    for path in out['paths'].values():
      print(path)
    print(f'TensorBoard (HParams tab): tensorboard --logdir {workdir}')
    return 0
  launch_flags.run_main(body)


if __name__ == '__main__':
  launch_flags.run(main)
