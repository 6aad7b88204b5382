"""Repair: a run's health findings -> candidate changes -> short trials -> the repaired run.

`--repair` (Config.repair: 'errors' or 'warnings') makes `train_and_evaluate`
call `maybe_repair` after the run: when the run's health report has a finding
of that severity,

1. `candidates(findings, config, model_info)` turns each finding's remedy
   into concrete changes (`KIND_REMEDIES`: finding kind -> remedy names,
   `REMEDIES`: remedy name -> the settings and architecture it changes):
   Config fields for the built-in models; for your own Sequential or
   functional model a `ModelChange` that `rebuild` applies (clone_model with a
   clone_function: activations, initializers, a linear output, trainable
   layers, dropout rates; batch norm inserted into a Sequential); for a
   subclassed model only the changes that leave it as it is (learning rate,
   optimizer, batch size, input scaling). Candidates answering a symptom
   (`FALLBACK_KINDS`: chance accuracy, LR far from the finder) are used only
   when no finding names a cause.
2. `search` tries each candidate (at most `MAX_CANDIDATES`) on a short budget
   from the same seed (`trial_budget`: 1/3 of the original epochs, all trials
   together at most `TRIAL_BUDGET` x the original), keeps the best by
   validation accuracy and trains it for the original budget. Every run goes
   through `loop.train_and_evaluate` (repair='off') in its own directory:
   `<workdir>/repair/trials/<candidate>/` and `<workdir>/repair/<candidate>/`,
   each with its own health report; the original run's files are not touched.
3. `repair.md` and `repair.json` in the workdir: the findings, the model (and
   whether it could be rebuilt), every candidate with its short-budget
   result, the choice, the before/after table and the extra compute (runs,
   their steps, and the multiple of the original's budget in training
   examples, which is the multiple of steps when the batch size is the same).

Adding a remedy: an entry in `REMEDIES` (a function (config, model_info) ->
`Remedy` or None when it does not apply) and its name in the
`KIND_REMEDIES` lists of the finding kinds it answers.
"""

import collections
import dataclasses
import json
import math
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import tensorflow as tf

from tftrain import checkup
from tftrain import config as config_lib
from tftrain import data
from tftrain import errors
from tftrain import health
from tftrain import models
from tftrain import probes
from tftrain import report
from tftrain import workdir as workdir_lib

REPAIR_DIR = 'repair'             # <workdir>/repair/<candidate>/: final runs
TRIALS_DIR = 'trials'             # <workdir>/repair/trials/<candidate>/
REPAIR_MD = 'repair.md'
REPAIR_JSON = 'repair.json'
SEVERITIES = {'errors': ('error',), 'warnings': ('error', 'warning')}

MAX_CANDIDATES = 4       # tried per repair (the rest are listed, not run)
TRIAL_FRACTION = 1 / 3   # of the original budget per candidate ...
TRIAL_BUDGET = 1.5       # ... and at most this x the original for all trials
TARGET_UPDATES = 500     # smaller_batch: at least this many optimizer updates
LOW_DROPOUT = 0.1        # less_dropout: the rate it sets
# Symptoms: their remedies are tried only when no finding names a cause.
FALLBACK_KINDS = ('chance_accuracy', 'lr_far_from_finder')

_MIXING = checkup._MIXING  # pylint: disable=protected-access
_ADAPTIVE = ('adagrad', 'rmsprop', 'adam', 'adamw', 'nadam')


# ------------------------------------------------------------ candidates --

class Remedy(collections.namedtuple('Remedy', 'description settings architecture')):
  """What a remedy changes, before it meets a model.

  settings: Config fields that leave the model as it is (learning_rate,
    schedule, optimizer, batch_size, standardize).
  architecture: model changes: activation, kernel_initializer,
    output_initializer, batch_norm ('before'), dropout (rate of the existing
    dropout layers), output ('linear': no activation on the output layer),
    trainable (True), linear_layers (also give the layers of linear pairs
    the activation). Built-in models take activation, kernel_initializer,
    batch_norm and dropout as Config fields.
  """


@dataclasses.dataclass(frozen=True)
class ModelChange:
  """Changes `rebuild` makes to a user model (see `Remedy.architecture`)."""
  params: Tuple[Tuple[str, Any], ...]

  @classmethod
  def of(cls, params: Mapping[str, Any]) -> 'ModelChange':
    return cls(tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                            for k, v in params.items())))

  def as_dict(self) -> Dict[str, Any]:
    return dict(self.params)

  def text(self) -> str:
    return ', '.join(f'{k}={list(v) if isinstance(v, tuple) else v}'
                     for k, v in self.params)


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One concrete change to try.

  Attributes:
    name: the remedy's name (its run directory).
    description: one line for the report.
    config_changes: Config field -> value (on your own datasets
      `standardize=True` is applied as a map that standardizes them).
    model_change: a `ModelChange` for your own model, or None.
    kinds: the finding kinds it answers.
  """
  name: str
  description: str
  config_changes: Mapping[str, Any]
  model_change: Optional[ModelChange] = None
  kinds: Tuple[str, ...] = ()

  def changes_text(self) -> str:
    parts = [f'{k}={v}' for k, v in self.config_changes.items()]
    if self.model_change is not None:
      parts.append(f'model: {self.model_change.text()}')
    return '; '.join(parts)

  def to_dict(self) -> Dict[str, Any]:
    return {'name': self.name, 'description': self.description,
            'config_changes': dict(self.config_changes),
            'model_change': (None if self.model_change is None
                             else self.model_change.as_dict()),
            'kinds': list(self.kinds)}


def _lr(info) -> Optional[float]:
  lr = info.get('learning_rate')
  return float(lr) if isinstance(lr, (int, float)) and lr > 0 else None


def _scaled_lr(factor: float, word: str):
  def remedy(config, info):
    lr = _lr(info)
    if lr is None:
      return None
    return Remedy(f'learning rate {lr * factor:.3g} ({word} than {lr:.3g}), '
                  f'{config.lr_schedule} schedule',
                  {'learning_rate': lr * factor, 'schedule': config.lr_schedule},
                  {})
  return remedy


def _lr_finder(config, info):
  del info
  return Remedy(f"the LR finder's pick, {config.lr_schedule} schedule",
                {'learning_rate': 'auto', 'schedule': config.lr_schedule}, {})


def _lr_finder_onecycle(config, info):
  del config, info
  return Remedy("1cycle peaking at the LR finder's pick (a warm-up)",
                {'learning_rate': 'auto', 'schedule': 'onecycle'}, {})


def _adam(config, info):
  del info
  if config.optimizer in _ADAPTIVE:
    return None
  return Remedy('Adam at 1e-3 (an adaptive optimizer)',
                {'optimizer': 'adam', 'learning_rate': 1e-3,
                 'schedule': config.lr_schedule}, {})


def _activation(activation, initializer, what, standardize=False):
  def remedy(config, info):
    del config, info
    return Remedy(what, {'standardize': True} if standardize else {},
                  {'activation': activation, 'kernel_initializer': initializer})
  return remedy


def _default_init(config, info):
  del config
  act = info.get('activation') or 'relu'
  init = models.DEFAULT_INITIALIZER.get(act, 'glorot_uniform')
  return Remedy(f'{init} kernels (random, the default for {act}), '
                'glorot_uniform output', {},
                {'kernel_initializer': init,
                 'output_initializer': 'glorot_uniform'})


def _he_init(config, info):
  del config, info
  return Remedy('He normal kernels', {}, {'kernel_initializer': 'he_normal'})


def _batch_norm(config, info):
  del config, info
  return Remedy('batch normalization before each hidden activation', {},
                {'batch_norm': 'before'})


def _standardize(config, info):
  del config
  how = ("a map standardizing your datasets by the training split's "
         'per-channel mean/std' if info.get('user_data')
         else 'standardize=True (per-channel mean/std of the training split)')
  return Remedy(f'standardized inputs: {how}', {'standardize': True}, {})


def _logits(config, info):
  del config, info
  return Remedy('the same model with the last activation removed (linear '
                'logits)', {}, {'output': 'linear'})


def _unfreeze(config, info):
  del config, info
  return Remedy('every layer trainable', {}, {'trainable': True})


def _smaller_batch(config, info):
  examples = info.get('train_examples')
  if not examples:
    return None
  batch = 32
  while batch > 8 and examples * config.epochs / batch < TARGET_UPDATES:
    batch //= 2
  if batch >= config.batch_size:
    return None
  updates = examples // batch * config.epochs
  return Remedy(f'batch size {batch} ({updates} updates instead of '
                f'{examples // config.batch_size * config.epochs})',
                {'batch_size': batch}, {})


def _less_dropout(config, info):
  del config
  rate = info.get('dropout') or 0.0
  if rate <= LOW_DROPOUT:
    return None
  return Remedy(f'dropout {LOW_DROPOUT:g} instead of {rate:g}', {},
                {'dropout': LOW_DROPOUT})


def _add_dropout(config, info):
  if info.get('kind') != 'builtin' or config.dropout:
    return None
  return Remedy('dropout 0.2 before the output layer', {}, {'dropout': 0.2})


def _nonlinear(config, info):
  del config, info
  return Remedy('ReLU (He normal) between the linear layers', {},
                {'activation': 'relu', 'kernel_initializer': 'he_normal',
                 'linear_layers': True})


REMEDIES: Dict[str, Callable[[config_lib.Config, Dict[str, Any]],
                             Optional[Remedy]]] = {
    'logits': _logits,
    'unfreeze': _unfreeze,
    'standardize': _standardize,
    'default_init': _default_init,
    'selu_lecun': _activation('selu', 'lecun_normal', 'SELU with LeCun normal '
                              'kernels and standardized inputs',
                              standardize=True),
    'batch_norm': _batch_norm,
    'relu_he': _activation('relu', 'he_normal', 'ReLU with He normal kernels'),
    'leaky_relu_he': _activation('leaky_relu', 'he_normal',
                                 'leaky ReLU with He normal kernels'),
    'he_init': _he_init,
    'nonlinear': _nonlinear,
    'lr_div10': _scaled_lr(0.1, '10x lower'),
    'lr_div100': _scaled_lr(0.01, '100x lower'),
    'lr_x10': _scaled_lr(10.0, '10x higher'),
    'lr_x100': _scaled_lr(100.0, '100x higher'),
    'lr_finder': _lr_finder,
    'lr_finder_onecycle': _lr_finder_onecycle,
    'adam': _adam,
    'smaller_batch': _smaller_batch,
    'less_dropout': _less_dropout,
    'add_dropout': _add_dropout,
}

# Finding kind -> remedies, most specific first (health.REMEDIES in words).
KIND_REMEDIES: Dict[str, Tuple[str, ...]] = {
    'probabilities_as_logits': ('logits',),
    'output_activation': ('logits',),
    'model_not_training': ('unfreeze',),
    'frozen_layers': ('unfreeze',),
    'unscaled_inputs': ('standardize',),
    'symmetric_units': ('default_init',),
    'vanishing_gradients': ('selu_lecun', 'batch_norm', 'relu_he'),
    # A rate off by one order and one off by two are both tried (the trial
    # picks): 10x is still 10x too far from a rate 100x off.
    'exploding_gradients': ('lr_div10', 'lr_div100', 'default_init',
                            'batch_norm'),
    'saturated_units': ('relu_he', 'selu_lecun', 'batch_norm'),
    # default_init: He for ReLU hidden layers, Glorot for the output (what
    # a healthy model starts from; He on the output too trained 1.2 points
    # below the twins); dropped as a no-op where the model has it already.
    'dead_units': ('default_init', 'leaky_relu_he', 'lr_div10', 'lr_div100'),
    'lr_too_high': ('lr_finder', 'lr_div10', 'lr_div100'),
    'oscillating_loss': ('lr_div10', 'lr_finder', 'lr_div100'),
    'lr_too_low': ('lr_x10', 'lr_x100', 'lr_finder', 'adam'),
    'too_few_steps': ('smaller_batch',),
    'chance_accuracy': ('lr_finder', 'standardize', 'batch_norm'),
    'labels_unlearnable': (),       # the data: nothing mechanical to try
    'label_noise': (),
    'too_much_regularization': ('less_dropout',),
    # A divergence within the first steps at a rate that trains the same
    # model from a sane start is the initialization's (init stddev 3: 10x
    # lower LR still at chance); a no-op where the init is the default.
    'diverged': ('lr_div10', 'default_init', 'lr_finder_onecycle',
                 'lr_div100'),
    'overfitting': ('add_dropout',),
    'linear_stack': ('nonlinear',),
    'lr_far_from_finder': ('lr_finder',),
}
_BUILTIN_ARCH = ('activation', 'kernel_initializer', 'batch_norm', 'dropout')


def _snake(name: str) -> str:
  return re.sub(r'(?<!^)(?=[A-Z])', '_', name).lower()


def _training_signature(config: config_lib.Config) -> Tuple:
  return (config.learning_rate, config.lr_schedule, config.optimizer,
          config.batch_size)


def _builtin_signature(config: config_lib.Config) -> Tuple:
  return (config.activation,
          config.kernel_initializer or models.default_initializer(
              config.activation),
          config.batch_norm, config.dropout)


def _user_architecture(arch: Dict[str, Any], info) -> Dict[str, Any]:
  """`arch` without the changes a user model already has (no-ops)."""
  arch = dict(arch)
  if arch.get('linear_layers'):
    arch['linear_layers'] = [a for a, _ in info.get('linear_pairs') or ()]
    if not arch['linear_layers']:
      del arch['linear_layers']
  if ('activation' in arch and not arch.get('linear_layers')
      and set(info.get('activations', ())) == {arch['activation']}):
    del arch['activation']
  if 'activation' not in arch:
    arch.pop('linear_layers', None)
  init = arch.get('kernel_initializer')
  if init and set(info.get('initializers', ())) == {init} and (
      'output_initializer' not in arch
      or info.get('output_initializer') == arch['output_initializer']):
    del arch['kernel_initializer']
    arch.pop('output_initializer', None)
  if arch.get('batch_norm') and info.get('batch_norm'):
    del arch['batch_norm']
  if 'dropout' in arch and not (info.get('dropout') or 0) > arch['dropout']:
    del arch['dropout']
  if arch.get('output') == 'linear' and not info.get('output_activation'):
    del arch['output']
  if arch.get('trainable') and not info.get('frozen'):
    del arch['trainable']
  return arch


def _realize(name: str, kinds: Sequence[str], config: config_lib.Config,
             info: Dict[str, Any]) -> Optional[Candidate]:
  """Remedy `name` as a Candidate for this model, or None (no-op, n/a)."""
  remedy = REMEDIES[name](config, info)
  if remedy is None:
    return None
  settings = {k: v for k, v in remedy.settings.items()
              if k != 'standardize' and getattr(config, k) != v}
  if _training_signature(config.replace(**settings)) == _training_signature(
      config):
    settings = {}        # e.g. only the schedule's spelling would change
  if 'standardize' in remedy.settings:
    current = (info.get('standardized') if info.get('user_data')
               else config.standardize_inputs)
    if current != remedy.settings['standardize']:
      settings['standardize'] = remedy.settings['standardize']
  arch = dict(remedy.architecture)
  model_change = None
  kind = info.get('kind')
  if kind == 'builtin':
    arch.pop('output_initializer', None)
    if set(arch) - set(_BUILTIN_ARCH):
      return None        # linear outputs, frozen layers: not in built-ins
    if config.model == 'cnn' and set(arch) - {'dropout'}:
      return None        # the cnn builder has fixed ReLU/He/batch norm
    changes = {**settings, **{k: v for k, v in arch.items()
                              if getattr(config, k) != v}}
    if not changes:
      return None
    new = config.replace(**changes)
    if (_builtin_signature(new) == _builtin_signature(config)
        and not settings):
      return None
  elif info.get('rebuildable'):
    arch = _user_architecture(arch, info)
    if arch.get('batch_norm') and kind != 'sequential':
      return None        # inserting layers: Sequential models only
    if arch:
      model_change = ModelChange.of(arch)
    changes = settings
  else:                  # subclassed: only what leaves the model as it is
    if arch:
      return None
    changes = settings
  if not changes and model_change is None:
    return None
  return Candidate(name, remedy.description, changes, model_change,
                   tuple(kinds))


def _as_dict(finding) -> Dict[str, Any]:
  return finding.to_dict() if isinstance(finding, health.Finding) else finding


def _round_robin(lists, config, info) -> List[Candidate]:
  """Each finding's first remedy, then each one's second, ...; de-duplicated
  by name and by the changes they make."""
  made: Dict[str, Optional[Candidate]] = {}
  kinds: Dict[str, List[str]] = {}
  depth = max((len(names) for _, names in lists), default=0)
  for rank in range(depth):
    for kind, names in lists:
      if rank >= len(names):
        continue
      name = names[rank]
      if name in made:
        if made[name] is not None and kind not in kinds[name]:
          kinds[name].append(kind)
        continue
      candidate = _realize(name, [kind], config, info)
      if candidate is not None and any(
          c is not None and (dict(c.config_changes), c.model_change) ==
          (dict(candidate.config_changes), candidate.model_change)
          for c in made.values()):
        candidate = None             # the same change under another name
      made[name] = candidate
      kinds[name] = [kind]
  return [dataclasses.replace(c, kinds=tuple(kinds[n]))
          for n, c in made.items() if c is not None]


def candidates(findings: Sequence[Any], config: config_lib.Config,
               model_info: Dict[str, Any]) -> List[Candidate]:
  """The findings' remedies as concrete candidates, best guesses first.

  Args:
    findings: `health.Finding`s or their dicts (health.json), in report
      order (errors first).
    config: the run's Config.
    model_info: `describe_model`'s dict (kind: builtin | sequential |
      functional | subclassed, rebuildable, activations, initializers, ...).

  Returns:
    De-duplicated candidates: each finding's first remedy, then each one's
    second, ...; the remedies of `FALLBACK_KINDS` only when no other finding
    gave one. Remedies that change nothing for this model, or that it cannot
    take (a subclassed model: architecture changes), are left out.
  """
  findings = [_as_dict(f) for f in findings]
  causes = [(f['kind'], KIND_REMEDIES.get(f['kind'], ())) for f in findings
            if f['kind'] not in FALLBACK_KINDS]
  out = _round_robin(causes, config, model_info)
  if not out:
    out = _round_robin([(f['kind'], KIND_REMEDIES.get(f['kind'], ()))
                        for f in findings if f['kind'] in FALLBACK_KINDS],
                       config, model_info)
  return out


def with_context(cands: List[Candidate], findings: Sequence[Any],
                 report: Sequence[Any], config: config_lib.Config,
                 model_info: Dict[str, Any]) -> List[Candidate]:
  """`cands` (from the findings acted on) filled up to `MAX_CANDIDATES` from
  the report's other findings (its warnings, under `--repair=errors`):
  a net at chance whose gradients explode, or whose units died at 100x the
  learning rate, gets the remedies of that evidence too. When the acted-on
  findings are only symptoms (`FALLBACK_KINDS`), the causes' remedies come
  first."""
  acted = {f['kind'] for f in findings}
  context = [f for f in (_as_dict(f) for f in report)
             if f['kind'] not in acted]
  if len(cands) >= MAX_CANDIDATES or not context:
    return cands
  every = candidates(list(findings) + context, config, model_info)
  if all(k in FALLBACK_KINDS for k in acted):
    first, then = every, cands
  else:
    first, then = cands, every
  names = {c.name for c in first}
  return first + [c for c in then if c.name not in names]


def all_candidates(config: config_lib.Config,
                   model_info: Dict[str, Any]) -> List[Candidate]:
  """Every remedy of every finding kind that applies to this model (the
  random-remedy baseline's pool)."""
  by_remedy: Dict[str, List[str]] = {}
  for kind, names in KIND_REMEDIES.items():
    for name in names:
      by_remedy.setdefault(name, []).append(kind)
  return _round_robin([(kinds[0], (name,)) for name, kinds in
                       by_remedy.items()], config, model_info)


# ------------------------------------------------------------ the model --

def _initializer_name(layer) -> Optional[str]:
  init = getattr(layer, 'kernel_initializer', None)
  return _snake(type(init).__name__) if init is not None else None


def _image_shape(datasets) -> Tuple[int, ...]:
  spec = datasets['train'].element_spec
  image = spec['image'] if isinstance(spec, dict) else spec[0]
  if image.shape.is_fully_defined():
    return tuple(image.shape.as_list())
  element = next(iter(datasets['train'].take(1)))
  x = element['image'] if isinstance(element, dict) else element[0]
  return tuple(x.shape.as_list())


def _looks_standardized(facts: Dict[str, Any]) -> bool:
  mean, std = facts.get('input_mean'), facts.get('input_std')
  return (mean is not None and std is not None and abs(mean) < 0.25
          and 0.5 < std < 2.0)


def describe_model(config: config_lib.Config, workdir: Optional[str] = None,
                   result: Optional[Dict[str, Any]] = None, model=None,
                   datasets=None, num_classes: Optional[int] = None
                   ) -> Dict[str, Any]:
  """What the candidates need to know about the run's model and data.

  Reads `workdir/model_facts.json` (output activation, input scale, frozen
  layers, dropout, train examples) and, for your own model, its layers (a
  function is called once to get an instance).
  """
  info = _run_facts(config, workdir, result, datasets)
  if model is None:
    builtin_dense = config.model != 'cnn'
    info.update(
        kind='builtin', rebuildable=True, source='builtin',
        model_name=config.model,
        activation=config.activation if builtin_dense else 'relu',
        activations=[config.activation if builtin_dense else 'relu'],
        batch_norm=config.batch_norm != 'none' or not builtin_dense,
        dropout=config.dropout)
    return info
  instance = hasattr(model, 'get_weights')
  if not instance:
    model = _model_instance(model, config, datasets, num_classes)
  subclassed = checkup._subclassed(model)  # pylint: disable=protected-access
  kind = ('subclassed' if subclassed else
          'sequential' if isinstance(model, tf.keras.Sequential)
          else 'functional')
  info.update(kind=kind, rebuildable=not subclassed,
              source='instance' if instance else 'function',
              model_name=model.name)
  if subclassed:
    info['note'] = (f'{type(model).__name__} is a subclassed model: it cannot '
                    'be rebuilt, so only changes that leave it as it is '
                    '(learning rate, optimizer, batch size, input scaling) '
                    'were tried.')
    return info
  info.update(_layers_info(checkup.flat_layers(model)))
  return info


def _run_facts(config: config_lib.Config, workdir: Optional[str],
               result: Optional[Dict[str, Any]], datasets) -> Dict[str, Any]:
  """The run's facts from `workdir/model_facts.json` and its result."""
  facts = {}
  path = os.path.join(workdir, checkup.FACTS) if workdir else None
  if path and os.path.exists(path):
    with open(path) as f:
      facts = json.load(f)
  result = result or {}
  info: Dict[str, Any] = {
      'user_data': datasets is not None,
      'learning_rate': result.get('learning_rate', config.learning_rate),
      'train_examples': facts.get('train_examples'),
      'output_layer': facts.get('output_layer'),
      'output_activation': facts.get('output_activation'),
      'frozen': bool(facts.get('frozen_layers'))
                or facts.get('trainable_variables') == 0,
      'dropout': facts.get('dropout', 0.0),
      'linear_pairs': facts.get('linear_pairs', [])}
  info['standardized'] = (_looks_standardized(facts) if datasets is not None
                          else config.standardize_inputs)
  return info


def _model_instance(model_fn, config: config_lib.Config, datasets,
                    num_classes: Optional[int]) -> tf.keras.Model:
  """Calls a model function once, on the run's image shape and classes."""
  if datasets is not None:
    shape = _image_shape(datasets)
  else:
    _, data_info = data.load_splits(
        config.dataset, data.prepare(config.dataset, config.data_dir,
                                     config.raw_data_dir),
        config.validation_size)
    shape, num_classes = data_info.image_shape, data_info.num_classes
  return model_fn(shape, num_classes)


def _layers_info(layers) -> Dict[str, Any]:
  """Activations, initializers, batch norm, dropout and frozen layers of a
  model's (flattened) layers."""
  hidden = layers[:-1]
  acts = [probes.activation_name(l) for l in hidden]
  counts = collections.Counter(a for a in acts if a)
  return dict(
      activations=sorted(counts),
      activation=counts.most_common(1)[0][0] if counts else None,
      initializers=sorted({_initializer_name(l) for l in hidden
                           if isinstance(l, _MIXING)} - {None}),
      output_initializer=_initializer_name(layers[-1]),
      batch_norm=any(isinstance(l, tf.keras.layers.BatchNormalization)
                     for l in layers),
      dropout=max([float(l.rate) for l in layers
                   if isinstance(l, models.DROPOUT_LAYERS)], default=0.0),
      output_activation=probes.activation_name(layers[-1]),
      frozen=any(not l.trainable for l in layers if l.weights))


def _initializer(name: str, seed: Optional[int]):
  init = tf.keras.initializers.get(
      {'class_name': name, 'config': {'seed': seed}})
  return tf.keras.initializers.serialize(init)


def rebuild(model: tf.keras.Model, change: Optional[ModelChange],
            seed: Optional[int] = None, copy_weights: bool = True
            ) -> tf.keras.Model:
  """`model` rebuilt layer by layer from its configs with `change` applied.

  Functional and Sequential models (nested ones too) go through
  `tf.keras.models.clone_model` with a clone_function that edits each layer's
  config: hidden activations (Activation layers, ReLU/ELU/... layers and the
  activation of Dense/Conv layers that have one), kernel initializers of the
  Dense/Conv layers (seeded `seed + i`), dropout rates, trainable flags and
  the output layer's activation. `batch_norm='before'` (Sequential only)
  splits each hidden Dense/Conv into the layer without activation, a
  BatchNormalization and the activation. Layers keep their names. With
  `copy_weights`, unless the change sets initializers, each layer starts
  from `model`'s weights (else from its initializers).

  Raises:
    ValueError: a subclassed model, or batch norm for a non-Sequential one.
  """
  if checkup._subclassed(model):  # pylint: disable=protected-access
    raise ValueError(f'{type(model).__name__} is a subclassed model: it '
                     'cannot be rebuilt from its layers.')
  params = change.as_dict() if change is not None else {}
  output = checkup.flat_layers(model)[-1]
  # A final activation layer (Softmax, Activation('softmax'), ...) is
  # dropped: the model then ends on the layer before it.
  drop_last = params.get('output') == 'linear' and _activation_only(output)
  if drop_last and output not in model.layers:
    raise ValueError(f'the final activation layer {output.name} is inside a '
                     'nested model: drop it there.')
  edit = _layer_editor(model, params, seed, drop_last)
  if params.get('batch_norm') == 'before':
    new_model = _with_batch_norm(model, edit, output)
  else:
    new_model = tf.keras.models.clone_model(model, clone_function=edit,
                                            recursive=True)
  if drop_last:
    if isinstance(new_model, tf.keras.Sequential):
      new_model = tf.keras.Sequential(
          [tf.keras.Input(shape=model.input_shape[1:])] + new_model.layers[:-1],
          name=model.name)
    else:
      new_model = tf.keras.Model(new_model.input,
                                 new_model.get_layer(output.name).input,
                                 name=model.name)
  if copy_weights and not (params.get('kernel_initializer')
                           or params.get('output_initializer')):
    _copy_weights(model, new_model)
  return new_model


def _layer_editor(model: tf.keras.Model, params: Dict[str, Any],
                  seed: Optional[int], drop_last: bool
                  ) -> Callable[[Any], Any]:
  """`rebuild`'s clone_function: a layer -> its edited copy (from config)."""
  leaves = checkup.flat_layers(model)
  output = leaves[-1]
  mixing = {id(l): i for i, l in enumerate(
      l for l in leaves if isinstance(l, _MIXING))}
  pairs = set(params.get('linear_layers') or ())
  act = params.get('activation')

  def edit(layer):
    cfg = layer.get_config()
    if params.get('trainable'):
      cfg['trainable'] = True
    index = mixing.get(id(layer))
    seed_i = None if seed is None or index is None else seed + index
    if layer is output:
      if params.get('output') == 'linear' and not drop_last:
        cfg['activation'] = 'linear'
      if params.get('output_initializer') and 'kernel_initializer' in cfg:
        cfg['kernel_initializer'] = _initializer(
            params['output_initializer'], seed_i)
      return type(layer).from_config(cfg)
    if act:
      if type(layer).__name__ in probes._ACTIVATION_LAYERS:  # pylint: disable=protected-access
        return tf.keras.layers.Activation(act, name=layer.name)
      if isinstance(layer, tf.keras.layers.Activation):
        cfg['activation'] = act
      elif isinstance(layer, _MIXING) and (
          probes.activation_name(layer) or layer.name in pairs):
        cfg['activation'] = act
    if params.get('kernel_initializer') and isinstance(layer, _MIXING):
      cfg['kernel_initializer'] = _initializer(params['kernel_initializer'],
                                               seed_i)
    if 'dropout' in params and isinstance(layer, models.DROPOUT_LAYERS):
      cfg['rate'] = params['dropout']
    return type(layer).from_config(cfg)
  return edit


def _with_batch_norm(model: tf.keras.Model, edit, output) -> tf.keras.Model:
  """A Sequential model's edited layers with each hidden Dense/Conv split
  into the layer without activation, BatchNormalization and the activation."""
  if not isinstance(model, tf.keras.Sequential):
    raise ValueError('batch norm can be inserted into Sequential models '
                     'only.')
  layers = [tf.keras.Input(shape=model.input_shape[1:])]
  for layer in model.layers:
    new = edit(layer)
    if layer is output or not isinstance(layer, _MIXING):
      layers.append(new)
      continue
    cfg = new.get_config()
    activation = probes.activation_name(new)
    cfg['activation'] = 'linear'
    layers += [type(new).from_config(cfg),
               tf.keras.layers.BatchNormalization(name=f'{layer.name}_bn')]
    if activation:
      layers.append(tf.keras.layers.Activation(
          activation, name=f'{layer.name}_act'))
  return tf.keras.Sequential(layers, name=model.name)


def _activation_only(layer) -> bool:
  return (isinstance(layer, tf.keras.layers.Activation)
          or type(layer).__name__ in probes._ACTIVATION_LAYERS)  # pylint: disable=protected-access


def _copy_weights(source, target) -> None:
  """Each layer of `target` starts from the same-named layer's weights."""
  by_name = {l.name: l for l in checkup.flat_layers(source)}
  for layer in checkup.flat_layers(target):
    src = by_name.get(layer.name)
    if src is None or not layer.weights:
      continue
    weights = src.get_weights()
    if [w.shape for w in weights] == [tuple(v.shape) for v in layer.weights]:
      layer.set_weights(weights)


# ------------------------------------------------------------- the data --

def _image_map(fn):
  def apply(*element):
    if len(element) == 1 and isinstance(element[0], dict):
      out = dict(element[0])
      out['image'] = fn(out['image'])
      return out
    x, y = element
    return fn(x), y
  return apply


def standardized_datasets(datasets: Dict[str, tf.data.Dataset]
                          ) -> Dict[str, tf.data.Dataset]:
  """Your splits standardized by the training split's per-channel mean/std
  (a map in front of each; labels untouched)."""
  pairs = datasets['train'].map(_image_map(lambda x: tf.cast(x, tf.float32)))
  if isinstance(pairs.element_spec, dict):
    pairs = pairs.map(lambda d: (d['image'], d['label']))
  mean, std = data.channel_stats(pairs)
  scale = lambda x: (tf.cast(x, tf.float32) - mean) / std
  return {k: d.map(_image_map(scale)) for k, d in datasets.items()}


# ---------------------------------------------------------- the search --

@dataclasses.dataclass
class Subject:
  """The run being repaired and what each candidate run is made from."""
  config: config_lib.Config
  workdir: str
  result: Dict[str, Any]
  model: Any = None                 # None, a Keras model or a function
  datasets: Optional[Dict[str, tf.data.Dataset]] = None
  num_classes: Optional[int] = None
  initial_weights: Optional[List[Any]] = None   # a model object's start
  info: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # What trains each candidate: `loop.train_and_evaluate` (passed in, so
  # this module does not import the loop that calls it).
  train: Optional[Callable[..., Dict[str, Any]]] = None
  _scaled: Optional[Dict[str, tf.data.Dataset]] = None

  @property
  def steps_per_epoch(self) -> Optional[int]:
    return _steps_per_epoch(self.workdir, self.config)

  @property
  def budget_steps(self) -> Optional[int]:
    spe = self.steps_per_epoch
    return None if spe is None else spe * self.config.epochs

  def scaled(self):
    if self._scaled is None:
      self._scaled = standardized_datasets(self.datasets)
    return self._scaled


def subject(config: config_lib.Config, workdir: str,
            result: Optional[Dict[str, Any]] = None, model=None,
            datasets=None, num_classes: Optional[int] = None,
            initial_weights=None, train=None) -> Subject:
  """The Subject of a finished run in `workdir` (its metrics.json when
  `result` is None); `train`: `loop.train_and_evaluate`."""
  if result is None:
    result = _read_json(os.path.join(workdir, workdir_lib.METRICS_JSON))
  info = describe_model(config, workdir, result, model, datasets, num_classes)
  if (hasattr(model, 'get_weights') and not info.get('rebuildable')
      and initial_weights is None):
    info['note'] += (' Its weights before the original run were not kept, '
                     'so every candidate continues from the trained weights.')
  return Subject(config, workdir, result, model, datasets, num_classes,
                 initial_weights, info, train)


def _read_json(path: str) -> Dict[str, Any]:
  with open(path) as f:
    return json.load(f)


def _steps_per_epoch(run_dir: str, config: config_lib.Config
                     ) -> Optional[int]:
  path = os.path.join(run_dir, checkup.FACTS)
  if not os.path.exists(path):
    return None
  examples = _read_json(path).get('train_examples')
  if not examples:
    return None
  spe = examples // config.batch_size
  if config.max_steps_per_epoch:
    spe = min(spe, config.max_steps_per_epoch)
  return spe


def trial_budget(config: config_lib.Config, steps_per_epoch: int,
                 n: int) -> Dict[str, int]:
  """Config overrides of a short trial: `TRIAL_FRACTION` of the original
  budget, all `n` trials together at most `TRIAL_BUDGET` x it. Whole epochs
  when that is at least one (the schedule is then the original's first
  epochs), else one epoch capped by max_steps_per_epoch."""
  total = config.epochs * steps_per_epoch
  target = total * min(TRIAL_FRACTION, TRIAL_BUDGET / max(n, 1))
  if target >= steps_per_epoch:
    epochs = max(1, round(target / steps_per_epoch))
    while epochs > 1 and n * epochs * steps_per_epoch > TRIAL_BUDGET * total:
      epochs -= 1
    return {'epochs': epochs}
  return {'epochs': 1, 'max_steps_per_epoch': max(1, int(target))}


def _model_for(s: Subject, candidate: Candidate):
  """The `model=` argument of a candidate's run (fresh for every run)."""
  change = candidate.model_change
  if s.model is None:
    return None
  seed = s.config.seed
  if hasattr(s.model, 'get_weights'):          # a model object
    if s.initial_weights is not None:
      s.model.set_weights(s.initial_weights)   # the original's start
    if not s.info.get('rebuildable'):
      return s.model
    return lambda shape, n: rebuild(s.model, change, seed,
                                    s.initial_weights is not None)
  if change is None:
    return s.model
  return lambda shape, n: rebuild(s.model(shape, n), change, seed)


def _datasets_for(s: Subject, candidate: Candidate):
  if s.datasets is None:
    return None
  if candidate.config_changes.get('standardize') and not s.info.get(
      'standardized'):
    return s.scaled()
  return s.datasets


def _best_val(result) -> Tuple[Optional[float], str]:
  history = result.get('history') or []
  vals = [h['val_accuracy'] for h in history
          if h.get('val_accuracy') is not None
          and math.isfinite(h['val_accuracy'])]
  if vals:
    return max(vals), 'val_accuracy'
  accs = [h['accuracy'] for h in history if math.isfinite(h.get(
      'accuracy', math.nan))]
  return (accs[-1] if accs else None), 'accuracy'


def run_summary(run_dir: str, config: config_lib.Config,
                result: Dict[str, Any]) -> Dict[str, Any]:
  """One run's line: status, accuracies, health kinds, steps, examples."""
  spe = _steps_per_epoch(run_dir, config)
  if result.get('status') == 'diverged':
    steps = int(result.get('diverged_step') or 0)
  else:
    steps = (spe or 0) * len(result.get('history') or [])
  finder = int((result.get('lr_finder') or {}).get('steps', 0))
  best, metric = _best_val(result)
  healthy = (result.get('health') or {}).get('findings')
  return {
      'run_dir': run_dir, 'status': result.get('status'),
      'best_' + metric: best, 'metric': metric,
      'val_accuracy': result.get('val_accuracy'),
      'test_accuracy': result.get('test_accuracy'),
      'learning_rate': result.get('learning_rate'),
      'health': healthy if healthy is not None else [],
      'steps': steps, 'lr_finder_steps': finder,
      'examples': (steps + finder) * config.batch_size,
      'batch_size': config.batch_size, 'epochs_run': len(
          result.get('history') or []),
      'wall_seconds': result.get('wall_seconds')}


def _train(s: Subject, candidate: Candidate, run_dir: str,
           overrides: Mapping[str, Any]) -> Dict[str, Any]:
  """One candidate run through train_and_evaluate; its summary line."""
  config = s.config.replace(**{**candidate.config_changes, **overrides,
                               'repair': 'off'})
  logging.info('repair: %s in %s (%s)', candidate.name, run_dir,
               candidate.changes_text())
  try:
    result = s.train(
        config, run_dir, model=_model_for(s, candidate),
        datasets=_datasets_for(s, candidate), num_classes=s.num_classes)
  except errors.NonFiniteError:
    result = _read_json(os.path.join(run_dir, workdir_lib.METRICS_JSON))
  except (errors.ConfigError, errors.DataError, ValueError) as e:
    logging.warning('repair: %s failed: %s', candidate.name,
                    errors.first_line(e))
    return {'run_dir': run_dir, 'status': 'error', 'error':
            errors.first_line(e), 'health': [], 'steps': 0,
            'lr_finder_steps': 0, 'examples': 0,
            'batch_size': config.batch_size}
  row = run_summary(run_dir, config, result)
  row['config'] = config
  return row


def _score(row) -> Tuple:
  value = row.get('best_val_accuracy', row.get('best_accuracy'))
  ok = row['status'] not in ('diverged', 'error', 'interrupted')
  return (ok, value if value is not None else -1.0)


def search(s: Subject, cands: Sequence[Candidate], root: str
           ) -> Dict[str, Any]:
  """Short trials of `cands` in `root/trials/`, the best (by validation
  accuracy; the first on ties) trained for the original budget in
  `root/<name>/`. One candidate is trained directly, without a trial.

  Returns:
    {'trials': [row per candidate], 'trial_overrides', 'chosen': name or
    None, 'final': row or None, 'status': 'done' | 'interrupted' |
    'no_candidates'}.
  """
  out = {'trials': [], 'trial_overrides': {}, 'chosen': None, 'final': None,
         'status': 'no_candidates'}
  if not cands:
    return out
  chosen, trial = cands[0], None
  if len(cands) > 1:
    spe = s.steps_per_epoch or 1
    overrides = trial_budget(s.config, spe, len(cands))
    out['trial_overrides'] = overrides
    for c in cands:
      row = _train(s, c, os.path.join(root, TRIALS_DIR, c.name),
                   {**overrides, 'export': False})
      row['name'] = c.name
      out['trials'].append(row)
      if row['status'] == 'interrupted':
        out['status'] = 'interrupted'
        return out
    best = max(range(len(cands)), key=lambda i: _score(out['trials'][i]))
    chosen, trial = cands[best], out['trials'][best]
  out['chosen'] = chosen.name
  final_overrides = {}
  if (trial is not None and chosen.config_changes.get('learning_rate') ==
      'auto' and 'max_steps_per_epoch' not in out['trial_overrides']
      and isinstance(trial.get('learning_rate'), float)):
    # The sweep is the same in the full run (same model, seed, batch and
    # epoch length): reuse its pick instead of sweeping again.
    final_overrides = {'learning_rate': trial['learning_rate'],
                       'schedule': trial['config'].lr_schedule}
  final = _train(s, chosen, os.path.join(root, chosen.name), final_overrides)
  final['name'] = chosen.name
  if final_overrides:
    final['reused_lr_finder_pick'] = trial['learning_rate']
  out['final'] = final
  out['status'] = 'interrupted' if final['status'] == 'interrupted' else 'done'
  return out


def compute(s: Subject, searched: Dict[str, Any]) -> Dict[str, Any]:
  """The extra compute: runs, steps (LR finder sweeps included) and the
  multiple of the original's budget, in training examples."""
  spe = s.steps_per_epoch
  budget_steps = (spe or 0) * s.config.epochs
  finder = int((s.result.get('lr_finder') or {}).get('steps', 0))
  budget_examples = (budget_steps + finder) * s.config.batch_size
  trials = searched['trials']
  final = searched['final']
  trial_steps = sum(r['steps'] + r['lr_finder_steps'] for r in trials)
  final_steps = (final['steps'] + final['lr_finder_steps']) if final else 0
  examples = sum(r['examples'] for r in trials) + (
      final['examples'] if final else 0)
  return {'original_budget_steps': budget_steps + finder,
          'original_budget_examples': budget_examples,
          'trial_runs': len(trials), 'trial_steps': trial_steps,
          'final_runs': int(final is not None), 'final_steps': final_steps,
          'extra_steps': trial_steps + final_steps, 'extra_examples': examples,
          'multiple': examples / budget_examples if budget_examples else None}


def _accuracy(row) -> float:
  for key in ('val_accuracy', 'test_accuracy'):
    v = row.get(key)
    if v is not None and math.isfinite(v):
      return v
  return -1.0


def verdict(before: Dict[str, Any], after: Optional[Dict[str, Any]],
            severities: Sequence[str], after_findings: Sequence[Dict]) -> str:
  """'repaired' (no finding of the severities left and at least as
  accurate), 'improved' (more accurate, findings left), 'not_improved'."""
  if after is None or after['status'] in ('error', 'diverged'):
    return 'not_improved'
  better = _accuracy(after) >= _accuracy(before) + 1e-9
  left = [f for f in after_findings if f['severity'] in severities]
  if better and not left:
    return 'repaired'
  return 'improved' if _accuracy(after) > _accuracy(before) else 'not_improved'


def _findings_of(run_dir: Optional[str]) -> List[Dict[str, Any]]:
  path = run_dir and os.path.join(run_dir, health.HEALTH_JSON)
  if not path or not os.path.exists(path):
    return []
  return _read_json(path).get('findings', [])


# ------------------------------------------------------------ the report --

def _fmt(v, spec='.4f') -> str:
  if v is None:
    return '–'
  if isinstance(v, float):
    return format(v, spec) if math.isfinite(v) else str(v)
  return str(v)


def format_block(rep: Dict[str, Any]) -> str:
  """A few lines for the terminal."""
  if rep['status'] == 'not_needed':
    return rep['summary']
  lines = [f'repair ({rep["mode"]}): {rep["summary"]}']
  for c in rep['candidates']:
    t = c.get('trial') or {}
    mark = '  <- chosen' if c['name'] == rep.get('chosen') else ''
    trial = (f'trial {t.get("metric", "val_accuracy")} '
             f'{_fmt(t.get("best_" + t.get("metric", "val_accuracy")))} '
             f'({t.get("steps", 0) + t.get("lr_finder_steps", 0)} steps, '
             f'{t.get("status")})' if t else c.get('trial_note', ''))
    lines.append(f'  {c["name"]:<18} {c["description"]}: {trial}{mark}')
  for row in rep.get('before_after', []):
    lines.append(f'  {row["run"]:<18} {row["status"]}: val_accuracy '
                 f'{_fmt(row.get("val_accuracy"))}, test accuracy '
                 f'{_fmt(row.get("test_accuracy"))}; health: '
                 f'{row.get("health") or "no problems found"}'
                 + (f' ({row["error"]})' if row.get('error') else ''))
  comp = rep.get('compute')
  if comp and comp.get('multiple') is not None:
    lines.append(f'  extra compute: {comp["trial_runs"]} trials '
                 f'({comp["trial_steps"]} steps) + {comp["final_runs"]} '
                 f'repaired run ({comp["final_steps"]} steps) = '
                 f'{comp["multiple"]:.2f}x the original budget '
                 f'({comp["original_budget_steps"]} steps)')
  lines.append(f'  repair report: {rep["files"]["markdown"]}')
  return '\n'.join(lines)


def _candidates_markdown(rep: Dict[str, Any]) -> List[str]:
  """repair.md's candidates: each one's changes and short-budget result."""
  if not rep['candidates']:
    return ['No candidate: nothing mechanical to try for these findings.']
  lines = []
  over = rep.get('trial_overrides') or {}
  if over:
    lines += [f'Short budget per candidate: `{over}` (same seed).', '']
  rows = []
  for c in rep['candidates']:
    t = c.get('trial') or {}
    metric = t.get('metric', 'val_accuracy')
    rows.append({'candidate': c['name'], 'answers': ', '.join(c['kinds']),
                 'changes': c['changes'],
                 f'trial best {metric}': t.get('best_' + metric),
                 'trial steps': (t.get('steps', 0) + t.get(
                     'lr_finder_steps', 0)) if t else None,
                 'trial status': t.get('status') or c.get('trial_note'),
                 'trial health': ', '.join(t.get('health', [])) if t
                                 else None,
                 'chosen': 'yes' if c['name'] == rep.get('chosen') else ''})
  return lines + [report.markdown_table(rows, missing='–')]


def _compute_markdown(comp: Dict[str, Any]) -> List[str]:
  """repair.md's compute: the original budget and what the repair added."""
  return [
      f'- original budget: {comp["original_budget_steps"]} steps '
      f'({comp["original_budget_examples"]} training examples)',
      f'- {comp["trial_runs"]} trial runs: {comp["trial_steps"]} steps',
      f'- {comp["final_runs"]} repaired run: {comp["final_steps"]} steps',
      f'- extra: {comp["extra_examples"]} training examples = '
      f'**{_fmt(comp["multiple"], ".2f")}x** the original budget '
      '(LR finder sweeps included; in examples so that a smaller '
      'batch is not counted as more work)']


def format_markdown(rep: Dict[str, Any]) -> str:
  """repair.md."""
  lines = [f'# Repair: {os.path.basename(os.path.abspath(rep["workdir"]))}',
           '', f'**{rep["summary"]}**', '',
           f'Mode `--repair={rep["mode"]}`: findings of severity '
           f'{" or ".join(SEVERITIES[rep["mode"]])} are repaired.', '',
           '## Findings', '']
  for f in rep['findings']:
    lines.append(f'- **{f["kind"]}** ({f["severity"]}): {f["summary"]} '
                 f'Try: {f["remedy"]}')
  info = rep['model']
  how = ('built-in (changed through Config fields)'
         if info.get('kind') == 'builtin' else
         f'your own {info.get("kind")} model ({info.get("source")}), '
         + ('rebuilt layer by layer' if info.get('rebuildable')
            else 'not rebuildable'))
  lines += ['', '## Model', '',
            f'- `{info.get("model_name")}`: {how}; hidden activations: '
            f'{", ".join(info.get("activations") or []) or "none"}; data: '
            f'{"your datasets" if info.get("user_data") else "TFDS"}']
  if info.get('note'):
    lines.append(f'- {info["note"]}')
  if rep.get('no_remedy'):
    lines.append(f'- No mechanical remedy for: {", ".join(rep["no_remedy"])}.')
  lines += ['', '## Candidates', ''] + _candidates_markdown(rep)
  if rep.get('not_tried'):
    lines += ['', f'Not tried (limit {MAX_CANDIDATES}): '
              + ', '.join(rep['not_tried']) + '.']
  if rep.get('chosen'):
    lines += ['', '## Choice', '', f'`{rep["chosen"]}`: {rep["choice_reason"]}']
  if rep.get('before_after'):
    lines += ['', '## Before / after', '', report.markdown_table(
        rep['before_after'], ['run', 'status', 'val_accuracy',
                              'test_accuracy', 'learning_rate', 'health',
                              'steps', 'run_dir'],
        formats={'val_accuracy': '.4f', 'test_accuracy': '.4f',
                 'learning_rate': '.4g'},
        missing='–')]
  if rep.get('compute'):
    lines += ['', '## Compute', ''] + _compute_markdown(rep['compute'])
  return '\n'.join(lines) + '\n'


def _summary(rep) -> str:
  kinds = ', '.join(f['kind'] for f in rep['findings'])
  if rep['status'] == 'no_candidates':
    return f'no candidate for {kinds}: nothing mechanical to try'
  if rep['status'] == 'interrupted':
    return 'interrupted; rerun the same command to resume the repair'
  chosen = rep['chosen']
  before, after = rep['before_after'][0], rep['before_after'][-1]
  words = {'repaired': 'repaired', 'improved': 'improved, not healthy',
           'not_improved': 'not improved'}[rep['status']]

  def acc(row, key):
    return 'diverged' if row['status'] == 'diverged' else _fmt(row.get(key))
  return (f'{words} by {chosen} ({len(rep["candidates"])} candidate'
          f'{"s" * (len(rep["candidates"]) != 1)} for {kinds}): val_accuracy '
          f'{acc(before, "val_accuracy")} -> {acc(after, "val_accuracy")}, '
          f'test accuracy {acc(before, "test_accuracy")} -> '
          f'{acc(after, "test_accuracy")}')


def _before_after(s: Subject, searched) -> List[Dict[str, Any]]:
  original = run_summary(s.workdir, s.config, s.result)
  rows = [{'run': 'original', **original}]
  if searched.get('final'):
    rows.append({'run': f'repaired ({searched["chosen"]})',
                 **searched['final']})
  for row in rows:
    row['health'] = ', '.join(row.get('health') or [])
    row.pop('config', None)
  return rows


def _report(mode: str, workdir: str, findings, info, tried, rest,
            searched) -> Dict[str, Any]:
  """The repair report's findings, model, candidates (each with its trial)
  and choice."""
  trials = {r['name']: r for r in searched['trials']}
  rep: Dict[str, Any] = {
      'mode': mode, 'workdir': workdir, 'findings': findings,
      'model': dict(info),
      'no_remedy': [f['kind'] for f in findings
                    if not KIND_REMEDIES.get(f['kind'])],
      'candidates': [], 'not_tried': [c.name for c in rest],
      'trial_overrides': searched['trial_overrides'],
      'chosen': searched['chosen']}
  for c in tried:
    row = {**c.to_dict(), 'changes': c.changes_text()}
    if c.name in trials:
      row['trial'] = {k: v for k, v in trials[c.name].items()
                      if k not in ('config', 'name')}
    elif len(tried) == 1:
      row['trial_note'] = 'the only candidate: trained for the full budget'
    rep['candidates'].append(row)
  if searched['chosen']:
    t = trials.get(searched['chosen'])
    rep['choice_reason'] = (
        'the only candidate.' if t is None else
        f'the best short-budget {t["metric"]} '
        f'({_fmt(t.get("best_" + t["metric"]))}) of {len(tried)} candidates.')
  return rep


def repair(config: config_lib.Config, workdir: str,
           result: Optional[Dict[str, Any]] = None, model=None,
           datasets=None, num_classes: Optional[int] = None,
           initial_weights=None, findings: Optional[Sequence[Any]] = None,
           *, train: Callable[..., Dict[str, Any]]) -> Dict[str, Any]:
  """Repairs the finished run in `workdir`; returns `result` with 'repair'.

  Args:
    config: the run's Config (`config.repair` picks the severities; 'off'
      is taken as 'errors').
    workdir: the run's directory (read; repair.md/.json and repair/ added).
    result: its train_and_evaluate result (default: its metrics.json).
    model, datasets, num_classes: as given to train_and_evaluate.
    initial_weights: a model object's weights before the original trained.
    findings: the findings to repair (default: those of health.json with the
      severities of `config.repair`).
    train: what trains each candidate: `loop.train_and_evaluate` (passed
      in: the loop calls this module, so it does not import the loop).

  Returns:
    `result` plus 'repair': {status (repaired | improved | not_improved |
    no_candidates | interrupted), summary, block, candidates, chosen,
    before_after, compute, files, ...} (repair.json holds the same).
  """
  mode = config.repair if config.repair != 'off' else 'errors'
  s = subject(config, workdir, result, model, datasets, num_classes,
              initial_weights, train)
  if findings is None:
    findings = [f for f in _findings_of(workdir)
                if f['severity'] in SEVERITIES[mode]]
  findings = [_as_dict(f) for f in findings]
  cands = with_context(candidates(findings, config, s.info), findings,
                       _findings_of(workdir), config, s.info)
  tried, rest = cands[:MAX_CANDIDATES], cands[MAX_CANDIDATES:]
  searched = search(s, tried, os.path.join(workdir, REPAIR_DIR))
  rep = _report(mode, workdir, findings, s.info, tried, rest, searched)
  rep['before_after'] = _before_after(s, searched)
  if searched['status'] in ('no_candidates', 'interrupted'):
    rep['status'] = searched['status']
  else:
    final = searched['final']
    rep['status'] = verdict(rep['before_after'][0], final, SEVERITIES[mode],
                            _findings_of(final['run_dir']))
  rep['compute'] = compute(s, searched) if searched['trials'] or searched[
      'final'] else None
  rep['files'] = {'markdown': os.path.join(workdir, REPAIR_MD),
                  'json': os.path.join(workdir, REPAIR_JSON)}
  rep['summary'] = _summary(rep)
  rep['block'] = format_block(rep)
  with open(rep['files']['markdown'] + '.tmp', 'w') as f:
    f.write(format_markdown(rep))
  os.replace(rep['files']['markdown'] + '.tmp', rep['files']['markdown'])
  workdir_lib.write_json(rep['files']['json'], _jsonable(rep))
  out = dict(s.result)
  out['repair'] = rep
  return out


def _jsonable(obj):
  if isinstance(obj, dict):
    return {k: _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, float) and not math.isfinite(obj):
    return str(obj)
  if isinstance(obj, config_lib.Config):
    return dataclasses.asdict(obj)
  return obj


def maybe_repair(config: config_lib.Config, workdir: str,
                 result: Optional[Dict[str, Any]] = None, model=None,
                 datasets=None, num_classes: Optional[int] = None,
                 initial_weights=None, *,
                 train: Callable[..., Dict[str, Any]]) -> Dict[str, Any]:
  """`repair` when `config.repair` asks for it and the report has a finding
  of its severities; else `result` (with 'repair': {'status': 'not_needed'}
  when the report had none). An interrupted run is returned as it is."""
  if result is None:
    result = _read_json(os.path.join(workdir, workdir_lib.METRICS_JSON))
  if config.repair == 'off' or result.get('status') == 'interrupted':
    return result
  wanted = [f for f in _findings_of(workdir)
            if f['severity'] in SEVERITIES[config.repair]]
  if not wanted:
    what = ' or '.join(SEVERITIES[config.repair])
    rep = {'status': 'not_needed', 'mode': config.repair,
           'summary': f'repair: not needed (no {what} in the health report)'}
    rep['block'] = rep['summary']
    return {**result, 'repair': rep}
  return repair(config, workdir, result, model, datasets, num_classes,
                initial_weights, wanted, train=train)
