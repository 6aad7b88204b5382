"""Checkpoints: save, restore, the best weights, resume, and a full disk.

A run's state is one `tf.train.Checkpoint` of model, optimizer and loop
state (`make_checkpoint`) under `<workdir>/checkpoints` (the latest 3), plus
the best epoch's weights under `<workdir>/best`. `save` turns a full disk into
a one-line `errors.DiskFullError` that keeps the previous checkpoint;
`user_error` maps the other run-time failures a user can fix (a lost worker,
a full disk, a damaged dataset) to one-line errors.
"""

import contextlib
import glob
import os
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tftrain import config as config_lib
from tftrain import distribute
from tftrain import errors
from tftrain import experiment as experiment_lib
from tftrain import workdir as workdir_lib


def make_checkpoint(exp: experiment_lib.Experiment):
  """(checkpoint, its manager, the best weights' manager, loop state variables)."""
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
  ckpt_dir = os.path.join(exp.workdir, workdir_lib.CHECKPOINTS)
  manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=3)
  best = tf.train.Checkpoint(model=exp.trainer.model)
  best_manager = tf.train.CheckpointManager(
      best, os.path.join(exp.workdir, workdir_lib.BEST), max_to_keep=1)
  return ckpt, manager, best_manager, state


def history_path(workdir: str) -> str:
  """`<workdir>/history.json`: the epoch records."""
  return os.path.join(workdir, workdir_lib.HISTORY_JSON)


def write_history(workdir: str, history: List[Dict[str, Any]]) -> None:
  """history.json: the epoch records, written just before each epoch's
  checkpoint (`resume` reads those its checkpoint has)."""
  workdir_lib.write_json(history_path(workdir), history, sort_keys=True)


def latest_checkpoint(workdir: str) -> Optional[str]:
  """The latest checkpoint of `workdir` (None if none or unreadable)."""
  try:
    return tf.train.latest_checkpoint(
        os.path.join(workdir, workdir_lib.CHECKPOINTS))
  except (OSError, tf.errors.OpError, ValueError):
    return None


def disk_full_error(workdir: str, error: BaseException, what: str
                    ) -> errors.DiskFullError:
  """The one-line DiskFullError for `error`, raised while writing `what`."""
  latest = latest_checkpoint(workdir)
  kept = (f'the last checkpoint ({os.path.basename(latest)}) is kept'
          if latest else 'no checkpoint was written yet')
  detail = errors.first_line(error)
  detail = re.sub(r'\{\{[^}]*\}\}\s*', '', detail)   # TF's op-name prefix
  return errors.DiskFullError(
      f'--workdir={workdir}: no space left on the device while writing '
      f'{what} ({type(error).__name__}: {detail[:200]}); {kept}; free space '
      'and rerun the same command to resume.')


def user_error(config: config_lib.Config, workdir: str,
               error: BaseException) -> Optional[Exception]:
  """The one-line user error for a lost worker, a full disk or damaged data."""
  if config.strategy == 'multi_worker' and distribute.is_peer_error(error):
    return distribute.lost_peer_error(error, latest_checkpoint(workdir))
  if (isinstance(error, (OSError, tf.errors.OpError))
      and workdir_lib.is_disk_full(error)):
    return disk_full_error(workdir, error, 'the run\'s files')
  if isinstance(error, tf.errors.DataLossError):
    # Damaged in place (same size, bad CRC): found only when read.
    detail = errors.first_line(error, default='')
    return errors.DataError(
        f'dataset {config.dataset}: a prepared file is damaged '
        f'({detail[:200]}); delete the {config.dataset} folder in --data_dir '
        f'and rerun to prepare it again; then rerun this command to resume.')
  return None


@contextlib.contextmanager
def user_errors(config: config_lib.Config, workdir: Callable[[], str]):
  """Turns what `user_error` recognizes into its one-line error (`workdir()`:
  the folder the run's checkpoints are in, asked only then)."""
  try:
    yield
  except errors.WorkdirError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    mapped = user_error(config, workdir(), e)
    if mapped is None:
      raise
    raise mapped from e


def save(manager, number, workdir: str, what: str = 'a checkpoint') -> None:
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
    _remove_partial(prefix, manager.latest_checkpoint)
    raise disk_full_error(
        workdir, e, f'{what} {os.path.basename(prefix)} in '
        f'{manager.directory}') from e


def _remove_partial(prefix: str, latest: Optional[str]) -> None:
  """Deletes the files of the checkpoint `prefix` (never `latest`'s)."""
  try:
    paths = tf.io.gfile.glob(glob.escape(prefix) + '[._]*')
  except tf.errors.OpError:
    paths = []
  for path in paths:
    if latest is None or not path.startswith(latest + '.'):
      workdir_lib.remove_tree(path)


def restore(ckpt, manager) -> bool:
  """Restores `manager`'s latest checkpoint into `ckpt`; False if there is none.

  Raises:
    errors.CheckpointError: checkpoint files without a readable index, or a
      checkpoint that does not match the model and optimizer.
  """
  path = manager.latest_checkpoint
  if path is None:
    if tf.io.gfile.isdir(manager.directory) and any(
        n.startswith('ckpt') for n in tf.io.gfile.listdir(manager.directory)):
      raise errors.CheckpointError(
          f'{manager.directory} holds checkpoint files but no readable '
          "'checkpoint' index; nothing was changed: start fresh with a new "
          f'--workdir (or move {os.path.dirname(manager.directory)} away).')
    return False
  try:
    ckpt.restore(path).assert_existing_objects_matched()
  except Exception as e:  # pylint: disable=broad-except
    raise errors.CheckpointError(
        f'cannot restore {path} ({type(e).__name__}): it is corrupt or was '
        'written with other model/optimizer flags; nothing was changed: rerun '
        "with that run's flags, or start fresh with a new --workdir (or move "
        f'{os.path.dirname(manager.directory)} away).') from e
  return True


def keep_best(state, best_manager, epoch: int, value: float, patience: int,
              workdir: str) -> bool:
  """Saves the best weights when `value` (the monitored metric, larger is
  better) improved after `epoch`; True when early stopping should stop now
  (no improvement for `patience` epochs; 0: never)."""
  if value > float(state['best'].numpy()):
    state['best'].assign(value)
    state['best_epoch'].assign(epoch + 1)
    state['wait'].assign(0)
    save(best_manager, epoch + 1, workdir, 'the best weights')
    return False
  state['wait'].assign_add(1)
  return bool(patience and int(state['wait'].numpy()) >= patience)


def save_position(state, manager, optimizer, step_in_epoch: int, sums,
                  workdir: str) -> None:
  """Checkpoints a run stopped midway through an epoch: its position in the
  epoch and the epoch's sums so far, so a resume continues from there."""
  state['step_in_epoch'].assign(step_in_epoch)
  state['epoch_sums'].assign(sums)
  save(manager, optimizer.iterations, workdir)


def best_of_run(state, best_manager, model, monitor: str, sign: float,
                restore: bool) -> Dict[str, Any]:
  """The best epoch and its monitored value ({} when none was saved); with
  `restore` (restore-best-weights), `model` gets the best weights back, so
  the model evaluated on test is the best one (1cycle keeps its last,
  annealed weights)."""
  if not best_manager.latest_checkpoint:
    return {}
  if restore:
    restore_best(model, best_manager)
  return {'best_epoch': int(state['best_epoch'].numpy()),
          'best_' + monitor: sign * float(state['best'].numpy()),
          'restored_best_weights': restore}


def restore_best(model, best_manager) -> None:
  """Restores the best epoch's weights into `model`."""
  tf.train.Checkpoint(model=model).restore(
      best_manager.latest_checkpoint).expect_partial()


def resume_dir(exp: experiment_lib.Experiment) -> str:
  """The run directory every worker resumes from: the chief's when visible."""
  if exp.is_chief:
    return exp.workdir
  workdir = exp.workdir.rstrip('/')
  chief_dir = os.path.dirname(os.path.abspath(workdir)
                              if workdir_lib.is_local(workdir) else workdir)
  if tf.io.gfile.isdir(os.path.join(chief_dir, workdir_lib.CHECKPOINTS)):
    return chief_dir
  return exp.workdir


def resume(exp: experiment_lib.Experiment, ckpt, manager, state
           ) -> Tuple[Any, bool, List[Dict[str, Any]]]:
  """Restores the latest checkpoint and the history of its epochs, if any.

  Every worker resumes from the chief's checkpoint when it can see the
  chief's workdir (a shared filesystem, as the README asks): a non-chief's
  own copies are scratch (its saves are its part of the collective save)
  and may be a step behind, or half-written when it was killed.

  Args:
    exp: the Experiment.
    ckpt, manager, state: `make_checkpoint`'s checkpoint, its manager and
      the loop state it holds.

  Returns:
    (the manager to save with from now on, whether a checkpoint was restored,
    the restored epochs' records).

  Raises:
    errors.CheckpointError: the checkpoint or history.json cannot be read.
  """
  source_dir, restore_from = resume_dir(exp), manager
  if source_dir != exp.workdir:
    workdir_lib.remove_tree(manager.directory)
    manager = tf.train.CheckpointManager(ckpt, manager.directory,
                                         max_to_keep=3)
    restore_from = tf.train.CheckpointManager(
        ckpt, os.path.join(source_dir, workdir_lib.CHECKPOINTS),
        max_to_keep=None)
  if restore_from.latest_checkpoint is not None:
    exp.trainer.idle.settle()   # idle work reading the initial weights first
  resumed = restore(ckpt, restore_from)
  history = []
  path = history_path(source_dir)
  if resumed and tf.io.gfile.exists(path):
    try:
      # history.json is written just before each epoch checkpoint: a run
      # that stopped between the two has one record more than its
      # checkpoint.
      history = workdir_lib.read_json(path)[:int(state['epoch'].numpy())]
    except (OSError, ValueError, TypeError, tf.errors.OpError) as e:
      raise errors.CheckpointError(
          f'{path} cannot be read ({type(e).__name__}); nothing was changed: '
          'restore it, or start fresh with a new --workdir.') from e
  return manager, resumed, history
