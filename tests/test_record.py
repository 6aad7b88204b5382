"""record: a resume compares the Config with config.json, a finished run
returns its metrics, --overwrite moves the old run aside."""

import json
import os

import pytest

from tests.test_loop import small_config
from tftrain import loop
from tftrain import workdir as workdir_lib


def test_resume_refuses_a_training_change_allows_a_logging_change_and_returns_a_finished_run(
    tiny_cifar_data_dir, tmp_path, capsys):
  from tftrain import errors  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  config = small_config(tiny_cifar_data_dir, epochs=1, trace_graph=False,
                        activation_stats=False)
  first = loop.train_and_evaluate(config, workdir)
  assert first['status'] == 'completed'
  capsys.readouterr()

  # A logging field (and more epochs of a constant schedule): allowed, said.
  longer = config.replace(epochs=2, log_every_steps=3)
  second = loop.train_and_evaluate(longer, workdir)
  out = capsys.readouterr().out
  assert f'{workdir}: log_every_steps 2 -> 3: it changes what the run logs' in out
  assert f'{workdir}: epochs 1 -> 2: the run continues to epoch 2' in out
  assert second['resumed'] and [h['epoch'] for h in second['history']] == [1, 2]

  # The same config again: the finished run's metrics, no training.
  again = loop.train_and_evaluate(longer, workdir)
  out = capsys.readouterr().out
  assert f'{workdir}: already complete (metrics from 20' in out
  assert 'epoch 1/' not in out and 'epoch 2/' not in out
  assert again['already_complete'] and again['test_loss'] == second['test_loss']
  with open(os.path.join(workdir, workdir_lib.METRICS_JSON)) as f:
    assert 'already_complete' not in json.load(f)      # metrics.json as it was

  # A training field: one line naming the fields, both values and the fix.
  changed = longer.replace(learning_rate=0.001, optimizer='sgd')
  with pytest.raises(errors.ConfigMismatchError) as e:
    loop.train_and_evaluate(changed, workdir)
  message = str(e.value)
  assert message == (
      f"workdir={workdir!r} holds a run trained with other settings: "
      "optimizer='sgd' (the run has 'adam'), learning_rate=0.001 (the run has "
      "0.003); pass the run's values, a new workdir, or "
      "Config(overwrite=True) to start fresh (the old run is moved aside).")
  e.value.from_flags = True         # as a launcher prints it
  assert str(e.value).startswith(
      f'--workdir={workdir}: holds a run trained with other settings: '
      '--optimizer=sgd (the run has adam), --learning_rate=0.001 (the run has '
      "0.003); rerun with the run's values, choose a new --workdir, or add "
      '--overwrite')
  with open(os.path.join(workdir, workdir_lib.CONFIG_JSON)) as f:
    assert json.load(f)['learning_rate'] == 3e-3     # nothing changed

  # --overwrite: the old run moves aside and a fresh one trains.
  fresh = loop.train_and_evaluate(changed.replace(overwrite=True, epochs=1),
                                  workdir)
  out = capsys.readouterr().out
  assert f'{workdir}: overwrite: the old run was moved to {workdir}.old-' in out
  assert not fresh['resumed'] and len(fresh['history']) == 1
  old = [p for p in os.listdir(tmp_path) if p.startswith('run.old-')]
  assert len(old) == 1
  assert os.path.exists(tmp_path / old[0] / workdir_lib.METRICS_JSON)
  assert not os.path.exists(tmp_path / old[0] / '.lock')
