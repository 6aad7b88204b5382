"""The errors a user can cause (bad flag, missing data, busy workdir, ...).

Launchers print these as one line; anything else is a bug and keeps its
traceback.
"""

from tftrain import config
from tftrain import data
from tftrain import distribute
from tftrain import loop
from tftrain import lr_finder
from tftrain import trainer
from tftrain import workdir

USER_ERRORS = (config.ConfigError, data.DataError, workdir.WorkdirError,
               trainer.NonFiniteError, loop.CheckpointError,
               distribute.WorkerLostError, lr_finder.Interrupted)

# Errors raised before a run starts: the run directory they may have left
# (a launcher that creates its folders early) holds nothing of value.
START_ERRORS = (config.ConfigError, data.DataError)

EXIT_INTERRUPTED = 130


def exit_code(error: BaseException) -> int:
  """2 for a bad flag, 130 for an interruption, 1 for every other user error."""
  if isinstance(error, config.ConfigError):
    return 2
  if isinstance(error, lr_finder.Interrupted):
    return EXIT_INTERRUPTED
  return 1
