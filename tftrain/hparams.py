"""TensorBoard HParams data for a group of runs (`tensorboard.plugins.hparams`).

Layout written for a grid in `root/`:
  root/                 hp.hparams_config: the hyperparameters and metrics to show
  root/<run>/           hp.hparams: this run's values, plus the scalars
                        `best_val_accuracy`, `best_val_loss`, `test_accuracy`
  root/<run>/validation epoch_accuracy / epoch_loss per epoch (written by loop)

so `tensorboard --logdir root` shows every run as one row of the HParams
dashboard, with the per-epoch validation curves under "validation".
"""

import numbers
import time
from typing import Any, Dict, Mapping, Optional, Sequence

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from tftrain import config as config_lib
from tftrain import summaries

# Scalars written next to the hp.hparams summary of each run.
RUN_METRICS = ('best_val_accuracy', 'best_val_loss', 'test_accuracy')

# Per-epoch scalars the loop writes under <run>/validation.
EPOCH_METRICS = ('epoch_accuracy', 'epoch_loss')


def _domain(values: Sequence[Any]):
  """The hp domain covering `values` (Discrete for strings/bools, else Real/Int)."""
  values = list(values)
  if all(isinstance(v, bool) for v in values):
    return hp.Discrete(sorted(set(values)))
  if all(isinstance(v, numbers.Integral) for v in values):
    return hp.IntInterval(int(min(values)), int(max(values)))
  if all(isinstance(v, numbers.Real) for v in values):
    return hp.RealInterval(float(min(values)), float(max(values)))
  return hp.Discrete(sorted({str(v) for v in values}))


def _value(value):
  if isinstance(value, (bool, numbers.Integral, numbers.Real)):
    return value
  return str(value)


def define_hparams(runs: Mapping[str, Mapping[str, Any]]) -> Dict[str, hp.HParam]:
  """One `hp.HParam` per name used by any run, its domain spanning the values.

  Args:
    runs: run name -> {hparam name: value}.

  Returns:
    hparam name -> hp.HParam.
  """
  names = sorted({name for values in runs.values() for name in values})
  return {name: hp.HParam(name, _domain(
      [values[name] for values in runs.values() if name in values]))
          for name in names}


def metrics() -> list:
  """The metrics the HParams dashboard shows for each run."""
  out = [hp.Metric(tag, display_name=tag.replace('_', ' '))
         for tag in RUN_METRICS]
  out += [hp.Metric(tag, group=summaries.VALIDATION,
                    display_name=f'last validation {tag[len("epoch_"):]}')
          for tag in EPOCH_METRICS]
  return out


def write_config(root: str, hparams: Mapping[str, hp.HParam]) -> None:
  """Writes the experiment's hp.hparams_config into `root`."""
  writer = tf.summary.create_file_writer(root)
  with writer.as_default():
    hp.hparams_config(hparams=list(hparams.values()), metrics=metrics())
  writer.flush()
  writer.close()


def write_run(run_dir: str, hparams: Mapping[str, hp.HParam],
              values: Mapping[str, Any], results: Mapping[str, float],
              start_time_secs: Optional[float] = None) -> None:
  """Writes one run's hyperparameter values and final metrics into `run_dir`.

  Args:
    run_dir: the run's directory (the one holding train/ and validation/).
    hparams: from `define_hparams`.
    values: this run's {hparam name: value}.
    results: {metric tag: value} for the tags in `RUN_METRICS` (missing
      ones are skipped).
    start_time_secs: when the run started (default: now).
  """
  writer = tf.summary.create_file_writer(run_dir)
  with writer.as_default(step=0):
    hp.hparams({hparams[k]: _value(v) for k, v in values.items()},
               trial_id=run_dir.rstrip('/').rsplit('/', 1)[-1],
               start_time_secs=start_time_secs or time.time())
    for tag in RUN_METRICS:
      if results.get(tag) is not None:
        tf.summary.scalar(tag, float(results[tag]))
  writer.flush()
  writer.close()


def config_hparams(config: config_lib.Config,
                   names: Sequence[str]) -> Dict[str, Any]:
  """The values of Config fields `names` (what varies across a grid)."""
  return {name: getattr(config, name) for name in names}
