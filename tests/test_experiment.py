"""Experiment: the checks before the workdir exists."""

import pytest

from tftrain import config as config_lib
from tftrain import errors
from tftrain import experiment


def test_split_size_checks_use_the_prepared_metadata(tiny_mnist_data_dir):
  config = config_lib.Config(data_dir=tiny_mnist_data_dir, validation_size=100)
  experiment.preflight(config.replace(batch_size=500))   # exactly the split: fine
  with pytest.raises(errors.ConfigError, match=r'batch_size=501: .* 500'):
    experiment.preflight(config.replace(batch_size=501))
  with pytest.raises(errors.ConfigError, match=r'validation_size=600: .* 600'):
    experiment.preflight(config.replace(validation_size=600))


def test_observation_interval_from_the_run_length():
  from tftrain import experiment  # pylint: disable=g-import-not-at-top
  # The default interval (100) shortens for short runs: >= 30 observations.
  assert experiment.observation_interval(100, 750) == 25
  assert experiment.observation_interval(100, 20) == 1
  assert experiment.observation_interval(100, 51540) == 100   # the main job
  # A value the user chose is kept.
  assert experiment.observation_interval(5, 750) == 5
  assert experiment.observation_interval(500, 750) == 500
