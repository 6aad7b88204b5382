"""The errors a user can cause (bad flag, missing data, busy workdir, ...).

Launchers print these as one line; anything else is a bug and keeps its
traceback.
"""

from tftrain import config
from tftrain import data
from tftrain import loop
from tftrain import trainer
from tftrain import workdir

USER_ERRORS = (config.ConfigError, data.DataError, workdir.WorkdirError,
               trainer.NonFiniteError, loop.CheckpointError)
