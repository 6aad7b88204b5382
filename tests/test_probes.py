"""Activation statistics and the DepthProbe hook's records and image."""

import types

import numpy as np
import pytest
import tensorflow as tf

from tftrain import probes
from tests import testing
from tests.test_trainer import BATCH, DEPTH, make_data, make_trainer, tape_norms



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
