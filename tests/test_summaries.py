"""Per-layer gradient norms, histograms and the DepthProbe hook's summaries."""

import os
import types

import numpy as np
import pytest
import tensorflow as tf

from tests.test_models import dense_layers
from tftrain import chunks
from tftrain import probes
from tftrain import models
from tftrain import summaries
from tftrain import trainer as trainer_lib
from tests import testing

DEPTH, WIDTH, BATCH = 5, 8, 16


def make_data(n=2 * BATCH, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(n, 4, 4, 1)).astype(np.float32)
  labels = rng.integers(0, 10, size=n).astype(np.int32)
  return images, labels


def make_trainer(activation='sigmoid', **kwargs):
  strategy = tf.distribute.get_strategy()
  model = models.deep_mlp((4, 4, 1), depth=DEPTH, width=WIDTH,
                          activation=activation, seed=3)
  optimizer = tf.keras.optimizers.SGD(0.1)
  return trainer_lib.Trainer(model, optimizer, strategy, BATCH, **kwargs)


def tape_norms(model, images, labels):
  """Per-layer gradient norms (kernel and bias together), plain GradientTape."""
  layers = dense_layers(model)
  with tf.GradientTape() as tape:
    logits = model(images, training=True)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, logits))
  grads = tape.gradient(loss, [[l.kernel, l.bias] for l in layers])
  return np.array([np.sqrt(sum(np.sum(g.numpy() ** 2) for g in pair))
                   for pair in grads])


def distributed_iterator(trainer, images, labels):
  ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH)
  return iter(trainer.strategy.experimental_distribute_dataset(ds))


def test_weighted_layers_group_variables_by_layer_path():
  model = models.build_dense_stack((4, 4, 1), [3, 3], batch_norm='before')
  layers = models.weighted_layers(model)
  assert [l.name for l in layers] == ['dense_000', 'bn_000', 'dense_001',
                                      'bn_001', 'logits']
  paths = [v.path for v in model.trainable_variables]
  assert [[paths[i].split('/')[-1] for i in l.indices] for l in layers] == [
      ['kernel'], ['gamma', 'beta'], ['kernel'], ['gamma', 'beta'],
      ['kernel', 'bias']]
  assert layers[1].kernel is None and paths[layers[4].kernel].endswith(
      'logits/kernel')


@pytest.mark.parametrize('activation', ['sigmoid', 'selu'])
def test_observed_step_norms_equal_independent_gradient_tape(activation):
  images, labels = make_data()
  trainer = make_trainer(activation)
  weights = [v.numpy() for v in trainer.model.trainable_variables]
  expected_first = tape_norms(trainer.model, images[:BATCH], labels[:BATCH])
  iterator = distributed_iterator(trainer, images, labels)
  out = trainer.observed_step(iterator)['observation']
  np.testing.assert_allclose(out['grad_norms'], expected_first, rtol=1e-5)
  assert out['grad_norms'].shape == (DEPTH + 1,)
  np.testing.assert_allclose(out['global_grad_norm'],
                             np.sqrt(np.sum(expected_first ** 2)), rtol=1e-5)
  # SGD: ||dW|| / ||W|| = lr * ||g|| / ||W|| for each layer.
  w_norms = np.array([np.sqrt(sum(np.sum(weights[i] ** 2) for i in l.indices))
                      for l in trainer.layers])
  np.testing.assert_allclose(out['weight_norms'], w_norms, rtol=1e-5)
  np.testing.assert_allclose(out['update_ratios'],
                             0.1 * expected_first / w_norms, rtol=1e-4)
  # The step applied the update: the second batch's norms come from new
  # weights, and match a tape on those weights.
  moved = [v.numpy() for v in trainer.model.trainable_variables]
  assert any(not np.allclose(a, b) for a, b in zip(weights, moved))
  expected_second = tape_norms(trainer.model, images[BATCH:], labels[BATCH:])
  out = trainer.observed_step(iterator)['observation']
  np.testing.assert_allclose(out['grad_norms'], expected_second, rtol=1e-5)


def test_observed_and_plain_steps_train_identically():
  images, labels = make_data(4 * BATCH)
  plain, mixed = make_trainer('relu'), make_trainer('relu')
  it_plain = distributed_iterator(plain, images, labels)
  it_mixed = distributed_iterator(mixed, images, labels)
  a = plain.train_steps(it_plain, 4)
  b = [mixed.train_steps(it_mixed, 1), mixed.observed_step(it_mixed),
       mixed.train_steps(it_mixed, 2)]
  np.testing.assert_allclose(a['losses'],
                             np.concatenate([o['losses'] for o in b]),
                             rtol=1e-6)
  assert a['count'] == sum(o['count'] for o in b) == 4 * BATCH
  for v, w in zip(plain.model.variables, mixed.model.variables):
    np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-6, atol=1e-7)


def test_no_summary_op_inside_the_compiled_steps():
  images, labels = make_data(3 * BATCH)
  trainer = make_trainer('relu')
  iterator = distributed_iterator(trainer, images, labels)
  trainer.train_steps(iterator, 1)
  trainer.observed_step(iterator)
  trainer.observed_step(iterator, histograms=True)
  for fn in (trainer._train_loop, trainer._observed_fns[False],
             trainer._observed_fns[True]):
    graphs = [fn.get_concrete_function(iterator, tf.constant(1)).graph
              if fn is trainer._train_loop
              else fn.get_concrete_function(iterator).graph]
    ops = set()
    for graph in graphs:
      ops |= {op.type for op in graph.get_operations()}
      for f in graph._functions.values():   # while-loop bodies, step fns
        ops |= {node.op for node in f.definition.node_def}
    assert ops and not [o for o in ops if 'Summary' in o or o == 'If'], ops


@pytest.mark.parametrize('jit_compile', [False, True])
def test_step_summaries_tags_and_values(tmp_path, jit_compile):
  writer = tf.summary.create_file_writer(str(tmp_path))
  images, labels = make_data(4 * BATCH)
  trainer = make_trainer('relu', jit_compile=jit_compile)
  logger = summaries.StepLogger(writer, trainer.layer_names, log_every_steps=2,
                                histogram_every_steps=3,
                                records_path=str(tmp_path / 'obs.jsonl'))
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


def test_step_logger_schedule_of_observed_steps():
  logger = summaries.StepLogger(None, ['a'], log_every_steps=100,
                                histogram_every_steps=250)
  assert logger.steps_to_observation(0) == 100
  assert logger.steps_to_observation(199) == 1
  assert logger.steps_to_observation(200) == 50     # 250: histograms
  off = summaries.StepLogger(None, ['a'], 100, 0, grad_norms=False)
  assert off.steps_to_observation(0) is None


def test_activation_statistics_saturated_and_dead():
  sig = tf.constant([[0.001, 0.5], [0.999, 0.3]])
  stats = {k: float(v) for k, v in
           probes.activation_statistics('sigmoid', sig).items()}
  assert stats['saturated'] == pytest.approx(0.5)
  assert stats['mean'] == pytest.approx(np.mean(sig.numpy()))
  assert stats['std'] == pytest.approx(np.std(sig.numpy()), rel=1e-5)
  relu = tf.constant([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
  stats = probes.activation_statistics('relu', relu)
  assert float(stats['dead']) == pytest.approx(1 / 3)   # unit 0 never fires
  assert 'saturated' not in stats
  selu = tf.constant([[-1.7580, 0.0], [3.0, -0.5]])
  assert float(probes.activation_statistics('selu', selu)['saturated']) == (
      pytest.approx(0.25))
  assert set(probes.activation_statistics('gelu', selu)) == {
      'mean', 'std', 'spread'}
  # spread: std across units over mean |output|; identical units give 0.
  same = tf.constant([[0.5, 0.5, 0.5], [2.0, 2.0, 2.0]])
  assert float(probes.activation_statistics('gelu', same)['spread']) == 0.0
  assert float(probes.activation_statistics('gelu', selu)['spread']) == (
      pytest.approx(np.mean(np.std(selu.numpy(), 1))
                    / np.mean(np.abs(selu.numpy())), rel=1e-5))
  assert np.isnan(float(probes.activation_statistics(
      'relu', tf.zeros([2, 3]))['spread']))       # all zero: dead, not alike


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
  probe = probes.DepthProbe(images, labels, every_steps=100,
                               activation=activation)
  probe.record(exp, 0)
  # The probe's norms are the plain-tape norms on the probe batch.
  np.testing.assert_allclose(probe.grad_norm_records[0][1],
                             tape_norms(trainer.model, images, labels),
                             rtol=1e-5)
  # Hook calls: only crossings of the 100-step interval and epoch ends probe.
  for step in (50, 100, 150, 230, 250):
    probe(exp, 'train', {'step': step})
  trainer.optimizer.iterations.assign(260)
  probe(exp, 'epoch', {'epoch': 1})
  probe(exp, 'epoch', {'epoch': 1})            # same step: no second record
  assert [s for s, _ in probe.grad_norm_records] == [0, 100, 230, 260]
  exp.writers['train'].flush()
  tags = testing.read_values(str(tmp_path))
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
