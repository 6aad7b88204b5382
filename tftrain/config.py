"""The run configuration: one frozen dataclass between flags and the library.

Every field has the same name as the launcher flag that sets it, so a
`ConfigError` can name the flag the user has to fix.
"""

import dataclasses
import math
import typing
from typing import Any, Optional, Sequence, Tuple, Union

# By name: config raises it, and `config.ConfigError` keeps working for code
# written before every user error moved to tftrain.errors.
from tftrain.errors import ConfigError

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
SCHEDULES = ('auto', 'constant', 'exponential', 'piecewise', 'onecycle')
STRATEGIES = ('default', 'one_device', 'mirrored', 'multi_worker')
MIXED_PRECISION = ('none', 'mixed_float16', 'mixed_bfloat16')
MONITORS = ('val_accuracy', 'val_loss')
LR_SUGGESTIONS = ('divergence', 'minimum', 'steepest', 'valley')
REPAIR = ('off', 'errors', 'warnings')


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


def _field(default, help: str, choices: Optional[Sequence[str]] = None,  # pylint: disable=redefined-builtin
           bare: Optional[str] = None):
  """A Config field; its flag (same name, same default) is generated from it.

  `help` is the flag's help text; `choices` (validated in __post_init__ with
  a one-line ConfigError) are listed in the help; `bare` is the value the
  flag takes when given without one (`--repair` means `--repair=errors`).
  """
  metadata = {'help': help, 'choices': choices}
  if bare is not None:
    metadata['bare'] = bare
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run needs. Defaults follow the seed's MNIST MLP recipe.

  Each field is also a launcher flag of the same name (launch/flags.py builds
  the flags from these fields: type, default, help and choices).
  """
  # Data.
  dataset: str = _field(
      'mnist', 'TFDS image-classification dataset (image + label features; '
      f'offline mirror: {", ".join(DATASETS)}).')
  data_dir: Optional[str] = _field(
      None, 'TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).')
  raw_data_dir: Optional[str] = _field(
      None, 'Folder of original download files, <dataset>/<file>, for '
      'air-gapped machines (default: $TFTRAIN_RAW_DATA_DIR).')
  validation_size: int = _field(
      5000, 'Last N training examples used for validation.')
  standardize: Optional[bool] = _field(
      None, 'Standardize inputs by the train mean/std (auto: on for SELU).')
  batch_size: int = _field(32, 'Global batch size.')
  eval_batch_size: int = _field(1000, 'Evaluation batch size.')
  # Model.
  model: str = _field('mlp', 'Model builder.', MODELS)
  hidden: Tuple[int, ...] = _field((300, 100), 'mlp: hidden layer widths.')
  depth: int = _field(100, 'deep_mlp: number of hidden layers.')
  width: int = _field(100, 'deep_mlp: units per hidden layer.')
  filters: Tuple[int, ...] = _field((16, 32, 64), 'cnn: channels per stage.')
  activation: str = _field('relu', 'Hidden-layer activation.', ACTIVATIONS)
  kernel_initializer: Optional[str] = _field(
      None, 'Keras initializer (default: per activation: Glorot for '
      'sigmoid/tanh, He for the ReLU/ELU family, LeCun normal for SELU).',
      INITIALIZERS)
  batch_norm: str = _field(
      'none', 'Batch norm before or after the activation.', BATCH_NORM)
  dropout: float = _field(0.0, 'Dropout rate (0: no dropout layers).')
  dropout_kind: str = _field(
      'auto', 'auto: AlphaDropout for SELU, Dropout otherwise.', DROPOUT_KINDS)
  dropout_placement: str = _field(
      'output', 'output: before the output layer; every: after every hidden '
      'layer.', DROPOUT_PLACEMENTS)
  # Optimization.
  optimizer: str = _field('sgd', 'Optimizer.', OPTIMIZERS)
  learning_rate: Union[float, str] = _field(
      0.3, "Peak learning rate, or 'auto': the LR finder picks it (and, with "
      '--schedule=auto, trains a 1cycle schedule peaking there).')
  momentum: float = _field(0.9, 'momentum/nesterov: momentum.')
  beta_1: float = _field(0.9, 'Adam family: beta_1.')
  beta_2: float = _field(0.999, 'Adam family: beta_2.')
  weight_decay: float = _field(0.004, 'adamw: weight decay.')
  schedule: str = _field(
      'auto', 'LR schedule; auto: onecycle with --learning_rate=auto, '
      'constant otherwise.', SCHEDULES)
  cycle_momentum: bool = _field(
      True, 'onecycle with momentum/nesterov: momentum 0.95 -> 0.85 -> 0.95.')
  decay_rate: float = _field(
      0.1, 'exponential: lr * decay_rate ** (epoch / decay_epochs).')
  decay_epochs: float = _field(10.0, 'exponential: epochs per decay_rate.')
  boundaries_epochs: Tuple[float, ...] = _field(
      (5.0, 15.0), 'piecewise: epochs where the LR factor changes.')
  piecewise_factors: Tuple[float, ...] = _field(
      (1.0, 0.1, 0.01), 'piecewise: LR factors, one more than '
      '--boundaries_epochs.')
  # Training.
  epochs: int = _field(20, 'Maximum epochs.')
  patience: int = _field(
      5, 'Early stopping patience in epochs (0: off); the best epoch\'s '
      'weights are restored at the end. 1cycle runs its whole cycle and '
      'keeps the last weights.')
  monitor: str = _field(
      'val_accuracy', 'Validation metric for early stopping and best weights.',
      MONITORS)
  seed: int = _field(42, 'Seed for weights and data order.')
  deterministic: bool = _field(
      False, 'Deterministic TF ops: a resumed run then ends with the same '
      'metrics as an uninterrupted one (may be slower on GPU).')
  overwrite: bool = _field(
      False, 'Start fresh in an existing --workdir: its old run is moved '
      'aside to <workdir>.old-<time> (nothing is deleted). Without it an '
      'existing run is resumed, or refused if it was trained with other '
      'settings.')
  steps_per_loop: int = _field(
      100, 'Train steps per tf.function call (in-graph loop).')
  jit_compile: Optional[bool] = _field(
      None, 'XLA-compile the training steps: true, false or auto (on where '
      'it was measured faster: one CPU replica, float32, no convolutions, a '
      'run of at least 5000 steps; off elsewhere; a model XLA cannot compile '
      'trains without it).')
  max_steps_per_epoch: Optional[int] = _field(
      None, 'Cap on steps per epoch (smoke tests).')
  eval_test_every_epoch: bool = _field(
      False, 'Also evaluate the test split after every epoch (studies; '
      'history.json then holds test_accuracy per epoch).')
  mc_dropout_samples: int = _field(
      0, 'MC dropout: also evaluate as the mean of N stochastic passes '
      '(0: off).')
  # Observability.
  log_every_steps: int = _field(
      100, 'Interval of per-step scalars (loss, LR, gradient norms).')
  histogram_every_steps: int = _field(
      0, 'Interval of gradient/weight histograms (0: off).')
  grad_norms: bool = _field(True, 'Log per-layer gradient norms.')
  activation_stats: bool = _field(
      True, 'Log activation statistics (saturated/dead units) on a probe '
      'batch.')
  trace_graph: bool = _field(True, "Write the model's graph for TensorBoard.")
  export: bool = _field(
      True, 'Write the trained model as a SavedModel (<workdir>/export) at '
      'the end; off for sweeps and benchmarks that only read the metrics.')
  profile_steps: Tuple[int, ...] = _field(
      (), 'START,END: a tf.profiler trace of global steps START..END into the '
      "run directory, for TensorBoard's Profile tab (pip install "
      "'tftrain[profile]'); empty: off.")
  stop_on_error: bool = _field(
      False, 'Stop at the first health error found while training (the '
      'checkpoint and the report are kept).')
  progress: bool = _field(
      True, 'Progress bar on a terminal (one line per epoch otherwise).')
  repair: str = _field(
      'off', 'When the health report has an error (warnings: also a warning), '
      "try the findings' remedies on a short budget and train the best one "
      'in <workdir>/repair/<candidate>/ (tftrain.repair; a bare --repair '
      'means errors).', REPAIR, bare='errors')
  # LR finder.
  lr_find_start: float = _field(1e-5, 'LR finder: first LR.')
  lr_find_end: float = _field(10.0, 'LR finder: last LR.')
  lr_find_factor: Optional[float] = _field(
      None, 'LR finder: growth per batch instead of start..end (seed: 1.005).')
  lr_find_max_steps: Optional[int] = _field(
      None, 'LR finder: most sweep steps (default: one epoch).')
  lr_find_stop_factor: float = _field(
      4.0, 'LR finder: stop when the smoothed loss exceeds this x its minimum.')
  lr_find_beta: Optional[float] = _field(
      None, 'LR finder: loss smoothing (exponential moving average); default: '
      '0.98, less for fast sweeps (the average spans about 0.22 of a decade '
      'of LR; lr_finder.smoothing).')
  lr_suggestion: str = _field(
      'divergence', 'The LR finder rule --learning_rate=auto uses with a '
      'schedule other than onecycle.', LR_SUGGESTIONS)
  # Distribution and precision.
  strategy: str = _field(
      'default', 'tf.distribute strategy (multi_worker reads TF_CONFIG).',
      STRATEGIES)
  mixed_precision: str = _field(
      'none', 'Keras mixed-precision policy.', MIXED_PRECISION)

  def __post_init__(self):
    if self.overwrite and self.strategy == 'multi_worker':
      raise ConfigError('overwrite', True, 'is not supported with '
                        '--strategy=multi_worker (every worker would move the '
                        'run); choose a new --workdir.')
    if not (isinstance(self.dataset, str) and self.dataset
            and all(c.isalnum() or c in '_./:-' for c in self.dataset)):
      raise ConfigError('dataset', self.dataset,
                        'give a TFDS dataset name, e.g. '
                        f'{", ".join(DATASETS)}.')
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if field.metadata.get('choices') and value is not None:
        _choice(field.name, value, field.metadata['choices'])
    if self.repair != 'off' and self.strategy == 'multi_worker':
      raise ConfigError('repair', self.repair,
                        'is not supported with --strategy=multi_worker (each '
                        'candidate run needs a new strategy); use off.')
    self._check_sizes()
    self._check_optimization()
    self._check_lr_finder()

  def _check_sizes(self):
    for name in ('batch_size', 'eval_batch_size', 'epochs', 'depth', 'width',
                 'steps_per_loop', 'log_every_steps'):
      _positive(name, getattr(self, name), integer=True)
    if self.max_steps_per_epoch is not None:
      _positive('max_steps_per_epoch', self.max_steps_per_epoch, integer=True)
    for name in ('filters', 'hidden'):
      values = getattr(self, name)
      if not values or any(not isinstance(h, int) or h <= 0 for h in values):
        raise ConfigError(name, ','.join(map(str, values)),
                          'must be a comma list of positive integers.')
    steps = self.profile_steps
    if steps and (len(steps) != 2 or any(
        not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in steps)
                  or steps[0] > steps[1]):
      raise ConfigError('profile_steps', ','.join(map(str, steps)),
                        'give START,END: global steps 1 <= START <= END, '
                        'e.g. 100,110 (empty: off).')
    for name in ('validation_size', 'patience', 'histogram_every_steps',
                 'mc_dropout_samples'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 0:
        raise ConfigError(name, value, 'must be a non-negative integer.')
    if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
      raise ConfigError('dropout', self.dropout,
                        'must be a rate in [0, 1) (e.g. 0.1; 0 = off).')

  def _check_optimization(self):
    if self.learning_rate != 'auto':
      if isinstance(self.learning_rate, str):
        raise ConfigError('learning_rate', self.learning_rate,
                          "must be a positive number or 'auto'.")
      _positive('learning_rate', self.learning_rate)
    for name in ('momentum', 'beta_1', 'beta_2', 'lr_find_beta'):
      value = getattr(self, name)
      if value is not None and not 0.0 <= value < 1.0:
        raise ConfigError(name, value, 'must be in [0, 1).')
    if self.weight_decay < 0 or not math.isfinite(self.weight_decay):
      raise ConfigError('weight_decay', self.weight_decay,
                        'must be a non-negative finite number.')
    _positive('decay_rate', self.decay_rate)
    _positive('decay_epochs', self.decay_epochs)
    if any(not isinstance(b, (int, float)) or b <= 0
           for b in self.boundaries_epochs) or list(
               self.boundaries_epochs) != sorted(set(self.boundaries_epochs)):
      raise ConfigError(
          'boundaries_epochs', ','.join(map(str, self.boundaries_epochs)),
          'must be increasing positive epochs, e.g. 5,15.')
    if any(isinstance(f, (str, bool)) or not f > 0
           for f in self.piecewise_factors):
      raise ConfigError(
          'piecewise_factors', ','.join(map(str, self.piecewise_factors)),
          'must be positive numbers, e.g. 1,0.1,0.01.')
    if len(self.piecewise_factors) != len(self.boundaries_epochs) + 1:
      raise ConfigError(
          'piecewise_factors', ','.join(map(str, self.piecewise_factors)),
          'needs exactly one more value than --boundaries_epochs.')

  def _check_lr_finder(self):
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

  @property
  def lr_schedule(self) -> str:
    """The schedule trained with: `schedule`, with 'auto' resolved (1cycle
    after the LR finder, constant for a given learning rate)."""
    if self.schedule == 'auto':
      return 'onecycle' if self.learning_rate == 'auto' else 'constant'
    return self.schedule

  @property
  def early_stopping_patience(self) -> int:
    """`patience`, or 0 (off) with 1cycle: the cycle's length is part of the
    schedule, and stopping on a plateau mid-cycle would skip its annealing,
    where most of its accuracy is gained."""
    return 0 if self.lr_schedule == 'onecycle' else self.patience

  @property
  def restore_best_weights(self) -> bool:
    """Whether the run ends on its best validation epoch's weights: yes,
    except with 1cycle, which keeps the annealed weights of its last epoch
    (measured, BUILD.md: as accurate or better on MNIST test in 6 of 6
    runs and on CIFAR-10 validation in 3 of 3, where --monitor=val_loss
    picked mid-cycle epochs)."""
    return self.lr_schedule != 'onecycle'

  def replace(self, **changes) -> 'Config':
    return dataclasses.replace(self, **changes)


FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Config)}

# Fields a resume may change: they change what a run logs or evaluates, where
# its data is read from or how fast it runs, not what it trains. A resume
# with another value of any other field is refused (`record.check_resume`);
# `epochs` may change unless the schedule spans the run (1cycle).
RESUME_SAFE_FIELDS = frozenset({
    'log_every_steps', 'histogram_every_steps', 'grad_norms',
    'activation_stats', 'trace_graph', 'export', 'stop_on_error', 'progress',
    'profile_steps', 'eval_batch_size', 'eval_test_every_epoch',
    'mc_dropout_samples', 'steps_per_loop', 'jit_compile', 'strategy',
    'data_dir', 'raw_data_dir', 'overwrite'})


def _parse_text(kinds, text: str):
  for kind in kinds:
    if kind is bool and text.lower() in ('true', 'false'):
      return text.lower() == 'true'
    if kind in (int, float):
      try:
        return kind(text)
      except ValueError:
        continue
  return text


def field_type(name: str) -> Tuple[str, Tuple[type, ...]]:
  """How Config field `name` is typed: the one reader of the field types.

  Returns:
    ('tuple', (item type,)), ('union', member types: an Optional, or a number
    or text), or ('plain', (type,)). `parse_field` and launch/flags.py's flag
    kinds are both read from it.
  """
  hint = FIELD_TYPES[name]
  origin = typing.get_origin(hint)
  if origin is tuple:
    return 'tuple', typing.get_args(hint)[:1]
  if origin is Union:
    return 'union', typing.get_args(hint)
  return 'plain', (hint,)


def parse_field(name: str, value: Any) -> Any:
  """Command-line text as the type of Config field `name`.

  The one parser of flag and grid values. A tuple field takes a list of
  items or 'a:b' text; an Optional field takes 'none' (Optional[bool] also
  'auto') as None; values that are not text pass through. Text that does not
  parse is returned as is, so the Config's own check reports it in one line
  (e.g. `--hidden=300,x: must be a comma list of positive integers.`).
  """
  shape, kinds = field_type(name)
  if shape == 'tuple':
    items = value.split(':') if isinstance(value, str) else value
    return tuple(_parse_text(kinds, v) if isinstance(v, str) else v
                 for v in items)
  if not isinstance(value, str):
    return value
  if type(None) in kinds and value.lower() in (
      ('none', 'auto') if bool in kinds else ('none',)):
    return None
  return _parse_text(kinds, value)


def format_field(name: str, value: Any) -> Optional[str]:
  """Config field `name`'s value as flag text: the inverse of `parse_field`.

  Returns:
    The text `--name=<text>` takes back to `value` (tuples as comma lists,
    bools as true/false, an Optional[bool]'s None as 'auto', an Optional
    text's None as 'none', floats exactly), or None when no flag text means
    `value` (None of an Optional number: its flag is left at its default).
  """
  shape, kinds = field_type(name)
  if shape == 'tuple':
    return ','.join(repr(v) if isinstance(v, float) else str(v) for v in value)
  if value is None:
    if bool in kinds:
      return 'auto'
    return 'none' if str in kinds else None
  if isinstance(value, bool):
    return 'true' if value else 'false'
  return repr(value) if isinstance(value, float) else str(value)
