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


def test_help_lists_the_launchers_own_flags_grouped():
  """`python -m launch.deep --help` shows its flags under group headings
  (absl key flags adopted from launch/flags.py), exit status 0."""
  from tests import conftest  # pylint: disable=g-import-not-at-top
  out = conftest.run_python(['-m', 'launch.deep', '--help'], timeout=120)
  assert out.returncode == 0, out.stderr
  text = out.stdout
  assert text.startswith('Vanishing/exploding gradients made visible')
  headings = ['data:', 'model:', 'optimizer:', 'schedule:', 'observability:',
              'distribution:']
  positions = [text.index(f'\n{h}\n') for h in headings]
  assert positions == sorted(positions)
  model = text[positions[1]:positions[2]]
  assert '--activation: Hidden-layer activation.' in model
  assert "(default: 'selu')" in model       # the launcher's own default
  assert '--learning_rate:' in text[positions[2]:positions[3]]
  assert '--log_every_steps:' in text[positions[4]:positions[5]]
  assert '--strategy:' in text[positions[5]:]
  assert '--workdir:' in text and 'tensorflow' not in text.split('flags:')[1][:200]


def test_every_config_field_has_a_help_group():
  grouped = {n for names in launch_flags.FLAG_GROUPS.values() for n in names}
  missing = [f.name for f in dataclasses.fields(config_lib.Config)
             if f.name not in grouped]
  # A field named in no group is listed under the launcher's own heading.
  assert not missing, missing


def test_console_scripts_point_at_each_launchers_entry(tmp_path):
  """pyproject.toml's console scripts resolve, and one run as an installed
  script would (argv[0] a path elsewhere) shows the launcher's --help."""
  import os  # pylint: disable=g-import-not-at-top
  import tomllib  # pylint: disable=g-import-not-at-top
  from tests import conftest  # pylint: disable=g-import-not-at-top
  with open(os.path.join(conftest.REPO_ROOT, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  scripts = project['scripts']
  assert set(scripts) == {'tftrain-mnist', 'tftrain-deep', 'tftrain-cifar10',
                          'tftrain-compare', 'tftrain-lr-find',
                          'tftrain-evaluate'}
  assert 'tensorflow>=2.21' in project['dependencies']
  assert os.path.exists(os.path.join(conftest.REPO_ROOT, 'tftrain', 'py.typed'))
  for target in scripts.values():
    module, _, attr = target.partition(':')
    assert module.startswith('launch.') and attr == 'console'
  code = ('import sys; sys.argv = ["/somewhere/bin/tftrain-cifar10", "--help"]; '
          'from launch.cifar10 import console; console()')
  out = conftest.run_python(['-c', code], cwd=str(tmp_path), timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith('CIFAR-10 deep MLP')
  assert "--batch_norm: Batch norm before or after the activation." in out.stdout
  assert "(default: 'before')" in out.stdout
