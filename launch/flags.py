"""Flags shared by the launchers, validated at the edge, turned into a Config.

Launchers call `define_flags(**defaults)`, adopt this module's flags as their
key flags (`flags.adopt_module_key_flags(launch_flags)`, so `--help` lists
them, grouped by `FLAG_GROUPS`) and then `run_main(body)`: every library error
becomes one line on stderr naming the flag, value and fix, with a non-zero exit
status and no traceback (`--verbose` shows it).
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

# `--help` headings, in order, and the flags under each (Config fields and the
# launcher-only flags). A flag named nowhere is listed under its launcher's
# own heading (e.g. launch.compare's --grid_* flags).
FLAG_GROUPS = {
    'data': ('dataset', 'data_dir', 'raw_data_dir', 'validation_size',
             'standardize', 'batch_size', 'eval_batch_size'),
    'model': ('model', 'hidden', 'depth', 'width', 'filters', 'activation',
              'kernel_initializer', 'batch_norm', 'dropout', 'dropout_kind',
              'dropout_placement'),
    'optimizer': ('optimizer', 'learning_rate', 'momentum', 'beta_1', 'beta_2',
                  'weight_decay'),
    'schedule': ('schedule', 'cycle_momentum', 'decay_rate', 'decay_epochs',
                 'boundaries_epochs', 'piecewise_factors', 'lr_find_start',
                 'lr_find_end', 'lr_find_factor', 'lr_find_max_steps',
                 'lr_find_stop_factor', 'lr_find_beta', 'lr_suggestion'),
    'training': ('epochs', 'patience', 'monitor', 'seed', 'deterministic',
                 'steps_per_loop', 'jit_compile', 'max_steps_per_epoch',
                 'eval_test_every_epoch', 'mc_dropout_samples'),
    'observability': ('log_every_steps', 'histogram_every_steps', 'grad_norms',
                      'activation_stats', 'trace_graph', 'export',
                      'stop_on_error',
                      'progress', 'profile_steps'),
    'distribution': ('strategy', 'cpu_replicas', 'mixed_precision'),
    'run': ('workdir', 'overwrite', 'repair', 'verbose'),
}
_GROUP_OF = {name: group for group, names in FLAG_GROUPS.items()
             for name in names}


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
      # An enum that also takes the boolean spellings: `--name` is true,
      # `--noname` false, `--name=auto|true|false`.
      value = {v: k for k, v in _TRISTATE.items()}[default]
      flags.DEFINE_flag(flags.Flag(
          flags.EnumParser(list(_TRISTATE)), flags.ArgumentSerializer(),
          field.name, value, help_text, boolean=True), **fv)
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
                             'must be >= 0.', from_flags=True)
  values = {field.name: config_lib.parse_field(field.name,
                                               flag_values[field.name].value)
            for field in dataclasses.fields(config_lib.Config)
            if field.name not in overrides}
  values.update(overrides)
  try:
    return config_lib.Config(**values)
  except errors.ConfigError as e:
    e.from_flags = True      # the user wrote --name=value
    raise


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
    if isinstance(e, errors.ConfigError):
      e.from_flags = True    # every Config field is a flag of the same name
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


def _flag_help(flag) -> str:
  """One flag as absl's help shows it: name, help, default."""
  name = f'--[no]{flag.name}' if flag.boolean else f'--{flag.name}'
  text = f'{name}: {flag.help}'
  if flag.default_as_str:
    text += f'\n(default: {flag.default_as_str})'
  return flags.text_wrap(text, indent='    ', firstline_indent='  ')


def help_text(module: str, doc: str = '', flag_values=FLAGS) -> str:
  """`--help`: the launcher's docstring and its key flags by `FLAG_GROUPS`.

  Args:
    module: the launcher's module name as absl registers its key flags
      (`sys.argv[0]` for `python -m launch.x`, else e.g. 'launch.x').
    doc: the launcher's docstring.
    flag_values: the FlagValues holding the flags.
  """
  by_group = {}
  own = module.rsplit('/', 1)[-1].rsplit('.', 1)[-1]
  if own == 'py':     # a path: launch/deep.py
    own = module.rsplit('/', 1)[-1][:-3]
  for flag in flag_values.get_key_flags_for_module(module):
    by_group.setdefault(_GROUP_OF.get(flag.name, own), []).append(flag)
  order = [g for g in FLAG_GROUPS if g in by_group]
  order += sorted(g for g in by_group if g not in FLAG_GROUPS)
  lines = [doc.rstrip(), '', 'flags:']
  for group in order:
    lines.append(f'\n{group}:')
    names = FLAG_GROUPS.get(group, ())
    lines.extend(_flag_help(f) for f in sorted(
        by_group[group], key=lambda f: (f.name not in names,
                                        names.index(f.name) if f.name in names
                                        else 0, f.name)))
  lines.append('\nTry --helpfull to get a list of all flags (absl, TensorFlow).')
  return '\n'.join(lines)


_HELP_FLAGS = ('--help', '-help', '-?', '--helpshort', '-helpshort')

# The launcher `run` is running: its module name (absl's key) and docstring.
_launcher = {}


def run(main, module_name=None):
  """app.run with quiet TensorFlow logs and a grouped `--help`.

  TensorFlow's C++ log lines (start-up notes, and the errors it logs before
  raising them as Python exceptions, e.g. a lost multi-worker peer) are
  hidden unless --verbose or $TF_CPP_MIN_LOG_LEVEL says otherwise; the
  errors themselves reach the user as one line each.

  Args:
    main: the launcher's `main(argv)`.
    module_name: the launcher's `__name__` (default: the caller's), whose
      key flags and docstring `--help` shows; '__main__' for `python -m`.
  """
  if module_name is None:
    module_name = sys._getframe(1).f_globals['__name__']  # pylint: disable=protected-access
  module = sys.modules.get(module_name)
  _launcher['doc'] = (module.__doc__ or '') if module else ''
  # absl names the flags of `python -m launch.x` after sys.argv[0].
  _launcher['module'] = sys.argv[0] if module_name == '__main__' else module_name
  from tftrain import signals  # pylint: disable=g-import-not-at-top
  # A second Ctrl-C / SIGTERM ends a launcher at once (the library raises
  # KeyboardInterrupt instead, which a notebook survives).
  signals.SignalGuard.on_second_signal = lambda signum: os._exit(128 + signum)  # pylint: disable=protected-access
  logging.set_verbosity(logging.INFO)
  # INFO from tftrain and the launchers; only warnings from TF/TFDS internals.
  logging.get_absl_handler().addFilter(
      lambda r: r.levelno >= logging.converter.STANDARD_WARNING or
      any(part in r.pathname for part in ('/tftrain/', '/launch/')))
  try:
    app.run(main, flags_parser=_parse_flags)
  except SystemExit as e:   # `run` is a launcher process's whole life
    _exit_now(e.code)


def _exit_now(code) -> None:
  """Ends a `python -m launch.x` process once its work is written.

  Everything a run writes is closed or flushed before `main` returns
  (checkpoints, summaries, metrics, reports); Python's teardown of TensorFlow
  after it took 2.3 s of a 50-step `launch.deep` run here. Output streams and
  logs are flushed first.
  """
  if code is None:
    code = 0
  elif not isinstance(code, int):   # sys.exit('message')
    print(code, file=sys.stderr)
    code = 1
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def bare_flags(argv):
  """`argv` with bare value flags spelled out: `--repair` -> `--repair=errors`
  and `--norepair` -> `--repair=off` (Config fields whose metadata has a
  'bare' value; absl's string flags need a value)."""
  bare = {f.name: (f.metadata['bare'], f.default)
          for f in dataclasses.fields(config_lib.Config)
          if 'bare' in f.metadata}
  out = []
  for arg in argv:
    name = arg.lstrip('-') if arg.startswith('--') else None
    if name in bare:
      arg = f'--{name}={bare[name][0]}'
    elif name and name.startswith('no') and name[2:] in bare:
      arg = f'--{name[2:]}={bare[name[2:]][1]}'
    out.append(arg)
  return out


def _parse_flags(argv):
  """absl flag parsing with a one-line error (absl's own prints two) and
  the grouped `--help` (exit status 0)."""
  args = argv[1:argv.index('--')] if '--' in argv else argv[1:]
  if 'module' in _launcher and any(a in _HELP_FLAGS for a in args):
    print(help_text(_launcher['module'], _launcher['doc']))
    sys.exit(0)
  try:
    argv = FLAGS(bare_flags(argv))
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
  if result.get('status') == 'diverged':     # only returned with --repair
    lines = [f'status: diverged at step {result.get("diverged_step")}']
    for key in ('health', 'repair'):
      if result.get(key):
        lines.append(result[key]['block'])
    print('\n'.join(lines))
    return 0 if result.get('repair', {}).get('status') == 'repaired' else 1
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
  if 'mc_test_accuracy' in result:
    val = (f'val accuracy {result["mc_val_accuracy"]:.4f}  '
           if 'mc_val_accuracy' in result else '')
    lines.append(f'MC dropout ({result["mc_dropout_samples"]} samples): '
                 f'{val}test accuracy {result["mc_test_accuracy"]:.4f}  '
                 f'test loss {result["mc_test_loss"]:.4f}')
  elif 'mc_dropout_samples' in FLAGS and FLAGS.mc_dropout_samples:
    lines.append(f'MC dropout: none (--mc_dropout_samples='
                 f'{FLAGS.mc_dropout_samples}, but the model has no dropout '
                 'layers; add --dropout=RATE)')
  if 'health' in result:
    lines.append(result['health']['block'])
    lines.append(f'health report: {os.path.join(workdir, "health.md")}')
  if result.get('repair'):
    lines.append(result['repair']['block'])
  lines.append(f'metrics: {os.path.join(workdir, workdir_lib.METRICS_JSON)}')
  lines.append(f'TensorBoard: tensorboard --logdir {workdir}')
  print('\n'.join(lines))
  return 0
