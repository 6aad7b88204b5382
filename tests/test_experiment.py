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
