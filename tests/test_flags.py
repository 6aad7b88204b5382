"""Launcher flags are generated from the Config fields: one definition each."""

import dataclasses

from absl import flags
import pytest

from launch import flags as launch_flags
from tftrain import config as config_lib
from tftrain import errors


def parsed(*argv, **defaults):
  fv = flags.FlagValues()
  launch_flags.define_flags(flag_values=fv, **defaults)
  fv(['prog', *argv])
  return launch_flags.config_from_flags(flag_values=fv)


def test_every_config_field_is_a_flag_with_its_default():
  fv = flags.FlagValues()
  launch_flags.define_flags(flag_values=fv)
  names = {f.name for f in dataclasses.fields(config_lib.Config)}
  assert names <= set(fv)
  assert parsed() == config_lib.Config()


def test_flag_text_becomes_typed_config_values():
  config = parsed('--schedule=piecewise', '--boundaries_epochs=2,4.5',
                  '--piecewise_factors=1,0.5,0.1', '--hidden=64,32',
                  '--standardize=true', '--learning_rate=auto',
                  '--lr_find_max_steps=300', '--nograd_norms',
                  '--kernel_initializer=he_normal', epochs=7)
  assert config.boundaries_epochs == (2.0, 4.5)
  assert config.piecewise_factors == (1.0, 0.5, 0.1)
  assert config.hidden == (64, 32) and config.standardize is True
  assert config.learning_rate == 'auto' and config.lr_find_max_steps == 300
  assert config.grad_norms is False and config.epochs == 7
  assert config.kernel_initializer == 'he_normal'
  assert parsed('--learning_rate=0.05').learning_rate == 0.05


@pytest.mark.parametrize('argv, message', [
    (['--hidden=300,x'], '--hidden=300,x: must be a comma list of positive integers.'),
    (['--boundaries_epochs=5,2'], '--boundaries_epochs=5.0,2.0: must be increasing'),
    (['--piecewise_factors=1,0.1'], '--piecewise_factors=1.0,0.1: needs exactly one more'),
    (['--schedule=cosine'], '--schedule=cosine: choose one of auto, constant'),
    (['--kernel_initializer=zeros'], '--kernel_initializer=zeros: choose one of'),
    (['--learning_rate=fast'], "--learning_rate=fast: must be a positive number or 'auto'."),
])
def test_bad_values_name_the_flag_value_and_fix(argv, message):
  with pytest.raises(errors.ConfigError) as e:
    parsed(*argv)
  assert str(e.value).startswith(message)
  assert '\n' not in str(e.value)


def test_choices_are_listed_in_the_help():
  fv = flags.FlagValues()
  launch_flags.define_flags(flag_values=fv)
  assert 'One of: auto, constant, exponential, piecewise, onecycle.' in (
      fv['schedule'].help)
