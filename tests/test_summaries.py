"""Per-layer gradient norms, histograms and the DepthProbe hook's summaries."""

import glob
import os
import types

import numpy as np
import pytest
import tensorflow as tf

from tftrain import models
from tftrain import summaries
from tftrain import trainer as trainer_lib

DEPTH, WIDTH, BATCH = 5, 8, 16


def read_events(logdir):
  """{tag: [(step, value or image bytes)]} from the event files under logdir."""
  tags = {}
  for path in glob.glob(os.path.join(logdir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.HasField('tensor'):
          arr = tf.make_ndarray(value.tensor)
        else:
          arr = value.simple_value
        tags.setdefault(value.tag, []).append((event.step, arr))
  return tags


def make_data(n=2 * BATCH, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(n, 4, 4, 1)).astype(np.float32)
  labels = rng.integers(0, 10, size=n).astype(np.int32)
  return images, labels


def make_trainer(activation='sigmoid', writer=None, **kwargs):
  strategy = tf.distribute.get_strategy()
  model = models.deep_mlp((4, 4, 1), depth=DEPTH, width=WIDTH,
                          activation=activation, seed=3)
  optimizer = tf.keras.optimizers.SGD(0.1)
  return trainer_lib.Trainer(model, optimizer, strategy, BATCH,
                             train_writer=writer, **kwargs)


def tape_norms(model, images, labels):
  """Kernel-gradient norms with a plain GradientTape (mean cross-entropy)."""
  kernels = [l.kernel for l in models.dense_layers(model)]
  with tf.GradientTape() as tape:
    logits = model(images, training=True)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, logits))
  return np.array([np.linalg.norm(g.numpy()) for g in
                   tape.gradient(loss, kernels)])


def distributed_iterator(trainer, images, labels):
  ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH)
  return iter(trainer.strategy.experimental_distribute_dataset(ds))


@pytest.mark.parametrize('activation', ['sigmoid', 'selu'])
def test_trainer_grad_norms_equal_independent_gradient_tape(activation):
  images, labels = make_data()
  trainer = make_trainer(activation)
  weights = [v.numpy() for v in trainer.model.trainable_variables]
  expected_first = tape_norms(trainer.model, images[:BATCH], labels[:BATCH])
  iterator = distributed_iterator(trainer, images, labels)
  out = trainer.train_steps(iterator, 1)
  np.testing.assert_allclose(out['grad_norms'], expected_first, rtol=1e-5)
  assert out['grad_norms'].shape == (DEPTH + 1,)
  # The step applied the update: the second batch's norms come from new
  # weights, and match a tape on those weights.
  moved = [v.numpy() for v in trainer.model.trainable_variables]
  assert any(not np.allclose(a, b) for a, b in zip(weights, moved))
  expected_second = tape_norms(trainer.model, images[BATCH:], labels[BATCH:])
  out = trainer.train_steps(iterator, 1)
  np.testing.assert_allclose(out['grad_norms'], expected_second, rtol=1e-5)


def test_sigmoid_gradients_vanish_toward_the_input():
  images, labels = make_data(BATCH)
  model = models.deep_mlp((4, 4, 1), depth=20, width=WIDTH,
                          activation='sigmoid', seed=0)
  norms = tape_norms(model, images, labels)
  assert norms[0] < 1e-3 * norms[-2]            # first vs last hidden layer


def test_step_summaries_tags_and_values(tmp_path):
  writer = tf.summary.create_file_writer(str(tmp_path))
  images, labels = make_data()
  trainer = make_trainer('relu', writer, log_every_steps=1,
                         histogram_every_steps=2)
  expected = tape_norms(trainer.model, images[:BATCH], labels[:BATCH])
  trainer.train_steps(distributed_iterator(trainer, images, labels), 2)
  writer.flush()
  tags = read_events(str(tmp_path))
  names = [f'dense_{i:03d}' for i in range(DEPTH)] + ['logits']
  for name in names:
    assert [s for s, _ in tags[f'grad_norm/{name}']] == [1, 2]
  assert tags['grad_norm/dense_000'][0][1] == pytest.approx(expected[0],
                                                            rel=1e-5)
  ratio = tags['grad_norm_ratio/first_to_last'][0][1]
  assert ratio == pytest.approx(expected[0] / expected[-2], rel=1e-4)
  assert {'loss', 'learning_rate'} <= set(tags)
  for name in names:            # histograms only at step 2 (interval 2)
    assert [s for s, _ in tags[f'grad/{name}']] == [2]
    assert [s for s, _ in tags[f'weight/{name}']] == [2]
    assert tags[f'grad/{name}'][0][1].shape[-1] == 3   # (left, right, count)


def test_activation_statistics_saturated_and_dead():
  sig = tf.constant([[0.001, 0.5], [0.999, 0.3]])
  stats = {k: float(v) for k, v in
           summaries.activation_statistics('sigmoid', sig).items()}
  assert stats['saturated'] == pytest.approx(0.5)
  assert stats['mean'] == pytest.approx(np.mean(sig.numpy()))
  assert stats['std'] == pytest.approx(np.std(sig.numpy()), rel=1e-5)
  relu = tf.constant([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
  stats = summaries.activation_statistics('relu', relu)
  assert float(stats['dead']) == pytest.approx(1 / 3)   # unit 0 never fires
  assert 'saturated' not in stats
  selu = tf.constant([[-1.7580, 0.0], [3.0, -0.5]])
  assert float(summaries.activation_statistics('selu', selu)['saturated']) == (
      pytest.approx(0.25))
  assert set(summaries.activation_statistics('gelu', selu)) == {'mean', 'std'}


def fake_experiment(trainer, logdir):
  writer = tf.summary.create_file_writer(logdir)
  return types.SimpleNamespace(trainer=trainer, writers={'train': writer},
                               is_chief=True)


@pytest.mark.parametrize('activation, stat', [('sigmoid', 'saturated'),
                                              ('relu', 'dead')])
def test_depth_probe_writes_activation_stats_and_image(tmp_path, activation,
                                                       stat):
  images, labels = make_data(BATCH)
  trainer = make_trainer(activation)
  exp = fake_experiment(trainer, str(tmp_path))
  probe = summaries.DepthProbe(images, labels, every_steps=100,
                               activation=activation)
  probe.record(exp, 0)
  # The probe's norms are the plain-tape norms on the probe batch.
  np.testing.assert_allclose(probe.records[0][1],
                             tape_norms(trainer.model, images, labels),
                             rtol=1e-5)
  # Hook calls: only crossings of the 100-step interval and epoch ends probe.
  for step in (50, 100, 150, 230, 250):
    probe(exp, 'train', {'step': step, 'grad_norms': np.ones(DEPTH + 1)})
  trainer.optimizer.iterations.assign(260)
  probe(exp, 'epoch', {'epoch': 1})
  probe(exp, 'epoch', {'epoch': 1})            # same step: no second record
  assert [s for s, _ in probe.records] == [0, 100, 230, 260]
  exp.writers['train'].flush()
  tags = read_events(str(tmp_path))
  for i in range(DEPTH):
    for key in ('mean', 'std', stat):
      assert [s for s, _ in tags[f'activation_{key}/act_{i:03d}']] == [
          0, 100, 230, 260]
  mean0 = tags['activation_mean/act_000'][0][1]
  act = trainer.model.get_layer('act_000')(trainer.model.get_layer(
      'dense_000')(tf.reshape(images, [BATCH, -1])))
  assert float(mean0) == pytest.approx(float(tf.reduce_mean(act)), rel=1e-5)
  image = tags['grad_norm_vs_depth'][0][1]
  # Image summaries: [width, height, encoded PNG].
  assert int(image[0]) > 100 and int(image[1]) > 100
  assert image[2][:8] == b'\x89PNG\r\n\x1a\n'
