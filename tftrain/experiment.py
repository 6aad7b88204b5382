"""Experiment: everything built for a run, and the checks before building it.

`preflight` runs every check that needs TensorFlow or the data before the
workdir exists; `build_experiment` creates the strategy (unless given), the
data, model, optimizer, Trainer, writers and step logger. The loop, the LR
finder, the grids, the benchmarks and the tests all start from an Experiment.
What a run derives from it lives here too: the schedule at a chosen peak
(`use_peak_learning_rate`), the automatic activation probe, the evaluation
datasets and the final metrics.
"""

import collections.abc
import contextlib
import dataclasses
import os
import random
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from tftrain import config as config_lib
from tftrain import data
from tftrain import distribute
from tftrain import errors
from tftrain import idle as idle_lib
from tftrain import models
from tftrain import optimizers
from tftrain import probes
from tftrain import schedules
from tftrain import summaries
from tftrain import trainer as trainer_lib
from tftrain import user_data
from tftrain import workdir as workdir_lib


@dataclasses.dataclass
class Experiment:
  """Everything built for a run (also what the LR finder and tests reuse)."""
  config: config_lib.Config
  strategy: Any
  trainer: trainer_lib.Trainer
  datasets: Mapping[str, tf.data.Dataset]   # cached, single examples
  data_info: data.DataInfo
  steps_per_epoch: int
  writers: Dict[str, Any]
  is_chief: bool
  workdir: str
  logger: summaries.StepLogger     # which steps are observed; the writes
  user_data: bool = False          # datasets given by the caller, not TFDS

  def uncached(self, split: str) -> tf.data.Dataset:
    """`split` read from its source, as the cache holds it (same examples,
    same order) but without waiting for the cache to be filled: for the few
    examples read before training (the probe batch, the graph trace)."""
    return getattr(self.datasets, 'uncached', self.datasets)[split]


# `hook(exp, event, outputs)`: see `loop.train_and_evaluate`; a factory makes
# hooks that need the built Experiment (e.g. a DepthProbe on its model).
Hook = Callable[[Experiment, str, Dict[str, Any]], None]
HookFactory = Callable[[Experiment], Sequence[Hook]]


def preflight(config: config_lib.Config, strategy=None,
              user_data: bool = False) -> None:
  """Every check that needs TensorFlow or the data; run before the workdir exists.

  Creates the strategy (multi-worker must be the process's first TensorFlow
  work), prepares the dataset if it is not prepared yet (so a missing or
  corrupt raw file fails here) and checks the split sizes and that the
  batch divides among the replicas. Creates nothing in the workdir.

  Args:
    config: the run's Config.
    strategy: the run's strategy; default: created from `config.strategy`.
    user_data: the caller gives the datasets (`build_experiment` checks
      their sizes).

  Raises:
    errors.DataError: the dataset is missing, unreachable or fails to prepare.
    errors.ConfigError: --validation_size or --batch_size does not fit the
      split, or --batch_size is not divisible by the number of replicas.
  """
  if strategy is None:
    strategy = distribute.create_strategy(config.strategy)
  replicas = strategy.num_replicas_in_sync
  if config.batch_size % replicas:
    raise errors.ConfigError(
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
    raise errors.ConfigError(
        'validation_size', config.validation_size,
        f'must be smaller than the {total} examples of {config.dataset} train.')
  num_train = total - config.validation_size
  if config.batch_size > num_train:
    raise errors.ConfigError(
        'batch_size', config.batch_size,
        f'must not exceed the {num_train} training examples '
        f'({config.dataset} train minus --validation_size).')


def _fill(cached: tf.data.Dataset) -> int:
  """Reads a cached split once to its end; returns its number of examples.

  The in-memory cache is then complete, and every later iterator only reads
  it. Left to the first epoch, the cache is written by whichever iterator
  reads first, and a partly read one can complete it short: measured here
  (TF 2.21), `next(iter(cached.batch(2)))` on a fresh cache of 500 TFDS
  examples left a cache of 2-3 examples in 22 of 450 tries under load. The
  graph trace and the probe batch read like that, and the epochs then ran
  out of batches ("End of sequence") before their last step.
  """
  return sum(int(n) for n in _batch_sizes(cached))


def _batch_sizes(dataset: tf.data.Dataset) -> tf.data.Dataset:
  return dataset.batch(4096).map(lambda x, y: tf.shape(y, tf.int64)[0])


class CachedSplits(collections.abc.Mapping):
  """split -> its in-memory cached dataset, filled (`_fill`) by a background
  thread while the run builds and traces its model.

  Filling decodes every example once (MNIST's 70k: ~9 s on 2 cores, in
  TensorFlow's C++ runtime, outside the GIL); the model build, the probe's
  and the graph's traces are Python on the other core meanwhile. Looking a
  split up (`splits[k]`, `.items()`, `.values()`, `.get`) waits for its fill,
  so nothing reads a partly filled cache; `k in splits` and `.uncached[k]`
  (the source, for a few examples) do not wait. A fill's error is raised at
  the lookup. Splits fill in the order given (train first). A lookup that
  waits starts the `idle` work (the Trainer's, `idle.IdleWork`) first.
  """

  idle: Optional[idle_lib.IdleWork] = None

  def __init__(self, splits: Mapping[str, tf.data.Dataset]):
    self.uncached = dict(splits)
    self._cached = {k: d.cache() for k, d in self.uncached.items()}
    # The size datasets (and their traced functions) are built here, in the
    # caller's thread; the thread only iterates them.
    counts = {k: _batch_sizes(d) for k, d in self._cached.items()}
    self._sizes: Dict[str, int] = {}
    self._errors: Dict[str, BaseException] = {}
    self._done = {k: threading.Event() for k in self._cached}
    self._thread = threading.Thread(target=self._fill_all, args=(counts,),
                                    name='tftrain-cache-fill', daemon=True)
    self._thread.start()

  def _fill_all(self, counts) -> None:
    for k, sizes in counts.items():
      try:
        self._sizes[k] = sum(int(n) for n in sizes)
      except BaseException as e:  # pylint: disable=broad-except
        self._errors[k] = e       # raised where the split is looked up
      finally:
        self._done[k].set()

  def size(self, split: str) -> int:
    """The number of examples of `split` (waits for its fill)."""
    self[split]  # pylint: disable=pointless-statement
    return self._sizes[split]

  def __getitem__(self, split: str) -> tf.data.Dataset:
    cached = self._cached[split]
    if not self._done[split].is_set() and self.idle:
      self.idle.start()
    self._done[split].wait()
    if split in self._errors:
      raise self._errors[split]
    return cached

  def __contains__(self, split) -> bool:
    return split in self._cached

  def __iter__(self):
    return iter(self._cached)

  def __len__(self) -> int:
    return len(self._cached)


def _load_data(config: config_lib.Config, strategy, datasets, num_classes):
  """The cached splits, their DatasetInfo and the number of train examples."""
  if datasets is None:
    data_dir = data.prepare(config.dataset, config.data_dir,
                            config.raw_data_dir)
    splits, info = data.load_splits(config.dataset, data_dir,
                                    config.validation_size,
                                    config.standardize_inputs)
  else:
    splits, info = user_data.user_splits(datasets, num_classes)
  cached = CachedSplits(splits)
  num_train = info.num_train
  if num_train is None:        # a source that does not say: count it
    num_train = cached.size('train')
  if config.batch_size > num_train:
    raise errors.ConfigError(
        'batch_size', config.batch_size,
        f'must not exceed the {num_train} training examples.')
  if config.batch_size % strategy.num_replicas_in_sync:
    raise errors.ConfigError(
        'batch_size', config.batch_size,
        f'must be divisible by the {strategy.num_replicas_in_sync} replicas.')
  return cached, info, num_train


def _build_trainer(config: config_lib.Config, strategy, model, info,
                   steps_per_epoch: int) -> trainer_lib.Trainer:
  """Model (built under the strategy's scope), optimizer and Trainer."""
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
        jit_compile=config.jit_compile,
        planned_steps=steps_per_epoch * config.epochs)
  if trainer.jit_auto:
    logging.info('XLA (--jit_compile=auto): %s (%s)',
                 'on' if trainer.jit_compile else 'off', trainer.jit_reason)
  return trainer


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
  trainer = _build_trainer(config, strategy, model, info, steps_per_epoch)
  cached.idle = trainer.idle      # a wait for the data runs the idle work
  run_dir = workdir if is_chief else temp_dir
  logger = summaries.StepLogger(
      writers[summaries.TRAIN], trainer.layer_names,
      observation_interval(config.log_every_steps,
                           config.epochs * steps_per_epoch),
      config.histogram_every_steps, config.grad_norms,
      records_path=os.path.join(run_dir, workdir_lib.OBSERVATIONS),
      asynchronous=True)     # flushed where the run reads or checkpoints
  return Experiment(config, strategy, trainer, cached, info, steps_per_epoch,
                    writers, is_chief, run_dir, logger, datasets is not None)


@contextlib.contextmanager
def global_state_restored():
  """Restores what building a run sets process-wide, once the run is over.

  `build_experiment` sets the Keras mixed-precision policy
  (`--mixed_precision`), may turn on TF op determinism (`--deterministic`) and
  seeds the global RNGs (`--seed`). Afterwards the policy, op determinism and
  Python's and NumPy's global RNG states are as they were; TensorFlow's and
  Keras's global seeds stay at `config.seed` (the seed the Config asked for;
  `tf.keras.utils.set_random_seed`).
  """
  from tensorflow.python.framework import config as tf_config  # pylint: disable=g-import-not-at-top
  policy = tf.keras.mixed_precision.global_policy()
  determinism = tf_config.is_op_determinism_enabled()
  python_rng, numpy_rng = random.getstate(), np.random.get_state()
  try:
    yield
  finally:
    tf.keras.mixed_precision.set_global_policy(policy)
    if not determinism and tf_config.is_op_determinism_enabled():
      tf_config.disable_op_determinism()
    random.setstate(python_rng)
    np.random.set_state(numpy_rng)


def use_peak_learning_rate(exp: Experiment, learning_rate: float) -> None:
  """Swaps in the configured schedule (`--schedule`) peaking at
  `learning_rate` (through `Trainer.set_learning_rate`, which takes any
  schedule)."""
  exp.trainer.set_learning_rate(schedules.build_schedule(
      exp.config, learning_rate, exp.steps_per_epoch))


MIN_OBSERVATIONS = 30   # per run, so the health report has evidence


def observation_interval(log_every_steps: int, total_steps: int) -> int:
  """--log_every_steps; at its default, shortened so short runs observe at
  least MIN_OBSERVATIONS steps (a value the user set is kept as it is)."""
  default = config_lib.Config.__dataclass_fields__['log_every_steps'].default
  if log_every_steps != default:
    return log_every_steps
  return max(1, min(log_every_steps, total_steps // MIN_OBSERVATIONS))


def with_activation_probe(exp: Experiment, hooks: Sequence[Hook]) -> List:
  """`hooks` plus the automatic activation probe (unless one is given)."""
  hooks = list(hooks)
  if exp.config.activation_stats and not any(
      isinstance(h, probes.DepthProbe) for h in hooks):
    probe = probes.activation_probe(exp, exp.config.histogram_every_steps
                                    or 10 * exp.logger.log_every_steps)
    hooks += [probe] if probe is not None else []
  return hooks


def eval_datasets(exp: Experiment) -> Dict[str, Any]:
  """The distributed evaluation batches of every split but train."""
  return {k: exp.strategy.experimental_distribute_dataset(
      data.eval_batches(d, exp.config.eval_batch_size))
          for k, d in exp.datasets.items() if k != 'train'}


def epoch_record(exp: Experiment, eval_ds, epoch: int, sums,
                 seconds: float) -> Dict[str, Any]:
  """An epoch's train metrics (from its sums: loss, correct, count), its
  validation metrics (and test's with --eval_test_every_epoch), written as
  epoch summaries too."""
  record = {'epoch': epoch + 1, 'loss': sums[0] / sums[2],
            'accuracy': sums[1] / sums[2], 'seconds': seconds}
  splits = [('validation', 'val')] if 'validation' in exp.datasets else []
  if exp.config.eval_test_every_epoch:   # e.g. epochs to a test accuracy
    splits.append(('test', 'test'))
  for split, prefix in splits:
    metrics = exp.trainer.evaluate(eval_ds[split])
    record.update({f'{prefix}_loss': metrics['loss'],
                   f'{prefix}_accuracy': metrics['accuracy']})
  summaries.write_epoch_scalars(
      exp.writers, record, float(exp.trainer.optimizer.learning_rate.numpy()))
  return record


def final_metrics(exp: Experiment, eval_ds) -> Dict[str, float]:
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
