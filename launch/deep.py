"""Vanishing/exploding gradients made visible: 100 x Dense(100) on MNIST.

  python -m launch.deep --activation=sigmoid            # stays at chance
  python -m launch.deep --activation=selu               # trains
  python -m launch.deep --activation=sigmoid,relu,elu,selu --workdir=runs/deep
  tensorboard --logdir runs/deep                        # one run per activation

Each activation trains in <workdir>/<activation>/ with per-layer gradient
norms (every --log_every_steps), gradient/weight histograms, activation
statistics and a gradient-norm-vs-depth image (every --histogram_every_steps);
<workdir> gets grad_norm_vs_depth.png, val_accuracy.png, comparison.md/.csv
and TensorBoard HParams data (a grid over activation: tftrain.studies).
SELU standardizes the inputs by default (--standardize=auto).

Defaults: Nadam 1e-4 decayed x0.1 every 3 epochs (exponential schedule),
batch 32, 5 epochs. Nadam at its default 1e-3 keeps SELU at chance; a
constant 1e-4 trains unsteadily; the decay makes it settle.
"""

from absl import flags

from launch import flags as launch_flags

FLAGS = flags.FLAGS
launch_flags.define_flags(dataset='mnist', model='deep_mlp', depth=100,
                          width=100, activation='selu', optimizer='nadam',
                          learning_rate=1e-4, schedule='exponential',
                          decay_rate=0.1, decay_epochs=3.0, batch_size=32,
                          epochs=5, patience=0, log_every_steps=100,
                          histogram_every_steps=500)


def parse_activations(value: str):
  """The comma list of --activation, each validated (ConfigError names choices)."""
  from tftrain import config as config_lib  # pylint: disable=g-import-not-at-top
  from tftrain import errors  # pylint: disable=g-import-not-at-top
  names = [a.strip() for a in value.split(',') if a.strip()]
  bad = [a for a in names if a not in config_lib.ACTIVATIONS]
  if not names or bad or len(set(names)) != len(names):
    raise errors.ConfigError(
        'activation', value,
        'give one or a comma list of distinct names from '
        f'{", ".join(config_lib.ACTIVATIONS)}.')
  return names


def format_summary(activation, row, result) -> str:
  """Printed per activation: grad norms first vs last hidden layer, accuracy."""
  lines = [f'== {activation} ({row["initializer"]}, standardized inputs: '
           f'{row["standardized"]}): {row["status"]}']
  if 'grad_first_start' in row:
    for when in ('start', 'end'):
      lines.append(
          f'  grad norm {when:5s}: first layer {row[f"grad_first_{when}"]:.3g}'
          f'  last hidden layer {row[f"grad_last_{when}"]:.3g}'
          f'  ratio {row[f"ratio_{when}"]:.3g}')
  history = result.get('history', [])
  if history:
    lines.append('  val accuracy per epoch: ' + ' '.join(
        f'{h.get("val_accuracy", float("nan")):.4f}' for h in history))
  if 'health' in result:
    lines.append('  ' + result['health']['block'].replace('\n', '\n  '))
  if result.get('status') == 'diverged':
    lines.append(f'  diverged at step {result.get("diverged_step")}')
  elif 'test_accuracy' in result:
    lines.append(f'  test accuracy {result["test_accuracy"]:.4f}')
  return '\n'.join(lines)


def main(argv):
  del argv
  launch_flags.setup_devices()

  def body():
    from tftrain import studies  # pylint: disable=g-import-not-at-top
    activations = parse_activations(FLAGS.activation)
    config = launch_flags.config_from_flags(activation=activations[0])
    workdir = launch_flags.default_workdir('deep')
    out = studies.compare_activations(config, activations, workdir)
    for row, activation in zip(out['table'], activations):
      print(format_summary(activation, row, out['results'][activation]))
    files = out['paths']
    print(f'comparison: {files["table_md"]} {files["grad_png"]} '
          f'{files["val_png"]}')
    print(f'TensorBoard: tensorboard --logdir {workdir}')
    return 0
  launch_flags.run_main(body)


if __name__ == '__main__':
  launch_flags.run(main)
