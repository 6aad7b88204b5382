"""train_and_evaluate(config, workdir): the one entry point for every launcher.

Epochs of in-graph multi-step loops, validation after each epoch, early
stopping with restore-best, checkpoints every epoch (and on SIGINT/SIGTERM),
resume from the latest checkpoint, test at the end, `metrics.json`.
"""

import contextlib
import dataclasses
import glob
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from tftrain import checkup
from tftrain import config as config_lib
from tftrain import data
from tftrain import distribute
from tftrain import models
from tftrain import optimizers
from tftrain import probes
from tftrain import schedules
from tftrain import summaries
from tftrain import trainer as trainer_lib
from tftrain import workdir as workdir_lib


Hook = Callable[['Experiment', str, Dict[str, Any]], None]


class CheckpointError(RuntimeError):
  """The latest checkpoint cannot be read; the message says how to start fresh."""


@dataclasses.dataclass
class Experiment:
  """Everything built for a run (also what the LR finder and tests reuse)."""
  config: config_lib.Config
  strategy: Any
  trainer: trainer_lib.Trainer
  datasets: Dict[str, tf.data.Dataset]   # cached, single examples
  data_info: data.DataInfo
  steps_per_epoch: int
  writers: Dict[str, Any]
  is_chief: bool
  workdir: str
  logger: summaries.StepLogger     # which steps are observed; the writes
  user_data: bool = False          # datasets given by the caller, not TFDS


def _count(dataset, known: Optional[int]) -> int:
  if known is not None:
    return known
  n = int(dataset.cardinality().numpy())
  if n < 0:
    n = int(dataset.reduce(0, lambda c, _: c + 1).numpy())
  return n


def check_config(config: config_lib.Config, strategy=None,
                 user_data: bool = False) -> None:
  """Every check that needs TensorFlow or the data; run before the workdir exists.

  Creates the strategy (multi-worker must be the process's first TensorFlow
  work), prepares the dataset if it is not prepared yet (so a missing or
  corrupt raw file fails here) and checks the split sizes and that the
  batch divides among the replicas. Creates nothing in the workdir.

  Args:
    config: the run's Config.
    strategy: the run's strategy; default: created from `config.strategy`.

  Raises:
    data.DataError: the dataset is missing, unreachable or fails to prepare.
    ConfigError: --validation_size or --batch_size does not fit the split, or
      --batch_size is not divisible by the number of replicas.
  """
  if strategy is None:
    strategy = distribute.create_strategy(config.strategy)
  replicas = strategy.num_replicas_in_sync
  if config.batch_size % replicas:
    raise config_lib.ConfigError(
        'batch_size', config.batch_size,
        f'must be divisible by the {replicas} replicas of '
        f'--strategy={config.strategy}.')
  if user_data:
    return       # the caller's datasets: build_experiment checks the sizes
  data_dir = data.prepare(config.dataset, config.data_dir, config.raw_data_dir)
  sizes = data.split_sizes(config.dataset, data_dir)
  if not sizes or 'train' not in sizes:
    return   # sizes unknown here; build_experiment checks the batch size
  total = sizes['train']
  if config.validation_size >= total:
    raise config_lib.ConfigError(
        'validation_size', config.validation_size,
        f'must be smaller than the {total} examples of {config.dataset} train.')
  num_train = total - config.validation_size
  if config.batch_size > num_train:
    raise config_lib.ConfigError(
        'batch_size', config.batch_size,
        f'must not exceed the {num_train} training examples '
        f'({config.dataset} train minus --validation_size).')


def _load_data(config: config_lib.Config, strategy, datasets, num_classes):
  """The cached splits, their DatasetInfo and the number of train examples."""
  if datasets is None:
    data_dir = data.prepare(config.dataset, config.data_dir,
                            config.raw_data_dir)
    splits, info = data.load_splits(config.dataset, data_dir,
                                    config.validation_size,
                                    config.standardize_inputs)
  else:
    splits, info = data.user_splits(datasets, num_classes)
  cached = {k: d.cache() for k, d in splits.items()}
  num_train = _count(cached['train'], info.num_train)
  if config.batch_size > num_train:
    raise config_lib.ConfigError(
        'batch_size', config.batch_size,
        f'must not exceed the {num_train} training examples.')
  if config.batch_size % strategy.num_replicas_in_sync:
    raise config_lib.ConfigError(
        'batch_size', config.batch_size,
        f'must be divisible by the {strategy.num_replicas_in_sync} replicas.')
  return cached, info, num_train


def build_experiment(config: config_lib.Config, workdir: str,
                     strategy=None, model=None, datasets=None,
                     num_classes: Optional[int] = None) -> Experiment:
  """Strategy (unless given), data, model, optimizer and Trainer for `config`.

  `model`: None (the Config's built-in model), a Keras model, or a function
  `(image_shape, num_classes) -> Keras model` (called under the strategy's
  scope, which distribution needs). `datasets`: None (the Config's TFDS
  dataset) or {'train', 'validation'?, 'test'?} unbatched (image, label)
  `tf.data` datasets, with `num_classes`.
  """
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  if strategy is None:
    strategy = distribute.create_strategy(config.strategy)
  is_chief = distribute.is_chief(strategy)
  if config.mixed_precision != 'none':
    tf.keras.mixed_precision.set_global_policy(config.mixed_precision)
  else:
    tf.keras.mixed_precision.set_global_policy('float32')
  cached, info, num_train = _load_data(config, strategy, datasets,
                                       num_classes)
  steps_per_epoch = num_train // config.batch_size
  if config.max_steps_per_epoch:
    steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
  # Non-chief workers write checkpoints/summaries to their own folder (the
  # TF multi-worker guide's pattern); only the chief writes the workdir.
  temp_dir = None if is_chief else os.path.join(
      workdir, f'workertemp_{distribute.task_from_tf_config()[1]}')
  writers = summaries.create_writers(workdir, is_chief, temp_dir)
  tf.keras.utils.set_random_seed(config.seed)
  with strategy.scope():
    if model is None:
      model = models.build_model(config, info.image_shape, info.num_classes)
    elif not isinstance(model, tf.keras.Model):
      model = model(info.image_shape, info.num_classes)
    if not model.weights:       # e.g. subclassed: create its variables
      model(tf.zeros([1, *info.image_shape]), training=False)
    lr = config.learning_rate if config.learning_rate != 'auto' else 1e-3
    optimizer = optimizers.build_optimizer(
        config.optimizer, schedules.build_schedule(config, lr, steps_per_epoch),
        config)
    trainer = trainer_lib.Trainer(
        model, optimizer, strategy, config.batch_size,
        jit_compile=config.jit_compile)
  run_dir = workdir if is_chief else temp_dir
  logger = summaries.StepLogger(
      writers[summaries.TRAIN], trainer.layer_names, config.log_every_steps,
      config.histogram_every_steps, config.grad_norms,
      records_path=os.path.join(run_dir, checkup.OBSERVATIONS))
  return Experiment(config, strategy, trainer, cached, info, steps_per_epoch,
                    writers, is_chief, run_dir, logger, datasets is not None)


def train_steps(trainer: trainer_lib.Trainer, iterator, num_steps: int,
                logger: Optional[summaries.StepLogger] = None
                ) -> Dict[str, Any]:
  """Runs `num_steps` training steps: the one "N steps in chunks" loop.

  Plain in-graph loops run up to each step `logger` observes; that step is a
  `Trainer.observed_step`; the logger writes what each call measured.

  Returns:
    'loss_sum', 'correct', 'count' (sums), 'losses' (per step), 'steps_run',
    'step' (the global step after them) and 'observation' (the last observed
    step's measurements) if any.

  Raises:
    trainer.NonFiniteError: at the first non-finite loss or gradient.
  """
  total = {'loss_sum': 0.0, 'correct': 0.0, 'count': 0.0, 'steps_run': 0}
  losses = []
  step = int(trainer.optimizer.iterations.numpy())
  while total['steps_run'] < num_steps:
    left = num_steps - total['steps_run']
    k = logger.steps_to_observation(step) if logger is not None else None
    if k is not None and k <= left:
      calls = [lambda k=k: trainer.train_steps(iterator, k - 1)] if k > 1 else []
      histograms = logger.wants_histograms(step + k)
      calls.append(lambda h=histograms: trainer.observed_step(iterator, h))
    else:
      calls = [lambda: trainer.train_steps(iterator, left)]
    for call in calls:
      out = call()
      if logger is not None:
        logger.write(step + 1, out, trainer.learning_rate_at)
      for key in ('loss_sum', 'correct', 'count', 'steps_run'):
        total[key] += out[key]
      losses.append(out['losses'])
      if 'observation' in out:
        total['observation'] = out['observation']
      step += out['steps_run']
  total['losses'] = np.concatenate(losses) if losses else np.zeros([0])
  total['step'] = step
  return total


def set_learning_rate(exp: Experiment, learning_rate: float) -> None:
  """Swaps in the configured schedule peaking at `learning_rate`."""
  exp.trainer.set_learning_rate(schedules.build_schedule(
      exp.config, learning_rate, exp.steps_per_epoch))


class SignalGuard:
  """First SIGINT/SIGTERM asks the loop to checkpoint and stop; a second exits.

  Guards nest: an inner guard (e.g. the LR finder's, inside `run`) shares the
  outermost one's state and handlers, so a signal is never lost between them.
  """

  _active = None    # the guard whose handlers are installed

  def __init__(self):
    self._signum = None
    self._outer = None
    self._previous = {}

  @property
  def signum(self):
    """The first signal received (None if none)."""
    return self._outer.signum if self._outer is not None else self._signum

  def __enter__(self):
    if SignalGuard._active is not None:
      self._outer = SignalGuard._active
    elif threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._previous[sig] = signal.signal(sig, self._handle)
      SignalGuard._active = self
    return self

  def _handle(self, signum, frame):
    del frame
    if self._signum is not None:
      os._exit(128 + signum)   # second signal: exit at once
    self._signum = signum
    logging.warning('Signal %d: stopping cleanly at the next safe point '
                    '(training checkpoints first); send it again to exit at '
                    'once.', signum)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
    if SignalGuard._active is self:
      SignalGuard._active = None


PROGRESS_LOG_SECONDS = 60.0   # without a terminal: one progress line at most this often


def _is_terminal() -> bool:
  try:
    return sys.stdout.isatty()
  except (AttributeError, ValueError):
    return False


def _format_seconds(seconds: float) -> str:
  seconds = int(round(max(seconds, 0.0)))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f'{hours}h{minutes:02d}m'
  return f'{minutes}m{secs:02d}s' if minutes else f'{secs}s'


class _Progress:
  """Training progress: the Keras bar on a terminal, else quiet log lines.

  Without a terminal (CI, nohup, cluster logs) each bar update would be a new
  line; instead one line per epoch (`run` logs it) and, within a long epoch,
  one line at most every `log_seconds`, each with the step, loss, accuracy,
  examples/s and an ETA of the remaining training steps.
  """

  def __init__(self, config: config_lib.Config, steps_per_epoch: int,
               log_seconds: float = PROGRESS_LOG_SECONDS):
    self.bar_enabled = config.progress and _is_terminal()
    self.epochs = config.epochs
    self.steps_per_epoch = steps_per_epoch
    self.log_seconds = log_seconds
    self.train_seconds = 0.0     # in this process: for the ETA
    self.steps_done = 0
    self.bar = None
    self.epoch = 0
    self._last_log = time.time()

  def start_epoch(self, epoch: int, step_in_epoch: int) -> None:
    self.epoch = epoch
    if self.bar_enabled:
      self.bar = tf.keras.utils.Progbar(
          self.steps_per_epoch, stateful_metrics=['loss', 'accuracy', 'ex/s'],
          verbose=1, unit_name='step')
      self.bar.update(step_in_epoch)

  def eta_seconds(self, step_in_epoch: int) -> Optional[float]:
    if not self.steps_done:
      return None
    left = ((self.epochs - self.epoch - 1) * self.steps_per_epoch
            + self.steps_per_epoch - step_in_epoch)
    return left * self.train_seconds / self.steps_done

  def eta(self, step_in_epoch: int) -> str:
    seconds = self.eta_seconds(step_in_epoch)
    return '?' if seconds is None else _format_seconds(seconds)

  def update(self, step_in_epoch: int, steps: int, seconds: float, sums,
             speed: float, global_step: int) -> None:
    self.steps_done += steps
    self.train_seconds += seconds
    loss, accuracy = sums[0] / sums[2], sums[1] / sums[2]
    if self.bar is not None:
      self.bar.update(step_in_epoch, [('loss', loss), ('accuracy', accuracy),
                                      ('ex/s', speed)])
      return
    now = time.time()
    if (now - self._last_log >= self.log_seconds
        and step_in_epoch < self.steps_per_epoch):
      self._last_log = now
      logging.info('progress: epoch %d step %d/%d (global step %d) loss=%.4f '
                   'accuracy=%.4f examples/s=%.0f eta %s', self.epoch + 1,
                   step_in_epoch, self.steps_per_epoch, global_step, loss,
                   accuracy, speed, self.eta(step_in_epoch))

  def end_epoch(self) -> None:
    self._last_log = time.time()


def seconds_since_launch() -> float:
  """Seconds since this process started (Linux /proc; else since import)."""
  try:
    with open('/proc/self/stat') as f:
      start_ticks = float(f.read().rpartition(')')[2].split()[19])
    with open('/proc/uptime') as f:
      uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError):
    return time.time() - _IMPORTED


_IMPORTED = time.time()


def _write_json(path: str, obj) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=float)
  os.replace(tmp, path)


def train_and_evaluate(config: config_lib.Config, workdir: str,
                       hooks: Sequence[Hook] = (), model=None, datasets=None,
                       num_classes: Optional[int] = None,
                       hook_factory: Optional[
                           Callable[[Experiment], Sequence[Hook]]] = None,
                       ) -> Dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint).

  Args:
    config: the run's Config.
    workdir: run directory (created; resumed when it holds a checkpoint).
    hooks: plain callables `hook(exp, event, outputs)` called with event
      'train' after every in-graph loop (outputs: the Trainer's dict plus
      'step', 'epoch') and 'epoch' after each epoch (outputs: the epoch record).
    model: your own model instead of the Config's: a Keras model or a
      function (image_shape, num_classes) -> Keras model.
    datasets: your own data instead of the Config's TFDS dataset:
      {'train', 'validation' (optional), 'test' (optional)} unbatched
      (image, label) datasets; give `num_classes` too.
    hook_factory: `hook_factory(exp) -> hooks` for hooks that need the built
      Experiment (e.g. a `probes.DepthProbe` on its model); called once,
      inside the workdir lock, and its hooks run after `hooks`.

  Returns:
    Final metrics (also written to `workdir/metrics.json`): test_loss,
    test_accuracy, best validation metric and epoch, history per epoch,
    wall time, and 'status' (completed | early_stopped | interrupted;
    'interrupted_in': 'lr_finder' when a signal stopped the LR finder).

  Raises:
    ConfigError, data.DataError (both before the workdir is created),
    workdir.WorkdirError (DiskFullError: no space left), CheckpointError,
    trainer.NonFiniteError, distribute.WorkerLostError: each with a one-line
    message.
  """
  strategy = distribute.create_strategy(config.strategy)
  # Before the workdir is created or touched.
  check_config(config, strategy, user_data=datasets is not None)
  workdir_lib.ensure_writable(workdir)
  chief = config.strategy != 'multi_worker' or distribute.is_chief_from_env()
  lock = (workdir_lib.WorkdirLock(workdir) if chief
          else contextlib.nullcontext())
  with lock:
    try:
      exp = build_experiment(config, workdir, strategy, model, datasets,
                             num_classes)
    except Exception as e:  # pylint: disable=broad-except
      mapped = _user_error(config, workdir, e)
      if mapped is None:
        raise
      raise mapped from e
    if hook_factory is not None:
      hooks = [*hooks, *hook_factory(exp)]
    result = run(exp, hooks)
  distribute.wait_for_all_workers(strategy)   # multi-worker: leave together
  return result


def _latest_checkpoint(workdir: str) -> Optional[str]:
  try:
    return tf.train.latest_checkpoint(os.path.join(workdir, 'checkpoints'))
  except (OSError, tf.errors.OpError, ValueError):
    return None


def _disk_full_error(workdir: str, error: BaseException, what: str
                     ) -> workdir_lib.DiskFullError:
  latest = _latest_checkpoint(workdir)
  kept = (f'the last checkpoint ({os.path.basename(latest)}) is kept'
          if latest else 'no checkpoint was written yet')
  detail = str(error).splitlines()[0] if str(error) else type(error).__name__
  detail = re.sub(r'\{\{[^}]*\}\}\s*', '', detail)   # TF's op-name prefix
  return workdir_lib.DiskFullError(
      f'--workdir={workdir}: no space left on the device while writing '
      f'{what} ({type(error).__name__}: {detail[:200]}); {kept}; free space '
      'and rerun the same command to resume.')


def _user_error(config: config_lib.Config, workdir: str,
                error: BaseException) -> Optional[Exception]:
  """The one-line user error for a lost worker, a full disk or damaged data."""
  if config.strategy == 'multi_worker' and distribute.is_peer_error(error):
    return distribute.lost_peer_error(error, _latest_checkpoint(workdir))
  if (isinstance(error, (OSError, tf.errors.OpError))
      and workdir_lib.is_disk_full(error)):
    return _disk_full_error(workdir, error, 'the run\'s files')
  if isinstance(error, tf.errors.DataLossError):
    # Damaged in place (same size, bad CRC): found only when read.
    detail = str(error).splitlines()[0] if str(error) else ''
    return data.DataError(
        f'dataset {config.dataset}: a prepared file is damaged '
        f'({detail[:200]}); delete the {config.dataset} folder in --data_dir '
        f'and rerun to prepare it again; then rerun this command to resume.')
  return None


def _save(manager, number, workdir: str, what: str = 'a checkpoint') -> None:
  """`manager.save(number)`; a full disk stops the run with DiskFullError.

  The previous checkpoint stays the latest (the `checkpoint` index is written
  last); the failed one's partial files are removed, so a rerun after freeing
  space resumes from the previous one.
  """
  number = int(number.numpy()) if hasattr(number, 'numpy') else int(number)
  try:
    manager.save(checkpoint_number=number)
  except (OSError, tf.errors.ResourceExhaustedError, tf.errors.OpError) as e:
    # TF maps ENOSPC/EDQUOT to RESOURCE_EXHAUSTED; an OOM cannot happen here.
    if not (isinstance(e, tf.errors.ResourceExhaustedError)
            or workdir_lib.is_disk_full(e)):
      raise
    prefix = os.path.join(manager.directory, f'ckpt-{number}')
    latest = manager.latest_checkpoint
    for path in glob.glob(glob.escape(prefix) + '[._]*'):
      if latest is None or not path.startswith(latest + '.'):
        if os.path.isdir(path):
          shutil.rmtree(path, ignore_errors=True)
        else:
          try:
            os.remove(path)
          except OSError:
            pass
    raise _disk_full_error(
        workdir, e, f'{what} {os.path.basename(prefix)} in '
        f'{manager.directory}') from e


def _make_checkpoint(exp: Experiment):
  state = {
      'epoch': tf.Variable(0, dtype=tf.int64, trainable=False),
      'step_in_epoch': tf.Variable(0, dtype=tf.int64, trainable=False),
      'epoch_sums': tf.Variable(tf.zeros([3], tf.float64), trainable=False),
      'best': tf.Variable(-np.inf, dtype=tf.float64, trainable=False),
      'best_epoch': tf.Variable(-1, dtype=tf.int64, trainable=False),
      'wait': tf.Variable(0, dtype=tf.int64, trainable=False),
      'learning_rate': tf.Variable(0.0, dtype=tf.float64, trainable=False),
  }
  ckpt = tf.train.Checkpoint(model=exp.trainer.model,
                             optimizer=exp.trainer.optimizer, **state)
  ckpt_dir = os.path.join(exp.workdir, 'checkpoints')
  manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=3)
  best = tf.train.Checkpoint(model=exp.trainer.model)
  best_manager = tf.train.CheckpointManager(
      best, os.path.join(exp.workdir, 'best'), max_to_keep=1)
  return ckpt, manager, best_manager, state


def _restore(ckpt, manager) -> bool:
  path = manager.latest_checkpoint
  if path is None:
    if os.path.isdir(manager.directory) and any(
        n.startswith('ckpt') for n in os.listdir(manager.directory)):
      raise CheckpointError(
          f'{manager.directory} holds checkpoint files but no readable '
          "'checkpoint' index; nothing was changed: start fresh with a new "
          f'--workdir (or move {os.path.dirname(manager.directory)} away).')
    return False
  try:
    ckpt.restore(path).assert_existing_objects_matched()
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(
        f'cannot restore {path} ({type(e).__name__}): it is corrupt or was '
        'written with other model/optimizer flags; nothing was changed: rerun '
        "with that run's flags, or start fresh with a new --workdir (or move "
        f'{os.path.dirname(manager.directory)} away).') from e
  return True


def _history_path(workdir):
  return os.path.join(workdir, 'history.json')


def run(exp: Experiment, hooks: Sequence[Hook] = ()) -> Dict[str, Any]:
  """The epoch loop over an already built `Experiment`.

  Raises:
    trainer.NonFiniteError, CheckpointError, workdir.DiskFullError (a
    checkpoint or log write found no space; the previous checkpoint is kept),
    distribute.WorkerLostError (another worker of a multi-worker run is gone).
  """
  try:
    return _run(exp, hooks)
  except workdir_lib.WorkdirError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    mapped = _user_error(exp.config, _resume_dir(exp), e)
    if mapped is None:
      raise
    raise mapped from e


def _final_metrics(exp: Experiment, eval_ds) -> Dict[str, float]:
  """Validation and test metrics, plus MC dropout with --mc_dropout_samples."""
  out = {}
  samples = exp.config.mc_dropout_samples
  mc = samples and models.has_dropout(exp.trainer.model)
  for split, prefix in (('validation', 'val'), ('test', 'test')):
    if split not in eval_ds:
      continue
    metrics = exp.trainer.evaluate(eval_ds[split])
    out.update({f'{prefix}_loss': metrics['loss'],
                f'{prefix}_accuracy': metrics['accuracy']})
    if mc:
      metrics = exp.trainer.evaluate(eval_ds[split], mc_samples=samples)
      out.update({f'mc_{prefix}_loss': metrics['loss'],
                  f'mc_{prefix}_accuracy': metrics['accuracy']})
  if mc:
    out['mc_dropout_samples'] = samples
  return out


def _resume_dir(exp: Experiment) -> str:
  """The run directory every worker resumes from: the chief's when visible."""
  if exp.is_chief:
    return exp.workdir
  chief_dir = os.path.dirname(os.path.abspath(exp.workdir))
  if os.path.isdir(os.path.join(chief_dir, 'checkpoints')):
    return chief_dir
  return exp.workdir


def _interrupted_in_finder(exp: Experiment, result: Dict[str, Any],
                           history, started: float, error) -> Dict[str, Any]:
  """The result of a run stopped by a signal during the LR finder.

  Nothing of the sweep is kept (its outputs are written only when it ends)
  and no checkpoint is needed: the sweep restored the model, and a rerun
  runs the finder again.
  """
  result.update(status='interrupted', interrupted_in='lr_finder',
                interrupted_step=int(exp.trainer.optimizer.iterations.numpy()),
                lr_finder_steps_done=error.steps_done, history=history,
                wall_seconds=time.time() - started, epochs_run=len(history))
  for writer in exp.writers.values():
    writer.flush()
  if exp.is_chief:
    _write_json(os.path.join(exp.workdir, 'metrics.json'), result)
  return result


def _with_activation_probe(exp: Experiment, hooks: Sequence[Hook]) -> List:
  """`hooks` plus the automatic activation probe (unless one is given)."""
  hooks = list(hooks)
  if exp.config.activation_stats and not any(
      isinstance(h, probes.DepthProbe) for h in hooks):
    probe = probes.activation_probe(exp, exp.config.histogram_every_steps
                             or 10 * exp.config.log_every_steps)
    hooks += [probe] if probe is not None else []
  return hooks


def _run(exp: Experiment, hooks: Sequence[Hook]) -> Dict[str, Any]:
  """`run`'s phases: resume, learning rate, epochs, finish."""
  live = checkup.LiveCheck(exp, exp.config.stop_on_error)
  phases = _Run(exp, [live, *_with_activation_probe(exp, hooks)])
  phases.live = live
  phases.resume()
  with SignalGuard() as guard:
    phases.guard = guard
    if not phases.choose_learning_rate():
      return phases.result
    phases.trace_graph()
    status = phases.train()
  return phases.finish(status)


class _Run:
  """The state `run`'s phases share, and the phases.

  `resume` (checkpoint and history), `choose_learning_rate` (the given one,
  or the LR finder's, found once and kept for resumes), `train` (epochs:
  `train_epoch` runs the compiled loop in calls with the hooks between them,
  `end_epoch` validates, writes, keeps the best weights, stops early and
  checkpoints) and `finish` (best weights restored, final metrics, export,
  health report, metrics.json).
  """

  def __init__(self, exp: Experiment, hooks: Sequence[Hook]):
    self.exp, self.config, self.trainer = exp, exp.config, exp.trainer
    self.hooks = hooks
    (self.ckpt, self.manager, self.best_manager,
     self.state) = _make_checkpoint(exp)
    self.history: List[Dict[str, Any]] = []
    self.result: Dict[str, Any] = {'workdir': exp.workdir}
    self.started = time.time()
    self.has_val = 'validation' in exp.datasets
    self.monitor_sign = 1.0 if self.config.monitor == 'val_accuracy' else -1.0
    self.progress = _Progress(self.config, exp.steps_per_epoch)
    self.first_loop = True
    self.guard: Optional[SignalGuard] = None
    self.live: Optional[checkup.LiveCheck] = None
    self.eval_ds = {k: exp.strategy.experimental_distribute_dataset(
        data.eval_batches(d, self.config.eval_batch_size))
                    for k, d in exp.datasets.items() if k != 'train'}

  def resume(self) -> None:
    """Restores the latest checkpoint and history, if any.

    Every worker resumes from the chief's checkpoint when it can see the
    chief's workdir (a shared filesystem, as the README asks): a non-chief's
    own copies are scratch (its saves are its part of the collective save)
    and may be a step behind, or half-written when it was killed.
    """
    exp, source_dir, restore_from = self.exp, _resume_dir(self.exp), self.manager
    if source_dir != exp.workdir:
      shutil.rmtree(self.manager.directory, ignore_errors=True)
      self.manager = tf.train.CheckpointManager(
          self.ckpt, self.manager.directory, max_to_keep=3)
      restore_from = tf.train.CheckpointManager(
          self.ckpt, os.path.join(source_dir, 'checkpoints'), max_to_keep=None)
    resumed = _restore(self.ckpt, restore_from)
    self.result['resumed'] = resumed
    if resumed and os.path.exists(_history_path(source_dir)):
      try:
        with open(_history_path(source_dir)) as f:
          # history.json is written just before each epoch checkpoint: a run
          # that stopped between the two has one record more than its
          # checkpoint.
          self.history = json.load(f)[:int(self.state['epoch'].numpy())]
      except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(
            f'{_history_path(source_dir)} cannot be read ({type(e).__name__});'
            ' nothing was changed: restore it, or start fresh with a new '
            '--workdir.') from e

  def choose_learning_rate(self) -> bool:
    """Sets the learning rate; False when a signal stopped the LR finder."""
    config, state = self.config, self.state
    if config.learning_rate == 'auto':
      learning_rate = float(state['learning_rate'].numpy())
      if not learning_rate:
        from tftrain import lr_finder  # pylint: disable=g-import-not-at-top
        try:
          found = lr_finder.find(
              self.exp, os.path.join(self.exp.workdir, 'lr_finder'),
              should_stop=lambda: self.guard.signum is not None)
        except lr_finder.Interrupted as e:
          self.result = _interrupted_in_finder(
              self.exp, self.result, self.history, self.started, e)
          return False
        learning_rate = found.suggestion
        self.result['lr_finder'] = found.summary()
    else:
      learning_rate = float(config.learning_rate)
    state['learning_rate'].assign(learning_rate)
    set_learning_rate(self.exp, learning_rate)
    self.result['learning_rate'] = learning_rate
    return True

  def trace_graph(self) -> None:
    exp = self.exp
    if not self.result['resumed'] and self.config.trace_graph and exp.is_chief:
      example = next(iter(exp.datasets['train'].batch(2)))[0]
      summaries.trace_model_graph(exp.writers[summaries.TRAIN],
                                  self.trainer.model, example)

  def train(self) -> str:
    """The epochs; returns the status (completed, early_stopped, interrupted)."""
    epoch = int(self.state['epoch'].numpy())
    while epoch < self.config.epochs:
      stats = self.train_epoch(epoch)
      if stats is None:
        return 'stopped_on_error' if self.live.stop else 'interrupted'
      stop = self.end_epoch(epoch, stats)
      epoch += 1
      if stop:
        return 'early_stopped'
      if self.live.stop:
        return 'stopped_on_error'
      if self.guard.signum is not None:
        self.result['interrupted_step'] = int(
            self.trainer.optimizer.iterations.numpy())
        return 'interrupted'
    return 'completed'

  def _call_length(self, global_step: int, step_in_epoch: int) -> int:
    """Steps of the next compiled call.

    Calls end on multiples of --steps_per_loop (global steps), where the
    hooks run; the first call trains only (compiling the observed step too
    would delay the first numbers by a second trace).
    """
    n = min(self.config.steps_per_loop
            - global_step % self.config.steps_per_loop,
            self.exp.steps_per_epoch - step_in_epoch)
    if self.first_loop:
      k = self.exp.logger.steps_to_observation(global_step)
      n = min(n, k - 1) if k and k > 1 else n
    return n

  def _train_call(self, iterator, n: int) -> Dict[str, Any]:
    try:
      return train_steps(self.trainer, iterator, n, self.exp.logger)
    except trainer_lib.NonFiniteError as e:
      self.result.update(status='diverged', diverged_step=e.step,
                         diverged_loss=e.loss, history=self.history)
      checkup.write_health(self.exp, self.result, self.live)
      _write_json(os.path.join(self.exp.workdir, 'metrics.json'), self.result)
      raise

  def train_epoch(self, epoch: int) -> Optional[Dict[str, Any]]:
    """The rest of `epoch`'s steps; None when a signal stopped it midway
    (then its position is checkpointed)."""
    exp, config, state = self.exp, self.config, self.state
    step_in_epoch = int(state['step_in_epoch'].numpy())
    batches = data.train_batches(exp.datasets['train'], config.batch_size,
                                 config.seed, epoch).skip(step_in_epoch)
    iterator = iter(exp.strategy.experimental_distribute_dataset(batches))
    stats = {'sums': state['epoch_sums'].numpy().copy(), 'start': time.time(),
             'train_seconds': 0.0, 'examples': 0.0}
    self.progress.start_epoch(epoch, step_in_epoch)
    global_step = int(self.trainer.optimizer.iterations.numpy())
    while step_in_epoch < exp.steps_per_epoch:
      n = self._call_length(global_step, step_in_epoch)
      t0 = time.perf_counter()
      out = self._train_call(iterator, n)
      dt = time.perf_counter() - t0
      step_in_epoch += n
      stats['sums'] += [out['loss_sum'], out['correct'], out['count']]
      stats['train_seconds'] += dt
      stats['examples'] += out['count']
      speed = out['count'] / max(dt, 1e-9)
      global_step = out['step']
      self.progress.update(step_in_epoch, n, dt, stats['sums'], speed,
                           global_step)
      summaries.write_scalars(exp.writers[summaries.TRAIN], global_step,
                              {'examples_per_second': speed}, flush=False)
      if self.first_loop:
        self.first_loop = False
        logging.info('first training loop done: %d steps, %.1f s after '
                     'launch', n, seconds_since_launch())
      for hook in self.hooks:
        hook(exp, 'train', dict(out, step=global_step, epoch=epoch))
      if self._stopping():
        break
    if self._stopping() and step_in_epoch < exp.steps_per_epoch:
      state['step_in_epoch'].assign(step_in_epoch)
      state['epoch_sums'].assign(stats['sums'])
      _save(self.manager, self.trainer.optimizer.iterations, exp.workdir)
      self.result['interrupted_step'] = int(
          self.trainer.optimizer.iterations.numpy())
      return None
    return stats

  def _stopping(self) -> bool:
    """A signal, or --stop_on_error and an error finding."""
    return self.guard.signum is not None or self.live.stop

  def _epoch_record(self, epoch: int, stats) -> Dict[str, Any]:
    """Train, validation (and test) metrics of an epoch, also as summaries."""
    sums, trainer, writers = stats['sums'], self.trainer, self.exp.writers
    record = {'epoch': epoch + 1, 'loss': sums[0] / sums[2],
              'accuracy': sums[1] / sums[2],
              'seconds': time.time() - stats['start']}
    if self.has_val:
      val = trainer.evaluate(self.eval_ds['validation'])
      record.update(val_loss=val['loss'], val_accuracy=val['accuracy'])
    if self.config.eval_test_every_epoch:   # e.g. epochs to a test accuracy
      test = trainer.evaluate(self.eval_ds['test'])
      record.update(test_loss=test['loss'], test_accuracy=test['accuracy'])
    summaries.write_scalars(writers[summaries.TRAIN], epoch + 1, {
        'epoch_loss': record['loss'], 'epoch_accuracy': record['accuracy'],
        'epoch_learning_rate': float(trainer.optimizer.learning_rate.numpy())})
    if self.has_val:
      summaries.write_scalars(writers[summaries.VALIDATION], epoch + 1, {
          'epoch_loss': record['val_loss'],
          'epoch_accuracy': record['val_accuracy']})
    return record

  def _improved(self, epoch: int, record) -> bool:
    """Keeps the best weights; True when early stopping should stop now."""
    state, config = self.state, self.config
    value = self.monitor_sign * record[config.monitor]
    if value > float(state['best'].numpy()):
      state['best'].assign(value)
      state['best_epoch'].assign(epoch + 1)
      state['wait'].assign(0)
      _save(self.best_manager, epoch + 1, self.exp.workdir, 'the best weights')
      return False
    state['wait'].assign_add(1)
    patience = config.early_stopping_patience
    return bool(patience and int(state['wait'].numpy()) >= patience)

  def end_epoch(self, epoch: int, stats) -> bool:
    """Validation, summaries, best weights, checkpoint; True to stop early."""
    exp, state, config = self.exp, self.state, self.config
    record = self._epoch_record(epoch, stats)
    step = int(self.trainer.optimizer.iterations.numpy())
    self.history.append(record)
    logging.info('epoch %d/%d step %d %s examples/s=%.0f eta %s',
                 epoch + 1, config.epochs, step,
                 ' '.join(f'{k}={v:.4f}' for k, v in record.items()
                          if k != 'epoch'),
                 stats['examples'] / max(stats['train_seconds'], 1e-9),
                 self.progress.eta(exp.steps_per_epoch))
    self.progress.end_epoch()
    stop = self.has_val and self._improved(epoch, record)
    state['epoch'].assign(epoch + 1)
    state['step_in_epoch'].assign(0)
    state['epoch_sums'].assign(np.zeros(3))
    _write_json(_history_path(exp.workdir), self.history)
    _save(self.manager, step, exp.workdir)
    for hook in self.hooks:
      hook(exp, 'epoch', record)
    if stop:
      state['epoch'].assign(config.epochs)
      _save(self.manager, step + 1, exp.workdir)
    return stop

  def finish(self, status: str) -> Dict[str, Any]:
    """Best weights, final metrics, export, health report, metrics.json."""
    exp, result, trainer = self.exp, self.result, self.trainer
    result.update(status=status, history=self.history,
                  wall_seconds=time.time() - self.started,
                  epochs_run=len(self.history))
    if status != 'interrupted':
      if self.has_val and self.best_manager.latest_checkpoint:
        result['best_epoch'] = int(self.state['best_epoch'].numpy())
        result['best_' + self.config.monitor] = self.monitor_sign * float(
            self.state['best'].numpy())
        # Restore-best-weights: the model evaluated on test is the best one
        # (1cycle keeps its last, annealed weights).
        result['restored_best_weights'] = self.config.restore_best_weights
        if self.config.restore_best_weights:
          tf.train.Checkpoint(model=trainer.model).restore(
              self.best_manager.latest_checkpoint).expect_partial()
      result.update(_final_metrics(exp, self.eval_ds))
      if exp.is_chief:
        from tftrain import export  # pylint: disable=g-import-not-at-top
        result['export'] = export.export(
            trainer.model, exp.data_info, exp.workdir,
            None if exp.user_data else self.config.dataset)['dir']
      checkup.write_health(exp, result, self.live)
    for writer in exp.writers.values():
      writer.flush()
    _write_json(os.path.join(exp.workdir, 'metrics.json'), result)
    return result
