"""Training health report: detectors that say what went wrong in a run.

`analyze(run)` takes one dict of recorded series (see `analyze`) and returns
`Finding`s: what is wrong, where (layers, steps), the numbers, the TensorBoard
tag to open and what to try. A healthy run gives []. Every threshold lives in
`THRESHOLDS`. Conditions on per-step series are judged over the later half of
the logged steps and must hold on `sustained_fraction` of them, so a single
spike is not a finding; trends compare medians of the first and last quarter.

Tags named by findings: `grad_norm_heatmap` (image), `grad_norm/<layer>`,
`activation_saturated/act_NNN`, `activation_dead/act_NNN`,
`update_ratio/<layer>`, `loss`, `learning_rate`, `epoch_accuracy`,
`epoch_loss`, `lr_finder/plot`.

Pure Python + numpy so it is cheap to test; matplotlib is imported only inside
`depth_time_heatmap_png`.
"""

import dataclasses
import json
import math
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from tftrain import workdir as workdir_lib

KINDS = ('probabilities_as_logits', 'output_activation', 'model_not_training',
         'frozen_layers', 'unscaled_inputs', 'symmetric_units',
         'vanishing_gradients', 'exploding_gradients', 'saturated_units',
         'dead_units', 'lr_too_high', 'lr_too_low', 'too_few_steps',
         'chance_accuracy', 'labels_unlearnable', 'label_noise',
         'too_much_regularization', 'oscillating_loss', 'diverged',
         'overfitting',
         'linear_stack', 'lr_far_from_finder')
SEVERITIES = ('error', 'warning')    # sort order: errors first
HEALTH_MD = 'health.md'
HEALTH_JSON = 'health.json'

THRESHOLDS = {
    # Fraction of the judged steps (the later half of the logged steps, or of
    # the probe records) on which a condition must hold to be "sustained".
    'sustained_fraction': 0.75,
    # vanishing_gradients: first-hidden / last-hidden gradient-norm ratio below.
    'vanishing_ratio': 1e-3,
    # A gradient norm at or below this has underflowed (float32 ends ~1e-45).
    'underflow_norm': 1e-30,
    # exploding_gradients: first-hidden / last-hidden ratio above.
    'exploding_ratio': 1e3,
    # exploding_gradients: median of the largest layer norm over the last
    # quarter of logged steps above this multiple of the first quarter's.
    'growth_factor': 100.0,
    # Fewest logged steps for a first-vs-last-quarter trend (growth, loss).
    'min_trend_steps': 4,
    # saturated_units: a layer counts when this fraction of its outputs sits
    # at a bound of the activation (sigmoid/tanh, elu/selu negative tail) ...
    # exploding_gradients (forward): std of the deepest probed activation
    # over the first one's above this (healthy SELU/ReLU/sigmoid nets: 1-1.5x
    # measured; SELU with He init and raw inputs: ~30x).
    'activation_growth': 10.0,
    'saturated_fraction': 0.5,
    # ... and the finding needs at least this fraction of the layers (>= 1).
    'saturated_min_layer_fraction': 0.25,
    # dead_units: fraction of a layer's units that output 0 on every probe
    # example; one such layer is a finding.
    'dead_fraction': 0.5,
    # ... an error when a layer's median dead fraction reaches this (all its
    # units dead: no gradient passes back through it).
    'dead_layer_fraction': 0.99,
    # lr_too_high: median hidden-layer ||W_after - W_before|| / ||W_before||
    # above (healthy runs sit around 1e-4..1e-2) ...
    'lr_high_update_ratio': 1e-1,
    # ... or the training loss rose by more than this fraction over the run.
    'loss_rise': 0.1,
    # lr_too_low: median hidden-layer update ratio below this ...
    'lr_low_update_ratio': 1e-5,
    # ... and the training loss fell by less than this fraction over the run.
    'lr_low_min_loss_drop': 0.1,
    # chance_accuracy: accuracy <= min(chance_factor / C,
    # 1/C + chance_margin * (1 - 1/C)); the margin keeps C=2 sensible.
    'chance_factor': 1.5,
    'chance_margin': 0.1,
    # overfitting: the best val_loss is at least this many epochs before the
    # last, while the train loss kept falling ...
    'overfit_min_epochs': 3,
    # ... and the last val_loss is this fraction above the best.
    'overfit_val_rise': 0.05,     # (and val accuracy not above its value
                                  # at the val-loss minimum)
    # lr_far_from_finder: peak LR more than this factor from the suggestion.
    'finder_factor': 10.0,
    # probabilities_as_logits: outputs >= -tol whose rows sum to 1 within tol
    # on the probe batch (a softmax), or all in [0, 1] (a sigmoid).
    'probability_tolerance': 1e-3,
    # unscaled_inputs: largest |input| on the probe batch above this (images
    # scaled to [0, 1] or standardized stay below ~10; raw pixels reach 255).
    'input_abs_max': 20.0,
    # frozen_layers: frozen layers hold at least this fraction of the
    # layers with weights.
    'frozen_fraction': 0.5,
    # symmetric_units: a layer whose units' spread (std across units over
    # mean |output|) stays below this computes one value many times.
    'symmetric_spread': 1e-3,
    # too_few_steps: fewer optimizer updates than this in the whole run.
    'min_updates': 100,
    # labels_unlearnable: train accuracy above chance by this margin (of
    # 1 - 1/C) while validation stays at chance.
    'memorize_margin': 0.1,
    # label_noise / too_much_regularization: validation accuracy above the
    # (dropout-on, running) train accuracy by more than this, last epoch.
    'val_above_train': 0.15,
    # ... or, in each of the last two epochs, validation accuracy above
    # chance by more than this multiple of the train accuracy's margin
    # above chance (labels with noise p give about 1 / (1 - p): 2x at 50%;
    # the 15 healthy twins of the diagnosis suite: 0.84-1.24x from epoch 2) and
    # above the train accuracy by at least val_above_train_min.
    'val_train_margin_ratio': 1.75,
    'val_above_train_min': 0.05,
    # ... too_much_regularization when the model's largest dropout rate is
    # at least this; otherwise the training labels are suspect.
    'heavy_dropout': 0.5,
    # lr_too_low (slow convergence): hidden update ratio below this while
    # the training loss keeps falling at an undiminished rate (the last
    # epoch's drop at least slow_drop_ratio x the one before, and more than
    # slow_min_drop of the loss) and is still above slow_loss_fraction of
    # its first value.
    'slow_update_ratio': 3e-4,
    'slow_drop_ratio': 0.6,
    'slow_min_drop': 0.03,
    'slow_loss_fraction': 0.5,
    # ... or, with the same tiny updates and a loss still falling by
    # slow_min_drop, the last epoch's training loss is still at least this
    # fraction of ln(C), the loss of a uniform guess: after the whole budget
    # the model has taken in almost nothing of the labels (measured: a 100x
    # too low Nadam rate 0.90-1.00 ln C, CIFAR-10 healthy twins 0.49-0.78 ln C).
    'slow_guess_loss_fraction': 0.85,
    # oscillating_loss: the validation loss jumps up by more than this
    # fraction in one epoch while the training loss did not rise by more
    # than oscillation_train_rise (unstable steps, not overfitting).
    'oscillation_jump': 0.25,
    'oscillation_train_rise': 0.05,
    # ... and is reported when the run's validation accuracy never beats the
    # level before the jump again, or when it jumps this many times.
    'oscillation_repeats': 3,
    # ... or, in at least unstable_epochs epochs, the validation loss is
    # above unstable_loss_ratio x the (running) training loss at a validation
    # accuracy no more than unstable_acc_slack below the training accuracy,
    # while the training loss is still above unstable_fit_fraction x ln(C):
    # not overfitting (the model fits its training data no better than the
    # validation data, and fits neither), but weights (or batch-norm
    # statistics) that are in a worse place at each epoch's end than on
    # average during it (measured: Nadam 0.05 with batch norm 1.27x and 1.25x
    # at equal accuracy; the diagnosis suite's healthy twins 0.50-1.33x, those
    # above 1.2x with train accuracy well above validation or loss < 0.5 ln C).
    'unstable_loss_ratio': 1.2,
    'unstable_acc_slack': 0.02,
    'unstable_fit_fraction': 0.5,
    'unstable_epochs': 2,
}

_SATURATING = ('sigmoid', 'tanh')
REMEDIES = {
    'probabilities_as_logits': (
        'The loss expects logits: remove the softmax/sigmoid from the last '
        'layer (Dense(num_classes) with no activation); apply softmax only '
        'when you need probabilities at inference.'),
    'output_activation': (
        'Give the output layer no activation (linear logits); an activation '
        'there clips the logits the loss needs.'),
    'model_not_training': (
        'Make the layers trainable (layer.trainable = True) or give the '
        'model trainable weights; nothing is being learned.'),
    'frozen_layers': (
        'Unfreeze the layers (layer.trainable = True) unless they hold '
        'pretrained weights you meant to keep.'),
    'unscaled_inputs': (
        'Scale the inputs: divide pixels by 255 or standardize each channel '
        '(--standardize); large inputs saturate or kill units and need a '
        'tiny learning rate.'),
    'symmetric_units': (
        'Use a random kernel initializer (He for ReLU, Glorot for '
        'sigmoid/tanh, LeCun normal for SELU); units that start identical '
        'get identical updates and stay identical.'),
    'too_few_steps': (
        'Use a smaller batch size or more epochs: the model needs hundreds '
        'of updates, not a handful.'),
    'labels_unlearnable': (
        'Check that the labels belong to their inputs (a shuffle or join '
        'that separated them); the model memorizes training labels that '
        'carry no signal for new examples.'),
    'label_noise': (
        'Check the training labels: the model agrees with the validation '
        'labels more often than with its own training labels, so many '
        'training labels look wrong.'),
    'too_much_regularization': (
        'Lower the dropout rate (0.1-0.5) or remove dropout from most '
        'layers; the model underfits its own training data.'),
    'oscillating_loss': (
        'Lower the learning rate (about 10x, or start from the LR finder\'s '
        'suggestion) or use a larger batch; the steps overshoot.'),
    'linear_stack': (
        'Put a non-linear activation (ReLU, ELU, SELU, ...) between the '
        'layers; without one they compose to a single linear map.'),
    'vanishing_gradients': (
        'Use a ReLU-family activation with He initialization, or SELU with '
        'LeCun normal initialization and standardized inputs, or add batch '
        'normalization.'),
    'exploding_gradients': (
        'Lower the learning rate and clip gradients (e.g. clipnorm=1.0); use '
        'He/LeCun initialization (LeCun normal with SELU and standardized '
        'inputs) or batch normalization.'),
    'saturated_units': (
        'Saturated units pass almost no gradient: switch to a ReLU-family '
        'activation with He initialization, or SELU with LeCun normal and '
        'standardized inputs, or add batch normalization before the '
        'activation.'),
    'dead_units': (
        'Use He initialization, a leaky ReLU or ELU, or a lower learning '
        'rate; batch normalization also keeps units alive.'),
    'lr_too_high': (
        'Lower the learning rate (run the LR finder and start from its '
        'suggestion) or add gradient clipping.'),
    'lr_too_low': (
        'Raise the learning rate (the LR finder suggestion is a good start) '
        'or switch to an adaptive optimizer such as Adam.'),
    'chance_accuracy': (
        'Check labels and input scaling first, then the learning rate, the '
        'initialization (He for ReLU, LeCun for SELU) and the optimizer; '
        'batch normalization helps deep nets start learning.'),
    'diverged': (
        'Lower the learning rate about 10x, add gradient clipping, or warm '
        'the learning rate up (1cycle).'),
    'overfitting': (
        'Use early stopping with the best epoch\'s weights and regularization '
        '(dropout, L2 weight decay), or more data/augmentation.'),
    'lr_far_from_finder': (
        'Start from the LR finder\'s suggestion, or re-run the finder if the '
        'model, batch size or optimizer changed.'),
}


@dataclasses.dataclass(frozen=True)
class Finding:
  """One problem: what, how bad, where, the evidence and what to try.

  Attributes:
    kind: one of `KINDS`.
    severity: 'error' or 'warning'.
    summary: one plain sentence with the numbers.
    layers: layer (or act_NNN) names concerned, in depth order.
    steps: logged global steps the finding rests on (the first and last step
      of a sustained window, or the specific steps); [] for per-epoch ones.
    numbers: the evidence, name -> value.
    tag: the TensorBoard tag to open.
    remedy: one sentence on what to try.
  """
  kind: str
  severity: str
  summary: str
  layers: List[str] = dataclasses.field(default_factory=list)
  steps: List[int] = dataclasses.field(default_factory=list)
  numbers: Dict[str, float] = dataclasses.field(default_factory=dict)
  tag: str = ''
  remedy: str = ''

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'Finding kind {self.kind!r} is not one of {KINDS}')
    if self.severity not in SEVERITIES:
      raise ValueError(f'Finding severity {self.severity!r} is not one of '
                       f'{SEVERITIES}')

  def to_dict(self) -> Dict[str, Any]:
    """JSON-ready dict; non-finite numbers become 'nan'/'inf'/'-inf'."""
    d = dataclasses.asdict(self)
    d['numbers'] = {k: (float(v) if math.isfinite(v) else str(float(v)))
                    for k, v in self.numbers.items()}
    d['steps'] = [int(s) for s in self.steps]
    return d


# ---------------------------------------------------------------- helpers --

def _fmt(x: float) -> str:
  x = float(x)
  return '0' if x == 0 else f'{x:.3g}'


def _compact(names: Sequence[str], order: Sequence[str] = ()) -> str:
  """'a, b' or 'dense_000..dense_057 (58 layers)' or 'a, b, c and 9 more'."""
  names = list(names)
  if len(names) <= 3:
    return ', '.join(names)
  order = list(order)
  if all(n in order for n in names):
    idx = [order.index(n) for n in names]
    if idx == list(range(idx[0], idx[0] + len(idx))):
      return f'{names[0]}..{names[-1]} ({len(names)} layers)'
  return f'{", ".join(names[:3])} and {len(names) - 3} more'


def _nanmedian(x, axis=None):
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    return np.nanmedian(x, axis=axis)


def _quarters(x: np.ndarray):
  """Medians of the first and the last quarter (at least one value each)."""
  q = max(1, len(x) // 4)
  return float(np.median(x[:q])), float(np.median(x[-q:]))


def _matrix(run, key: str) -> Optional[np.ndarray]:
  """run[key] as float [steps, layers], or None when absent or empty."""
  values = run.get(key)
  if values is None or len(values) == 0:
    return None
  arr = np.asarray(values, np.float64)
  n = len(run['layer_names'])
  if n == 0:
    return None      # a frozen model: no layer to judge
  if arr.ndim != 2 or arr.shape[1] != n:
    raise ValueError(f'{key} has shape {arr.shape}; expected [steps, {n}] '
                     f'(one value per layer of layer_names)')
  return arr


def _series(run, key: str) -> np.ndarray:
  """run[key] as a float array ([] when absent); lists or arrays accepted."""
  values = run.get(key)
  return np.asarray([] if values is None else values, np.float64)


def _steps(run, n: int) -> List[int]:
  steps = run.get('steps')
  if steps is None:
    return list(range(n))      # no steps recorded: observation indices
  if len(steps) != n:
    raise ValueError(f'steps has {len(steps)} entries but the per-step '
                     f'series have {n}')
  return [int(s) for s in steps]


def _sustained(values: np.ndarray, condition) -> Optional[float]:
  """Fraction of finite later-half values meeting condition (None if none)."""
  later = values[len(values) // 2:]
  later = later[np.isfinite(later)]
  return float(np.mean(condition(later))) if later.size else None


def _finding(kind, summary, layers=(), steps=(), numbers=None, tag='',
             severity='warning', remedy=None) -> Finding:
  return Finding(kind, severity, summary, list(layers), [int(s) for s in steps],
                 {k: float(v) for k, v in (numbers or {}).items()}, tag,
                 remedy or REMEDIES[kind])


# -------------------------------------------------------------- detectors --

def _gradient_findings(run, t) -> List[Finding]:
  names = list(run['layer_names'])
  g = _matrix(run, 'grad_norms')
  if g is None:
    return []
  steps = _steps(run, len(g))
  n = len(g)
  out = []
  finite = np.isfinite(g)
  gf = np.where(finite, g, np.nan)
  later = slice(n // 2, None)
  judged = f'the last {n - n // 2} of {n} logged steps'
  exploding = None
  if not finite.all():
    bad_steps = [steps[i] for i in np.nonzero(~finite.all(1))[0]]
    bad = [names[j] for j in np.nonzero(~finite.all(0))[0]]
    exploding = _finding(
        'exploding_gradients',
        f'Gradient norms became non-finite (inf/nan) at {len(bad_steps)} of '
        f'{n} logged steps, first at step {bad_steps[0]}, in '
        f'{_compact(bad, names)}.', bad, bad_steps[:10],
        {'non_finite_steps': len(bad_steps)}, f'grad_norm/{bad[0]}', 'error')
  if len(names) >= 3:
    first, last = gf[:, 0], gf[:, -2]
    with np.errstate(divide='ignore', invalid='ignore'):
      ratio = np.where(last > 0, first / last, np.nan)
    med = _nanmedian(ratio[later])
    low = _sustained(ratio, lambda r: r < t['vanishing_ratio'])
    high = _sustained(ratio, lambda r: r > t['exploding_ratio'])
    window = [steps[n // 2], steps[-1]]
    hidden = _nanmedian(gf[later, :-1], axis=0)
    nums = {'ratio_median': med, 'first_hidden_norm': hidden[0],
            'last_hidden_norm': hidden[-1]}
    if low is not None and low >= t['sustained_fraction']:
      out.append(_vanishing(names, hidden, med, judged, window,
                            {**nums, 'sustained_fraction': low}, t,
                            run.get('activation')))
    if high is not None and high >= t['sustained_fraction'] and not exploding:
      exploding = _finding(
          'exploding_gradients',
          f'Gradients explode toward the input: the first hidden layer\'s '
          f'gradient norm is {_fmt(hidden[0])} vs {_fmt(hidden[-1])} at the '
          f'last hidden layer (ratio {_fmt(med)}, median over {judged}).',
          [names[0], names[-2]], window, {**nums, 'sustained_fraction': high},
          'grad_norm_heatmap')
  if exploding is None:
    exploding = _growth_finding(names, g, gf, finite, steps, t)
  return out + ([exploding] if exploding else [])


def _growth_finding(names, g, gf, finite, steps, t) -> Optional[Finding]:
  """The largest layer norm grew `growth_factor` x from the first quarter."""
  n = len(g)
  peak = np.where(finite, g, -np.inf).max(axis=1)   # largest layer norm
  peak = peak[np.isfinite(peak)]
  exploding = None
  if len(peak) >= t['min_trend_steps']:
    start, end = _quarters(peak)
    if start > 0 and end > t['growth_factor'] * start:
      q = max(1, n // 4)
      worst = names[int(np.argmax(_nanmedian(gf[-q:], axis=0)))]
      exploding = _finding(
          'exploding_gradients',
          f'Gradient norms grow during training: the largest layer norm went '
          f'from {_fmt(start)} (median, first quarter) to {_fmt(end)} (last '
          f'quarter), {_fmt(end / start)}x, largest at {worst}.', [worst],
          [steps[0], steps[-1]],
          {'start_norm': start, 'end_norm': end, 'growth': end / start},
          f'grad_norm/{worst}')
  return exploding


def _vanishing(names, hidden, med, judged, window, nums, t, activation):
  last = hidden[-1]
  back = range(len(hidden) - 2, -1, -1)      # from the output toward input
  weak = next((i for i in back if hidden[i] < t['vanishing_ratio'] * last),
              None)
  zero = next((i for i in back if hidden[i] <= t['underflow_norm']), None)
  first = ('0 (float32 underflow)' if hidden[0] <= t['underflow_norm']
           else _fmt(hidden[0]))
  where = []
  if weak is not None:
    where.append(f'falls below {_fmt(t["vanishing_ratio"])}x the last '
                 f'hidden layer\'s at {names[weak]}')
    nums['vanish_depth'] = weak
  if zero is not None:
    where.append(f'reaches 0 at {names[zero]}')
    nums['zero_depth'] = zero
  tail = ('; going back from the output it ' + ' and '.join(where)
          if where else '')
  layers = [names[i] for i in range(len(hidden) - 1)
            if hidden[i] < t['vanishing_ratio'] * last]
  remedy = REMEDIES['vanishing_gradients']
  if activation in _SATURATING:
    remedy = f'Replace {activation} (it saturates): ' + remedy[0].lower() + \
        remedy[1:]
  return _finding(
      'vanishing_gradients',
      f'Gradients vanish with depth: the first hidden layer\'s gradient norm '
      f'is {first} vs {_fmt(last)} at the last hidden layer (ratio '
      f'{_fmt(med)}, median over {judged}){tail}.', layers, window, nums,
      'grad_norm_heatmap', 'error' if zero is not None else 'warning', remedy)


def _activation_findings(run, t) -> List[Finding]:
  records = run.get('activation_stats') or []
  if not records:
    return []
  later = records[len(records) // 2:]
  order = list(dict.fromkeys(l for _, s in records for l in s))
  out = []
  for key, kind in (('saturated', 'saturated_units'), ('dead', 'dead_units')):
    fracs = {l: np.array([s[l][key] for _, s in later if key in s.get(l, {})])
             for l in order}
    measured = [l for l in order if fracs[l].size]
    if not measured:
      continue
    limit = t[f'{key}_fraction']
    hit = [l for l in measured if np.mean(fracs[l] > limit)
           >= t['sustained_fraction']]
    need = 1 if key == 'dead' else max(1, math.ceil(
        t['saturated_min_layer_fraction'] * len(measured)))
    if len(hit) < need:
      continue
    med = {l: float(np.median(fracs[l])) for l in hit}
    worst = max(hit, key=med.get)
    act = run.get('activation') or 'hidden'
    remedy = REMEDIES[kind]
    if key == 'saturated' and act in ('selu', 'elu'):
      remedy = ('Standardize the inputs and use LeCun normal initialization '
                'for SELU (He for ELU), lower the learning rate, or add batch '
                'normalization.')
    what = (f'of {act} outputs sit at a bound' if key == 'saturated'
            else 'of units output 0 on every probe example')
    out.append(_finding(
        kind, f'{"Units saturate" if key == "saturated" else "Units died"}: '
        f'in {len(hit)} of {len(measured)} hidden layers '
        f'({_compact(hit, order)}) more than {limit:.0%} {what} (median '
        f'{np.median(list(med.values())):.0%}, worst {worst} at '
        f'{med[worst]:.0%}) over the last {len(later)} of {len(records)} '
        f'probe records.', hit, [later[0][0], later[-1][0]],
        {'layers_hit': len(hit), 'layers_measured': len(measured),
         'median_fraction': np.median(list(med.values())),
         'worst_fraction': med[worst]}, f'activation_{key}/{worst}',
        # A layer whose units all output 0 passes no gradient back: nothing
        # before it (or the layer itself) can learn.
        severity=('error' if key == 'dead'
                  and med[worst] >= t['dead_layer_fraction'] else 'warning'),
        remedy=remedy))
  return out


def _activation_growth_finding(run, t) -> List[Finding]:
  """Forward signals that grow with depth (non-self-normalizing SELU, bad
  init): the std of the deepest probed layers over the first one's."""
  records = run.get('activation_stats') or []
  later = records[len(records) // 2:]
  growth, where = [], []
  for _, stats in later:
    names = [l for l in stats if 'std' in stats[l]]
    if len(names) < 3:
      return []
    stds = np.array([stats[l]['std'] for l in names], np.float64)
    if not np.isfinite(stds).all() or stds[0] <= 0:
      continue
    deepest = int(np.argmax(stds))
    growth.append(stds[deepest] / stds[0])
    where.append((names[0], stds[0], names[deepest], stds[deepest]))
  if not growth:
    return []
  hits = np.array(growth) > t['activation_growth']
  if np.mean(hits) < t['sustained_fraction']:
    return []
  first, s0, deep, s1 = where[-1]
  return [_finding(
      'exploding_gradients',
      f'Signals explode with depth: the activation std grows from '
      f'{_fmt(s0)} at {first} to {_fmt(s1)} at {deep} (x{_fmt(s1 / s0)}; '
      f'median x{_fmt(float(np.median(growth)))} over the last {len(later)} '
      f'probe records), so gradients explode toward the input at the start '
      'and the network cannot settle.', [first, deep],
      [later[0][0], later[-1][0]],
      {'std_growth_median': float(np.median(growth)), 'first_std': s0,
       'deepest_std': s1}, f'activation_std/{deep}',
      remedy=('Keep the signal normalized: SELU needs LeCun normal '
              'initialization and standardized inputs; otherwise He/Glorot '
              'init for the activation, batch normalization, or a lower '
              'learning rate with gradient clipping.'))]


def _loss_change(run, t) -> Optional[tuple]:
  """(start, end) of the training loss: logged steps, else epoch history."""
  loss = _series(run, 'loss')
  loss = loss[np.isfinite(loss)]
  if len(loss) >= t['min_trend_steps']:
    return _quarters(loss)
  epochs = [h['loss'] for h in run.get('history') or []
            if math.isfinite(h.get('loss', math.nan))]
  return (epochs[0], epochs[-1]) if len(epochs) >= 2 else None


def _lr_findings(run, t, stalled: bool) -> List[Finding]:
  names = list(run['layer_names'])
  u = _matrix(run, 'update_ratios')
  change = _loss_change(run, t)
  rise = None if change is None else (change[1] - change[0]) / max(
      abs(change[0]), 1e-12)
  med = high = low = None
  if u is not None:
    steps = _steps(run, len(u))
    hidden = u[:, :-1] if u.shape[1] > 1 else u
    hidden = np.where(np.isfinite(hidden), hidden, np.nan)
    per_step = _nanmedian(hidden, 1)
    med = _nanmedian(per_step[len(u) // 2:])
    high = _sustained(per_step, lambda r: r > t['lr_high_update_ratio'])
    low = _sustained(per_step, lambda r: r < t['lr_low_update_ratio'])
    window = [steps[len(u) // 2], steps[-1]]
    judged = f'median over the last {len(u) - len(u) // 2} of {len(u)} ' \
             f'logged steps'
    layer_med = _nanmedian(hidden[len(u) // 2:], 0)
    fastest = names[int(np.argmax(np.nan_to_num(layer_med, nan=-np.inf)))]
    slowest = names[int(np.argmin(np.nan_to_num(layer_med, nan=np.inf)))]
  out = []
  nums = {'update_ratio_median': med} if med is not None else {}
  if change is not None:
    nums.update(loss_start=change[0], loss_end=change[1], loss_change=rise)
  sustain = t['sustained_fraction']
  if high is not None and high >= sustain:
    out.append(_finding(
        'lr_too_high', f'Updates are too large: the hidden layers\' update '
        f'ratio ||W_after - W_before|| / ||W_before|| is {_fmt(med)} '
        f'({judged}; healthy runs sit near 1e-4..1e-2).', [fastest], window,
        nums, f'update_ratio/{fastest}'))
  elif rise is not None and rise > t['loss_rise']:
    out.append(_finding(
        'lr_too_high', f'The training loss rose from {_fmt(change[0])} to '
        f'{_fmt(change[1])} (+{rise:.0%}, first vs last quarter of the run).',
        steps=[], numbers=nums, tag='loss'))
  slow = None if stalled else _slow_convergence(run, t, med)
  if slow is not None and not any(f.kind == 'lr_too_high' for f in out):
    out.append(slow)
  elif (low is not None and low >= sustain and rise is not None
        and -rise < t['lr_low_min_loss_drop'] and not stalled):
    out.append(_finding(
        'lr_too_low', f'Updates are tiny and the loss barely moves: the '
        f'hidden layers\' update ratio is {_fmt(med)} ({judged}) and the '
        f'training loss went from {_fmt(change[0])} to {_fmt(change[1])} '
        f'({rise:+.1%}).', [slowest], window, nums, f'update_ratio/{slowest}'))
  return out


def _epoch_findings(run, t) -> List[Finding]:
  history = run.get('history') or []
  out = []
  classes = run.get('num_classes')
  split = 'val_accuracy' if any('val_accuracy' in h for h in history) \
      else 'accuracy'
  acc = [(h.get('epoch', i + 1), h[split]) for i, h in enumerate(history)
         if split in h and math.isfinite(h[split])]
  if classes and acc:
    chance = 1.0 / classes
    limit = min(t['chance_factor'] * chance,
                chance + t['chance_margin'] * (1 - chance))
    after = acc[1:] or acc
    if all(a <= limit for _, a in after) or acc[-1][1] <= limit:
      which = 'validation' if split == 'val_accuracy' else 'training'
      out.append(_finding(
          'chance_accuracy', f'The model is at chance: {which} accuracy is '
          f'{_fmt(acc[-1][1])} after {len(acc)} epochs (best '
          f'{_fmt(max(a for _, a in acc))}; chance is {_fmt(chance)} for '
          f'{classes} classes, threshold {_fmt(limit)}).',
          numbers={'final_accuracy': acc[-1][1], 'chance': chance,
                   'threshold': limit, 'epochs': len(acc)},
          tag='epoch_accuracy', severity='error'))
  pairs = [(h.get('epoch', i + 1), h['loss'], h['val_loss'])
           for i, h in enumerate(history) if 'loss' in h and 'val_loss' in h
           and math.isfinite(h['loss']) and math.isfinite(h['val_loss'])]
  if len(pairs) > t['overfit_min_epochs']:
    epochs, train, val = (np.array(c, np.float64) for c in zip(*pairs))
    best = int(np.argmin(val))
    since = len(val) - 1 - best
    # Validation accuracy that kept improving after the loss minimum means
    # growing confidence, not worse generalization: not a finding.
    accs = [h.get('val_accuracy') for h in history
            if 'loss' in h and 'val_loss' in h]
    acc_worse = (len(accs) != len(val) or accs[best] is None
                 or accs[-1] is None or accs[-1] <= accs[best])
    if (since >= t['overfit_min_epochs'] and train[-1] < train[best]
        and val[-1] > (1 + t['overfit_val_rise']) * val[best] and acc_worse):
      out.append(_finding(
          'overfitting', f'Overfitting: the validation loss was best at epoch '
          f'{int(epochs[best])} ({_fmt(val[best])}) and rose to '
          f'{_fmt(val[-1])} (+{val[-1] / val[best] - 1:.0%}) over the next '
          f'{since} epochs while the training loss fell from '
          f'{_fmt(train[best])} to {_fmt(train[-1])}.',
          numbers={'best_epoch': epochs[best], 'best_val_loss': val[best],
                   'last_val_loss': val[-1], 'epochs_since_best': since,
                   'train_loss_at_best': train[best],
                   'last_train_loss': train[-1]}, tag='epoch_loss'))
  return out


def _diverged_finding(run) -> List[Finding]:
  if run.get('status') == 'diverged':
    step, loss = run.get('diverged_step'), run.get('diverged_loss')
    at = f' at step {step}' if step is not None else ''
    value = f' (loss {_fmt(loss)})' if loss is not None else ''
    return [_finding('diverged', f'Training diverged{at}{value}.',
                     steps=[step] if step is not None else [],
                     numbers={'loss': loss} if loss is not None else {},
                     tag='loss', severity='error')]
  loss = _series(run, 'loss')
  bad = np.nonzero(~np.isfinite(loss))[0]
  if bad.size:
    steps = _steps(run, len(loss))
    return [_finding(
        'diverged', f'The training loss became non-finite '
        f'({_fmt(loss[bad[0]])}) at step {steps[bad[0]]}.',
        steps=[steps[bad[0]]], numbers={'loss': loss[bad[0]]}, tag='loss',
        severity='error')]
  return []


def _finder_finding(run, t) -> List[Finding]:
  finder = run.get('lr_finder') or {}
  suggestion = finder.get('suggestion')
  peak = run.get('schedule_peak_lr')
  if peak is None and _series(run, 'learning_rate').size:
    peak = float(np.nanmax(_series(run, 'learning_rate')))
  if not suggestion or not peak or suggestion <= 0 or peak <= 0:
    return []
  factor = peak / suggestion
  if 1 / t['finder_factor'] <= factor <= t['finder_factor']:
    return []
  side = (f'{_fmt(factor)}x above' if factor > 1
          else f'{_fmt(1 / factor)}x below')
  others = {k: v for k, v in (finder.get('suggestions') or {}).items() if v}
  return [_finding(
      'lr_far_from_finder', f'The peak learning rate {_fmt(peak)} is {side} '
      f'the LR finder\'s suggestion {_fmt(suggestion)}.',
      numbers={'peak_lr': peak, 'suggestion': suggestion, 'factor': factor,
               **{f'finder_{k}': v for k, v in others.items()}},
      tag='lr_finder/plot')]


def _output_findings(run, t) -> List[Finding]:
  """Probabilities (softmax/sigmoid) or a clipping activation at the output."""
  facts = run.get('model_facts') or {}
  if not facts:
    return []
  act = facts.get('output_activation')
  tol = t['probability_tolerance']
  lo, hi = facts.get('output_min'), facts.get('output_max')
  sums = facts.get('output_row_sum_error')
  softmax_like = (lo is not None and sums is not None and lo >= -tol
                  and sums <= tol)
  sigmoid_like = (lo is not None and hi is not None and lo >= -tol
                  and hi <= 1 + tol and act in ('sigmoid', 'hard_sigmoid'))
  layer = facts.get('output_layer', 'the output layer')
  nums = {k: facts[k] for k in ('output_min', 'output_max',
                                'output_row_sum_error') if k in facts}
  if act in ('softmax', 'sigmoid', 'hard_sigmoid', 'log_softmax') or \
      softmax_like or sigmoid_like:
    what = (f'applies {act}' if act else 'outputs non-negative rows that sum '
            'to 1')
    return [_finding(
        'probabilities_as_logits', f'The model outputs probabilities, but the '
        f'loss takes logits: {layer} {what} (probe batch: min '
        f'{_fmt(lo if lo is not None else math.nan)}, row sums within '
        f'{_fmt(sums if sums is not None else math.nan)} of 1), so the loss '
        'applies a second softmax: gradients shrink and training slows or '
        'stalls.', [layer], numbers=nums, tag=f'activation_mean/{layer}',
        severity='error')]
  if act:
    return [_finding(
        'output_activation', f'The output layer {layer} applies {act}: the '
        f'logits are clipped to its range before the loss.', [layer],
        numbers=nums, tag=f'activation_mean/{layer}', severity='error')]
  return []


def _model_findings(run, t) -> List[Finding]:
  """Frozen models or layers, unscaled inputs, stacked linear layers."""
  facts = run.get('model_facts') or {}
  out = []
  if not facts:
    return out
  weighted = facts.get('weighted_layers', 0)
  frozen = facts.get('frozen_layers') or []
  if facts.get('trainable_variables') == 0:
    out.append(_finding(
        'model_not_training', f'The model has no trainable weights '
        f'({len(frozen)} of {weighted} layers with weights are frozen): '
        'training changes nothing.', frozen, numbers={
            'trainable_variables': 0, 'frozen_layers': len(frozen)},
        tag='update_ratio', severity='error'))
  elif weighted and len(frozen) / weighted >= t['frozen_fraction']:
    out.append(_finding(
        'frozen_layers', f'{len(frozen)} of {weighted} layers with weights are '
        f'frozen ({_compact(frozen)}): only the rest learn.', frozen,
        numbers={'frozen_layers': len(frozen), 'weighted_layers': weighted},
        tag='update_ratio'))
  big = facts.get('input_abs_max')
  if big is not None and big > t['input_abs_max']:
    out.append(_finding(
        'unscaled_inputs', f'The inputs are not scaled: values reach '
        f'{_fmt(big)} (mean {_fmt(facts.get("input_mean", math.nan))}, std '
        f'{_fmt(facts.get("input_std", math.nan))} on the probe batch; scaled '
        f'inputs stay within about +-{_fmt(t["input_abs_max"] / 2)}).',
        numbers={k: facts[k] for k in ('input_abs_max', 'input_mean',
                                       'input_std') if k in facts},
        tag='activation_mean', severity='error'))
  pairs = facts.get('linear_pairs') or []
  if pairs:
    names = [f'{a} -> {b}' for a, b in pairs]
    out.append(_finding(
        'linear_stack', f'No activation between {len(pairs)} pair'
        f'{"s" * (len(pairs) != 1)} of layers ({", ".join(names[:3])}'
        f'{" ..." if len(names) > 3 else ""}): they compute one linear map, '
        'so the extra layers add no capacity.',
        [n for p in pairs for n in p], numbers={'linear_pairs': len(pairs)},
        tag='activation_mean'))
  return out


def _constant_kernel_finding(run) -> List[Finding]:
  """A constant kernel feeding another constant kernel (model facts, before
  the first step): each unit of the first gets the same gradient, as the
  weights it feeds are alike, so they stay alike. (One constant layer
  before random ones is not trapped: the random weights tell its units'
  gradients apart, as a zero-initialized output layer's labels do.)"""
  consts = (run.get('model_facts') or {}).get('constant_kernels') or []
  at = {c['index'] for c in consts}
  hit = [c for c in consts if c['index'] + 1 in at]
  if not hit:
    return []
  names = [c['layer'] for c in hit]
  values = sorted({_fmt(c['value']) for c in hit})
  return [_finding(
      'symmetric_units', f'Units start identical: {len(hit)} layers '
      f'({_compact(names, names)}) have a constant kernel (every weight '
      f'{" or ".join(values)}) feeding another constant kernel, so their '
      'units get the same gradient and stay identical (a constant kernel '
      'initializer).', names, [0, 0], {'layers_hit': len(hit)},
      f'grad_norm/{names[0]}', severity='error')]


def _symmetric_finding(run, t) -> List[Finding]:
  """Layers whose units all compute the same value (symmetric init)."""
  static = _constant_kernel_finding(run)
  if static:
    return static
  records = run.get('activation_stats') or []
  later = records[len(records) // 2:]
  order = list(dict.fromkeys(l for _, s in records for l in s))
  hit = []
  for layer in order:
    spread = np.array([s[layer]['spread'] for _, s in later
                       if 'spread' in s.get(layer, {})], np.float64)
    if spread.size and np.mean(spread < t['symmetric_spread']) >= \
        t['sustained_fraction']:
      hit.append(layer)
  if not hit:
    return []
  return [_finding(
      'symmetric_units', f'Units are identical: in {len(hit)} of {len(order)} '
      f'probed layers ({_compact(hit, order)}) every unit outputs the same '
      f'value on each probe example (spread below '
      f'{_fmt(t["symmetric_spread"])}), as a constant kernel initializer '
      'leaves them.', hit, [later[0][0], later[-1][0]],
      {'layers_hit': len(hit)}, f'activation_std/{hit[0]}',
      severity='error')]


def _budget_findings(run, t) -> List[Finding]:
  """Too few updates; train accuracy at odds with validation accuracy."""
  out = []
  total = run.get('total_steps')
  if total is not None and 0 < total < t['min_updates'] and run.get(
      'status') not in ('interrupted', 'diverged', 'stopped_on_error'):
    out.append(_finding(
        'too_few_steps', f'The run made only {total} optimizer updates'
        f'{_batch_note(run)}.', numbers={'updates': total},
        tag='loss', severity='error'))
  history = [h for h in run.get('history') or []
             if 'accuracy' in h and 'val_accuracy' in h]
  classes = run.get('num_classes')
  if not history or not classes:
    return out
  last = history[-1]
  chance = 1.0 / classes
  limit = min(t['chance_factor'] * chance,
              chance + t['chance_margin'] * (1 - chance))
  memorized = chance + t['memorize_margin'] * (1 - chance) + (limit - chance)
  learning = (len(history) >= 2 and last['accuracy'] > history[0]['accuracy']
              and last.get('loss', 0.0) < history[0].get('loss', 0.0))
  if (last['val_accuracy'] <= limit and last['accuracy'] > memorized
      and learning):
    out.append(_finding(
        'labels_unlearnable', f'Training accuracy rose to '
        f'{_fmt(last["accuracy"])} while validation accuracy stayed at chance '
        f'({_fmt(last["val_accuracy"])}): the training labels do not follow '
        'from the inputs.', numbers={'train_accuracy': last['accuracy'],
                                    'val_accuracy': last['val_accuracy']},
        tag='epoch_accuracy', severity='error'))
  elif len(history) >= 2 and _val_above_train(history[-2:], chance, t):
    # (epoch 1's running accuracy lags behind: never judged alone)
    dropout = (run.get('model_facts') or {}).get('dropout', 0.0)
    kind = ('too_much_regularization' if dropout >= t['heavy_dropout']
            else 'label_noise')
    why = (f'dropout {dropout:g} hides most of the network while it trains'
           if kind == 'too_much_regularization'
           else 'many training labels disagree with what the model learns')
    out.append(_finding(
        kind, f'Validation accuracy {_fmt(last["val_accuracy"])} is far above '
        f'the training accuracy {_fmt(last["accuracy"])} in the last epoch: '
        f'{why}.', numbers={'train_accuracy': last['accuracy'],
                            'val_accuracy': last['val_accuracy'],
                            'dropout': dropout}, tag='epoch_accuracy'))
  return out


def _val_above_train(epochs, chance, t) -> bool:
  """Validation accuracy far above the running train accuracy: by an
  absolute margin in the last epoch, or by a margin over chance that is a
  multiple of the train accuracy's, in every one of `epochs`."""
  last = epochs[-1]
  if last['val_accuracy'] - last['accuracy'] > t['val_above_train']:
    return True
  return (last['val_accuracy'] - last['accuracy'] > t['val_above_train_min']
          and all(h['val_accuracy'] - chance > t['val_train_margin_ratio'] * (
              max(h['accuracy'] - chance, 0.0)) for h in epochs))


def _oscillation_finding(run, t) -> List[Finding]:
  """The validation loss jumps up between epochs while training does not,
  and the run does not get over it: its validation accuracy never again
  beats the level before the jump (a one-off jump it recovers from, e.g. at
  1cycle's peak learning rate, cost it nothing), or it jumps repeatedly."""
  rows = [(h.get('epoch', i + 1), h['loss'], h['val_loss'],
           h.get('val_accuracy'))
          for i, h in enumerate(run.get('history') or [])
          if 'loss' in h and 'val_loss' in h and math.isfinite(h['loss'])
          and math.isfinite(h['val_loss'])]
  jumps = []
  for i, ((_, train0, val0, _), (epoch, train1, val1, _)) in enumerate(
      zip(rows, rows[1:])):
    jump = val1 / max(val0, 1e-12) - 1
    if (jump > t['oscillation_jump']
        and train1 <= (1 + t['oscillation_train_rise']) * train0):
      jumps.append((i, epoch, val0, val1, jump, train0, train1))

  def recovered(i):
    before = rows[i][3]
    later = [r[3] for r in rows[i + 2:] if r[3] is not None]
    return before is not None and any(a > before for a in later)
  lasting = [j for j in jumps if not recovered(j[0])]
  if not lasting and len(jumps) < t['oscillation_repeats']:
    return _unstable_validation(run, t)
  _, epoch, val0, val1, jump, train0, train1 = (lasting or jumps)[0]
  more = (f' It jumped {len(jumps)} times.' if len(jumps) > 1 else '')
  return [_finding(
      'oscillating_loss', f'Training is unstable: the validation loss '
      f'jumped from {_fmt(val0)} to {_fmt(val1)} (+{jump:.0%}) in epoch '
      f'{epoch} while the training loss went from {_fmt(train0)} to '
      f'{_fmt(train1)}.{more}', numbers={'val_loss_before': val0,
                                         'val_loss_after': val1, 'jump': jump,
                                         'epoch': epoch, 'jumps': len(jumps)},
      tag='epoch_loss')]


def _unstable_validation(run, t) -> List[Finding]:
  """The validation loss well above the training loss at equal accuracy
  in a run that fits neither: unstable steps, not overfitting."""
  classes = run.get('num_classes')
  if not classes or classes < 2:
    return []
  fit_limit = t['unstable_fit_fraction'] * math.log(classes)
  rows = [h for h in run.get('history') or []
          if all(math.isfinite(h.get(k, math.nan)) for k in
                 ('loss', 'val_loss', 'accuracy', 'val_accuracy'))]
  unstable = [h for h in rows
              if h['val_loss'] > t['unstable_loss_ratio'] * h['loss']
              and h['val_accuracy'] >= h['accuracy'] - t['unstable_acc_slack']
              and h['loss'] > fit_limit]
  if len(unstable) < t['unstable_epochs']:
    return []
  worst = max(unstable, key=lambda h: h['val_loss'] / h['loss'])
  epochs = ', '.join(str(h.get('epoch', '?')) for h in unstable)
  return [_finding(
      'oscillating_loss', f'Training is unstable: in epochs {epochs} the '
      f'validation loss was far above the training loss (up to '
      f'{_fmt(worst["val_loss"])} vs {_fmt(worst["loss"])}, '
      f'{worst["val_loss"] / worst["loss"]:.2f}x) at a validation accuracy as '
      f'high as the training accuracy ({_fmt(worst["val_accuracy"])} vs '
      f'{_fmt(worst["accuracy"])}), in a run that fits neither (training '
      f'loss above {_fmt(fit_limit)}): the weights at each epoch\'s end are '
      f'worse than on average during it, which is not overfitting.',
      numbers={'val_loss': worst['val_loss'], 'train_loss': worst['loss'],
               'ratio': worst['val_loss'] / worst['loss'],
               'epochs': len(unstable)}, tag='epoch_loss')]


def _batch_note(run) -> str:
  facts = run.get('model_facts') or {}
  batch, examples = facts.get('batch_size'), facts.get('train_examples')
  if batch and examples:
    return (f' (batch size {batch} of {examples} training examples: '
            f'{max(examples // batch, 1)} per epoch)')
  return ''


def _slow_convergence(run, t, med) -> Optional[Finding]:
  """Tiny updates and a loss still falling: at an undiminished rate, or
  still at the level of a uniform guess after the whole budget."""
  losses = [h['loss'] for h in run.get('history') or []
            if math.isfinite(h.get('loss', math.nan))]
  if med is None or med >= t['slow_update_ratio'] or len(losses) < 3:
    return None
  first, prev, last = losses[-3], losses[-2], losses[-1]
  drop_prev, drop_last = first - prev, prev - last
  classes = run.get('num_classes')
  guess = math.log(classes) if classes and classes > 1 else None
  falling = drop_last > t['slow_min_drop'] * prev
  undiminished = (drop_prev > 0 and drop_last >= t['slow_drop_ratio'] * drop_prev
                  and last > t['slow_loss_fraction'] * losses[0])
  guessing = guess is not None and last >= t['slow_guess_loss_fraction'] * guess
  if not (falling and (undiminished or guessing)):
    return None
  why = (f'still at {_fmt(last / guess)}x the loss of a uniform guess '
         f'(ln {classes} = {_fmt(guess)})' if guessing and not undiminished
         else f'{_fmt(last / losses[0])}x its first value')
  return _finding(
      'lr_too_low', f'Training converges slowly: the hidden layers\' update '
      f'ratio is {_fmt(med)} and the training loss is still falling '
      f'({_fmt(first)} -> {_fmt(prev)} -> {_fmt(last)} over the last '
      f'epochs, {why}).',
      numbers={'update_ratio_median': med, 'loss_first': losses[0],
               'loss_last': last, 'last_drop': drop_last,
               'previous_drop': drop_prev,
               'guess_loss': guess if guess is not None else math.nan},
      tag='update_ratio')


def analyze(run: Dict[str, Any], thresholds: Optional[Dict] = None
            ) -> List[Finding]:
  """Runs every detector on one run's records.

  Args:
    run: recorded series; only 'layer_names' is required (depth order, the
      last is the output layer). Optional: 'steps', 'grad_norms' and
      'update_ratios' ([steps][layers]), 'loss', 'learning_rate',
      'activation', 'activation_stats' ([(step, {act: {stat: value}})]),
      'history' (per-epoch dicts), 'num_classes', 'status', 'diverged_step',
      'diverged_loss', 'lr_finder' ({'suggestion', 'suggestions'}),
      'schedule_peak_lr'. Detectors whose inputs are missing are skipped.
    thresholds: overrides for entries of `THRESHOLDS`.

  Returns:
    Findings, errors first, then in `KINDS` order; [] for a healthy run.
    lr_too_low is not reported when gradients vanish or units died (either
    explains the tiny updates; raising the LR would not help).

  Raises:
    ValueError: an unknown threshold name or a per-layer series whose shape
      does not match layer_names.
  """
  unknown = set(thresholds or {}) - set(THRESHOLDS)
  if unknown:
    raise ValueError(f'Unknown health thresholds {sorted(unknown)}')
  t = {**THRESHOLDS, **(thresholds or {})}
  findings = _gradient_findings(run, t)
  if not any(f.kind == 'exploding_gradients' for f in findings):
    findings += _activation_growth_finding(run, t)
  activations = _activation_findings(run, t)
  # Vanishing gradients or dead units explain tiny updates: no lr_too_low.
  stalled = any(f.kind in ('vanishing_gradients', 'dead_units')
                for f in findings + activations)
  findings += (activations + _lr_findings(run, t, stalled)
               + _epoch_findings(run, t) + _diverged_finding(run)
               + _finder_finding(run, t) + _output_findings(run, t)
               + _model_findings(run, t) + _symmetric_finding(run, t)
               + _budget_findings(run, t) + _oscillation_finding(run, t))
  found = {f.kind for f in findings}
  hidden = {k for cause, effects in SUPERSEDES.items() if cause in found
            for k in effects}
  return sorted([f for f in findings if f.kind not in hidden],
                key=lambda f: (SEVERITIES.index(f.severity),
                               KINDS.index(f.kind)))


# A finding that names the cause hides the symptoms it explains.
SUPERSEDES = {
    'labels_unlearnable': ('chance_accuracy',),
    'model_not_training': ('chance_accuracy', 'lr_too_low'),
    # Raw pixel values saturate units and distort the update sizes: slow
    # convergence is their symptom, and scaling is the fix.
    'unscaled_inputs': ('lr_too_low',),
}


# ---------------------------------------------------------------- reports --

def _title(kind: str) -> str:
  return kind.replace('_', ' ').replace('lr ', 'learning rate ').capitalize()


def _count(findings) -> str:
  errors = sum(f.severity == 'error' for f in findings)
  return (f'{len(findings)} problem{"s" * (len(findings) != 1)} ({errors} '
          f'error{"s" * (errors != 1)}, {len(findings) - errors} warning'
          f'{"s" * (len(findings) - errors != 1)})')


def format_markdown(findings: Sequence[Finding], title: str) -> str:
  """Markdown: one section per finding, or an explicit all-clear."""
  lines = [f'# {title}', '']
  if not findings:
    lines.append('No problems found: none of the checks (' + ', '.join(
        k.replace('_', ' ') for k in KINDS) + ') fired on the recorded series.')
    return '\n'.join(lines) + '\n'
  lines += [f'**{_count(findings)}.**', '']
  for i, f in enumerate(findings, 1):
    lines += [f'## {i}. {_title(f.kind)} ({f.severity})', '', f.summary, '',
              f'- **Try:** {f.remedy}', f'- **TensorBoard:** `{f.tag}`']
    if f.layers:
      lines.append('- **Layers:** ' + (', '.join(f.layers) if len(f.layers)
                                         <= 12 else _compact(f.layers)))
    if f.steps:
      lines.append('- **Steps:** ' + ', '.join(map(str, f.steps)))
    if f.numbers:
      lines.append('- **Numbers:** ' + ', '.join(
          f'{k}={_fmt(v)}' for k, v in f.numbers.items()))
    lines.append('')
  return '\n'.join(lines)


def format_block(findings: Sequence[Finding]) -> str:
  """A few plain-text lines for the terminal."""
  if not findings:
    return 'health: no problems found'
  lines = [f'health: {_count(findings)}']
  for f in findings:
    lines += [f'  [{f.severity}] {f.kind}: {f.summary}',
              f'      try: {f.remedy} (TensorBoard: {f.tag})']
  return '\n'.join(lines)


def report_dict(findings: Sequence[Finding]) -> Dict[str, Any]:
  """What health.json holds: {'findings', 'healthy', 'kinds'}."""
  return {'findings': [f.to_dict() for f in findings],
          'healthy': not findings, 'kinds': list(KINDS)}


def write_report(workdir: str, findings: Sequence[Finding],
                 title: str = 'Training health') -> Dict[str, str]:
  """Writes health.md and health.json into workdir atomically.

  Returns:
    {'markdown': path, 'json': path}.
  """
  workdir_lib.gfile().makedirs(workdir)
  paths = {'markdown': os.path.join(workdir, HEALTH_MD),
           'json': os.path.join(workdir, HEALTH_JSON)}
  workdir_lib.write_text(paths['markdown'], format_markdown(findings, title))
  workdir_lib.write_text(paths['json'], json.dumps(
      report_dict(findings), indent=2, allow_nan=False) + '\n')
  return paths


def summary_cell(workdir: str) -> str:
  """'healthy', or the finding kinds of workdir's health.json ('' if none)."""
  path = os.path.join(workdir, HEALTH_JSON)
  if not workdir_lib.gfile().exists(path):
    return ''
  report = workdir_lib.read_json(path)
  if report.get('healthy'):
    return 'healthy'
  return ', '.join(f['kind'] for f in report.get('findings', []))


# --------------------------------------------------------------- heatmaps --

def _depth_grid(layer_names, steps, grad_norms) -> np.ndarray:
  """[layers, steps] float64, validated."""
  g = np.asarray(grad_norms, np.float64)
  if g.ndim != 2 or g.shape != (len(steps), len(layer_names)):
    raise ValueError(f'grad_norms has shape {g.shape}; expected '
                     f'[{len(steps)} steps, {len(layer_names)} layers]')
  return g.T


ZERO_RGB = (255, 0, 0)              # exactly 0 (float32 underflow)
NON_FINITE_RGB = (255, 255, 255)    # inf / nan


def _log_range(grid):
  positive = np.isfinite(grid) & (grid > 0)
  logv = np.log10(np.where(positive, grid, 1.0))
  if not positive.any():
    return positive, logv, 0.0, 1.0
  lo, hi = float(logv[positive].min()), float(logv[positive].max())
  return positive, logv, lo, max(hi, lo + 1e-6)


def depth_time_heatmap_png(layer_names: Sequence[str], steps: Sequence[int],
                           grad_norms, title: str) -> bytes:
  """PNG bytes: log10 gradient norm per layer (y, depth order) and step (x)."""
  from tftrain import report  # pylint: disable=g-import-not-at-top
  plt = report.pyplot()
  grid = _depth_grid(layer_names, steps, grad_norms)
  positive, logv, lo, hi = _log_range(grid)
  data = np.where(positive, logv, lo - 1.0)   # zeros below vmin: 'under'
  data = np.ma.masked_where(~np.isfinite(grid), data)
  cmap = plt.get_cmap('viridis').with_extremes(
      under=[c / 255 for c in ZERO_RGB], bad=[c / 255 for c in NON_FINITE_RGB])
  rows, cols = grid.shape
  fig, ax = plt.subplots(figsize=(7, min(12, 2.5 + 0.12 * rows)), dpi=80)
  image = ax.imshow(data, aspect='auto', interpolation='nearest', cmap=cmap,
                    vmin=lo, vmax=hi)
  bar = fig.colorbar(image, ax=ax, extend='min')
  bar.set_label('log10 gradient L2 norm\n(red: exactly 0, float32 underflow;'
                ' white: inf/nan)', fontsize=8)
  xt = np.unique(np.linspace(0, cols - 1, min(cols, 8)).astype(int))
  ax.set_xticks(xt, [str(steps[i]) for i in xt], fontsize=7)
  yt = np.unique(np.linspace(0, rows - 1, min(rows, 20)).astype(int))
  ax.set_yticks(yt, [layer_names[i] for i in yt], fontsize=7)
  ax.set_xlabel('global step')
  ax.set_ylabel('layer (input at top)')
  ax.set_title(title, fontsize=10)
  fig.tight_layout()
  return report.figure_png(fig)
