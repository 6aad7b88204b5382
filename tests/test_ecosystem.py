"""A run records itself (config.json, flags.txt, HParams, a custom-scalars
layout), resumes only what it can, and behaves in a notebook."""

import json
import os

from absl import flags
import pytest

from launch import flags as launch_flags
from tests import testing
from tests.test_loop import small_config
from tftrain import config as config_lib
from tftrain import loop
from tftrain import workdir as workdir_lib


@pytest.fixture(scope='module')
def recorded_run(tiny_cifar_data_dir, tmp_path_factory):
  """One tiny run, shared by the tests that only read what it wrote."""
  workdir = str(tmp_path_factory.mktemp('recorded') / 'run')
  config = small_config(tiny_cifar_data_dir, epochs=2, hidden=(16, 8),
                        learning_rate=0.0125, standardize=True)
  result = loop.train_and_evaluate(config, workdir)
  return config, workdir, result


def test_config_json_is_the_resolved_config(recorded_run):
  config, workdir, _ = recorded_run
  with open(os.path.join(workdir, workdir_lib.CONFIG_JSON)) as f:
    saved = json.load(f)
  assert saved['learning_rate'] == 0.0125 and saved['hidden'] == [16, 8]
  assert saved['standardize'] is True and saved['max_steps_per_epoch'] is None
  from tftrain import record  # pylint: disable=g-import-not-at-top
  assert config_lib.Config(**record.config_from_json(saved)) == config


def test_flags_txt_replays_the_config_through_the_launcher_flags(recorded_run):
  config, workdir, _ = recorded_run
  path = os.path.join(workdir, workdir_lib.FLAGS_TXT)
  with open(path) as f:
    lines = f.read().splitlines()
  assert '--learning_rate=0.0125' in lines and '--hidden=16,8' in lines
  assert '--standardize=true' in lines and '--progress=false' in lines
  # Through the flags of a launcher whose defaults differ (cifar10-like).
  fv = flags.FlagValues()
  launch_flags.define_flags(flag_values=fv, dataset='mnist', epochs=50,
                            hidden=(300, 100), learning_rate=5e-4)
  fv(['prog', f'--flagfile={path}'])
  assert launch_flags.config_from_flags(flag_values=fv) == config


def test_every_run_writes_one_hparams_session(recorded_run):
  _, workdir, _ = recorded_run
  events = [e for e in testing.read_events(workdir) if e.plugin == 'hparams']
  assert [e.tag for e in events] == ['_hparams_/session_start_info']
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  info = plugin_data_pb2.HParamsPluginData.FromString(
      events[0].value.metadata.plugin_data.content).session_start_info
  assert info.hparams['learning_rate'].number_value == 0.0125
  assert info.hparams['optimizer'].string_value == 'adam'
  assert info.hparams['hidden'].string_value == '(16, 8)'
