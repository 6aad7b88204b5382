"""train_and_evaluate(config, workdir): the one entry point for every launcher.

Epochs of in-graph multi-step loops, validation after each epoch, early
stopping with restore-best, checkpoints every epoch (and on SIGINT/SIGTERM),
resume from the latest checkpoint, test at the end, `metrics.json`.

This module is the run's phases (`_Run`); what they use lives next door:
`experiment` (the checks before the workdir, building), `chunks` (the step
loop), `checkpoints`, `progress`, `signals` and `checkup` (the health report).
"""

import contextlib
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from tftrain import checkpoints
from tftrain import checkup
from tftrain import chunks
from tftrain import config as config_lib
from tftrain import data
from tftrain import distribute
from tftrain import errors
from tftrain import experiment
from tftrain import export
from tftrain import lr_finder
from tftrain import progress as progress_lib
from tftrain import record
from tftrain import repair as repair_lib
from tftrain import signals
from tftrain import summaries
from tftrain import workdir as workdir_lib


Result = record.Result   # also tftrain.Result


def train_and_evaluate(config: config_lib.Config, workdir: str,
                       hooks: Sequence[experiment.Hook] = (), model=None,
                       datasets=None, num_classes: Optional[int] = None,
                       hook_factory: Optional[experiment.HookFactory] = None
                       ) -> record.Result:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint).

  An existing run is resumed when its config.json matches `config` in every
  field that changes the training (a changed logging field is allowed and
  said), refused otherwise (`errors.ConfigMismatchError`), returned as it is
  when it is already complete, or moved aside with `config.overwrite`.

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
    A `Result`: the final metrics (also written to `workdir/metrics.json`)
    with the trained model as `.model`. The metrics: test_loss,
    test_accuracy, best validation metric and epoch, history per epoch,
    wall time, and 'status' (completed | early_stopped | interrupted;
    'interrupted_in': 'lr_finder' when a signal stopped the LR finder).
    With `config.repair` on, also 'repair' (`repair.maybe_repair`), and a
    run that diverged returns its partial result instead of raising.

  Process-wide state the run sets (mixed-precision policy, op determinism,
  Python's and NumPy's RNG states) is restored afterwards; TensorFlow's global
  seed stays at `config.seed` (`experiment.global_state_restored`).

  Raises:
    errors.ConfigError, errors.DataError (both before the workdir is
    created), errors.ConfigMismatchError (the workdir holds a run trained
    with other settings), errors.WorkdirError (DiskFullError: no space left),
    CheckpointError, NonFiniteError, WorkerLostError: each with a one-line
    message.
  """
  with experiment.global_state_restored():
    return _train_and_evaluate(config, workdir, hooks, model, datasets,
                               num_classes, hook_factory)


def _train_and_evaluate(config, workdir, hooks, model, datasets, num_classes,
                        hook_factory) -> record.Result:
  strategy = distribute.create_strategy(config.strategy)
  # Before the workdir is created or touched.
  experiment.preflight(config, strategy, user_data=datasets is not None)
  workdir_lib.ensure_writable(workdir)
  chief = config.strategy != 'multi_worker' or distribute.is_chief_from_env()
  lock = (workdir_lib.WorkdirLock(workdir) if chief
          else contextlib.nullcontext())
  with lock:
    started = time.time()
    saved_config, done = record.prior_run(config, workdir, chief)
    if done is not None:
      return done
    with checkpoints.user_errors(config, lambda: workdir):
      exp = experiment.build_experiment(config, workdir, strategy, model,
                                        datasets, num_classes)
    if hook_factory is not None:
      hooks = [*hooks, *hook_factory(exp)]
    def on_resumed(resumed: bool) -> None:
      """The run files, once the checkpoint is restored (a refused resume
      changes no file)."""
      del resumed
      if chief:
        record.record_run(exp, workdir, saved_config is None, started,
                          custom=model is not None or datasets is not None)
    repairing = config.repair != 'off' and exp.is_chief
    # A model object trains in place: repair restarts it from these weights.
    initial_weights = (exp.trainer.model.get_weights()
                       if repairing and hasattr(model, 'get_weights') else None)
    try:
      result = run(exp, hooks, on_resumed=on_resumed)
    except errors.NonFiniteError:
      if not repairing:
        raise
      result = None          # repair reads the partial metrics.json
  distribute.wait_for_all_workers(strategy)   # multi-worker: leave together
  if not repairing:
    return result
  # The candidates train through this function (repair gets it passed).
  return repair_lib.maybe_repair(config, workdir, result, model=model,
                                 datasets=datasets, num_classes=num_classes,
                                 initial_weights=initial_weights,
                                 train=train_and_evaluate)


def run(exp: experiment.Experiment,
        hooks: Sequence[experiment.Hook] = (),
        on_resumed: Optional[Callable[[bool], None]] = None) -> record.Result:
  """The epoch loop over an already built `Experiment`: its phases (`_Run`)
  resume, choose the learning rate, train the epochs and finish.
  `on_resumed(resumed)` runs once the checkpoint (if any) is restored.

  Raises:
    errors.NonFiniteError, CheckpointError, DiskFullError (a checkpoint or
    log write found no space; the previous checkpoint is kept),
    WorkerLostError (another worker of a multi-worker run is gone).
  """
  with checkpoints.user_errors(exp.config,
                               lambda: checkpoints.resume_dir(exp)):
    live = checkup.LiveCheck(exp, exp.config.stop_on_error)
    phases = _Run(exp, [live, *experiment.with_activation_probe(exp, hooks)])
    phases.live = live
    phases.resume()
    if on_resumed is not None:
      on_resumed(phases.result['resumed'])
    with signals.SignalGuard() as guard:
      phases.guard = guard
      if not phases.choose_learning_rate():
        return phases.finish('interrupted')     # a rerun sweeps again
      if (not phases.result['resumed'] and exp.config.trace_graph and
          exp.is_chief):
        summaries.trace_model_graph(exp.writers[summaries.TRAIN],
                                    exp.trainer.model, exp.uncached('train'))
      status = phases.train()
    return phases.finish(status)


class _Run:
  """The state `run`'s phases share, and the phases: `resume`,
  `choose_learning_rate` (the LR finder's pick is found once and kept for
  resumes), `train` (`train_epoch`: the compiled loop in calls, the hooks
  between them; `end_epoch`: validate, write, keep the best, stop early,
  checkpoint) and `finish` (best weights, final metrics, export, health).
  """

  def __init__(self, exp: experiment.Experiment,
               hooks: Sequence[experiment.Hook]):
    self.exp, self.config, self.trainer = exp, exp.config, exp.trainer
    self.hooks = hooks
    (self.ckpt, self.manager, self.best_manager,
     self.state) = checkpoints.make_checkpoint(exp)
    self.history: List[Dict[str, Any]] = []
    self.result = record.Result({'workdir': exp.workdir},
                                model=exp.trainer.model)
    self.started = time.time()
    self.has_val = 'validation' in exp.datasets
    self.monitor_sign = 1.0 if self.config.monitor == 'val_accuracy' else -1.0
    self.progress = progress_lib.Progress(self.config, exp.steps_per_epoch)
    self.first_loop = True
    self.guard: Optional[signals.SignalGuard] = None
    self.live: Optional[checkup.LiveCheck] = None
    self._eval_ds = None      # built at the first evaluation
    self.profile = (chunks.ProfileWindow(self.config.profile_steps,
                                         exp.workdir)
                    if self.config.profile_steps and exp.is_chief else None)

  @property
  def eval_ds(self) -> Dict[str, Any]:
    """The distributed evaluation batches, built when first needed: their
    lookup waits for the validation and test caches, which fill meanwhile."""
    if self._eval_ds is None:
      self._eval_ds = experiment.eval_datasets(self.exp)
    return self._eval_ds

  @property
  def step(self) -> int:
    """The global step (the optimizer's iterations)."""
    return int(self.trainer.optimizer.iterations.numpy())

  def resume(self) -> None:
    """Restores the latest checkpoint and history, if any."""
    self.manager, self.result['resumed'], self.history = checkpoints.resume(
        self.exp, self.ckpt, self.manager, self.state)

  def choose_learning_rate(self) -> bool:
    """Sets the learning rate; False when a signal stopped the LR finder."""
    try:
      learning_rate, found = lr_finder.choose(
          self.exp, self.state['learning_rate'],
          should_stop=lambda: self.guard.signum is not None)
    except errors.Interrupted as e:     # no checkpoint: the sweep restored
      self.result.update(interrupted_in='lr_finder', interrupted_step=self.step,
                         lr_finder_steps_done=e.steps_done)
      return False
    if found is not None:
      self.result['lr_finder'] = found
    experiment.use_peak_learning_rate(self.exp, learning_rate)
    self.result['learning_rate'] = learning_rate
    return True

  def train(self) -> str:
    """The epochs; returns the status (completed, early_stopped,
    interrupted, stopped_on_error)."""
    try:
      return self._train_epochs()
    finally:
      if self.profile is not None:
        self.profile.stop()     # a run that ended inside the window

  def _train_epochs(self) -> str:
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
        self.result['interrupted_step'] = self.step
        return 'interrupted'
    return 'completed'

  def train_epoch(self, epoch: int) -> Optional[Dict[str, Any]]:
    """The rest of `epoch`'s steps; None when a signal stopped it midway
    (then its position is checkpointed)."""
    exp, config, state = self.exp, self.config, self.state
    step_in_epoch = int(state['step_in_epoch'].numpy())
    batches = data.train_batches(exp.datasets['train'], config.batch_size,
                                 config.seed, epoch).skip(step_in_epoch)
    iterator = data.Feed(exp.strategy, batches,
                         exp.steps_per_epoch - step_in_epoch,
                         config.steps_per_loop, self.step)
    stats = {'sums': state['epoch_sums'].numpy().copy(), 'start': time.time(),
             'train_seconds': 0.0, 'examples': 0.0}
    self.progress.start_epoch(epoch, step_in_epoch)
    try:
      for out, seconds in chunks.calls(
          self.trainer, iterator, exp.steps_per_epoch - step_in_epoch,
          config.steps_per_loop, exp.logger, profile=self.profile):
        step_in_epoch += out['steps_run']
        self._after_call(epoch, step_in_epoch, out, seconds, stats)
        if self._stopping():
          break
    except errors.NonFiniteError as e:
      self._diverged(e)
      raise
    if self._stopping() and step_in_epoch < exp.steps_per_epoch:
      exp.logger.flush()
      checkpoints.save_position(state, self.manager, self.trainer.optimizer,
                                step_in_epoch, stats['sums'], exp.workdir)
      self.result['interrupted_step'] = self.step
      return None
    return stats

  def _after_call(self, epoch: int, step_in_epoch: int, out, seconds: float,
                  stats) -> None:
    """Epoch sums, progress, throughput and the hooks after a compiled call."""
    stats['sums'] += [out['loss_sum'], out['correct'], out['count']]
    stats['train_seconds'] += seconds
    stats['examples'] += out['count']
    speed = out['count'] / max(seconds, 1e-9)
    # A call that compiled a step function is no measure of the speed.
    self.progress.update(step_in_epoch, out['steps_run'], seconds,
                         stats['sums'], None if out['compiled'] else speed,
                         out['step'])
    if not out['compiled']:
      summaries.write_scalars(self.exp.writers[summaries.TRAIN], out['step'],
                              {'examples_per_second': speed}, flush=False)
    if self.first_loop:
      self.first_loop = False
      self.progress.first_call_done(out['steps_run'])
    chunks.run_hooks(self.hooks, self.exp, out, epoch)

  def _diverged(self, error: errors.NonFiniteError) -> None:
    """The partial result and health report of a run that diverged."""
    self.result.update(status='diverged', diverged_step=error.step,
                       diverged_loss=error.loss, history=self.history)
    self.exp.logger.flush()
    checkup.write_health(self.exp, self.result, self.live)
    workdir_lib.write_metrics(self.exp.workdir, self.result)

  def _stopping(self) -> bool:
    """A signal, or --stop_on_error and an error finding."""
    return self.guard.signum is not None or self.live.stop

  def end_epoch(self, epoch: int, stats) -> bool:
    """Validation, summaries, best weights, checkpoint; True to stop early."""
    exp, state, config = self.exp, self.state, self.config
    record = experiment.epoch_record(exp, self.eval_ds, epoch, stats['sums'],
                                     time.time() - stats['start'])
    step = self.step
    self.history.append(record)
    self.progress.end_epoch(
        record, step, stats['examples'] / max(stats['train_seconds'], 1e-9))
    stop = self.has_val and checkpoints.keep_best(
        self.state, self.best_manager, epoch,
        self.monitor_sign * record[config.monitor],
        config.early_stopping_patience, exp.workdir)
    state['epoch'].assign(epoch + 1)
    state['step_in_epoch'].assign(0)
    state['epoch_sums'].assign(np.zeros(3))
    exp.logger.flush()     # the epoch's logs complete with its checkpoint
    checkpoints.write_history(exp.workdir, self.history)
    checkpoints.save(self.manager, step, exp.workdir)
    for hook in self.hooks:
      hook(exp, 'epoch', record)
    if stop:
      state['epoch'].assign(config.epochs)
      checkpoints.save(self.manager, step + 1, exp.workdir)
    return stop

  def finish(self, status: str) -> Dict[str, Any]:
    """Best weights, final metrics, export, health report, metrics.json."""
    exp, result, trainer = self.exp, self.result, self.trainer
    exp.logger.flush()
    result.update(status=status, history=self.history,
                  wall_seconds=time.time() - self.started,
                  epochs_run=len(self.history))
    if status != 'interrupted':
      if self.has_val:
        result.update(checkpoints.best_of_run(
            self.state, self.best_manager, trainer.model, self.config.monitor,
            self.monitor_sign, self.config.restore_best_weights))
      result.update(experiment.final_metrics(exp, self.eval_ds))
      if exp.is_chief and self.config.export:
        result['export'] = export.export(
            trainer.model, exp.data_info, exp.workdir,
            None if exp.user_data else self.config.dataset)['dir']
      checkup.write_health(exp, result, self.live)
    for writer in exp.writers.values():
      writer.flush()
    workdir_lib.write_metrics(exp.workdir, result)
    return result
