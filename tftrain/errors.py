"""The errors a user can cause (bad flag, missing data, busy workdir, ...).

Every one of them is defined here; launchers print them as one line
(`first_line`) with the exit status `exit_code`, and anything else is a bug
and keeps its traceback. Imports nothing from tftrain and not TensorFlow, so a
launcher can report a bad flag without TensorFlow's start-up cost.
"""

from typing import Optional


class ConfigError(ValueError):
  """A bad configuration value; `field` is the flag/field to fix."""

  def __init__(self, field: str, value, fix: str):
    self.field = field
    self.value = value
    super().__init__(f'--{field}={value!s}: {fix}')


class DataError(RuntimeError):
  """Data cannot be found or prepared; the message says what to do."""


class WorkdirError(RuntimeError):
  """The workdir cannot be used; the message says why and what to do."""


class DiskFullError(WorkdirError):
  """A write in the workdir failed for lack of space; the run stopped."""


class CheckpointError(RuntimeError):
  """The latest checkpoint cannot be read; the message says how to start fresh."""


class NonFiniteError(RuntimeError):
  """The loss or a gradient became NaN/Inf; `step` is the global step."""

  def __init__(self, step: int, loss: float):
    self.step = step
    self.loss = loss
    super().__init__(f'non-finite loss or gradient at step {step} '
                     f'(loss={loss}); lower --learning_rate or check the data.')


class WorkerLostError(RuntimeError):
  """Another worker of a multi-worker run is gone; the message says what to do."""


class Interrupted(RuntimeError):
  """A signal stopped the LR finder's sweep; the model is restored, nothing
  was written."""

  def __init__(self, steps_done: int, planned_steps: int,
               outdir: Optional[str] = None):
    self.steps_done = steps_done
    self.planned_steps = planned_steps
    self.outdir = outdir
    where = f'; nothing was written to {outdir}' if outdir else ''
    super().__init__(
        f'interrupted during the LR finder (sweep step {steps_done} of '
        f'{planned_steps}){where}; rerun the same command to run it again.')


USER_ERRORS = (ConfigError, DataError, WorkdirError, NonFiniteError,
               CheckpointError, WorkerLostError, Interrupted)

# Errors raised before a run starts: the run directory they may have left
# (a launcher that creates its folders early) holds nothing of value.
START_ERRORS = (ConfigError, DataError)

EXIT_INTERRUPTED = 130


def exit_code(error: BaseException) -> int:
  """2 for a bad flag, 130 for an interruption, 1 for every other user error."""
  if isinstance(error, ConfigError):
    return 2
  if isinstance(error, Interrupted):
    return EXIT_INTERRUPTED
  return 1


def first_line(error: BaseException, default: Optional[str] = None) -> str:
  """The first line of `error`'s message (TensorFlow's run on for pages).

  Args:
    error: any exception.
    default: what an empty message gives (None: the error's type name).
  """
  text = str(error)
  if text:
    return text.splitlines()[0]
  return type(error).__name__ if default is None else default
