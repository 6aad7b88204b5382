"""Learning-rate finder: an exponential LR sweep of at most one epoch.

  python -m launch.lr_find --dataset=mnist
  python -m launch.lr_find --dataset=cifar10 --model=deep_mlp --activation=elu
  python -m launch.lr_find --lr_find_factor=1.005 --lr_find_start=1e-3  # seed

Prints the suggestions (divergence, minimum, steepest, valley) and the 1cycle
peak (the LR at the smoothed-loss minimum), and the paths of the plot, CSV,
JSON and TensorBoard events. `--learning_rate=auto` trains 1cycle at that peak
(--schedule=auto); with another --schedule it uses the --lr_suggestion rule.
The model is left untouched by the sweep.
"""

import os

from absl import flags

from launch import flags as launch_flags

FLAGS = flags.FLAGS
launch_flags.define_flags(dataset='mnist', model='mlp', optimizer='sgd',
                          batch_size=32)


def main(argv):
  del argv
  launch_flags.setup_devices()

  def body():
    config = launch_flags.config_from_flags(trace_graph=False)  # before TF
    # pylint: disable=g-import-not-at-top
    from tftrain import experiment
    from tftrain import lr_finder
    from tftrain import workdir as workdir_lib
    workdir = launch_flags.default_workdir('lr_find')
    experiment.preflight(config)   # data and split sizes, before the workdir
    workdir_lib.ensure_writable(workdir)
    with workdir_lib.WorkdirLock(workdir):
      exp = experiment.build_experiment(config, workdir)
      result = lr_finder.find(exp, os.path.join(workdir,
                                                workdir_lib.LR_FINDER))
    summary = result.summary()
    lines = [f'LR finder: {summary["steps"]} steps '
             f'({summary["first_lr"]:.3g} -> {summary["last_lr"]:.3g}), '
             f'stopped: {summary["stop_reason"]}, {summary["seconds"]:.1f} s',
             f'smoothed loss minimum {summary["min_smoothed_loss"]:.4f} at '
             f'lr={summary["lr_at_min_smoothed_loss"]:.4g}']
    for name, lr in summary['suggestions'].items():
      mark = '  <- default (--lr_suggestion)' if name == result.default else ''
      value = 'n/a' if lr is None else f'{lr:.4g}'
      lines.append(f'  {name:10s} {value}{mark}')
    lines.append(f'  1cycle peak (--schedule=auto|onecycle) '
                 f'{summary["onecycle_max"]:.4g}')
    for name, path in result.paths.items():
      lines.append(f'{name}: {path}')
    lines.append(f'train with it: --learning_rate={result.suggestion:.3g} '
                 f'--schedule={config.lr_schedule}, or --learning_rate=auto')
    print('\n'.join(lines))
    return 0
  launch_flags.run_main(body)


if __name__ == '__main__':
  launch_flags.run(main)
