"""The StepLogger's per-layer summaries and histograms."""


import threading

import numpy as np
import pytest
import tensorflow as tf

from tftrain import chunks
from tftrain import summaries
from tests import testing
from tests.test_trainer import BATCH, DEPTH, distributed_iterator, make_data, make_trainer, tape_norms



@pytest.mark.parametrize('jit_compile, asynchronous', [(False, False),
                                                       (True, True)])
def test_step_summaries_tags_and_values(tmp_path, jit_compile, asynchronous):
  writer = tf.summary.create_file_writer(str(tmp_path))
  images, labels = make_data(4 * BATCH)
  trainer = make_trainer('relu', jit_compile=jit_compile)
  logger = summaries.StepLogger(writer, trainer.layer_names, log_every_steps=2,
                                histogram_every_steps=3,
                                records_path=str(tmp_path / 'obs.jsonl'),
                                asynchronous=asynchronous)
  model_copy = tf.keras.models.clone_model(trainer.model)
  model_copy.set_weights(trainer.model.get_weights())
  out = chunks.run_steps(trainer, distributed_iterator(trainer, images, labels),
                         4, logger)
  # Step 2 is observed: its norms come from the weights after step 1.
  tf.keras.optimizers.SGD(0.1).apply_gradients(zip(
      tape_grads(model_copy, images[:BATCH], labels[:BATCH]),
      model_copy.trainable_variables))
  expected = tape_norms(model_copy, images[BATCH:2 * BATCH],
                        labels[BATCH:2 * BATCH])
  assert out['steps_run'] == 4 and len(out['losses']) == 4
  logger.flush()        # asynchronous: the writes are done by now
  writer.flush()
  tags = testing.read_values(str(tmp_path))
  names = [f'dense_{i:03d}' for i in range(DEPTH)] + ['logits']
  for name in names:          # observed: every 2 (norms) and every 3 (hist)
    assert [s for s, _ in tags[f'grad_norm/{name}']] == [2, 3, 4]
    assert [s for s, _ in tags[f'update_ratio/{name}']] == [2, 3, 4]
  np.testing.assert_allclose([float(tags[f'grad_norm/{n}'][0][1])
                              for n in names], expected, rtol=1e-4)
  ratio = tags['grad_norm_ratio/first_to_last'][0][1]
  assert ratio == pytest.approx(expected[0] / expected[-2], rel=1e-4)
  assert [s for s, _ in tags['loss']] == [2, 4]
  assert [s for s, _ in tags['learning_rate']] == [2, 3, 4]
  for name in names:            # histograms only at step 3
    for kind in ('grad', 'weight', 'grad_log10'):
      assert [s for s, _ in tags[f'{kind}/{name}']] == [3]
    assert tags[f'grad/{name}'][0][1].shape[-1] == 3   # (left, right, count)
  records = summaries.read_records(str(tmp_path / 'obs.jsonl'))
  assert [r['step'] for r in records] == [2, 3, 4]
  assert len(records[0]['grad_norms']) == len(names)


def tape_grads(model, images, labels):
  with tf.GradientTape() as tape:
    logits = model(images, training=True)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, logits))
  return tape.gradient(loss, model.trainable_variables)


def test_async_writes_keep_order_return_at_once_and_raise_at_flush():
  writes = summaries.AsyncWrites()
  release, done = threading.Event(), []
  writes.submit(lambda: (release.wait(5), done.append(1)))
  writes.submit(lambda: done.append(2))
  assert done == []            # handed over: the caller goes on at once
  release.set()
  writes.flush()
  assert done == [1, 2]

  def fail():
    raise OSError(28, 'No space left on device')
  writes.submit(fail)
  writes.submit(lambda: done.append(3))     # skipped after an error
  with pytest.raises(OSError, match='No space'):
    writes.flush()
  assert done == [1, 2]
  writes.flush()               # raised once


def test_step_logger_schedule_of_observed_steps():
  logger = summaries.StepLogger(None, ['a'], log_every_steps=100,
                                histogram_every_steps=250)
  assert logger.steps_to_observation(0) == 100
  assert logger.steps_to_observation(199) == 1
  assert logger.steps_to_observation(200) == 50     # 250: histograms
  off = summaries.StepLogger(None, ['a'], 100, 0, grad_norms=False)
  assert off.steps_to_observation(0) is None



def test_histogram_buckets_match_tensorboard():
  from tensorboard.plugins.histogram import summary_v2  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for data in (rng.normal(size=1000), np.full(7, 2.5), rng.uniform(size=3)):
    expected = tf.make_ndarray(summary_v2.histogram_pb('t', data).value[0].tensor)
    np.testing.assert_allclose(summaries.histogram_buckets(data), expected)


def test_histogram_buckets_many_equal_one_at_a_time():
  rng = np.random.default_rng(1)
  arrays = [rng.normal(size=50), np.full(4, 1.5), np.zeros(0),
            rng.uniform(-3, 7, size=(6, 7)), np.array([np.inf, 1.0, 2.0])]
  for got, array in zip(summaries.histogram_buckets_many(arrays), arrays):
    np.testing.assert_allclose(got, summaries.histogram_buckets(array),
                               rtol=1e-12, atol=1e-12)
