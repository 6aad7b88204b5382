"""Checkpoints: resume restores everything; a full disk keeps the last one."""

import errno
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.test_loop import small_config
from tftrain import checkpoints
from tftrain import config as config_lib
from tftrain import errors
from tftrain import experiment
from tftrain import loop
from tftrain import summaries


def test_resume_restores_step_weights_and_optimizer_slots(tiny_cifar_data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  first = experiment.build_experiment(small_config(tiny_cifar_data_dir, epochs=1), workdir)
  loop.run(first)
  second = experiment.build_experiment(small_config(tiny_cifar_data_dir, epochs=2), workdir)
  ckpt, manager, _, state = checkpoints.make_checkpoint(second)
  assert checkpoints.restore(ckpt, manager)
  assert int(state['epoch'].numpy()) == 1
  assert int(second.trainer.optimizer.iterations.numpy()) == 10
  # Weights equal the best-restored model of run 1? No: the checkpoint holds the
  # last-epoch training state; with 1 epoch they coincide with run 1's model.
  for a, b in zip(first.trainer.model.variables, second.trainer.model.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  slots_1 = [v.numpy() for v in first.trainer.optimizer.variables]
  slots_2 = [v.numpy() for v in second.trainer.optimizer.variables]
  assert len(slots_1) == len(slots_2) > 2
  for a, b in zip(slots_1, slots_2):
    np.testing.assert_array_equal(a, b)
  # Rerunning the launcher's entry point on the workdir continues at epoch 2.
  result = loop.train_and_evaluate(small_config(tiny_cifar_data_dir, epochs=2), workdir)
  assert result['resumed'] and [h['epoch'] for h in result['history']] == [1, 2]


def test_resume_waits_for_idle_work_reading_the_fresh_weights(
    tiny_cifar_data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  loop.run(experiment.build_experiment(
      small_config(tiny_cifar_data_dir, epochs=1), workdir))
  second = experiment.build_experiment(
      small_config(tiny_cifar_data_dir, epochs=1), workdir)
  kernel = second.trainer.model.trainable_variables[0]
  fresh, seen = kernel.numpy(), []
  # Never started (no wait before the restore): the restore runs it first.
  second.trainer.idle.add(lambda: seen.append(kernel.numpy()),
                          reads_variables=True)
  ckpt, manager, _, state = checkpoints.make_checkpoint(second)
  _, resumed, _ = checkpoints.resume(second, ckpt, manager, state)
  assert resumed and len(seen) == 1
  np.testing.assert_array_equal(seen[0], fresh)
  assert not np.array_equal(kernel.numpy(), fresh)     # restored after it


def test_resumed_run_equals_uninterrupted_run(tiny_cifar_data_dir, tmp_path):
  straight = loop.train_and_evaluate(small_config(tiny_cifar_data_dir, epochs=2),
                                     str(tmp_path / 'a'))
  loop.train_and_evaluate(small_config(tiny_cifar_data_dir, epochs=1), str(tmp_path / 'b'))
  resumed = loop.train_and_evaluate(small_config(tiny_cifar_data_dir, epochs=2),
                                    str(tmp_path / 'b'))
  assert resumed['resumed']
  assert resumed['test_loss'] == pytest.approx(straight['test_loss'], rel=1e-5)
  assert resumed['history'][-1]['loss'] == pytest.approx(
      straight['history'][-1]['loss'], rel=1e-5)


def _no_space(kind, path):
  if kind == 'oserror':
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
  return tf.errors.ResourceExhaustedError(
      None, None, f'{path}; No space left on device')


@pytest.mark.parametrize('kind,where,fail_at', [
    ('oserror', 'checkpoint', 1),             # the very first checkpoint
    ('resource_exhausted', 'checkpoint', 2),
    ('resource_exhausted', 'summary', 2),
])
def test_full_disk_stops_with_one_line_keeps_the_checkpoint_and_resumes(
    kind, where, fail_at, tiny_mnist_data_dir, tmp_path, monkeypatch):
  config = config_lib.Config(
      data_dir=tiny_mnist_data_dir, validation_size=100, batch_size=20,
      hidden=(16,), learning_rate=0.1, epochs=3, patience=0, steps_per_loop=5,
      progress=False, seed=3)
  steps_per_epoch = 500 // 20
  workdir = str(tmp_path / 'run')
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  calls = []
  if where == 'checkpoint':
    real_save = tf.train.CheckpointManager.save

    def save(self, *a, **kw):
      if self.directory == ckpt_dir:
        calls.append(1)
        if len(calls) == fail_at:
          # What a full disk leaves: a partial data file, no index update.
          number = kw['checkpoint_number']
          partial = os.path.join(ckpt_dir, f'ckpt-{number}.data-00000-of-00001')
          os.makedirs(ckpt_dir, exist_ok=True)
          with open(partial, 'wb') as f:
            f.write(b'\0' * 100)
          raise _no_space(kind, partial)
      return real_save(self, *a, **kw)
    monkeypatch.setattr(tf.train.CheckpointManager, 'save', save)
  else:
    real_write = summaries.write_scalars

    def write_scalars(writer, step, values, **kw):
      if 'epoch_learning_rate' in values:     # the train writer, once per epoch
        calls.append(1)
        if len(calls) == fail_at:
          raise _no_space(kind, os.path.join(workdir, 'train', 'events'))
      return real_write(writer, step, values, **kw)
    monkeypatch.setattr(summaries, 'write_scalars', write_scalars)

  with pytest.raises(errors.DiskFullError) as e:
    loop.train_and_evaluate(config, workdir)
  message = str(e.value)
  assert '\n' not in message
  assert message.startswith(f'--workdir={workdir}: no space left on the device')
  assert message.endswith('free space and rerun the same command to resume.')
  assert not os.path.exists(os.path.join(workdir, '.lock'))
  latest = tf.train.latest_checkpoint(ckpt_dir)
  if fail_at == 1:
    assert latest is None and 'no checkpoint was written yet' in message
    assert not glob.glob(os.path.join(ckpt_dir, 'ckpt-*'))   # partial removed
  else:
    # The previous (epoch 1) checkpoint is still the latest, and readable.
    assert latest.endswith(f'ckpt-{steps_per_epoch}')
    assert f'the last checkpoint (ckpt-{steps_per_epoch}) is kept' in message
    reader = tf.train.load_checkpoint(latest)
    assert reader.get_tensor('epoch/.ATTRIBUTES/VARIABLE_VALUE') == 1
    assert not glob.glob(os.path.join(ckpt_dir, f'ckpt-{2 * steps_per_epoch}*'))

  # Space freed: the same call resumes and completes.
  monkeypatch.undo()
  result = loop.train_and_evaluate(config, workdir)
  assert result['status'] == 'completed'
  assert result['resumed'] == (fail_at > 1)
  assert [h['epoch'] for h in result['history']] == [1, 2, 3]
  assert tf.train.latest_checkpoint(ckpt_dir).endswith(
      f'ckpt-{3 * steps_per_epoch}')
