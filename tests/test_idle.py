"""Idle work (`idle.IdleWork`): Python work run in a thread while the run
waits for its data or a first call's compile, done before training writes the
variables; the DepthProbe's start record taken that way equals a plain one."""

import threading
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from tftrain import idle
from tftrain import probes
from tests.test_trainer import (BATCH, distributed_iterator, make_data,
                                make_trainer, tape_norms)


def test_a_job_runs_in_a_thread_once_started_else_in_wait():
  work = idle.IdleWork()
  threads = []
  started = work.add(lambda: threads.append(threading.current_thread().name))
  assert bool(work)
  work.start()
  started.wait()
  never = work.add(lambda: threads.append(threading.current_thread().name))
  never.wait()          # not started: runs here
  never.wait()          # once only
  assert threads == ['tftrain-idle-work', threading.current_thread().name]
  assert not work


def test_a_jobs_error_is_raised_by_wait_and_settle_runs_the_readers():
  work = idle.IdleWork()

  def fail():
    raise ValueError('in the thread')
  failing = work.add(fail)
  work.start()
  with pytest.raises(ValueError, match='in the thread'):
    failing.wait()
  done = []
  work.add(lambda: done.append('reader'), reads_variables=True)
  work.add(lambda: done.append('other'))
  work.settle()         # runs the reader (never started) here, not the other
  assert done == ['reader'] and bool(work)


def test_a_first_call_starts_the_work_and_trains_only_after_the_readers():
  images, labels = make_data()
  trainer = make_trainer()
  kernel = trainer.model.trainable_variables[0]
  initial = kernel.numpy()
  seen = {}

  def read_late():
    # Reads the weights late: without the settle the steps would have run.
    time.sleep(0.5)
    seen['thread'] = threading.current_thread().name
    seen['kernel'] = kernel.numpy()
  trainer.idle.add(read_late, reads_variables=True)
  traces = trainer.trace_count
  trainer.train_steps(distributed_iterator(trainer, images, labels), 2)
  assert trainer.trace_count == traces + 1         # one trace, as before
  assert seen['thread'] == 'tftrain-idle-work'
  np.testing.assert_array_equal(seen['kernel'], initial)   # before the update
  assert not np.array_equal(kernel.numpy(), initial)


def test_record_start_equals_the_start_weights_record(tmp_path):
  images, labels = make_data()
  trainer = make_trainer('sigmoid')
  writer = tf.summary.create_file_writer(str(tmp_path))
  exp = types.SimpleNamespace(trainer=trainer, writers={'train': writer},
                              is_chief=True)
  expected = tape_norms(trainer.model, images[:BATCH], labels[:BATCH])
  probe = probes.DepthProbe(images[:BATCH], labels[:BATCH], every_steps=0,
                            activation='sigmoid')
  probe.record_start(exp)
  assert probe.grad_norm_records == []              # not yet written
  trainer.train_steps(distributed_iterator(trainer, images, labels), 2)
  probe(exp, 'train', {'step': 2})                  # the first hook call
  assert [s for s, _ in probe.grad_norm_records] == [0]
  np.testing.assert_allclose(probe.grad_norm_records[0][1], expected,
                             rtol=1e-5)
  # The weights trained meanwhile: a probe now differs from the start.
  probe.record(exp, 2)
  assert not np.allclose(probe.grad_norm_records[1][1], expected, rtol=1e-3)
