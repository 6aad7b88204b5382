"""Test metrics of a finished run, from its export alone.

  python -m launch.evaluate --workdir=runs/mnist-20261129-101500
  python -m launch.evaluate --workdir=DIR --mc_dropout_samples=10

Loads `<workdir>/export/saved_model` (raw uint8 images in, probabilities out)
and evaluates it on the dataset's test split; with --mc_dropout_samples and a
model with dropout, also the MC-dropout metrics (the mean of N stochastic
passes, from `export/model.keras`).
"""

from absl import flags

from launch import flags as launch_flags

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Run directory holding export/.')
flags.DEFINE_string('data_dir', None, 'TFDS data dir.')
flags.DEFINE_string('raw_data_dir', None,
                    'Folder of original download files (air-gapped).')
flags.DEFINE_integer('mc_dropout_samples', 0,
                     'MC dropout: stochastic passes to average (0: off).')
flags.DEFINE_bool('verbose', False, 'Show tracebacks on errors.')


def main(argv):
  del argv

  def body():
    from tftrain import errors  # pylint: disable=g-import-not-at-top
    if not FLAGS.workdir:
      raise errors.ConfigError('workdir', None,
                               'name the run directory to evaluate.')
    if FLAGS.mc_dropout_samples < 0:
      raise errors.ConfigError('mc_dropout_samples',
                               FLAGS.mc_dropout_samples, 'must be >= 0.')
    from tftrain import export  # pylint: disable=g-import-not-at-top
    out = export.evaluate(FLAGS.workdir, FLAGS.data_dir, FLAGS.raw_data_dir,
                          FLAGS.mc_dropout_samples)
    print(f'test accuracy: {out["test_accuracy"]:.4f}  test loss: '
          f'{out["test_loss"]:.4f}  ({out["examples"]} examples, from '
          f'{FLAGS.workdir}/export)')
    if 'mc_test_accuracy' in out:
      print(f'MC dropout ({out["mc_dropout_samples"]} samples): test accuracy '
            f'{out["mc_test_accuracy"]:.4f}  test loss '
            f'{out["mc_test_loss"]:.4f}')
    return 0
  launch_flags.run_main(body)


if __name__ == '__main__':
  launch_flags.run(main)
