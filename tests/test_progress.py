"""Training progress: a bar on a terminal, else throttled log lines."""

import logging

import numpy as np

from tftrain import config as config_lib
from tftrain import progress


def test_progress_bar_on_a_terminal_else_throttled_log_lines(monkeypatch,
                                                            caplog):
  config = config_lib.Config(epochs=2)
  sums = np.array([5.0, 4.0, 10.0])            # loss sum, correct, count
  monkeypatch.setattr(progress, 'is_terminal', lambda: False)
  quiet = progress.Progress(config, steps_per_epoch=10, log_seconds=3600)
  quiet.start_epoch(0, 0)
  assert quiet.bar is None
  every = progress.Progress(config, steps_per_epoch=10, log_seconds=0.0)
  every.start_epoch(0, 0)
  with caplog.at_level(logging.INFO, logger='absl'):
    quiet.update(5, 5, 1.0, sums, 10.0, 5)
    every.update(5, 5, 1.0, sums, 10.0, 5)
  lines = [r.getMessage() for r in caplog.records if 'progress:' in r.getMessage()]
  # 15 steps left (5 of epoch 1, 10 of epoch 2) at 0.2 s per step.
  assert lines == ['progress: epoch 1 step 5/10 (global step 5) loss=0.5000 '
                   'accuracy=0.4000 examples/s=10 eta 3s']
  monkeypatch.setattr(progress, 'is_terminal', lambda: True)
  bar = progress.Progress(config, steps_per_epoch=10)
  bar.start_epoch(0, 0)
  assert bar.bar is not None
  assert progress.Progress(config.replace(progress=False), 10).bar_enabled is False
