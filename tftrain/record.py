"""What a run records about itself: its config, its flags, its HParams.

Every run writes, in its run directory, `config.json` (the resolved Config,
`dataclasses.asdict`) and `flags.txt` (one `--name=value` per Config field,
replayable with `--flagfile`), and once per run an HParams session (all
Config fields) so TensorBoard's HParams tab compares any runs under one
logdir. A resume compares the Config with config.json (`check_resume`), and a
finished run returns its metrics (`completed_metrics`) instead of training 0
epochs again.
"""

import dataclasses
import datetime
import numbers
import os
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

import tftrain
from tftrain import config as config_lib
from tftrain import errors
from tftrain import export
from tftrain import progress as progress_lib
from tftrain import summaries
from tftrain import workdir as workdir_lib


def config_dict(config: config_lib.Config) -> Dict[str, Any]:
  """The Config as config.json holds it (tuples as lists)."""
  return dataclasses.asdict(config)


def read_config(workdir: str) -> Optional[Dict[str, Any]]:
  """The saved config.json of `workdir` (None: none, or unreadable)."""
  path = os.path.join(workdir, workdir_lib.CONFIG_JSON)
  try:
    return workdir_lib.read_json(path)
  except (OSError, ValueError, tf.errors.OpError):
    return None


# Not replayed: a flag file replays the training, not a deletion.
NOT_REPLAYED = ('overwrite',)


def flag_lines(config: config_lib.Config) -> List[str]:
  """`--name=value` for every Config field `config_lib.format_field` can
  spell (an Optional number left at None is a comment: its default)."""
  lines = []
  for field in dataclasses.fields(config):
    if field.name in NOT_REPLAYED:
      continue
    text = config_lib.format_field(field.name, getattr(config, field.name))
    lines.append(f'# --{field.name}: none (its default)' if text is None
                 else f'--{field.name}={text}')
  return lines


def flags_text(config: config_lib.Config, workdir: str,
               python_objects: bool = False) -> str:
  """flags.txt: a header, then `flag_lines`."""
  header = [
      f'# The Config of the run in {workdir} (tftrain {tftrain.__version__}).',
      '# Replay it: python -m launch.mnist --flagfile=flags.txt '
      '--workdir=<a new run directory>',
      '# (every field is given, so any training launcher gives the same '
      'Config; --overwrite is not replayed).']
  if python_objects:
    header.append('# This run was given its model or datasets from Python: '
                  'the flags replay only the Config.')
  return '\n'.join(header + flag_lines(config)) + '\n'


def hparam_value(value):
  """A Config value as an HParams value (numbers and bools as they are,
  anything else as text, as `grid` writes them)."""
  return value if isinstance(value, numbers.Real) else str(value)


def write_hparams(workdir: str, config: config_lib.Config,
                  start_time_secs: float) -> None:
  """The run's HParams session (every Config field) in `workdir`."""
  writer = tf.summary.create_file_writer(workdir)
  with writer.as_default(step=0):
    hp.hparams({k: hparam_value(v) for k, v in config_dict(config).items()},
               trial_id=os.path.basename(workdir.rstrip('/')),
               start_time_secs=start_time_secs)
  writer.close()


def write_run_files(config: config_lib.Config, workdir: str, new_run: bool,
                    start_time_secs: float, python_objects: bool = False
                    ) -> None:
  """config.json and flags.txt (every start: a resume may change logging);
  the HParams session once, on a run's first start."""
  workdir_lib.write_json(os.path.join(workdir, workdir_lib.CONFIG_JSON),
                         config_dict(config))
  workdir_lib.write_text(os.path.join(workdir, workdir_lib.FLAGS_TXT),
                         flags_text(config, workdir, python_objects))
  if new_run:
    write_hparams(workdir, config, start_time_secs)


def record_run(exp, workdir: str, new_run: bool, started: float,
               custom: bool) -> None:
  """config.json, flags.txt, and a new run's HParams and chart layout."""
  write_run_files(exp.config, workdir, new_run, started, custom)
  if new_run:
    summaries.write_layout(exp.writers[summaries.TRAIN])


def config_from_json(saved: Dict[str, Any]) -> Dict[str, Any]:
  """config.json's values with JSON lists back as tuples (Config's types)."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}



def _text(value) -> str:
  if isinstance(value, (tuple, list)):
    return ','.join(map(str, value))
  return str(value)


def check_resume(config: config_lib.Config, workdir: str,
                 saved: Dict[str, Any]) -> List[str]:
  """Compares `config` with the run's saved config.json before a resume.

  Returns:
    A line per allowed change (`config_lib.RESUME_SAFE_FIELDS`, and `epochs`
    unless the schedule spans the run), for the caller to show.

  Raises:
    errors.ConfigMismatchError: a field that changes the training differs,
      naming every such field with both values.
  """
  saved = config_from_json(saved)
  given = config_dict(config)
  changed = [(k, saved[k], v) for k, v in given.items()
             if k in saved and saved[k] != v]
  refused, notes = [], []
  for name, old, new in changed:
    if name in config_lib.RESUME_SAFE_FIELDS:
      notes.append(f'{workdir}: {name} {_text(old)} -> {_text(new)}: it '
                   'changes what the run logs or how it runs, not what it '
                   'trains; resuming with it.')
    elif name == 'epochs' and config.lr_schedule != 'onecycle':
      notes.append(f'{workdir}: epochs {old} -> {new}: the run continues '
                   f'to epoch {new} (its --schedule={config.lr_schedule} '
                   'does not depend on the run\'s length).')
    else:
      refused.append((name, old, new))
  if refused:
    raise errors.ConfigMismatchError(workdir, refused)
  return notes


COMPLETE = ('completed', 'early_stopped')


def completed_metrics(config: config_lib.Config, workdir: str
                      ) -> Optional[Tuple[Dict[str, Any], str]]:
  """(metrics.json, its date) when the run in `workdir` is finished for
  `config` (completed all of `config.epochs`, or stopped early); else None."""
  path = os.path.join(workdir, workdir_lib.METRICS_JSON)
  try:
    metrics = workdir_lib.read_json(path)
    mtime = tf.io.gfile.stat(path).mtime_nsec / 1e9
  except (OSError, ValueError, tf.errors.OpError):
    return None
  status = metrics.get('status') if isinstance(metrics, dict) else None
  if status not in COMPLETE or (
      status == 'completed' and metrics.get('epochs_run', 0) < config.epochs):
    return None
  return metrics, datetime.datetime.fromtimestamp(mtime).strftime(
      '%Y-%m-%d %H:%M:%S')


def prior_run(config: config_lib.Config, workdir: str, chief: bool
              ) -> Tuple[Optional[Dict[str, Any]], Optional['Result']]:
  """What `workdir` already holds, before a run starts there.

  Returns:
    (the saved config.json or None for a new run, and the finished run's
    `Result` when it is already complete for `config`, else None). With
    `config.overwrite` an old run is moved aside first (said), and the run
    is new.

  Raises:
    errors.ConfigMismatchError: the workdir holds a run trained with other
      settings (`check_resume`).
  """
  saved_config = read_config(workdir)
  if config.overwrite and chief:
    moved = workdir_lib.move_aside(workdir)
    if moved:
      progress_lib.say('%s: overwrite: the old run was moved to %s; '
                       'starting fresh.', workdir, moved)
    return None, None
  if saved_config is None:
    return None, None
  for note in check_resume(config, workdir, saved_config):
    progress_lib.say(note)
  done = completed_metrics(config, workdir)
  if done is None:
    return saved_config, None
  metrics, date = done
  progress_lib.say(
      '%s: already complete (metrics from %s); returning them. To train '
      'again: a new workdir, or overwrite (--overwrite, '
      'Config(overwrite=True)) to start fresh.', workdir, date)
  return saved_config, Result(dict(metrics, already_complete=True),
                              model_path=export.keras_path(workdir))


class Result(dict):
  """`train_and_evaluate`'s result: the metrics dict metrics.json holds (it
  reads and JSON-serializes as before), plus `.model`, the trained Keras
  model (for a run that was already complete, loaded from its
  export/model.keras on first use; None if it has none)."""

  def __init__(self, metrics=(), model=None, model_path: Optional[str] = None):
    super().__init__(metrics)
    self._model = model
    self._model_path = model_path

  @property
  def model(self):
    if self._model is None and self._model_path:
      if tf.io.gfile.exists(self._model_path):
        self._model = tf.keras.models.load_model(self._model_path)
      self._model_path = None
    return self._model

  def __reduce__(self):     # pickles and copies as the metrics alone
    return (Result, (dict(self),))
