"""SIGINT/SIGTERM guard: the first signal asks for a clean stop, a second exits.

Used by the training loop (checkpoint, then stop) and the LR finder (restore
the model, write nothing, raise `errors.Interrupted`).
"""

import os
import signal
import threading

from absl import logging


class SignalGuard:
  """First SIGINT/SIGTERM asks the loop to checkpoint and stop; a second exits.

  Guards nest: an inner guard (e.g. the LR finder's, inside `run`) shares the
  outermost one's state and handlers, so a signal is never lost between them.
  """

  _active = None    # the guard whose handlers are installed

  def __init__(self):
    self._signum = None
    self._outer = None
    self._previous = {}

  @property
  def signum(self):
    """The first signal received (None if none)."""
    return self._outer.signum if self._outer is not None else self._signum

  def __enter__(self):
    if SignalGuard._active is not None:
      self._outer = SignalGuard._active
    elif threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._previous[sig] = signal.signal(sig, self._handle)
      SignalGuard._active = self
    return self

  def _handle(self, signum, frame):
    del frame
    if self._signum is not None:
      os._exit(128 + signum)   # second signal: exit at once
    self._signum = signum
    logging.warning('Signal %d: stopping cleanly at the next safe point '
                    '(training checkpoints first); send it again to exit at '
                    'once.', signum)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
    if SignalGuard._active is self:
      SignalGuard._active = None
