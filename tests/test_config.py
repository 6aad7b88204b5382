"""Config: every bad value is a one-line ConfigError naming the field; the
derived settings (standardization, schedule, patience, best weights)."""

import pytest

from tftrain import config as config_lib
from tftrain import errors


@pytest.mark.parametrize('changes, message', [
    ({'batch_size': 0}, r'^batch_size=0: '),
    ({'epochs': 2.5}, r'^epochs=2.5: '),
    ({'dropout': 1.0}, r'^dropout=1.0: must be a rate in \[0, 1\)'),
    ({'momentum': 1.0}, r'^momentum=1.0: must be in \[0, 1\)'),
    ({'learning_rate': 'fast'}, r"^learning_rate='fast': must be a positive "
                                r"number or 'auto'"),
    ({'hidden': (300, 0)}, r"^hidden='300,0': must be a comma list"),
    ({'boundaries_epochs': (15, 5), 'piecewise_factors': (1, .1, .01)},
     r"^boundaries_epochs='15,5': must be increasing"),
    ({'boundaries_epochs': (5,), 'piecewise_factors': (1,)},
     r"^piecewise_factors='1': needs exactly one more value"),
    ({'lr_find_start': 1.0, 'lr_find_end': 0.5},
     r'^lr_find_end=0.5: must be larger than --lr_find_start'),
    ({'dataset': 'no such/dataset!'}, r"^dataset='no such/dataset!': give a "
                                      r'TFDS dataset name'),
    ({'optimizer': 'adamw2'}, r"^optimizer='adamw2': choose one of sgd, "),
    ({'repair': 'warnings', 'strategy': 'multi_worker'},
     r"^repair='warnings': is not supported with --strategy=multi_worker"),
])
def test_bad_values_are_one_line_errors_naming_the_field(changes, message):
  with pytest.raises(errors.ConfigError, match=message) as e:
    config_lib.Config(**changes)
  assert '\n' not in str(e.value)


def test_derived_settings_follow_the_schedule_and_activation():
  auto = config_lib.Config(learning_rate='auto', patience=3)
  assert auto.lr_schedule == 'onecycle'
  assert auto.early_stopping_patience == 0 and not auto.restore_best_weights
  fixed = config_lib.Config(learning_rate=0.1, patience=3)
  assert fixed.lr_schedule == 'constant'
  assert fixed.early_stopping_patience == 3 and fixed.restore_best_weights
  assert config_lib.Config(activation='selu').standardize_inputs
  assert not config_lib.Config(activation='relu').standardize_inputs
  assert not config_lib.Config(activation='selu',
                               standardize=False).standardize_inputs


def test_replace_validates_the_new_values():
  config = config_lib.Config()
  assert config.replace(batch_size=64).batch_size == 64
  assert config.batch_size == 32          # replace returns a new Config
  with pytest.raises(errors.ConfigError, match='^batch_size=-1: '):
    config.replace(batch_size=-1)
