"""Flags shared by the launchers, validated at the edge, turned into a Config.

Launchers call `define_flags(**defaults)` and then `run_main(body)`: every
library error becomes one line on stderr naming the flag, value and fix, with a
non-zero exit status and no traceback (`--verbose` shows it).
"""

import datetime
import os
import shutil
import sys
import traceback

from absl import app
from absl import flags
from absl import logging

from tftrain import config as config_lib

FLAGS = flags.FLAGS


def define_flags(**defaults):
  """Defines the common flags; `defaults` overrides per launcher."""
  d = dict(config_lib.Config().__dict__)
  d.update(defaults)
  f = flags
  f.DEFINE_string('dataset', d['dataset'],
                  'TFDS image-classification dataset (image + label features; '
                  f'offline mirror: {", ".join(config_lib.DATASETS)}).')
  f.DEFINE_string('data_dir', d['data_dir'],
                  'TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).')
  f.DEFINE_string('raw_data_dir', d['raw_data_dir'],
                  'Folder of original download files, <dataset>/<file>, for '
                  'air-gapped machines (default: $TFTRAIN_RAW_DATA_DIR).')
  f.DEFINE_integer('validation_size', d['validation_size'],
                   'Last N training examples used for validation.')
  f.DEFINE_enum('standardize', 'auto', ['auto', 'true', 'false'],
                'Standardize inputs by the train mean/std (auto: on for SELU).')
  f.DEFINE_integer('batch_size', d['batch_size'], 'Global batch size.')
  f.DEFINE_integer('eval_batch_size', d['eval_batch_size'], 'Eval batch size.')
  f.DEFINE_enum('model', d['model'], config_lib.MODELS, 'Model builder.')
  f.DEFINE_list('hidden', [str(h) for h in d['hidden']], 'mlp hidden widths.')
  f.DEFINE_list('filters', [str(h) for h in d['filters']],
                'cnn channels per stage.')
  f.DEFINE_float('dropout', d['dropout'], 'Dropout rate (0: none).')
  f.DEFINE_enum('dropout_kind', d['dropout_kind'], config_lib.DROPOUT_KINDS,
                'auto: AlphaDropout for SELU, Dropout otherwise.')
  f.DEFINE_enum('dropout_placement', d['dropout_placement'],
                config_lib.DROPOUT_PLACEMENTS,
                'output: before the output layer; every: after every hidden '
                'layer.')
  f.DEFINE_integer('mc_dropout_samples', d['mc_dropout_samples'],
                   'MC dropout: also evaluate as the mean of N stochastic '
                   'passes (0: off).')
  f.DEFINE_integer('depth', d['depth'], 'deep_mlp: number of hidden layers.')
  f.DEFINE_integer('width', d['width'], 'deep_mlp: units per hidden layer.')
  f.DEFINE_string('activation', d['activation'],
                  f'One of {", ".join(config_lib.ACTIVATIONS)}.')
  f.DEFINE_string('kernel_initializer', d['kernel_initializer'],
                  'Keras initializer (default: per activation: Glorot for '
                  'sigmoid/tanh, He for ReLU/ELU family, LeCun normal for SELU).')
  f.DEFINE_enum('batch_norm', d['batch_norm'], config_lib.BATCH_NORM,
                'Batch norm: none, before or after the activation.')
  f.DEFINE_enum('optimizer', d['optimizer'], config_lib.OPTIMIZERS, 'Optimizer.')
  f.DEFINE_string('learning_rate', str(d['learning_rate']),
                  "Peak learning rate, or 'auto' to run the LR finder first.")
  f.DEFINE_float('momentum', d['momentum'], 'momentum/nesterov momentum.')
  f.DEFINE_float('beta_1', d['beta_1'], 'Adam-family beta_1.')
  f.DEFINE_float('beta_2', d['beta_2'], 'Adam-family beta_2.')
  f.DEFINE_float('weight_decay', d['weight_decay'], 'adamw weight decay.')
  f.DEFINE_enum('schedule', d['schedule'], config_lib.SCHEDULES, 'LR schedule.')
  f.DEFINE_bool('cycle_momentum', d['cycle_momentum'],
                'onecycle with momentum/nesterov: momentum 0.95->0.85->0.95.')
  f.DEFINE_float('decay_rate', d['decay_rate'], 'exponential: factor per decay_epochs.')
  f.DEFINE_float('decay_epochs', d['decay_epochs'], 'exponential: epochs per decay_rate.')
  f.DEFINE_integer('epochs', d['epochs'], 'Maximum epochs.')
  f.DEFINE_integer('patience', d['patience'],
                   'Early stopping patience in epochs (0: off); best weights '
                   'are restored at the end either way.')
  f.DEFINE_enum('monitor', d['monitor'], config_lib.MONITORS,
                'Validation metric for early stopping and best weights.')
  f.DEFINE_integer('seed', d['seed'], 'Seed for weights and data order.')
  f.DEFINE_bool('deterministic', d['deterministic'],
                'Deterministic TF ops: a resumed run then ends with the same '
                'metrics as an uninterrupted one (may be slower on GPU).')
  f.DEFINE_integer('steps_per_loop', d['steps_per_loop'],
                   'Train steps per tf.function call (in-graph loop).')
  f.DEFINE_bool('jit_compile', d['jit_compile'], 'XLA-compile the train step.')
  f.DEFINE_integer('max_steps_per_epoch', d['max_steps_per_epoch'],
                   'Cap on steps per epoch (smoke tests).')
  f.DEFINE_bool('eval_test_every_epoch', d['eval_test_every_epoch'],
                'Also evaluate the test split after every epoch (studies; '
                'history.json then holds test_accuracy per epoch).')
  f.DEFINE_integer('log_every_steps', d['log_every_steps'],
                   'Interval of per-step scalars (loss, lr, grad norms).')
  f.DEFINE_integer('histogram_every_steps', d['histogram_every_steps'],
                   'Interval of gradient/weight histograms (0: off).')
  f.DEFINE_bool('grad_norms', d['grad_norms'], 'Log per-layer gradient norms.')
  f.DEFINE_bool('activation_stats', d['activation_stats'],
                'Log activation statistics (saturated/dead units) on a probe '
                'batch every --histogram_every_steps (else 10x '
                '--log_every_steps).')
  f.DEFINE_bool('progress', d['progress'], 'Show a progress bar.')
  f.DEFINE_float('lr_find_start', d['lr_find_start'], 'LR finder: first LR.')
  f.DEFINE_float('lr_find_end', d['lr_find_end'], 'LR finder: last LR.')
  f.DEFINE_float('lr_find_factor', d['lr_find_factor'],
                 'LR finder: growth per batch instead of start..end (seed: 1.005).')
  f.DEFINE_integer('lr_find_max_steps', d['lr_find_max_steps'],
                   'LR finder: max steps (default one epoch).')
  f.DEFINE_enum('lr_suggestion', d['lr_suggestion'], config_lib.LR_SUGGESTIONS,
                'Which LR finder suggestion --learning_rate=auto uses.')
  f.DEFINE_enum('strategy', d['strategy'], config_lib.STRATEGIES,
                'tf.distribute strategy (multi_worker reads TF_CONFIG).')
  f.DEFINE_integer('cpu_replicas', 0,
                   'Split the CPU into N logical devices (try mirrored without GPUs).')
  f.DEFINE_enum('mixed_precision', d['mixed_precision'],
                config_lib.MIXED_PRECISION, 'Keras mixed-precision policy.')
  f.DEFINE_string('workdir', None,
                  'Run directory (default: runs/<launcher>-<time>); an existing '
                  'one is resumed.')
  f.DEFINE_bool('verbose', False, 'Show tracebacks on errors.')


def _parse_learning_rate(value: str):
  if value == 'auto':
    return 'auto'
  try:
    return float(value)
  except ValueError:
    raise config_lib.ConfigError('learning_rate', value,
                                 "must be a positive number or 'auto'.") from None


def _parse_hidden(values, name='hidden'):
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise config_lib.ConfigError(name, ','.join(values),
                                 'must be a comma list of positive integers.') from None


def config_from_flags(**overrides) -> config_lib.Config:
  """The Config the flags describe (raises ConfigError on a bad value)."""
  standardize = {'auto': None, 'true': True, 'false': False}[FLAGS.standardize]
  if FLAGS.cpu_replicas < 0:
    raise config_lib.ConfigError('cpu_replicas', FLAGS.cpu_replicas,
                                 'must be >= 0.')
  values = dict(
      dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
      raw_data_dir=FLAGS.raw_data_dir, validation_size=FLAGS.validation_size,
      standardize=standardize, batch_size=FLAGS.batch_size,
      eval_batch_size=FLAGS.eval_batch_size, model=FLAGS.model,
      hidden=_parse_hidden(FLAGS.hidden), depth=FLAGS.depth, width=FLAGS.width,
      filters=_parse_hidden(FLAGS.filters, 'filters'), dropout=FLAGS.dropout,
      dropout_kind=FLAGS.dropout_kind,
      dropout_placement=FLAGS.dropout_placement,
      mc_dropout_samples=FLAGS.mc_dropout_samples,
      cycle_momentum=FLAGS.cycle_momentum,
      activation=FLAGS.activation, kernel_initializer=FLAGS.kernel_initializer,
      batch_norm=FLAGS.batch_norm, optimizer=FLAGS.optimizer,
      learning_rate=_parse_learning_rate(FLAGS.learning_rate),
      momentum=FLAGS.momentum, beta_1=FLAGS.beta_1, beta_2=FLAGS.beta_2,
      weight_decay=FLAGS.weight_decay, schedule=FLAGS.schedule,
      decay_rate=FLAGS.decay_rate, decay_epochs=FLAGS.decay_epochs,
      epochs=FLAGS.epochs, patience=FLAGS.patience, monitor=FLAGS.monitor,
      seed=FLAGS.seed, deterministic=FLAGS.deterministic,
      steps_per_loop=FLAGS.steps_per_loop,
      jit_compile=FLAGS.jit_compile,
      max_steps_per_epoch=FLAGS.max_steps_per_epoch,
      eval_test_every_epoch=FLAGS.eval_test_every_epoch,
      log_every_steps=FLAGS.log_every_steps,
      histogram_every_steps=FLAGS.histogram_every_steps,
      grad_norms=FLAGS.grad_norms, progress=FLAGS.progress,
      activation_stats=FLAGS.activation_stats,
      lr_find_start=FLAGS.lr_find_start, lr_find_end=FLAGS.lr_find_end,
      lr_find_factor=FLAGS.lr_find_factor,
      lr_find_max_steps=FLAGS.lr_find_max_steps,
      lr_suggestion=FLAGS.lr_suggestion, strategy=FLAGS.strategy,
      mixed_precision=FLAGS.mixed_precision)
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
    if any(f in ('checkpoint', 'metrics.json') for f in files):
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
  from tftrain import errors  # pylint: disable=g-import-not-at-top
  if isinstance(error, errors.START_ERRORS) and not _holds_results(path):
    shutil.rmtree(path, ignore_errors=True)


def setup_devices():
  """Device settings that must precede any TensorFlow work."""
  if FLAGS.cpu_replicas:   # imports TensorFlow only when needed
    from tftrain import distribute  # pylint: disable=g-import-not-at-top
    distribute.configure_cpu_replicas(FLAGS.cpu_replicas)


def run_main(body):
  """Runs `body()` (returns an exit code) turning known errors into one line.

  Exit status: 2 for a bad flag, 1 for data, workdir, lock, checkpoint,
  divergence, full-disk or lost-worker errors, 130 for an interruption.
  `tftrain.errors` imports TensorFlow, so it is imported only for errors
  other than ConfigError: a bad flag is reported without TF's start-up cost.
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
    if isinstance(e, config_lib.ConfigError):
      status = 2
    else:
      from tftrain import errors  # pylint: disable=g-import-not-at-top
      if not isinstance(e, errors.USER_ERRORS):
        raise
      status = errors.exit_code(e)
    _remove_failed_start(e)
    if FLAGS.verbose:
      traceback.print_exc()
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    print(f'error: {message}', file=sys.stderr)
    sys.stderr.flush()
    sys.exit(status)
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
    lines.append(f'learning rate: {result["learning_rate"]:.4g}')
  if 'best_epoch' in result:
    lines.append(f'best epoch: {result["best_epoch"]}  val_accuracy: '
                 f'{result.get("val_accuracy", float("nan")):.4f}')
  lines.append(f'test accuracy: {result["test_accuracy"]:.4f}  '
               f'test loss: {result["test_loss"]:.4f}')
  if 'health' in result:
    lines.append(result['health']['block'])
    lines.append(f'health report: {os.path.join(workdir, "health.md")}')
  lines.append(f'metrics: {os.path.join(workdir, "metrics.json")}')
  lines.append(f'TensorBoard: tensorboard --logdir {workdir}')
  print('\n'.join(lines))
  return 0
