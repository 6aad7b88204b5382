"""The run configuration: one frozen dataclass between flags and the library.

Every field has the same name as the launcher flag that sets it, so a
`ConfigError` can name the flag the user has to fix.
"""

import dataclasses
import math
from typing import Optional, Tuple, Union

# Tested, and in the offline mirror; any TFDS image-classification dataset works.
DATASETS = ('mnist', 'fashion_mnist', 'cifar10')
MODELS = ('mlp', 'deep_mlp', 'cnn')
ACTIVATIONS = ('sigmoid', 'tanh', 'relu', 'leaky_relu', 'elu', 'selu', 'gelu',
               'swish')
INITIALIZERS = ('glorot_uniform', 'glorot_normal', 'he_uniform', 'he_normal',
                'lecun_uniform', 'lecun_normal')
BATCH_NORM = ('none', 'before', 'after')
DROPOUT_KINDS = ('auto', 'standard', 'alpha')
DROPOUT_PLACEMENTS = ('output', 'every')
OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adam',
              'adamw', 'nadam')
SCHEDULES = ('constant', 'exponential', 'piecewise', 'onecycle')
STRATEGIES = ('default', 'one_device', 'mirrored', 'multi_worker')
MIXED_PRECISION = ('none', 'mixed_float16', 'mixed_bfloat16')
MONITORS = ('val_accuracy', 'val_loss')
LR_SUGGESTIONS = ('divergence', 'minimum', 'steepest', 'valley')


class ConfigError(ValueError):
  """A bad configuration value; `field` is the flag/field to fix."""

  def __init__(self, field: str, value, fix: str):
    self.field = field
    self.value = value
    super().__init__(f'--{field}={value!s}: {fix}')


def _positive(field, value, integer=False):
  ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  ok = ok and math.isfinite(value) and value > 0
  if integer:
    ok = ok and float(value).is_integer()
  if not ok:
    kind = 'a positive integer' if integer else 'a positive finite number'
    raise ConfigError(field, value, f'must be {kind}.')


def _choice(field, value, choices):
  if value not in choices:
    raise ConfigError(field, value, f'choose one of {", ".join(choices)}.')


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run needs. Defaults follow the seed's MNIST MLP recipe."""
  # Data.
  dataset: str = 'mnist'
  data_dir: Optional[str] = None          # TFDS data dir (None: TFDS default)
  raw_data_dir: Optional[str] = None      # folder of original download files
  validation_size: int = 5000
  standardize: Optional[bool] = None      # None: on for SELU, off otherwise
  batch_size: int = 32                    # global batch
  eval_batch_size: int = 1000
  # Model.
  model: str = 'mlp'
  hidden: Tuple[int, ...] = (300, 100)
  depth: int = 100
  width: int = 100
  filters: Tuple[int, ...] = (16, 32, 64)    # cnn: channels per stage
  activation: str = 'relu'
  kernel_initializer: Optional[str] = None  # None: per-activation default
  batch_norm: str = 'none'
  dropout: float = 0.0                    # rate; 0 = no dropout layers
  dropout_kind: str = 'auto'              # auto: alpha for SELU, else standard
  dropout_placement: str = 'output'       # output: before the output layer;
                                          # every: after every hidden layer
  # Optimization.
  optimizer: str = 'sgd'
  learning_rate: Union[float, str] = 0.3    # or 'auto' (LR finder)
  momentum: float = 0.9
  beta_1: float = 0.9
  beta_2: float = 0.999
  weight_decay: float = 0.004
  schedule: str = 'constant'
  cycle_momentum: bool = True             # onecycle + momentum/nesterov:
                                          # momentum 0.95 -> 0.85 -> 0.95
  decay_rate: float = 0.1                 # exponential: lr * rate**(step/decay_steps)
  decay_epochs: float = 10.0
  boundaries_epochs: Tuple[float, ...] = (5.0, 15.0)   # piecewise
  piecewise_factors: Tuple[float, ...] = (1.0, 0.1, 0.01)
  # Training.
  epochs: int = 20
  patience: int = 5                       # early stopping, in epochs; 0 = off
  monitor: str = 'val_accuracy'
  seed: int = 42
  deterministic: bool = False             # tf op determinism (exact resumes)
  steps_per_loop: int = 100               # train steps per tf.function call
  jit_compile: bool = False
  max_steps_per_epoch: Optional[int] = None  # cap, for smoke tests
  eval_test_every_epoch: bool = False    # test metrics per epoch (studies)
  mc_dropout_samples: int = 0             # MC dropout passes at evaluation
  # Observability.
  log_every_steps: int = 100
  histogram_every_steps: int = 0          # 0 = no histograms
  grad_norms: bool = True                 # per-layer gradient norms
  activation_stats: bool = True           # activation stats on a probe batch
  trace_graph: bool = True
  progress: bool = True
  # LR finder.
  lr_find_start: float = 1e-5
  lr_find_end: float = 10.0
  lr_find_factor: Optional[float] = None   # seed: 1.005 per batch
  lr_find_max_steps: Optional[int] = None  # default: one epoch
  lr_find_stop_factor: float = 4.0
  lr_find_beta: float = 0.98
  lr_suggestion: str = 'divergence'     # 10x below the blow-up (lr_finder.py)
  # Distribution and precision.
  strategy: str = 'default'
  mixed_precision: str = 'none'

  def __post_init__(self):
    if not (isinstance(self.dataset, str) and self.dataset
            and all(c.isalnum() or c in '_./:-' for c in self.dataset)):
      raise ConfigError('dataset', self.dataset,
                        'give a TFDS dataset name, e.g. '
                        f'{", ".join(DATASETS)}.')
    _choice('model', self.model, MODELS)
    _choice('activation', self.activation, ACTIVATIONS)
    if self.kernel_initializer is not None:
      _choice('kernel_initializer', self.kernel_initializer, INITIALIZERS)
    _choice('batch_norm', self.batch_norm, BATCH_NORM)
    _choice('dropout_kind', self.dropout_kind, DROPOUT_KINDS)
    _choice('dropout_placement', self.dropout_placement, DROPOUT_PLACEMENTS)
    if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
      raise ConfigError('dropout', self.dropout,
                        'must be a rate in [0, 1) (e.g. 0.1; 0 = off).')
    _choice('optimizer', self.optimizer, OPTIMIZERS)
    _choice('schedule', self.schedule, SCHEDULES)
    _choice('strategy', self.strategy, STRATEGIES)
    _choice('mixed_precision', self.mixed_precision, MIXED_PRECISION)
    _choice('monitor', self.monitor, MONITORS)
    _choice('lr_suggestion', self.lr_suggestion, LR_SUGGESTIONS)
    if self.learning_rate != 'auto':
      if isinstance(self.learning_rate, str):
        raise ConfigError('learning_rate', self.learning_rate,
                          "must be a positive number or 'auto'.")
      _positive('learning_rate', self.learning_rate)
    for name in ('batch_size', 'eval_batch_size', 'epochs', 'depth', 'width',
                 'steps_per_loop', 'log_every_steps'):
      _positive(name, getattr(self, name), integer=True)
    if self.max_steps_per_epoch is not None:
      _positive('max_steps_per_epoch', self.max_steps_per_epoch, integer=True)
    if not self.filters or any(
        not isinstance(h, int) or h <= 0 for h in self.filters):
      raise ConfigError('filters', ','.join(map(str, self.filters)),
                        'must be a comma list of positive integers.')
    if not self.hidden or any(
        not isinstance(h, int) or h <= 0 for h in self.hidden):
      raise ConfigError('hidden', ','.join(map(str, self.hidden)),
                        'must be a comma list of positive integers.')
    for name in ('validation_size', 'patience', 'histogram_every_steps',
                 'mc_dropout_samples'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 0:
        raise ConfigError(name, value, 'must be a non-negative integer.')
    for name in ('momentum', 'beta_1', 'beta_2', 'lr_find_beta'):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise ConfigError(name, value, 'must be in [0, 1).')
    if self.weight_decay < 0 or not math.isfinite(self.weight_decay):
      raise ConfigError('weight_decay', self.weight_decay,
                        'must be a non-negative finite number.')
    _positive('decay_rate', self.decay_rate)
    _positive('decay_epochs', self.decay_epochs)
    if len(self.piecewise_factors) != len(self.boundaries_epochs) + 1:
      raise ConfigError(
          'piecewise_factors', ','.join(map(str, self.piecewise_factors)),
          'needs exactly one more value than --boundaries_epochs.')
    _positive('lr_find_start', self.lr_find_start)
    _positive('lr_find_end', self.lr_find_end)
    if self.lr_find_end <= self.lr_find_start:
      raise ConfigError('lr_find_end', self.lr_find_end,
                        'must be larger than --lr_find_start.')
    if self.lr_find_factor is not None and not (
        math.isfinite(self.lr_find_factor) and self.lr_find_factor > 1.0):
      raise ConfigError('lr_find_factor', self.lr_find_factor,
                        'must be a finite number > 1 (the seed uses 1.005).')
    if self.lr_find_max_steps is not None:
      _positive('lr_find_max_steps', self.lr_find_max_steps, integer=True)
    if not self.lr_find_stop_factor > 1.0:
      raise ConfigError('lr_find_stop_factor', self.lr_find_stop_factor,
                        'must be > 1 (default 4).')

  @property
  def standardize_inputs(self) -> bool:
    """Standardize inputs by the training set's mean/std (SELU needs it)."""
    if self.standardize is None:
      return self.activation == 'selu'
    return self.standardize

  def replace(self, **changes) -> 'Config':
    return dataclasses.replace(self, **changes)
