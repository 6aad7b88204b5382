"""train_and_evaluate(config, workdir): the one entry point for every launcher.

Epochs of in-graph multi-step loops, validation after each epoch, early
stopping with restore-best, checkpoints every epoch (and on SIGINT/SIGTERM),
resume from the latest checkpoint, test at the end, `metrics.json`.
"""

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from tftrain import config as config_lib
from tftrain import data
from tftrain import distribute
from tftrain import models
from tftrain import optimizers
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


def _count(dataset, known: Optional[int]) -> int:
  if known is not None:
    return known
  n = int(dataset.cardinality().numpy())
  if n < 0:
    n = int(dataset.reduce(0, lambda c, _: c + 1).numpy())
  return n


def check_config(config: config_lib.Config) -> None:
  """Checks that need the dataset's metadata, run before the workdir is touched.

  Raises:
    data.DataError: the dataset is neither prepared nor in --raw_data_dir.
    ConfigError: --validation_size or --batch_size too large for the split.
  """
  sizes = data.check_available(config.dataset, config.data_dir,
                               config.raw_data_dir)
  if not sizes or 'train' not in sizes:
    return   # prepared later; build_experiment checks the sizes then
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


def build_experiment(config: config_lib.Config, workdir: str) -> Experiment:
  """Strategy, data, model, optimizer and Trainer for `config`."""
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  strategy = distribute.create_strategy(config.strategy)
  is_chief = distribute.is_chief(strategy)
  if config.mixed_precision != 'none':
    tf.keras.mixed_precision.set_global_policy(config.mixed_precision)
  else:
    tf.keras.mixed_precision.set_global_policy('float32')
  data_dir = data.prepare(config.dataset, config.data_dir, config.raw_data_dir)
  splits, info = data.load_splits(config.dataset, data_dir,
                                  config.validation_size,
                                  config.standardize_inputs)
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
    model = models.build_model(config, info.image_shape, info.num_classes)
    lr = config.learning_rate if config.learning_rate != 'auto' else 1e-3
    optimizer = optimizers.build_optimizer(
        config.optimizer, schedules.build_schedule(config, lr, steps_per_epoch),
        config)
    trainer = trainer_lib.Trainer(
        model, optimizer, strategy, config.batch_size,
        jit_compile=config.jit_compile,
        histograms=config.histogram_every_steps > 0)
  run_dir = workdir if is_chief else temp_dir
  logger = summaries.StepLogger(
      writers[summaries.TRAIN], trainer.layer_names, config.log_every_steps,
      config.histogram_every_steps, config.grad_norms,
      records_path=os.path.join(run_dir, OBSERVATIONS))
  return Experiment(config, strategy, trainer, cached, info, steps_per_epoch,
                    writers, is_chief, run_dir, logger)


OBSERVATIONS = 'observations.jsonl'      # per observed step (StepLogger)
ACTIVATIONS = 'activations.jsonl'        # per probe (DepthProbe)
PROBE_SIZE = 128


def activation_probe(exp: Experiment, every_steps: int,
                     write_images: bool = False, size: int = PROBE_SIZE):
  """A DepthProbe on validation examples for a model with `act_*` layers.

  Returns None for models without named activation layers.
  """
  if not any(l.name.startswith('act_') for l in exp.trainer.model.layers):
    return None
  source = exp.datasets.get('validation', exp.datasets['train'])
  images, labels = next(iter(source.batch(size).take(1)))
  return summaries.DepthProbe(
      images, labels, every_steps, exp.config.activation,
      write_images=write_images,
      records_path=os.path.join(exp.workdir, ACTIVATIONS))


def read_activation_records(workdir: str):
  """[(step, {layer: {stat: value}})] from activations.jsonl (last per step)."""
  path = os.path.join(workdir, ACTIVATIONS)
  if not os.path.exists(path):
    return []
  by_step = {}
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      by_step[record['step']] = record['stats']
  return sorted(by_step.items())


def health_run_record(exp: Experiment, result: Dict[str, Any]) -> Dict:
  """The series `health.analyze` reads, from the run's files and result."""
  config = exp.config
  run = {'layer_names': exp.trainer.layer_names,
         'num_classes': exp.data_info.num_classes,
         'activation': config.activation,
         'history': result.get('history', []),
         'status': result.get('status')}
  for key in ('diverged_step', 'diverged_loss'):
    if key in result:
      run[key] = result[key]
  records = summaries.read_records(os.path.join(exp.workdir, OBSERVATIONS))
  if records:
    run['steps'] = [r['step'] for r in records]
    for key in ('grad_norms', 'update_ratios', 'loss', 'learning_rate'):
      run[key] = [r[key] for r in records]
  activations = read_activation_records(exp.workdir)
  if activations:
    run['activation_stats'] = activations
  finder = result.get('lr_finder')
  if finder:
    run['lr_finder'] = {'suggestion': finder.get('suggestion'),
                        'suggestions': finder.get('suggestions', {})}
  if 'learning_rate' in result:
    run['schedule_peak_lr'] = result['learning_rate']
  return run


def write_health(exp: Experiment, result: Dict[str, Any]) -> None:
  """health.md/.json, a Text summary, the depth x time heatmap; result['health']."""
  from tftrain import health  # pylint: disable=g-import-not-at-top
  run = health_run_record(exp, result)
  findings = health.analyze(run)
  result['health'] = {'healthy': not findings,
                      'findings': [f.kind for f in findings],
                      'block': health.format_block(findings)}
  if not exp.is_chief:
    return
  title = f'Training health: {os.path.basename(os.path.abspath(exp.workdir))}'
  health.write_report(exp.workdir, findings, title)
  step = int(exp.trainer.optimizer.iterations.numpy())
  writer = exp.writers[summaries.TRAIN]
  with writer.as_default(step=step):
    tf.summary.text('health', health.format_markdown(findings, title))
    if len(run['layer_names']) >= 3 and run.get('steps'):
      png = health.depth_time_heatmap_png(
          run['layer_names'], run['steps'], run['grad_norms'],
          'log10 gradient norm by layer (rows) and step')
      with open(os.path.join(exp.workdir, 'grad_norm_heatmap.png'), 'wb') as f:
        f.write(png)
      tf.summary.image('grad_norm_heatmap',
                       tf.image.decode_png(png, channels=3)[tf.newaxis])
  writer.flush()


def train_steps(trainer: trainer_lib.Trainer, iterator, num_steps: int,
                logger: Optional[summaries.StepLogger] = None
                ) -> Dict[str, Any]:
  """Runs `num_steps` training steps: the one "N steps in chunks" loop.

  Plain in-graph loops run up to each step `logger` observes; that step is a
  `Trainer.observed_step`; the logger writes what each call measured.

  Returns:
    'loss_sum', 'correct', 'count' (sums), 'losses' (per step), 'steps_run',
    and 'observation' (the last observed step's measurements) if any.

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
  return total


def set_learning_rate(exp: Experiment, learning_rate: float) -> None:
  """Swaps in the configured schedule peaking at `learning_rate`."""
  exp.trainer.set_learning_rate(schedules.build_schedule(
      exp.config, learning_rate, exp.steps_per_epoch))


class _SignalGuard:
  """First SIGINT/SIGTERM asks the loop to checkpoint and stop; a second exits."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      os._exit(128 + signum)   # second signal: exit at once
    self.signum = signum
    logging.warning('Signal %d: checkpointing and stopping (send again to '
                    'exit at once).', signum)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


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
                       hooks: Sequence[Hook] = ()) -> Dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint).

  Args:
    config: the run's Config.
    workdir: run directory (created; resumed when it holds a checkpoint).
    hooks: plain callables `hook(exp, event, outputs)` called with event
      'train' after every in-graph loop (outputs: the Trainer's dict plus
      'step', 'epoch') and 'epoch' after each epoch (outputs: the epoch record).

  Returns:
    Final metrics (also written to `workdir/metrics.json`): test_loss,
    test_accuracy, best validation metric and epoch, history per epoch,
    wall time, and 'status' (completed | early_stopped | interrupted).

  Raises:
    ConfigError, data.DataError, workdir.WorkdirError, CheckpointError,
    trainer.NonFiniteError: each with a one-line message.
  """
  check_config(config)   # before the workdir is created or touched
  workdir_lib.ensure_writable(workdir)
  chief = config.strategy != 'multi_worker' or distribute.is_chief_from_env()
  lock = (workdir_lib.WorkdirLock(workdir) if chief
          else contextlib.nullcontext())
  with lock:
    exp = build_experiment(config, workdir)
    return run(exp, hooks)


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
  """The epoch loop over an already built `Experiment`."""
  config, trainer, strategy = exp.config, exp.trainer, exp.strategy
  if config.activation_stats and not any(
      isinstance(h, summaries.DepthProbe) for h in hooks):
    probe = activation_probe(exp, config.histogram_every_steps
                             or 10 * config.log_every_steps)
    hooks = list(hooks) + ([probe] if probe is not None else [])
  ckpt, manager, best_manager, state = _make_checkpoint(exp)
  resumed = _restore(ckpt, manager)
  history = []
  if resumed and os.path.exists(_history_path(exp.workdir)):
    with open(_history_path(exp.workdir)) as f:
      history = json.load(f)
  monitor_sign = 1.0 if config.monitor == 'val_accuracy' else -1.0
  has_val = 'validation' in exp.datasets
  started = time.time()
  result: Dict[str, Any] = {'workdir': exp.workdir, 'resumed': resumed}

  # Learning rate: fixed, or found once by the LR finder (kept for resumes).
  if config.learning_rate == 'auto':
    learning_rate = float(state['learning_rate'].numpy())
    if not learning_rate:
      from tftrain import lr_finder  # pylint: disable=g-import-not-at-top
      found = lr_finder.find(exp, os.path.join(exp.workdir, 'lr_finder'))
      learning_rate = found.suggestion
      result['lr_finder'] = found.summary()
  else:
    learning_rate = float(config.learning_rate)
  state['learning_rate'].assign(learning_rate)
  set_learning_rate(exp, learning_rate)
  result['learning_rate'] = learning_rate

  if not resumed and config.trace_graph and exp.is_chief:
    example = next(iter(exp.datasets['train'].batch(2)))[0]
    summaries.trace_model_graph(exp.writers[summaries.TRAIN], trainer.model,
                                example)

  eval_ds = {k: strategy.experimental_distribute_dataset(
      data.eval_batches(d, config.eval_batch_size))
             for k, d in exp.datasets.items() if k != 'train'}
  status = 'completed'
  first_loop = True
  with _SignalGuard() as guard:
    epoch = int(state['epoch'].numpy())
    while epoch < config.epochs:
      skip = int(state['step_in_epoch'].numpy())
      batches = data.train_batches(exp.datasets['train'], config.batch_size,
                                   config.seed, epoch).skip(skip)
      iterator = iter(strategy.experimental_distribute_dataset(batches))
      sums = state['epoch_sums'].numpy().copy()
      progbar = (tf.keras.utils.Progbar(
          exp.steps_per_epoch, stateful_metrics=['loss', 'accuracy', 'ex/s'],
          verbose=1 if config.progress else 0, unit_name='step'))
      progbar.update(skip)
      step_in_epoch = skip
      epoch_start = time.time()
      while step_in_epoch < exp.steps_per_epoch:
        n = min(config.steps_per_loop, exp.steps_per_epoch - step_in_epoch)
        t0 = time.perf_counter()
        try:
          out = train_steps(trainer, iterator, n, exp.logger)
        except trainer_lib.NonFiniteError as e:
          result.update(status='diverged', diverged_step=e.step,
                        diverged_loss=e.loss, history=history)
          write_health(exp, result)
          _write_json(os.path.join(exp.workdir, 'metrics.json'), result)
          raise
        dt = time.perf_counter() - t0
        step_in_epoch += n
        sums += [out['loss_sum'], out['correct'], out['count']]
        speed = out['count'] / max(dt, 1e-9)
        progbar.update(step_in_epoch, [('loss', sums[0] / sums[2]),
                                       ('accuracy', sums[1] / sums[2]),
                                       ('ex/s', speed)])
        step = int(trainer.optimizer.iterations.numpy())
        summaries.write_scalars(exp.writers[summaries.TRAIN], step,
                                {'examples_per_second': speed}, flush=False)
        if first_loop:
          first_loop = False
          logging.info('first training loop done: %d steps, %.1f s after '
                       'launch', n, seconds_since_launch())
        for hook in hooks:
          hook(exp, 'train', dict(out, step=step, epoch=epoch))
        if guard.signum is not None:
          break
      if guard.signum is not None and step_in_epoch < exp.steps_per_epoch:
        state['step_in_epoch'].assign(step_in_epoch)
        state['epoch_sums'].assign(sums)
        manager.save(checkpoint_number=trainer.optimizer.iterations)
        status = 'interrupted'
        result['interrupted_step'] = int(trainer.optimizer.iterations.numpy())
        break

      # End of epoch: validation, summaries, early stopping, checkpoint.
      epoch_time = time.time() - epoch_start
      record = {'epoch': epoch + 1, 'loss': sums[0] / sums[2],
                'accuracy': sums[1] / sums[2], 'seconds': epoch_time}
      if has_val:
        val = trainer.evaluate(eval_ds['validation'])
        record.update(val_loss=val['loss'], val_accuracy=val['accuracy'])
      if config.eval_test_every_epoch:   # e.g. epochs to a test accuracy
        test = trainer.evaluate(eval_ds['test'])
        record.update(test_loss=test['loss'], test_accuracy=test['accuracy'])
      step = int(trainer.optimizer.iterations.numpy())
      summaries.write_scalars(exp.writers[summaries.TRAIN], epoch + 1, {
          'epoch_loss': record['loss'], 'epoch_accuracy': record['accuracy'],
          'epoch_learning_rate': float(
              trainer.optimizer.learning_rate.numpy())})
      if has_val:
        summaries.write_scalars(exp.writers[summaries.VALIDATION], epoch + 1, {
            'epoch_loss': record['val_loss'],
            'epoch_accuracy': record['val_accuracy']})
      history.append(record)
      logging.info('epoch %d/%d %s', epoch + 1, config.epochs,
                   ' '.join(f'{k}={v:.4f}' for k, v in record.items()
                            if k != 'epoch'))
      stop = False
      if has_val:
        value = monitor_sign * record[config.monitor]
        if value > float(state['best'].numpy()):
          state['best'].assign(value)
          state['best_epoch'].assign(epoch + 1)
          state['wait'].assign(0)
          best_manager.save(checkpoint_number=epoch + 1)
        else:
          state['wait'].assign_add(1)
          stop = config.patience and int(state['wait'].numpy()) >= config.patience
      epoch += 1
      state['epoch'].assign(epoch)
      state['step_in_epoch'].assign(0)
      state['epoch_sums'].assign(np.zeros(3))
      manager.save(checkpoint_number=step)
      _write_json(_history_path(exp.workdir), history)
      for hook in hooks:
        hook(exp, 'epoch', record)
      if stop:
        status = 'early_stopped'
        state['epoch'].assign(config.epochs)
        manager.save(checkpoint_number=step + 1)
        break
      if guard.signum is not None:
        status = 'interrupted'
        result['interrupted_step'] = step
        break

  result.update(status=status, history=history,
                wall_seconds=time.time() - started,
                epochs_run=len(history))
  if status != 'interrupted':
    if has_val and best_manager.latest_checkpoint:
      # Restore-best-weights: the model evaluated on test is the best one.
      tf.train.Checkpoint(model=trainer.model).restore(
          best_manager.latest_checkpoint).expect_partial()
      result['best_epoch'] = int(state['best_epoch'].numpy())
      result['best_' + config.monitor] = monitor_sign * float(
          state['best'].numpy())
    if has_val:
      val = trainer.evaluate(eval_ds['validation'])
      result.update(val_loss=val['loss'], val_accuracy=val['accuracy'])
    test = trainer.evaluate(eval_ds['test'])
    result.update(test_loss=test['loss'], test_accuracy=test['accuracy'])
  if status != 'interrupted':
    write_health(exp, result)
  for writer in exp.writers.values():
    writer.flush()
  _write_json(os.path.join(exp.workdir, 'metrics.json'), result)
  return result
