"""Variant grids over Config fields: expand, select, run, compare.

A grid is {Config field: values}; each point is a `Variant` (name, Config
overrides) trained by `loop.train_and_evaluate` in `root/<name>/` (resumable).
`preset` gives a named list of hand-picked variants instead (`presets`).
After each variant a report function rewrites the comparison in `root/`:
`write_comparison` (launch.compare: comparison.md/.csv/.json/.png) or the one
of `studies.compare_activations` (launch.deep: depth probe, comparison.md/.csv,
grad_norm_vs_depth.png, val_accuracy.png). HParams: `root/` holds the
hparams_config, each run its values and best_val_accuracy, best_val_loss,
test_accuracy, so `tensorboard --logdir root` shows a row per variant.
"""

import dataclasses
import fnmatch
import itertools
import json
import numbers
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from absl import logging
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from tftrain import config as config_lib
from tftrain import errors
from tftrain import experiment
from tftrain import health
from tftrain import loop
from tftrain import presets
from tftrain import report
from tftrain import summaries
from tftrain import workdir as workdir_lib

# Per-optimizer learning rates for the deep ELU MLP at batch 32 (momentum
# variants take a smaller step since momentum 0.9 multiplies it by ~10).
DEFAULT_LEARNING_RATES = {
    'sgd': 1e-2, 'momentum': 2e-3, 'nesterov': 2e-3, 'adagrad': 1e-2,
    'rmsprop': 5e-4, 'adam': 5e-4, 'adamw': 5e-4, 'nadam': 5e-4,
}
# Axis prefixes of variant names ('' : the value alone); others: the field.
SHORT_NAMES = {'batch_norm': 'bn', 'optimizer': 'opt', 'activation': 'act',
               'learning_rate': 'lr', 'kernel_initializer': 'init',
               'batch_size': 'batch', 'schedule': 'sched'}
_FIELDS = config_lib.FIELD_TYPES


@dataclasses.dataclass(frozen=True)
class Variant:
  """One point of a grid: a name (its run directory) and Config overrides."""
  name: str
  overrides: Mapping[str, Any]


# ---------------------------------------------------------------- expand --

def _with_rates(base, named, rates, flags) -> List[Variant]:
  """Variants from (name, overrides) with their learning rates, validated."""
  variants = []
  for name, overrides in named:
    overrides = dict(overrides)
    if 'learning_rate' not in flags:
      overrides['learning_rate'] = rates.get(name, rates.get(
          overrides.get('optimizer', base.optimizer),
          overrides.get('learning_rate', base.learning_rate)))
    try:
      base.replace(**overrides)   # validates now, not an hour later
    except errors.ConfigError as e:
      if e.field not in flags:
        raise
      value = f'{e.field}={e.value}' if flags[e.field] == 'grid' else e.value
      raise errors.ConfigError(flags[e.field], value,
                               str(e).split(': ', 1)[-1]) from None
    variants.append(Variant(name, overrides))
  names = [v.name for v in variants]
  for key in rates:
    if key not in config_lib.OPTIMIZERS and key not in names:
      raise errors.ConfigError(
          'learning_rates', key, 'is neither an optimizer nor a variant; '
          f'variants: {", ".join(sorted(names))}.')
  return variants


def expand(grid: Mapping[str, Sequence[Any]], base: config_lib.Config,
           learning_rates: Optional[Mapping[str, float]] = None,
           flags: Optional[Mapping[str, str]] = None,
           short_names: Mapping[str, str] = SHORT_NAMES) -> List[Variant]:
  """The product of `grid`'s axes (Config field -> values, typed or text).

  Each variant's learning rate: `learning_rates` by variant name, else by
  optimizer (None: `DEFAULT_LEARNING_RATES`), else `base.learning_rate`,
  unless learning_rate is an axis. Names join '<short name>-<value>' by '_'
  ('' in `short_names`: the value alone). A bad axis, value or rate key is a
  one-line ConfigError before anything trains, naming the flag: `flags[axis]`
  (default 'grid_<axis>'; 'grid': the generic `--grid=<axis>=<values>`).
  """
  for axis, values in grid.items():
    if axis not in _FIELDS or not values:
      raise errors.ConfigError('grid', axis, 'is not a Config field.'
                               if axis not in _FIELDS else
                               'needs at least one value.')
  flags = {a: (flags or {}).get(a, f'grid_{a}') for a in grid}
  named = []
  for values in itertools.product(*grid.values()):
    point = {a: config_lib.parse_field(a, v) for a, v in zip(grid, values)}
    prefix = {a: short_names.get(a, a) for a in grid}
    text = {a: ':'.join(map(str, v)) if isinstance(v, tuple) else
            format(v, 'g') if isinstance(v, float) else str(v)
            for a, v in point.items()}
    named.append(('_'.join(f'{prefix[a]}-{text[a]}' if prefix[a] else text[a]
                           for a in grid), point))
  rates = DEFAULT_LEARNING_RATES if learning_rates is None else learning_rates
  return _with_rates(base, named, rates, flags)


def preset(name: str, base: config_lib.Config,
           learning_rates: Optional[Mapping[str, float]] = None
           ) -> List[Variant]:
  """The variants of `presets.PRESETS[name]` (their own rates unless
  overridden)."""
  if name not in presets.PRESETS:
    raise errors.ConfigError('preset', name,
                             f'choose one of {", ".join(presets.PRESETS)}.')
  return _with_rates(base, presets.PRESETS[name], learning_rates or {}, {})


def select(variants: Sequence[Variant], patterns: Sequence[str]) -> List[Variant]:
  """The variants matching any shell-style pattern (all if none).

  Raises:
    ConfigError: a pattern matching no variant (the message lists the names).
  """
  for pattern in patterns:
    if not any(fnmatch.fnmatchcase(v.name, pattern) for v in variants):
      raise errors.ConfigError(
          'only', pattern, 'matches no variant; choose from '
          f'{", ".join(v.name for v in variants)}.')
  return [v for v in variants if not patterns
          or any(fnmatch.fnmatchcase(v.name, p) for p in patterns)]


# ------------------------------------------------------------- summaries --

def _best(history, key, sign):
  rows = [r for r in history if r.get(key) is not None]
  if not rows:
    return None, None
  row = max(rows, key=lambda r: sign * r[key])
  return row[key], row['epoch']


def summarize(variant: Variant, history: Sequence[Dict[str, float]],
              status: str, wall_seconds: Optional[Sequence[float]] = None,
              test_accuracy: Optional[float] = None) -> Dict[str, Any]:
  """The comparison numbers of one variant from the loop's epoch records.

  `wall_seconds`: from the run's start to each epoch's end; when shorter than
  `history` (a resumed run), the epochs' training seconds are summed instead.
  """
  best_acc, best_acc_epoch = _best(history, 'val_accuracy', 1.0)
  best_loss, best_loss_epoch = _best(history, 'val_loss', -1.0)
  seconds = [r['seconds'] for r in history]
  exact = wall_seconds is not None and len(wall_seconds) == len(history)
  to_best = None
  if best_acc_epoch:
    to_best = (wall_seconds[best_acc_epoch - 1] if exact
               else sum(seconds[:best_acc_epoch]))
  return {
      'name': variant.name, 'overrides': dict(variant.overrides),
      'status': status, 'epochs_run': len(history),
      'best_val_accuracy': best_acc, 'best_val_accuracy_epoch': best_acc_epoch,
      'best_val_loss': best_loss, 'best_val_loss_epoch': best_loss_epoch,
      'seconds_per_epoch': sum(seconds) / len(seconds) if seconds else None,
      'wall_seconds_to_best': to_best, 'wall_time_exact': exact,
      'test_accuracy': test_accuracy,
      'val_accuracy': [r.get('val_accuracy') for r in history],
      'val_loss': [r.get('val_loss') for r in history],
  }


def epoch_reaching(val_losses: Sequence[Optional[float]],
                   target: float) -> Optional[int]:
  """First epoch (1-based) whose validation loss is <= target, or None."""
  return next((e for e, v in enumerate(val_losses, 1)
               if v is not None and v <= target), None)


def _others(row):
  return tuple((k, v) for k, v in row['overrides'].items()
               if k not in ('batch_norm', 'learning_rate'))


def batch_norm_speedups(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """Each batch-norm variant beside its no-BN twin (same other values): the
  twin's best validation loss and the epoch the BN variant first reaches it."""
  out = []
  for plain, bn in itertools.product(rows, rows):
    if (plain['overrides'].get('batch_norm') != 'none'
        or bn['overrides'].get('batch_norm') in (None, 'none')
        or None in (plain['best_val_loss'], bn['best_val_loss'])
        or _others(plain) != _others(bn)):
      continue
    out.append({
        'plain': plain['name'], 'batch_norm': bn['name'],
        'plain_best_val_loss': plain['best_val_loss'],
        'plain_best_epoch': plain['best_val_loss_epoch'],
        'bn_epoch_reaching': epoch_reaching(bn['val_loss'],
                                            plain['best_val_loss']),
        'bn_best_val_loss': bn['best_val_loss'],
        'bn_seconds_per_epoch': bn['seconds_per_epoch'],
        'plain_seconds_per_epoch': plain['seconds_per_epoch'],
    })
  return out


# --------------------------------------------------- the grid comparison --

TABLE_FORMATS = {'learning rate': 'g', 'best val accuracy': '.4f',
                 'epoch of best': 'd', 's/epoch': '.1f', 'test accuracy': '.4f',
                 'MC dropout test accuracy': '.4f', 'BN best val loss': '.4f', 's/epoch BN / no-BN': '.2f'}


def table_rows(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """The comparison table: one line per variant."""
  out = []
  for r in rows:
    loss, wall = r['best_val_loss'], r['wall_seconds_to_best']
    out.append({
        'variant': r['name'], 'learning rate': r['overrides'].get('learning_rate'),
        'best val accuracy': r['best_val_accuracy'],
        'epoch of best': r['best_val_accuracy_epoch'],
        'best val loss (epoch)': None if loss is None
                                 else f"{loss:.4f} ({r['best_val_loss_epoch']})",
        's/epoch': r['seconds_per_epoch'],
        'wall s to best': None if wall is None
                          else f'{wall:.0f}' + '*' * (not r['wall_time_exact']),
        'test accuracy': r['test_accuracy'],
        'MC dropout test accuracy': r.get('mc_test_accuracy'),
        'epochs run': r['epochs_run'], 'status': r['status'],
        'health': r.get('health', '')})
  return out


def _notes(rows) -> str:
  """The footnote on inexact wall times and the batch-norm speed-up table."""
  lines = []
  if any(not r['wall_time_exact'] for r in rows if r['wall_seconds_to_best']):
    lines += ['', '\\* no wall-clock stamp for every epoch (a resumed run): '
              'sum of the epochs\' training seconds, validation not included.']
  speedups = [{
      'no-BN variant': s['plain'], 'its best val loss (epoch)':
          f"{s['plain_best_val_loss']:.4f} ({s['plain_best_epoch']})",
      'BN variant': s['batch_norm'],
      'BN epoch reaching it': s['bn_epoch_reaching'] or 'never',
      'BN best val loss': s['bn_best_val_loss'],
      's/epoch BN / no-BN': (s['bn_seconds_per_epoch']
                             / s['plain_seconds_per_epoch']
                             if s['plain_seconds_per_epoch'] else None),
  } for s in batch_norm_speedups(rows)]
  if speedups:
    lines += ['', '### Batch norm: epochs to reach the no-BN best validation '
              'loss', '', report.markdown_table(speedups, formats=TABLE_FORMATS,
                                                missing='–')]
  return '\n'.join(lines + [''])


def plot_comparison(rows: Sequence[Dict[str, Any]], path: str, title: str):
  """Validation accuracy and loss per epoch; colour: the overrides but
  batch_norm; line style: batch_norm."""
  groups = list(dict.fromkeys(_others(r) for r in rows))
  bns = list(dict.fromkeys(r['overrides'].get('batch_norm') for r in rows))
  rows = sorted(rows, key=lambda r: (groups.index(_others(r)),
                                     bns.index(r['overrides'].get('batch_norm'))))
  labels = [r['name'] + (f" (lr {r['overrides']['learning_rate']})"
                         if 'learning_rate' in r['overrides'] else '')
            for r in rows]
  styles = {label: (groups.index(_others(r)), ['-', '--', ':', '-.'][
      bns.index(r['overrides'].get('batch_norm')) % 4])
            for label, r in zip(labels, rows)}
  panels = [report.Panel(
      {label: (range(1, len(r[key]) + 1), r[key])
       for label, r in zip(labels, rows) if any(v is not None for v in r[key])},
      xlabel='epoch', ylabel=f'validation {what}', clip=what == 'loss')
            for key, what in (('val_accuracy', 'accuracy'), ('val_loss', 'loss'))]
  return report.plot_panels(
      panels, path, title, styles,
      max(min(len(labels), 5 if len(bns) <= 1 else len(groups)), 1))


def write_comparison(base: config_lib.Config, rows: Sequence[Dict[str, Any]],
                     root: str) -> Dict[str, str]:
  """Writes comparison.{png,md,csv,json} into `root`; returns their paths."""
  paths = {ext: os.path.join(root, f'comparison.{ext}')
           for ext in ('png', 'md', 'csv', 'json')}
  title = f'{base.dataset} {base.model}' + (
      f' {base.depth}x{base.width} {base.activation}'
      if base.model == 'deep_mlp' else '')
  plot_comparison(rows, paths['png'], title)
  report.write_table(table_rows(rows), paths['md'], paths['csv'],
                     notes=_notes(rows), formats=TABLE_FORMATS, missing='–')
  workdir_lib.write_json(paths['json'], {
      'variants': list(rows), 'batch_norm_speedups': batch_norm_speedups(rows)})
  return paths


# --------------------------------------------------------------- HParams --

RUN_METRICS = ('best_val_accuracy', 'best_val_loss', 'test_accuracy')


def _domain(values):
  if all(isinstance(v, bool) for v in values):
    return hp.Discrete(sorted(set(values)))
  if all(isinstance(v, numbers.Integral) for v in values):
    return hp.IntInterval(int(min(values)), int(max(values)))
  if all(isinstance(v, numbers.Real) for v in values):
    return hp.RealInterval(float(min(values)), float(max(values)))
  return hp.Discrete(sorted({str(v) for v in values}))


def write_hparams_config(root: str, variants: Sequence[Variant]) -> Dict:
  """The experiment's hparams_config in `root`; returns name -> hp.HParam."""
  names = sorted({k for v in variants for k in v.overrides})
  hparams = {n: hp.HParam(n, _domain([v.overrides[n] for v in variants
                                      if n in v.overrides])) for n in names}
  metrics = [hp.Metric(t, display_name=t.replace('_', ' ')) for t in RUN_METRICS]
  metrics += [hp.Metric(f'epoch_{m}', group=summaries.VALIDATION,
                        display_name=f'last validation {m}')
              for m in ('accuracy', 'loss')]
  writer = tf.summary.create_file_writer(root)
  with writer.as_default():
    hp.hparams_config(hparams=list(hparams.values()), metrics=metrics)
  writer.close()
  return hparams


def write_hparams_run(run_dir: str, hparams: Mapping[str, Any],
                      row: Mapping[str, Any], start_time_secs: float) -> None:
  """One run's hparam values and its `RUN_METRICS` scalars (None: skipped)."""
  writer = tf.summary.create_file_writer(run_dir)
  with writer.as_default(step=0):
    hp.hparams({hparams[k]: v if isinstance(v, numbers.Real) else str(v)
                for k, v in row['overrides'].items()},
               trial_id=os.path.basename(run_dir.rstrip('/')),
               start_time_secs=start_time_secs)
    for tag in RUN_METRICS:
      if row.get(tag) is not None:
        tf.summary.scalar(tag, float(row[tag]))
  writer.close()


# ------------------------------------------------------------------- run --

def run_variant(base: config_lib.Config, variant: Variant, root: str,
                hparams: Mapping[str, Any],
                hook_factory: Optional[experiment.HookFactory] = None):
  """Trains one variant in `root/<name>` (resuming); returns (row, result).

  A diverged run is recorded, not fatal: its result is its metrics.json
  (status 'diverged', diverged_step, the epochs before, health).
  """
  run_dir = os.path.join(root, variant.name)
  summary_path = os.path.join(run_dir, 'variant.json')
  start, stamps = time.time(), []   # wall seconds to the end of each epoch
  clock = lambda exp, event, out: event == 'epoch' and stamps.append(
      time.time() - start)
  previous = {}
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      previous = json.load(f)
  try:
    result = loop.train_and_evaluate(base.replace(**variant.overrides), run_dir,
                                     [clock], hook_factory=hook_factory)
  except errors.NonFiniteError as e:   # one diverging variant ≠ no grid
    logging.warning('variant %s diverged: %s', variant.name, e)
    with open(os.path.join(run_dir, workdir_lib.METRICS_JSON)) as f:
      result = json.load(f)
  history, earlier = result.get('history', []), previous.get('wall_seconds', [])
  if earlier and len(earlier) + len(stamps) == len(history):
    stamps = earlier + [earlier[-1] + s for s in stamps]
  row = summarize(variant, history, result['status'], stamps,
                  result.get('test_accuracy'))
  row.update(wall_seconds=stamps, run_seconds=result.get('wall_seconds'),
             health=health.summary_cell(run_dir),
             **{k: result[k] for k in ('mc_val_accuracy', 'mc_test_accuracy',
                                       'diverged_step') if k in result})
  workdir_lib.write_json(summary_path, row)
  write_hparams_run(run_dir, hparams, row, start)
  return row, result


ReportFn = Callable[[config_lib.Config, Sequence[Dict[str, Any]], str],
                    Dict[str, str]]


def run(base: config_lib.Config, variants: Sequence[Variant], root: str,
        report_fn: ReportFn = write_comparison,
        hook_factory: Optional[experiment.HookFactory] = None) -> Dict[str, Any]:
  """Trains each variant in `root/<name>`; after each, `report_fn(base, rows,
  root) -> paths` rewrites the comparison. `hook_factory(exp) -> hooks` adds
  per-run hooks (`loop.train_and_evaluate`). Returns {'rows', 'results' (name
  -> train_and_evaluate's result), 'paths', 'wall_seconds'}.
  """
  os.makedirs(root, exist_ok=True)
  hparams = write_hparams_config(root, variants)
  started, rows, results, paths = time.time(), [], {}, {}
  for i, variant in enumerate(variants, 1):
    logging.info('variant %d/%d: %s %s', i, len(variants), variant.name,
                 dict(variant.overrides))
    row, results[variant.name] = run_variant(base, variant, root, hparams,
                                             hook_factory)
    rows.append(row)
    paths = report_fn(base, rows, root)
  return {'rows': rows, 'results': results, 'paths': paths,
          'wall_seconds': time.time() - started}
