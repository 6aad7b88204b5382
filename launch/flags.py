"""Flags shared by the launchers, validated at the edge, turned into a Config.

Launchers call `define_flags(**defaults)` and then `run_main(body)`: every
library error becomes one line on stderr naming the flag, value and fix, with a
non-zero exit status and no traceback (`--verbose` shows it).
"""

import dataclasses
import datetime
import os
import shutil
import sys
import traceback

from absl import app
from absl import flags
from absl import logging

from tftrain import config as config_lib
from tftrain import errors
from tftrain import workdir as workdir_lib

FLAGS = flags.FLAGS


_TRISTATE = {'auto': None, 'true': True, 'false': False}


def _kind(field) -> str:
  """How a Config field is spelled on the command line (from its type,
  `config.field_type`)."""
  shape, kinds = config_lib.field_type(field.name)
  if shape == 'tuple':
    return 'list'
  if shape == 'union':
    if bool in kinds:
      return 'tristate'          # Optional[bool]: auto / true / false
    if str in kinds or float not in kinds and int not in kinds:
      return 'string'            # learning_rate (number or 'auto'), paths
    return 'integer' if int in kinds else 'float'
  return {bool: 'bool', int: 'integer', float: 'float'}.get(kinds[0], 'string')


def define_flags(flag_values=FLAGS, **defaults):
  """Defines one flag per Config field (same name, type, default and help),
  plus the launcher-only flags; `defaults` overrides per launcher."""
  fv = {'flag_values': flag_values}
  for field in dataclasses.fields(config_lib.Config):
    default = defaults.get(field.name, field.default)
    help_text = field.metadata.get('help', field.name)
    if field.metadata.get('choices'):
      help_text += f' One of: {", ".join(field.metadata["choices"])}.'
    kind = _kind(field)
    if kind == 'list':
      flags.DEFINE_list(field.name, [str(v) for v in default], help_text, **fv)
    elif kind == 'tristate':
      value = {v: k for k, v in _TRISTATE.items()}[default]
      flags.DEFINE_enum(field.name, value, list(_TRISTATE), help_text, **fv)
    elif kind == 'string':
      flags.DEFINE_string(field.name, None if default is None else str(default),
                          help_text, **fv)
    else:
      getattr(flags, f'DEFINE_{kind}')(field.name, default, help_text, **fv)
  flags.DEFINE_integer(
      'cpu_replicas', 0,
      'Split the CPU into N logical devices (try mirrored without GPUs).', **fv)
  flags.DEFINE_string(
      'workdir', None, 'Run directory (default: runs/<launcher>-<time>); an '
      'existing one is resumed.', **fv)
  flags.DEFINE_bool('verbose', False, 'Show tracebacks on errors.', **fv)


def config_from_flags(flag_values=FLAGS, **overrides) -> config_lib.Config:
  """The Config the flags describe (raises ConfigError on a bad value)."""
  if flag_values.cpu_replicas < 0:
    raise errors.ConfigError('cpu_replicas', flag_values.cpu_replicas,
                             'must be >= 0.')
  values = {field.name: config_lib.parse_field(field.name,
                                               flag_values[field.name].value)
            for field in dataclasses.fields(config_lib.Config)
            if field.name not in overrides}
  values.update(overrides)
  return config_lib.Config(**values)


# The run directory this process chose, and whether it existed then.
_chosen_workdir = {}


def default_workdir(launcher: str) -> str:
  if FLAGS.workdir:
    path = FLAGS.workdir
  else:
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    path = os.path.join('runs', f'{launcher}-{stamp}')
  _chosen_workdir.setdefault('path', path)
  _chosen_workdir.setdefault('existed', os.path.exists(path))
  return path


def _holds_results(path: str) -> bool:
  for _, _, files in os.walk(path):
    # 'checkpoint': the index tf.train.CheckpointManager writes.
    if any(f in ('checkpoint', workdir_lib.METRICS_JSON) for f in files):
      return True
  return False


def _remove_failed_start(error) -> None:
  """Removes the run directory a failed start created (nothing of value in it).

  The library checks flags and data before creating the workdir; this covers
  launchers whose library call creates a parent folder before the checks of
  its first run (e.g. one folder per variant).
  """
  path = _chosen_workdir.get('path')
  if path is None or _chosen_workdir.get('existed') or not os.path.isdir(path):
    return
  if isinstance(error, errors.START_ERRORS) and not _holds_results(path):
    shutil.rmtree(path, ignore_errors=True)


def setup_devices():
  """Device settings that must precede any TensorFlow work."""
  if FLAGS.cpu_replicas:   # imports TensorFlow only when needed
    from tftrain import distribute  # pylint: disable=g-import-not-at-top
    distribute.configure_cpu_replicas(FLAGS.cpu_replicas)


def run_main(body):
  """Runs `body()` (returns an exit code) turning known errors into one line.

  Exit status (`errors.exit_code`): 2 for a bad flag, 1 for data, workdir,
  lock, checkpoint, divergence, full-disk or lost-worker errors, 130 for an
  interruption. `tftrain.errors` does not import TensorFlow, so a bad flag is
  reported without TF's start-up cost.
  """
  try:
    code = body()
  except KeyboardInterrupt:
    # Ctrl-C outside the training loop's own handling (start-up, evaluation).
    if FLAGS.verbose:
      traceback.print_exc()
    print('error: interrupted; rerun the same command to resume from the '
          'last checkpoint.', file=sys.stderr)
    sys.exit(130)
  except Exception as e:  # pylint: disable=broad-except
    if not isinstance(e, errors.USER_ERRORS):
      raise
    _remove_failed_start(e)
    if FLAGS.verbose:
      traceback.print_exc()
    print(f'error: {errors.first_line(e)}', file=sys.stderr)
    sys.stderr.flush()
    sys.exit(errors.exit_code(e))
  sys.exit(code or 0)


def train_main(launcher: str):
  """The `main(argv)` of a launcher that trains one Config (mnist, cifar10)."""
  def main(argv):
    del argv
    setup_devices()

    def body():
      config = config_from_flags()   # bad flags fail before TF loads
      workdir = default_workdir(launcher)
      from tftrain import loop  # pylint: disable=g-import-not-at-top
      return report(loop.train_and_evaluate(config, workdir))
    run_main(body)
  return main


def run(main):
  """app.run with quiet TensorFlow logs.

  TensorFlow's C++ log lines (start-up notes, and the errors it logs before
  raising them as Python exceptions, e.g. a lost multi-worker peer) are
  hidden unless --verbose or $TF_CPP_MIN_LOG_LEVEL says otherwise; the
  errors themselves reach the user as one line each.
  """
  logging.set_verbosity(logging.INFO)
  # INFO from tftrain and the launchers; only warnings from TF/TFDS internals.
  logging.get_absl_handler().addFilter(
      lambda r: r.levelno >= logging.converter.STANDARD_WARNING or
      any(part in r.pathname for part in ('/tftrain/', '/launch/')))
  app.run(main, flags_parser=_parse_flags)


def _parse_flags(argv):
  """absl flag parsing with a one-line error (absl's own prints two)."""
  try:
    argv = FLAGS(argv)
  except flags.Error as e:
    print(f'error: {e}; see --help.', file=sys.stderr)
    sys.exit(2)
  # Before TensorFlow is imported (the launchers import it after parsing).
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2' if FLAGS.verbose else '3')
  return argv


def report(result) -> int:
  """Prints the outcome of a run; returns the exit code."""
  workdir = result['workdir']
  if result.get('interrupted_in') == 'lr_finder':
    print(f'interrupted during the LR finder (after '
          f'{result.get("lr_finder_steps_done")} sweep steps); nothing of it '
          f'was kept; rerun the same command to run it again.')
    return 130
  if result.get('status') == 'interrupted':
    print(f'interrupted at step {result.get("interrupted_step")}; checkpoint '
          f'saved in {workdir}; rerun the same command to resume.')
    return 130
  lines = [f'status: {result["status"]} after {result["epochs_run"]} epochs '
           f'({result["wall_seconds"]:.1f} s)']
  if 'learning_rate' in result:
    found = result.get('lr_finder')
    how = '' if not found else (
        f' (LR finder: {found["steps"]} sweep steps in {found["seconds"]:.1f} '
        f's; {"1cycle peak at the smoothed-loss minimum" if found["schedule"] == "onecycle" else found["default"] + " rule"})')
    lines.append(f'learning rate: {result["learning_rate"]:.4g}{how}')
  if 'best_epoch' in result:
    if result.get('restored_best_weights', True):
      lines.append(f'best epoch: {result["best_epoch"]}  val_accuracy: '
                   f'{result.get("val_accuracy", float("nan")):.4f}')
    else:
      lines.append(f'last epoch (1cycle keeps its annealed weights)  '
                   f'val_accuracy: {result.get("val_accuracy", float("nan")):.4f}'
                   f'  (best epoch by --monitor: {result["best_epoch"]})')
  lines.append(f'test accuracy: {result["test_accuracy"]:.4f}  '
               f'test loss: {result["test_loss"]:.4f}')
  if 'health' in result:
    lines.append(result['health']['block'])
    lines.append(f'health report: {os.path.join(workdir, "health.md")}')
  lines.append(f'metrics: {os.path.join(workdir, workdir_lib.METRICS_JSON)}')
  lines.append(f'TensorBoard: tensorboard --logdir {workdir}')
  print('\n'.join(lines))
  return 0
