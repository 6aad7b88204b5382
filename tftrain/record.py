"""What a run records about itself: its config, its flags, its HParams.

Every run writes, in its run directory, `config.json` (the resolved Config,
`dataclasses.asdict`) and `flags.txt` (one `--name=value` per Config field,
replayable with `--flagfile`), and once per run an HParams session (all
Config fields) so TensorBoard's HParams tab compares any runs under one
logdir. `read_config` is what a resume compares against.
"""

import dataclasses
import numbers
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

import tftrain
from tftrain import config as config_lib
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


def config_from_json(saved: Dict[str, Any]) -> Dict[str, Any]:
  """config.json's values with JSON lists back as tuples (Config's types)."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}

