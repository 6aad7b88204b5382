"""SIGINT/SIGTERM guard: the first signal asks for a clean stop, a second
interrupts at once.

Used by the training loop (checkpoint, then stop) and the LR finder (restore
the model, write nothing, raise `errors.Interrupted`). The second signal
raises KeyboardInterrupt: a notebook's kernel survives it. Only launchers end
the process at once (`SignalGuard.on_second_signal`, set by launch/flags.py).
"""

import signal
import threading

from absl import logging


class SignalGuard:
  """First SIGINT/SIGTERM asks the loop to checkpoint and stop; a second one
  calls `on_second_signal(signum)` if set (a launcher exits there), else
  raises KeyboardInterrupt.

  Guards nest: an inner guard (e.g. the LR finder's, inside `run`) shares the
  outermost one's state and handlers, so a signal is never lost between them.
  """

  _active = None    # the guard whose handlers are installed
  # What a second signal does before KeyboardInterrupt is raised; launchers
  # set it to end the process at once. The library never exits.
  on_second_signal = None

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
    if self._signum is not None:     # second signal: stop at once
      if SignalGuard.on_second_signal is not None:
        SignalGuard.on_second_signal(signum)  # pylint: disable=not-callable
      raise KeyboardInterrupt(f'signal {signum} received twice')
    self._signum = signum
    logging.warning('Signal %d: stopping cleanly at the next safe point '
                    '(training checkpoints first); send it again to stop at '
                    'once.', signum)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
    if SignalGuard._active is self:
      SignalGuard._active = None
