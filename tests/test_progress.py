"""Training progress: a bar on a terminal, else throttled log lines."""

import logging

import numpy as np

from tftrain import config as config_lib
from tftrain import progress


def test_progress_bar_on_a_terminal_else_throttled_log_lines(monkeypatch,
                                                            caplog):
  # Under a launcher (absl's handler installed): absl INFO lines.
  monkeypatch.setattr(progress, 'absl_logging_active', lambda: True)
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


def test_without_absl_set_up_the_lines_are_printed(capsys):
  """A notebook or a script has no absl handler: the lines are printed."""
  assert not progress.absl_logging_active()
  config = config_lib.Config(epochs=2)
  p = progress.Progress(config, steps_per_epoch=10)
  p.end_epoch({'epoch': 1, 'loss': 0.5, 'accuracy': 0.75}, 10, 100.0)
  out = capsys.readouterr().out
  assert out.startswith('epoch 1/2 step 10 loss=0.5000 accuracy=0.7500 ')
  assert out.count('\n') == 1


def test_a_compiling_call_is_left_out_of_the_speed_and_eta(monkeypatch,
                                                          caplog):
  monkeypatch.setattr(progress, 'absl_logging_active', lambda: True)
  monkeypatch.setattr(progress, 'is_terminal', lambda: False)
  sums = np.array([5.0, 4.0, 10.0])
  p = progress.Progress(config_lib.Config(epochs=1), steps_per_epoch=20,
                        log_seconds=0.0)
  p.start_epoch(0, 0)
  with caplog.at_level(logging.INFO, logger='absl'):
    p.update(4, 4, 0.4, sums, 320.0, 4)       # 0.1 s per step
    p.update(5, 1, 30.0, sums, None, 5)       # compiled the observed step
  lines = [r.getMessage() for r in caplog.records if 'progress:' in r.getMessage()]
  assert p.steps_done == 4 and p.train_seconds == 0.4
  # 15 steps left at 0.1 s each (1.5 s: '2s'); the last speed, not 1/30.
  assert lines[-1].endswith('examples/s=320 eta 2s')
