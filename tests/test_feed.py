"""data.Feed: the training batches in chunks, exactly the dataset's batches in
its order, chunks on the steps_per_loop grid, one compiled call per call."""

import numpy as np
import pytest
import tensorflow as tf

from tests.test_trainer import BATCH, distributed_iterator, make_data, make_trainer
from tftrain import chunks
from tftrain import data


def numbered_batches(n, batch=4, shape=(3,)):
  """Batches whose every value is the example's index."""
  x = np.repeat(np.arange(n * batch, dtype=np.float32)[:, None],
                int(np.prod(shape)), 1).reshape((n * batch,) + shape)
  y = np.arange(n * batch, dtype=np.int32)
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch,
                                                         drop_remainder=True)


def read_all(feed, lengths):
  """The labels of the batches `feed` hands out, in segments of `lengths`."""
  got, starts = [], []
  for n in lengths:
    if feed.consumed == feed.steps:
      break
    chunk, start, k = feed.segment(n)
    starts.append((start, k))
    x, y = chunk
    for j in range(start, start + k):
      assert np.all(x.numpy()[j][:, 0] == y.numpy()[j])
      got.append(y.numpy()[j].tolist())
    feed.advance(k)
  return got, starts


@pytest.mark.parametrize('start_step', [0, 3, 10])
def test_feed_gives_every_batch_in_order_on_the_grid(start_step):
  batches = numbered_batches(23)
  feed = data.Feed(tf.distribute.get_strategy(), batches, None,
                   steps_per_loop=10, start_step=start_step)
  assert feed.chunk_steps == 10 and feed.steps == 23
  got, starts = read_all(feed, [100] * 5)
  expected = [y.numpy().tolist() for _, y in batches]
  assert got == expected
  # Segments end on global steps that are multiples of 10.
  ends, step = [], start_step
  for _, k in starts:
    step += k
    ends.append(step)
  assert all(e % 10 == 0 for e in ends[:-1]) and ends[-1] == start_step + 23
  with pytest.raises(StopIteration):
    feed.segment(1)


def test_feed_uses_only_the_steps_asked_for():
  feed = data.Feed(tf.distribute.get_strategy(), numbered_batches(30), 7,
                   steps_per_loop=4)
  got, _ = read_all(feed, [3, 3, 3])
  assert len(got) == 7 and got[6] == list(range(24, 28))


def test_chunk_length_divides_steps_per_loop_and_fits_the_byte_cap(
    monkeypatch):
  batches = numbered_batches(20, batch=8, shape=(1000,))  # ~32 KB a batch
  monkeypatch.setattr(data, 'CHUNK_BYTES', 200_000)
  assert data.Feed(tf.distribute.get_strategy(), batches, None,
                   steps_per_loop=12).chunk_steps == 6     # not 7: divides 12
  unknown = batches.unbatch().batch(8)                      # batch dim None
  assert data.Feed(tf.distribute.get_strategy(), unknown, 4,
                   steps_per_loop=12).chunk_steps == 1
  # A stream shorter than a chunk: the largest divisor that fits it.
  assert data.Feed(tf.distribute.get_strategy(), batches, 5,
                   steps_per_loop=12).chunk_steps == 4


def test_one_compiled_call_per_call_on_the_grid():
  trainer = make_trainer('relu')
  images, labels = make_data(n=20 * BATCH)
  feed = distributed_iterator(trainer, images, labels, steps_per_loop=4)
  trainer.train_steps(feed, 1)          # off the grid: the next call is 3
  segments = []
  real = feed.segment

  def recording(n):
    out = real(n)
    segments.append(out[1:])
    return out
  feed.segment = recording
  outs = [out['steps_run'] for out, _ in chunks.calls(trainer, feed, 11, 4)]
  assert outs == [3, 4, 4]
  # One segment (one compiled call) per call: (start in chunk, steps).
  assert segments == [(1, 3), (0, 4), (0, 4)]


@pytest.mark.parametrize('jit_compile', [False, True])
def test_a_chunked_run_trains_like_one_batch_at_a_time(jit_compile):
  """The same 9 steps, fed in chunks of 4 from step 2 (padded front and
  back), give the losses of 9 single-batch chunks."""
  images, labels = make_data(n=9 * BATCH)
  runs = []
  for steps_per_loop in (4, 1):
    trainer = make_trainer('relu', jit_compile=jit_compile)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(
        BATCH, drop_remainder=True)
    feed = data.Feed(trainer.strategy, ds, None, steps_per_loop,
                     start_step=2)
    assert feed.chunk_steps == steps_per_loop
    out = trainer.train_steps(feed, 9)
    assert out['steps_run'] == 9 and out['count'] == 9 * BATCH
    runs.append((out['losses'], [v.numpy() for v in trainer.model.variables]))
  np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-5)
  assert np.isfinite(runs[0][0]).all()
  for a, b in zip(runs[0][1], runs[1][1]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
