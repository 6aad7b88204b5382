"""chunks: compiled calls that end on --steps_per_loop multiples, at the
observed steps and at a profile window's edges."""

import numpy as np
import pytest

from tests.test_trainer import BATCH, distributed_iterator, make_data, make_trainer
from tftrain import chunks
from tftrain import config as config_lib
from tftrain import summaries


def test_profile_window_cuts_the_calls_at_its_steps():
  window = chunks.ProfileWindow((5, 7), '/tmp/unused')
  lengths, step = [], 0
  while step < 20:
    n = chunks.call_length(step, 20 - step, 8, breaks=window.breaks)
    lengths.append(n)
    step += n
  assert lengths == [4, 3, 1, 8, 4]       # steps 1-4 | 5-7 | 8 | 9-16 | 17-20
  with pytest.raises(config_lib.ConfigError, match='give START,END'):
    config_lib.Config(profile_steps=(7, 5))


def test_calls_end_on_steps_per_loop_multiples_and_run_every_step():
  trainer = make_trainer()
  images, labels = make_data(n=12 * BATCH)
  iterator = distributed_iterator(trainer, images, labels)
  trainer.train_steps(iterator, 1)           # global step 1: off the grid
  outs = [out for out, _ in chunks.calls(trainer, iterator, 10, 4)]
  assert [o['steps_run'] for o in outs] == [3, 4, 3]   # to steps 4, 8, 11
  assert [o['step'] for o in outs] == [4, 8, 11]
  assert int(trainer.optimizer.iterations.numpy()) == 11
  assert sum(len(o['losses']) for o in outs) == 10
  assert sum(o['count'] for o in outs) == 10 * BATCH
  assert all(np.isfinite(o['losses']).all() for o in outs)


def test_run_steps_observes_the_loggers_steps():
  trainer = make_trainer()
  images, labels = make_data(n=7 * BATCH)
  iterator = distributed_iterator(trainer, images, labels)
  logger = summaries.StepLogger(None, trainer.layer_names, 3, 0, True)
  out = chunks.run_steps(trainer, iterator, 7, logger)
  assert out['steps_run'] == 7 and out['step'] == 7 and len(out['losses']) == 7
  # The last observed step is step 6; its loss is that step's loss.
  assert out['observation']['grad_norms'].shape == (len(trainer.layer_names),)
  assert float(out['observation']['loss']) == pytest.approx(
      float(out['losses'][5]), rel=1e-5)
  assert int(trainer.optimizer.iterations.numpy()) == 7


def test_calls_say_which_ones_compiled():
  trainer = make_trainer()
  images, labels = make_data(n=12 * BATCH)
  iterator = distributed_iterator(trainer, images, labels)
  logger = summaries.StepLogger(None, trainer.layer_names, 6, 0, True)
  compiled = [out['compiled'] for out, _ in
              chunks.calls(trainer, iterator, 12, 3, logger)]
  # The stretch holds observed steps: its first call traces the observing
  # loop, which the rest reuse (the one compiled loop of the run).
  assert compiled == [True, False, False, False]
  assert list(trainer._train_loops) == [(iterator.chunk_steps, False)]
  # A stretch with no observed step compiles the plain loop.
  fresh = make_trainer()
  feed = distributed_iterator(fresh, images, labels)
  list(chunks.calls(fresh, feed, 5, 3, logger))       # observes at step 6
  assert list(fresh._train_loops) == [(feed.chunk_steps, None)]


def test_a_run_with_histograms_compiles_one_observed_step():
  trainer = make_trainer()
  images, labels = make_data(n=12 * BATCH)
  iterator = distributed_iterator(trainer, images, labels)
  logger = summaries.StepLogger(None, trainer.layer_names, 2, 4, True)
  observations = []
  for _ in range(3):          # observed at 2 (norms only) and 4 (histograms)
    out = chunks.run_steps(trainer, iterator, 2, logger)
    observations.append(out['observation'])
  assert list(trainer._train_loops) == [(iterator.chunk_steps, True)]
  assert 'grads' not in observations[0] and 'grads' not in observations[2]
  assert len(observations[1]['grads']) == len(trainer.layer_names)
  assert observations[0]['grad_norms'].shape == (len(trainer.layer_names),)
