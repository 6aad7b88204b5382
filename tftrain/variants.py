"""Variant grids: expand, run each with `loop.train_and_evaluate`, compare.

A grid is {Config field: values}; each point of the product is a `Variant`
with its own run directory `root/<name>` (e.g. `root/bn-before_opt-nadam`),
so each variant resumes independently. After every variant the comparison is
rewritten in `root/`:

  comparison.png   validation accuracy and loss per epoch, one line per variant
                   (colour: everything but batch_norm; dashes: batch_norm)
  comparison.md    best validation accuracy, epoch of best, seconds per epoch,
                   wall time to best, ...; plus, when the grid varies
                   batch_norm, the epoch at which each BN variant first reaches
                   the best validation loss of its no-BN twin
  comparison.json  the same numbers, machine-readable
  + TensorBoard HParams data (see `tftrain.hparams`).
"""

import dataclasses
import fnmatch
import itertools
import json
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import logging

from tftrain import config as config_lib
from tftrain import health
from tftrain import hparams as hparams_lib
from tftrain import loop
from tftrain import trainer as trainer_lib

DEFAULT_GRID = {
    'batch_norm': ('none', 'before'),
    'optimizer': ('sgd', 'momentum', 'nesterov', 'adam', 'nadam'),
}

# Per-optimizer learning rates for the deep ELU MLP at batch 32 (momentum
# variants take a smaller step since momentum 0.9 multiplies it by ~10).
DEFAULT_LEARNING_RATES = {
    'sgd': 1e-2, 'momentum': 2e-3, 'nesterov': 2e-3, 'adagrad': 1e-2,
    'rmsprop': 5e-4, 'adam': 5e-4, 'adamw': 5e-4, 'nadam': 5e-4,
}

# Short axis names for run directories.
SHORT_NAMES = {'batch_norm': 'bn', 'optimizer': 'opt', 'activation': 'act',
               'learning_rate': 'lr', 'kernel_initializer': 'init',
               'batch_size': 'batch', 'schedule': 'sched'}

_FIELDS = {f.name for f in dataclasses.fields(config_lib.Config)}


@dataclasses.dataclass(frozen=True)
class Variant:
  """One point of a grid: a name (its run directory) and Config overrides."""
  name: str
  overrides: Mapping[str, Any]


# Named variant lists ("presets"): each variant is a set of Config overrides
# on the launcher's base config. `chapter11`: the seed chapter's CIFAR-10
# exercise (Hands-On ML ch. 11, ex. 8) after batch norm: SELU, alpha dropout
# with MC dropout, 1cycle (published val accuracy in the comments).
SELU = dict(activation='selu', kernel_initializer='lecun_normal',
            batch_norm='none', standardize=True)
PRESETS = {
    'chapter11': [
        ('no-bn_nadam-5e-5', dict(batch_norm='none', optimizer='nadam',
                                  learning_rate=5e-5)),            # 0.4762
        ('bn_nadam-5e-4', dict(batch_norm='before', optimizer='nadam',
                               learning_rate=5e-4)),               # 0.5398
        ('selu_nadam-7e-4', dict(SELU, optimizer='nadam',
                                 learning_rate=7e-4)),             # 0.4792
        ('selu_alpha-dropout-0.1', dict(SELU, optimizer='nadam',
                                        learning_rate=5e-4, dropout=0.1,
                                        mc_dropout_samples=10)),   # 0.4890
        ('selu_alpha-dropout_1cycle', dict(
            SELU, optimizer='momentum', learning_rate=0.05, dropout=0.1,
            schedule='onecycle', batch_size=128, epochs=15, patience=0,
            mc_dropout_samples=10)),                               # 0.5198
    ],
}


def preset(name: str, base: config_lib.Config) -> List['Variant']:
  """The variants of preset `name`, each validated against `base`."""
  if name not in PRESETS:
    raise config_lib.ConfigError('preset', name,
                                 f'choose one of {", ".join(PRESETS)}.')
  variants = []
  for variant_name_, overrides in PRESETS[name]:
    base.replace(**overrides)          # validates now, not an hour later
    variants.append(Variant(variant_name_, dict(overrides)))
  return variants


def variant_name(point: Mapping[str, Any]) -> str:
  return '_'.join(f'{SHORT_NAMES.get(k, k)}-{v}' for k, v in point.items())


def expand_grid(grid: Mapping[str, Sequence[Any]], base: config_lib.Config,
                learning_rates: Optional[Mapping[str, float]] = None
                ) -> List[Variant]:
  """The product of `grid`'s axes, each with its learning rate, validated.

  Args:
    grid: Config field -> values, e.g. `DEFAULT_GRID`; axis order sets the
      name order and the run order.
    base: the Config every variant starts from.
    learning_rates: learning rate by variant name or by optimizer name (the
      variant name wins); unless the grid varies learning_rate itself, each
      variant takes the entry for its name, else for its optimizer, else
      `base.learning_rate`. None: `DEFAULT_LEARNING_RATES`.

  Returns:
    The variants, in grid order.

  Raises:
    ConfigError: an axis that is not a Config field, an empty axis, or a
      value the Config rejects (checked before anything trains).
  """
  if learning_rates is None:
    learning_rates = DEFAULT_LEARNING_RATES
  for axis, values in grid.items():
    if axis not in _FIELDS:
      raise config_lib.ConfigError(
          'grid', axis, f'is not a Config field; choose from '
          f'{", ".join(sorted(SHORT_NAMES))} or another field.')
    if not values:
      raise config_lib.ConfigError('grid', axis, 'needs at least one value.')
  variants = []
  for values in itertools.product(*grid.values()):
    point = dict(zip(grid.keys(), values))
    name = variant_name(point)
    overrides = dict(point)
    if 'learning_rate' not in grid:
      optimizer = point.get('optimizer', base.optimizer)
      lr = learning_rates.get(name, learning_rates.get(optimizer))
      if lr is not None:
        overrides['learning_rate'] = float(lr)
    try:
      base.replace(**overrides)   # validates every value now, not an hour later
    except config_lib.ConfigError as e:
      if e.field in grid:   # the launcher's grid flag is named grid_<field>
        raise config_lib.ConfigError(f'grid_{e.field}', e.value,
                                     str(e).split(': ', 1)[-1]) from None
      raise
    variants.append(Variant(name, overrides))
  names = {v.name for v in variants}
  for key in learning_rates:
    if key not in config_lib.OPTIMIZERS and key not in names:
      raise config_lib.ConfigError(
          'learning_rates', key, 'is neither an optimizer nor a variant; '
          f'variants: {", ".join(sorted(names))}.')
  return variants


def select(variants: Sequence[Variant], patterns: Sequence[str]) -> List[Variant]:
  """The variants whose name matches any of the shell-style `patterns`.

  Raises:
    ConfigError: a pattern matching no variant (the message lists the names).
  """
  if not patterns:
    return list(variants)
  for pattern in patterns:
    if not any(fnmatch.fnmatchcase(v.name, pattern) for v in variants):
      raise config_lib.ConfigError(
          'only', pattern, 'matches no variant; choose from '
          f'{", ".join(v.name for v in variants)}.')
  return [v for v in variants
          if any(fnmatch.fnmatchcase(v.name, p) for p in patterns)]


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
  """The comparison numbers of one variant from its per-epoch history.

  Args:
    variant: the variant.
    history: the loop's per-epoch records (epoch, seconds, val_loss, ...).
    status: the run's status (completed, early_stopped, diverged, ...).
    wall_seconds: wall-clock seconds from the run's start to the end of each
      epoch (validation included); when missing or shorter than `history`
      (a resumed run), the sum of the epochs' training seconds is used.
    test_accuracy: test accuracy of the restored best weights, if known.
  """
  best_acc, best_acc_epoch = _best(history, 'val_accuracy', 1.0)
  best_loss, best_loss_epoch = _best(history, 'val_loss', -1.0)
  seconds = [r['seconds'] for r in history]
  exact = wall_seconds is not None and len(wall_seconds) == len(history)
  if exact:
    to_best = wall_seconds[best_acc_epoch - 1] if best_acc_epoch else None
  else:
    to_best = sum(seconds[:best_acc_epoch]) if best_acc_epoch else None
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
  for epoch, value in enumerate(val_losses, 1):
    if value is not None and value <= target:
      return epoch
  return None


def batch_norm_speedups(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """For each variant with batch norm and its no-BN twin (same other values):
  the twin's best validation loss and the epoch the BN variant first reaches it."""
  out = []
  for plain in rows:
    if plain['overrides'].get('batch_norm') != 'none' or plain['best_val_loss'] is None:
      continue
    others = {k: v for k, v in plain['overrides'].items()
              if k not in ('batch_norm', 'learning_rate')}
    for bn in rows:
      o = bn['overrides']
      if o.get('batch_norm') in (None, 'none') or bn['best_val_loss'] is None:
        continue
      if {k: v for k, v in o.items()
          if k not in ('batch_norm', 'learning_rate')} != others:
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


def _fmt(value, spec):
  return '–' if value is None else format(value, spec)


def markdown_table(rows: Sequence[Dict[str, Any]]) -> str:
  """The comparison as Markdown (one row per variant, + the BN speed-ups)."""
  lines = [
      '| variant | learning rate | best val accuracy | epoch of best | '
      'best val loss (epoch) | s/epoch | wall s to best | test accuracy | '
      'MC dropout test accuracy | epochs run | status | health |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|']
  for r in rows:
    lr = r['overrides'].get('learning_rate')
    wall = _fmt(r['wall_seconds_to_best'], '.0f')
    if r['wall_seconds_to_best'] is not None and not r['wall_time_exact']:
      wall += '*'
    lines.append(
        f"| {r['name']} | {_fmt(lr, 'g')} | {_fmt(r['best_val_accuracy'], '.4f')}"
        f" | {_fmt(r['best_val_accuracy_epoch'], 'd')}"
        f" | {_fmt(r['best_val_loss'], '.4f')} ({_fmt(r['best_val_loss_epoch'], 'd')})"
        f" | {_fmt(r['seconds_per_epoch'], '.1f')} | {wall}"
        f" | {_fmt(r['test_accuracy'], '.4f')}"
        f" | {_fmt(r.get('mc_test_accuracy'), '.4f')}"
        f" | {r['epochs_run']} | {r['status']}"
        f" | {r.get('health', '')} |")
  if any(not r['wall_time_exact'] for r in rows if r['wall_seconds_to_best']):
    lines.append('\n\\* no wall-clock stamp for every epoch (a resumed run): '
                 'sum of the epochs\' training seconds, validation not included.')
  speedups = batch_norm_speedups(rows)
  if speedups:
    lines += ['', '### Batch norm: epochs to reach the no-BN best validation loss',
              '', '| no-BN variant | its best val loss (epoch) | BN variant | '
              'BN epoch reaching it | BN best val loss | s/epoch BN / no-BN |',
              '|---|---:|---|---:|---:|---:|']
    for s in speedups:
      ratio = (s['bn_seconds_per_epoch'] / s['plain_seconds_per_epoch']
               if s['bn_seconds_per_epoch'] and s['plain_seconds_per_epoch']
               else None)
      reach = s['bn_epoch_reaching']
      lines.append(
          f"| {s['plain']} | {s['plain_best_val_loss']:.4f} "
          f"({s['plain_best_epoch']}) | {s['batch_norm']} | "
          f"{'never' if reach is None else reach} | "
          f"{s['bn_best_val_loss']:.4f} | {_fmt(ratio, '.2f')} |")
  return '\n'.join(lines) + '\n'


def plot(rows: Sequence[Dict[str, Any]], path: str,
         title: str = 'validation per epoch') -> None:
  """PNG: validation accuracy (left) and loss (right) per epoch, a line per variant."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  styles = ['-', '--', ':', '-.']
  bn_values, groups = [], []
  for r in rows:
    bn = r['overrides'].get('batch_norm')
    group = tuple((k, v) for k, v in r['overrides'].items()
                  if k not in ('batch_norm', 'learning_rate'))
    if bn not in bn_values:
      bn_values.append(bn)
    if group not in groups:
      groups.append(group)
  cmap = plt.get_cmap('tab10' if len(groups) <= 10 else 'tab20')
  fig, axes = plt.subplots(1, 2, figsize=(13, 5))
  for r in rows:
    group = tuple((k, v) for k, v in r['overrides'].items()
                  if k not in ('batch_norm', 'learning_rate'))
    color = cmap(groups.index(group) % cmap.N)
    style = styles[bn_values.index(r['overrides'].get('batch_norm')) % 4]
    lr = r['overrides'].get('learning_rate')
    label = r['name'] + (f' (lr {lr:g})' if lr is not None else '')
    for ax, key in zip(axes, ('val_accuracy', 'val_loss')):
      points = [(e, v) for e, v in enumerate(r[key], 1) if v is not None]
      if points:
        ax.plot(*zip(*points), style, color=color, marker='o', markersize=3,
                label=label)
  axes[0].set_ylabel('validation accuracy')
  axes[1].set_ylabel('validation loss')
  for ax in axes:
    ax.set_xlabel('epoch')
    ax.grid(alpha=0.3)
  losses = sorted(v for r in rows for v in r['val_loss'] if v is not None)
  if losses:   # a diverging variant must not flatten everyone else's curve
    low, median = losses[0], losses[len(losses) // 2]
    top = min(losses[-1], median + 3 * (median - low))
    pad = 0.05 * (top - low) + 1e-6
    axes[1].set_ylim(low - pad, top + pad)
  handles, labels = axes[0].get_legend_handles_labels()
  # Legend columns are filled top to bottom: one column per colour group,
  # one row per batch-norm placement.
  keys = []
  for r in rows:
    if any(v is not None for v in r['val_accuracy']):
      o = r['overrides']
      keys.append((groups.index(tuple((k, v) for k, v in o.items() if k not in (
          'batch_norm', 'learning_rate'))), bn_values.index(o.get('batch_norm'))))
  order = sorted(range(len(labels)), key=lambda i: keys[i])
  handles, labels = [handles[i] for i in order], [labels[i] for i in order]
  columns = min(len(labels), 5 if len(bn_values) <= 1 else len(groups))
  fig.legend(handles, labels, loc='lower center', ncol=max(columns, 1),
             fontsize=8, frameon=False)
  legend_rows = -(-len(labels) // max(columns, 1))
  fig.suptitle(title)
  fig.tight_layout(rect=(0, 0.04 + 0.035 * legend_rows, 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_comparison(rows: Sequence[Dict[str, Any]], root: str,
                     title: str = 'validation per epoch') -> Dict[str, str]:
  """Writes comparison.{png,md,json} into `root`; returns their paths."""
  paths = {ext: os.path.join(root, f'comparison.{ext}')
           for ext in ('png', 'md', 'json')}
  plot(rows, paths['png'], title)
  with open(paths['md'], 'w') as f:
    f.write(markdown_table(rows))
  with open(paths['json'], 'w') as f:
    json.dump({'variants': list(rows),
               'batch_norm_speedups': batch_norm_speedups(rows)},
              f, indent=2, default=float)
  return paths


# ------------------------------------------------------------------ run --

class _EpochClock:
  """Hook: wall seconds from the start of the run to the end of each epoch."""

  def __init__(self):
    self.start = time.time()
    self.stamps: List[float] = []

  def __call__(self, exp, event, outputs):
    del exp, outputs
    if event == 'epoch':
      self.stamps.append(time.time() - self.start)


def run_variant(base: config_lib.Config, variant: Variant, root: str,
                hparam_defs, hooks: Sequence[loop.Hook] = ()) -> Dict[str, Any]:
  """Trains one variant in `root/<name>` (resuming) and returns its summary."""
  run_dir = os.path.join(root, variant.name)
  config = base.replace(**variant.overrides)
  clock = _EpochClock()
  summary_path = os.path.join(run_dir, 'variant.json')
  previous = None
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      previous = json.load(f)
  try:
    result = loop.train_and_evaluate(config, run_dir, hooks=[clock, *hooks])
    status, history = result['status'], result['history']
    test_accuracy = result.get('test_accuracy')
    extra = {k: result[k] for k in ('mc_val_accuracy', 'mc_test_accuracy')
             if k in result}
  except trainer_lib.NonFiniteError as e:   # one diverging variant ≠ no grid
    logging.warning('variant %s diverged: %s', variant.name, e)
    with open(os.path.join(run_dir, 'metrics.json')) as f:
      history = json.load(f).get('history', [])
    status, test_accuracy, extra = 'diverged', None, {}
  stamps = clock.stamps
  if previous and len(stamps) < len(history):
    earlier = previous.get('wall_seconds', [])
    offset = earlier[-1] if earlier else 0.0
    if len(earlier) + len(stamps) == len(history):
      stamps = earlier + [offset + s for s in stamps]
  row = summarize(variant, history, status, stamps, test_accuracy)
  row['wall_seconds'] = stamps
  row['health'] = health.summary_cell(run_dir)
  row.update(extra)
  with open(summary_path, 'w') as f:
    json.dump(row, f, indent=2, default=float)
  hparams_lib.write_run(run_dir, hparam_defs, variant.overrides, {
      'best_val_accuracy': row['best_val_accuracy'],
      'best_val_loss': row['best_val_loss'], 'test_accuracy': test_accuracy},
                        start_time_secs=clock.start)
  return row


def run_grid(base: config_lib.Config, variants: Sequence[Variant], root: str,
             hooks: Sequence[loop.Hook] = ()) -> Dict[str, Any]:
  """Runs every variant in `root/<name>` and writes the comparison.

  Args:
    base: the Config every variant starts from.
    variants: from `expand_grid` (and `select`).
    root: the grid's directory.
    hooks: passed to every `loop.train_and_evaluate`.

  Returns:
    {'rows': one summary per variant, 'paths': comparison files,
     'wall_seconds': the whole grid's time}.
  """
  os.makedirs(root, exist_ok=True)
  hparam_defs = hparams_lib.define_hparams(
      {v.name: v.overrides for v in variants})
  hparams_lib.write_config(root, hparam_defs)
  started = time.time()
  rows, paths = [], {}
  title = (f'{base.dataset} {base.model} '
           f'{base.depth}x{base.width} {base.activation}'
           if base.model == 'deep_mlp' else f'{base.dataset} {base.model}')
  for i, variant in enumerate(variants, 1):
    logging.info('variant %d/%d: %s %s', i, len(variants), variant.name,
                 dict(variant.overrides))
    rows.append(run_variant(base, variant, root, hparam_defs, hooks))
    paths = write_comparison(rows, root, title)
  return {'rows': rows, 'paths': paths, 'wall_seconds': time.time() - started}
