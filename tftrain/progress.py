"""Training progress: the Keras bar on a terminal, else quiet log lines.

The lines go through `say`: absl's INFO log under a launcher (app.run installs
absl's handler), else `print`, so a notebook or a plain script sees one line
per epoch without any logging set-up.
"""

import os
import sys
import time
from typing import Optional

from absl import logging
import tensorflow as tf

from tftrain import config as config_lib

PROGRESS_LOG_SECONDS = 60.0   # without a terminal: one progress line at most this often


def absl_logging_active() -> bool:
  """Whether absl's log handler is installed (app.run does it)."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top
  return logging.get_absl_handler() in std_logging.getLogger().handlers


def say(message: str, *args) -> None:
  """One line for the user: absl INFO under an absl app (shown at its
  verbosity: the launchers' is INFO), else printed (a notebook, a script or a
  test sees it without logging set-up)."""
  text = message % args if args else message
  if absl_logging_active():
    logging.info('%s', text)
  else:
    print(text, flush=True)


def is_terminal() -> bool:
  """Whether stdout is a terminal (the bar is drawn only there)."""
  try:
    return sys.stdout.isatty()
  except (AttributeError, ValueError):
    return False


def format_seconds(seconds: float) -> str:
  """E.g. '45s', '3m07s', '2h05m'."""
  seconds = int(round(max(seconds, 0.0)))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f'{hours}h{minutes:02d}m'
  return f'{minutes}m{secs:02d}s' if minutes else f'{secs}s'


class Progress:
  """Training progress: the Keras bar on a terminal, else quiet log lines.

  Without a terminal (CI, nohup, cluster logs) each bar update would be a new
  line; instead one line per epoch (`run` logs it) and, within a long epoch,
  one line at most every `log_seconds`, each with the step, loss, accuracy,
  examples/s and an ETA of the remaining training steps.
  """

  def __init__(self, config: config_lib.Config, steps_per_epoch: int,
               log_seconds: float = PROGRESS_LOG_SECONDS):
    self.bar_enabled = config.progress and is_terminal()
    self.epochs = config.epochs
    self.steps_per_epoch = steps_per_epoch
    self.log_seconds = log_seconds
    self.train_seconds = 0.0     # in this process: for the ETA
    self.steps_done = 0
    self.speed = 0.0             # examples/s of the last call that ran only
    self.bar = None
    self.epoch = 0
    self._last_log = time.time()

  def start_epoch(self, epoch: int, step_in_epoch: int) -> None:
    self.epoch = epoch
    if self.bar_enabled:
      self.bar = tf.keras.utils.Progbar(
          self.steps_per_epoch, stateful_metrics=['loss', 'accuracy', 'ex/s'],
          verbose=1, unit_name='step')
      self.bar.update(step_in_epoch)

  def eta_seconds(self, step_in_epoch: int) -> Optional[float]:
    if not self.steps_done:
      return None
    left = ((self.epochs - self.epoch - 1) * self.steps_per_epoch
            + self.steps_per_epoch - step_in_epoch)
    return left * self.train_seconds / self.steps_done

  def eta(self, step_in_epoch: int) -> str:
    seconds = self.eta_seconds(step_in_epoch)
    return '?' if seconds is None else format_seconds(seconds)

  def update(self, step_in_epoch: int, steps: int, seconds: float, sums,
             speed: Optional[float], global_step: int) -> None:
    """After a compiled call; `speed` None: the call compiled (its time is
    left out of the speed and the ETA, which then shows the last speed)."""
    if speed is not None:
      self.steps_done += steps
      self.train_seconds += seconds
      self.speed = speed
    speed = self.speed
    loss, accuracy = sums[0] / sums[2], sums[1] / sums[2]
    if self.bar is not None:
      self.bar.update(step_in_epoch, [('loss', loss), ('accuracy', accuracy),
                                      ('ex/s', speed)])
      return
    now = time.time()
    if (now - self._last_log >= self.log_seconds
        and step_in_epoch < self.steps_per_epoch):
      self._last_log = now
      say('progress: epoch %d step %d/%d (global step %d) loss=%.4f '
          'accuracy=%.4f examples/s=%.0f eta %s', self.epoch + 1,
          step_in_epoch, self.steps_per_epoch, global_step, loss, accuracy,
          speed, self.eta(step_in_epoch))

  def end_epoch(self, record, global_step: int,
                examples_per_second: float) -> None:
    """Logs the epoch's one line: its record, throughput and ETA."""
    say('epoch %d/%d step %d %s examples/s=%.0f eta %s', record['epoch'],
        self.epochs, global_step,
        ' '.join(f'{k}={v:.4f}' for k, v in record.items() if k != 'epoch'),
        examples_per_second, self.eta(self.steps_per_epoch))
    self._last_log = time.time()

  @staticmethod
  def first_call_done(steps: int) -> None:
    """Logs how long the start took (up to the first compiled call's end)."""
    say('first training loop done: %d steps, %.1f s after launch', steps,
        seconds_since_launch())


def seconds_since_launch() -> float:
  """Seconds since this process started (Linux /proc; else since import)."""
  try:
    with open('/proc/self/stat') as f:
      start_ticks = float(f.read().rpartition(')')[2].split()[19])
    with open('/proc/uptime') as f:
      uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError):
    return time.time() - _IMPORTED


_IMPORTED = time.time()

