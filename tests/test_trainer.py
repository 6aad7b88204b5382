"""Trainer: the compiled plain and observed steps (per-layer norms equal an
independent GradientTape; both train alike; no summary op inside)."""


import numpy as np
import pytest
import tensorflow as tf

from tests.test_models import dense_layers
from tftrain import data
from tftrain import models
from tftrain import trainer as trainer_lib

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


def distributed_iterator(trainer, images, labels, steps_per_loop=100):
  """A `data.Feed` of the arrays' batches, starting at the trainer's step."""
  ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(
      BATCH, drop_remainder=True)
  return data.Feed(trainer.strategy, ds, None, steps_per_loop,
                   int(trainer.optimizer.iterations.numpy()))



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


def _ops_by_function(fn, *args):
  """{function name: op types} of a tf.function's graph and the functions
  it calls (while-loop bodies, cond branches, step functions)."""
  graph = fn.get_concrete_function(*args).graph
  ops = {'': {op.type for op in graph.get_operations()}}
  for name, f in graph._functions.items():   # pylint: disable=protected-access
    ops[name] = {node.op for node in f.definition.node_def}
  return ops


def test_no_summary_op_inside_the_compiled_steps_and_no_cond_per_step():
  images, labels = make_data(4 * BATCH)
  trainer = make_trainer('relu')
  iterator = distributed_iterator(trainer, images, labels)
  trainer.train_steps(iterator, 1)
  trainer.observed_step(iterator)
  trainer.observed_step(iterator, histograms=True)
  chunk, _, _ = iterator.segment(1)
  k = iterator.chunk_steps
  assert set(trainer._train_loops) == {(k, None), (k, False), (k, True)}
  args = (chunk, tf.constant(0), tf.constant(1), tf.constant(True))
  for key, fn in trainer._train_loops.items():
    ops = _ops_by_function(fn, *args)
    every = set().union(*ops.values())
    assert every and not [o for o in every if 'Summary' in o], every
    bodies = [n for n in ops if 'body' in n.lower()]
    assert bodies, list(ops)
    for name in bodies:     # the while loop's body: no cond per step
      assert not {'If', 'StatelessIf'} & ops[name], (key, name)
    # The observing loops: one cond per call, after the while loop.
    conds = {'If', 'StatelessIf'} & ops['']
    assert bool(conds) == (key[1] is not None), (key, conds)


def test_an_observing_call_trains_as_plain_steps_and_observes_its_last():
  images, labels = make_data(4 * BATCH)
  plain, folded = make_trainer('relu'), make_trainer('relu')
  a = plain.train_steps(distributed_iterator(plain, images, labels), 4)
  feed = distributed_iterator(folded, images, labels)
  b = folded.train_steps(feed, 3, observing=False)   # observing loop, plain
  assert 'observation' not in b and b['steps_run'] == 3
  c = folded.train_steps(feed, 1, observe_last=True, observing=False)
  assert len(folded._train_loops) == 1      # one compiled loop for both
  np.testing.assert_allclose(a['losses'],
                             np.concatenate([b['losses'], c['losses']]),
                             rtol=1e-6)
  assert c['observation']['loss'] == pytest.approx(float(a['losses'][3]),
                                                   rel=1e-6)
  assert c['observation']['grad_norms'].shape == (DEPTH + 1,)
  for v, w in zip(plain.model.variables, folded.model.variables):
    np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-6, atol=1e-7)
  # One call over several steps: the observation is its last step's.
  again = make_trainer('relu')
  d = again.train_steps(distributed_iterator(again, images, labels), 4,
                        observe_last=True, histograms=True, observing=True)
  np.testing.assert_allclose(d['losses'], a['losses'], rtol=1e-6)
  assert d['count'] == 4 * BATCH and d['steps_run'] == 4
  np.testing.assert_allclose(d['observation']['grad_norms'],
                             c['observation']['grad_norms'], rtol=1e-5)
  weights = [v.numpy() for v in again.model.trainable_variables]
  np.testing.assert_array_equal(d['observation']['weights'][0],
                                weights[again.layers[0].indices[0]].ravel()
                                if len(again.layers[0].indices) == 1 else
                                np.concatenate([weights[i].ravel() for i in
                                                again.layers[0].indices]))
  with pytest.raises(ValueError, match='observing'):
    again.train_steps(distributed_iterator(again, images, labels), 1,
                      observe_last=True)


def test_a_non_finite_loss_before_the_observed_step_stops_the_call_there():
  from tftrain import errors  # pylint: disable=g-import-not-at-top
  images, labels = make_data(6 * BATCH)
  # SGD at 1e30: the first update overflows, the second step's loss is NaN.
  model = models.deep_mlp((4, 4, 1), depth=DEPTH, width=WIDTH,
                          activation='relu', seed=3)
  trainer = trainer_lib.Trainer(model, tf.keras.optimizers.SGD(1e30),
                                tf.distribute.get_strategy(), BATCH)
  feed = distributed_iterator(trainer, images, labels)
  with pytest.raises(errors.NonFiniteError) as raised:
    trainer.train_steps(feed, 6, observe_last=True, observing=False)
  # Steps 1 and 2 ran (2 is the bad one); the observed step 6 did not.
  assert int(trainer.optimizer.iterations.numpy()) == 2
  assert raised.value.step == 2 and feed.consumed == 2


@pytest.mark.parametrize('jit_compile', [False, True])
def test_fused_norms_equal_the_per_layer_reductions(jit_compile):
  images, labels = make_data()
  outs = []
  for fused in (True, False):
    # Same seed: the same initial weights.
    trainer = make_trainer('selu', jit_compile=jit_compile)
    trainer.fused_norms = fused
    outs.append(trainer.observed_step(
        distributed_iterator(trainer, images, labels))['observation'])
  fused, reference = outs
  assert fused['grad_norms'].shape == (DEPTH + 1,)
  assert np.all(fused['update_ratios'] > 0)
  for key in ('grad_norms', 'weight_norms', 'update_ratios',
              'global_grad_norm'):
    np.testing.assert_allclose(fused[key], reference[key], rtol=1e-5,
                               err_msg=key)


def test_whole_loop_xla_only_without_convolutions_on_the_cpu():
  """XLA:CPU emits backprop convolutions inside a while loop as naive loops
  (~35x slower), so a conv model compiles the step, not the whole loop."""
  strategy = tf.distribute.get_strategy()
  assert make_trainer(jit_compile=True).whole_loop_xla
  assert not make_trainer(jit_compile=False).whole_loop_xla
  cnn = trainer_lib.Trainer(models.cnn((8, 8, 3), filters=(4,), seed=0),
                            tf.keras.optimizers.SGD(0.1), strategy, BATCH,
                            jit_compile=True)
  assert cnn.whole_loop_xla == bool(tf.config.list_logical_devices('GPU'))
  images = np.random.default_rng(0).normal(size=(2 * BATCH, 8, 8, 3)).astype(
      np.float32)
  labels = np.arange(2 * BATCH, dtype=np.int32) % 10
  out = cnn.train_steps(distributed_iterator(cnn, images, labels), 2)
  assert out['steps_run'] == 2 and np.all(np.isfinite(out['losses']))


def test_auto_xla_on_for_long_dense_runs_off_for_short_and_conv():
  strategy = tf.distribute.get_strategy()
  long_run = trainer_lib.AUTO_JIT_MIN_STEPS
  dense = make_trainer(jit_compile=None, planned_steps=long_run)
  assert dense.jit_auto and dense.jit_compile and dense.whole_loop_xla
  short = make_trainer(jit_compile=None, planned_steps=long_run - 1)
  assert short.jit_auto and not short.jit_compile
  assert 'does not pay back' in short.jit_reason
  cnn = trainer_lib.Trainer(models.cnn((8, 8, 3), filters=(4,), seed=0),
                            tf.keras.optimizers.SGD(0.1), strategy, BATCH,
                            jit_compile=None, planned_steps=10 * long_run)
  assert not cnn.jit_compile and 'convolutions' in cnn.jit_reason
  explicit = make_trainer(jit_compile=False, planned_steps=10 * long_run)
  assert not explicit.jit_auto and not explicit.jit_compile


def _numpy_identity_model():
  """A model XLA cannot compile: a host-side numpy call in its forward pass."""
  def host(x):
    y = tf.numpy_function(lambda a: a, [x], tf.float32)
    y.set_shape(x.shape)
    return y
  return tf.keras.Sequential([
      tf.keras.Input((4, 4, 1)), tf.keras.layers.Lambda(host),
      tf.keras.layers.Flatten(), tf.keras.layers.Dense(8, activation='relu'),
      tf.keras.layers.Dense(10)])


def test_auto_xla_falls_back_when_the_model_does_not_compile():
  strategy = tf.distribute.get_strategy()
  images, labels = make_data(4 * BATCH)
  trainer = trainer_lib.Trainer(_numpy_identity_model(),
                                tf.keras.optimizers.SGD(0.1), strategy, BATCH,
                                jit_compile=None, planned_steps=10 ** 6)
  assert trainer.jit_compile        # auto chose XLA for a long dense run
  feed = distributed_iterator(trainer, images, labels)
  out = trainer.train_steps(feed, 2)
  assert out['steps_run'] == 2 and np.all(np.isfinite(out['losses']))
  assert int(trainer.optimizer.iterations.numpy()) == 2
  assert not trainer.jit_compile and 'could not compile' in trainer.jit_reason
  observed = trainer.observed_step(feed)
  assert observed['observation']['grad_norms'].shape == (2,)
  # Asked for explicitly, XLA's error is the user's to see.
  forced = trainer_lib.Trainer(_numpy_identity_model(),
                               tf.keras.optimizers.SGD(0.1), strategy, BATCH,
                               jit_compile=True)
  with pytest.raises(tf.errors.InvalidArgumentError):
    forced.train_steps(distributed_iterator(forced, images, labels), 2)
