"""Train several variants of one config and compare them: plots and tables.

Generic pieces, reusable by any comparison (activations, optimizers, batch
norm placement, ...):
  `write_table(rows, path_md, path_csv)`      Markdown + CSV from dict rows.
  `plot_curves(curves, path, ...)`            one line per variant.
  `plot_panels(panels, path)`                 several such plots side by side.
  `train_variants(configs, workdir, ...)`     one run dir per variant.
The activation comparison of `launch.deep`:
  `compare_activations(config, activations, workdir)`.
"""

import csv
import dataclasses
import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tftrain import config as config_lib

Curve = Tuple[Sequence[float], Sequence[float]]


# ---------------------------------------------------------------- tables --

def _format(value, float_format: str) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    if math.isnan(value):
      return 'nan'
    return float_format.format(value)
  return str(value)


def write_table(rows: Sequence[Mapping[str, Any]], path_md: str, path_csv: str,
                columns: Optional[Sequence[str]] = None,
                float_format: str = '{:.4g}') -> List[str]:
  """Writes `rows` (dicts) as a Markdown table and a CSV file.

  Args:
    rows: one dict per variant; missing keys become empty cells.
    path_md: Markdown output path (None: skip).
    path_csv: CSV output path (None: skip); floats are written in full.
    columns: column order; default: keys in first-seen order.
    float_format: format of floats in the Markdown table.

  Returns:
    The column names used.
  """
  if columns is None:
    columns = []
    for row in rows:
      columns.extend(k for k in row if k not in columns)
  columns = list(columns)
  if path_md:
    lines = ['| ' + ' | '.join(columns) + ' |',
             '|' + '|'.join('---' for _ in columns) + '|']
    for row in rows:
      lines.append('| ' + ' | '.join(_format(row.get(c), float_format)
                                     for c in columns) + ' |')
    with open(path_md, 'w') as f:
      f.write('\n'.join(lines) + '\n')
  if path_csv:
    with open(path_csv, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
      writer.writeheader()
      for row in rows:
        writer.writerow({c: '' if row.get(c) is None else row.get(c)
                         for c in columns})
  return columns


# ----------------------------------------------------------------- plots --

@dataclasses.dataclass
class Panel:
  """One subplot: `curves` maps a variant name to (x, y)."""
  curves: Mapping[str, Curve]
  title: str = ''
  xlabel: str = ''
  ylabel: str = ''
  logy: bool = False
  # Log-y only: y <= 0 is drawn at this floor with an 'x' (None: a decade
  # below the smallest positive y); `floor_label` explains it in the legend.
  floor: Optional[float] = None
  floor_label: str = 'exactly 0'


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_panels(panels: Sequence[Panel], path: str, suptitle: str = '',
                panel_size: Tuple[float, float] = (6.0, 4.2)) -> str:
  """Draws the panels side by side (same colour per variant) into `path`."""
  plt = _pyplot()
  names = []
  for panel in panels:
    names.extend(n for n in panel.curves if n not in names)
  colors = {n: plt.get_cmap('tab10')(i % 10) for i, n in enumerate(names)}
  fig, axes = plt.subplots(1, len(panels), squeeze=False, dpi=100,
                           figsize=(panel_size[0] * len(panels), panel_size[1]))
  for ax, panel in zip(axes[0], panels):
    floor = panel.floor
    if panel.logy and floor is None:
      positive = [v for _, y in panel.curves.values() for v in np.ravel(y)
                  if np.isfinite(v) and v > 0]
      floor = min(positive) / 10 if positive else 1e-30
    floor_drawn = False
    for name, (x, y) in panel.curves.items():
      x = np.asarray(x, np.float64)
      y = np.asarray(y, np.float64)
      if panel.logy:
        zero = y <= 0
        ax.semilogy(x, np.where(zero, floor, y), lw=1.8, color=colors[name],
                    label=name)
        if zero.any():
          ax.semilogy(x[zero], np.full(zero.sum(), floor), 'x', ms=5,
                      color=colors[name])
          floor_drawn = True
      else:
        ax.plot(x, y, lw=1.8, marker='o' if len(x) < 30 else None,
                color=colors[name], label=name)
    if floor_drawn:
      ax.axhline(floor, color='grey', ls=':', lw=1)
      ax.plot([], [], 'kx', label=f'{panel.floor_label} (drawn at {floor:.0e})')
    ax.set_title(panel.title, fontsize=11)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, which='major', alpha=0.3)
    ax.legend(fontsize=8, loc='best')
  if suptitle:
    fig.suptitle(suptitle, fontsize=12)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def plot_curves(curves: Mapping[str, Curve], path: str, title: str = '',
                xlabel: str = '', ylabel: str = '', logy: bool = False) -> str:
  """One plot, one line per variant (e.g. validation accuracy per epoch)."""
  return plot_panels([Panel(curves, title, xlabel, ylabel, logy)], path)


# ------------------------------------------------------------- variants --

def train_variants(configs: Mapping[str, config_lib.Config], workdir: str,
                   run_fn: Optional[Callable[[config_lib.Config, str], Dict]] = None,
                   ) -> Dict[str, Dict[str, Any]]:
  """Trains each variant in `workdir/<name>/`; a diverged one is recorded, not fatal.

  Args:
    configs: variant name -> Config.
    workdir: parent directory.
    run_fn: `run_fn(config, run_dir) -> result dict`; default
      `loop.train_and_evaluate`.

  Returns:
    name -> result dict (status 'diverged' with the step for a non-finite run).
  """
  from tftrain import loop  # pylint: disable=g-import-not-at-top
  from tftrain import trainer  # pylint: disable=g-import-not-at-top
  run_fn = run_fn or loop.train_and_evaluate
  results = {}
  for name, config in configs.items():
    run_dir = os.path.join(workdir, name)
    try:
      results[name] = run_fn(config, run_dir)
    except trainer.NonFiniteError as e:
      results[name] = {'workdir': run_dir, 'status': 'diverged',
                       'diverged_step': e.step, 'history': []}
  return results


# ----------------------------------------------- activation comparison --

def _ratio(norms: np.ndarray) -> float:
  """First layer over last hidden layer (the logits layer is excluded)."""
  last = norms[-2] if len(norms) > 2 else norms[-1]
  return float(norms[0] / last) if last > 0 else float('inf')


def _run_probed(config, run_dir, probe_size, probes):
  """train_and_evaluate with a DepthProbe recorded at the start and throughout."""
  from tftrain import loop  # pylint: disable=g-import-not-at-top
  from tftrain import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  workdir_lib.ensure_writable(run_dir)
  with workdir_lib.WorkdirLock(run_dir):
    exp = loop.build_experiment(config, run_dir)
    probe = loop.activation_probe(exp, config.histogram_every_steps,
                                  write_images=True, size=probe_size)
    probes[config.activation] = (probe, exp.trainer.layer_names)
    probe.record(exp, int(exp.trainer.optimizer.iterations.numpy()))
    try:
      return loop.run(exp, [probe])
    finally:
      for writer in exp.writers.values():
        writer.flush()


def activation_row(name: str, config, result, probe, epochs: int) -> Dict:
  """The comparison-table row of one activation run."""
  row = {'activation': name,
         'initializer': config.kernel_initializer or _default_init(name),
         'standardized': config.standardize_inputs,
         'optimizer': config.optimizer,
         'learning_rate': config.learning_rate,
         'status': result.get('status')}
  history = result.get('history', [])
  for e in range(epochs):
    row[f'val_acc_e{e + 1}'] = (history[e].get('val_accuracy')
                                if e < len(history) else None)
  row['final_val_acc'] = history[-1].get('val_accuracy') if history else None
  row['test_acc'] = result.get('test_accuracy')
  if probe is not None and probe.records:
    start, end = probe.records[0][1], probe.records[-1][1]
    row.update(grad_first_start=float(start[0]),
               grad_last_start=float(start[-2] if len(start) > 2 else start[-1]),
               ratio_start=_ratio(start),
               grad_first_end=float(end[0]),
               grad_last_end=float(end[-2] if len(end) > 2 else end[-1]),
               ratio_end=_ratio(end))
  findings = result.get('health', {}).get('findings')
  row['health'] = '' if findings is None else (', '.join(findings) or 'healthy')
  if 'wall_seconds' in result:
    row['wall_seconds'] = result['wall_seconds']
  if probe is not None:
    row['probe_seconds'] = probe.seconds
  return row


def _default_init(activation):
  from tftrain import models  # pylint: disable=g-import-not-at-top
  return models.default_initializer(activation)


def compare_activations(config: config_lib.Config, activations: Sequence[str],
                        workdir: str, probe_size: int = 128) -> Dict[str, Any]:
  """Trains `config` once per activation and writes the comparison.

  Each activation runs in `workdir/<activation>/` (its own TensorBoard run),
  with a `summaries.DepthProbe` on `probe_size` validation examples recorded
  at the start, every `config.histogram_every_steps` and after each epoch.
  Written to `workdir`: grad_norm_vs_depth.png (early and late in training,
  one line per activation, log y), val_accuracy.png, comparison.md and
  comparison.csv (validation accuracy per epoch, final accuracy, first/last
  hidden layer gradient-norm ratios at start and end).

  Returns:
    {'rows': table rows, 'results': activation -> result dict,
     'probes': activation -> [(step, per-layer grad norms)], 'files': paths}.
  """
  for a in activations:
    if a not in config_lib.ACTIVATIONS:
      raise config_lib.ConfigError(
          'activation', a, f'choose from {", ".join(config_lib.ACTIVATIONS)}.')
  configs = {a: config.replace(activation=a) for a in activations}
  probes: Dict[str, Any] = {}
  os.makedirs(workdir, exist_ok=True)
  results = train_variants(
      configs, workdir,
      run_fn=lambda c, d: _run_probed(c, d, probe_size, probes))
  rows = [activation_row(a, configs[a], results[a],
                          probes.get(a, (None, None))[0], config.epochs)
          for a in activations]
  files = {
      'table_md': os.path.join(workdir, 'comparison.md'),
      'table_csv': os.path.join(workdir, 'comparison.csv'),
      'grad_png': os.path.join(workdir, 'grad_norm_vs_depth.png'),
      'val_png': os.path.join(workdir, 'val_accuracy.png'),
  }
  write_table(rows, files['table_md'], files['table_csv'])
  probed = [a for a in activations if a in probes and probes[a][0].records]
  if probed:
    names = probes[probed[0]][1]
    depth = np.arange(len(names))
    xlabel = f'layer depth (0 = {names[0]}, {len(names) - 1} = {names[-1]})'
    panels = []
    for title, index in (('start of training', 0), ('end of training', -1)):
      steps = {a: probes[a][0].records[index][0] for a in probed}
      same = len(set(steps.values())) == 1
      # One label per activation (same colour in both panels); the step goes
      # in the title, or in the label when the runs stopped at different steps.
      curves = {(a if same else f'{a} (step {steps[a]})'):
                (depth, probes[a][0].records[index][1]) for a in probed}
      if same:
        title += f' (step {steps[probed[0]]})'
      panels.append(Panel(curves, title, xlabel,
                          'kernel gradient L2 norm (probe batch)', logy=True,
                          floor_label='exactly 0 in float32'))
    plot_panels(
        panels,
        files['grad_png'],
        suptitle=f'Gradient norm vs depth: {config.depth} x Dense('
                 f'{config.width}), {config.optimizer} lr={config.learning_rate}')
  curves = {a: ([h['epoch'] for h in results[a].get('history', [])],
                [h.get('val_accuracy', float('nan'))
                 for h in results[a].get('history', [])])
            for a in activations}
  plot_curves(curves, files['val_png'], 'validation accuracy per epoch',
              'epoch', 'validation accuracy')
  return {'rows': rows, 'results': results,
          'probes': {a: p[0].records for a, p in probes.items()},
          'files': files}
