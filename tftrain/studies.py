"""The activation study: a grid over `activation` with a depth probe per run.

`compare_activations` (launch.deep) trains one variant per activation through
`grid.run`, each with a `probes.DepthProbe` hook on a fixed validation batch,
and writes comparison.md/.csv, grad_norm_vs_depth.png and val_accuracy.png
into the grid's root.
"""

import os
from typing import Any, Dict, List, Sequence

import numpy as np

from tftrain import config as config_lib
from tftrain import grid
from tftrain import models
from tftrain import probes
from tftrain import report
from tftrain import summaries


def _probe_columns(probe) -> Dict[str, float]:
  """Gradient norms of the first and last hidden layer, start and end."""
  out = {}
  records = probe.grad_norm_records
  for when, (_, norms) in (('start', records[0]), ('end', records[-1])):
    first = float(norms[0])
    last = float(norms[summaries.last_hidden_index(len(norms))])
    out.update({f'grad_first_{when}': first, f'grad_last_{when}': last,
                f'ratio_{when}': first / last if last > 0 else float('inf')})
  return out


def activation_row(config: config_lib.Config, row: Dict[str, Any],
                   probe=None) -> Dict[str, Any]:
  """The activation-comparison line of one variant (`row` from `grid.run`)."""
  accs = row['val_accuracy']
  out = {'activation': config.activation,
         'initializer': (config.kernel_initializer
                         or models.default_initializer(config.activation)),
         'standardized': config.standardize_inputs,
         'optimizer': config.optimizer, 'learning_rate': config.learning_rate,
         'status': row['status']}
  out.update({f'val_acc_e{e}': accs[e - 1] if e <= len(accs) else None
              for e in range(1, config.epochs + 1)})
  out.update(final_val_acc=accs[-1] if accs else None,
             test_acc=row['test_accuracy'])
  if probe is not None and probe.grad_norm_records:
    out.update(_probe_columns(probe))
  out.update(health=row['health'], wall_seconds=row.get('run_seconds'))
  if probe is not None:
    out['probe_seconds'] = probe.seconds
  return out


def _depth_panels(probed) -> List[report.Panel]:
  """Gradient norm vs depth at the first and the last probe, log y."""
  names = next(iter(probed.values()))[1]
  depth = np.arange(len(names))
  panels = []
  for title, index in (('start of training', 0), ('end of training', -1)):
    steps = {a: p.grad_norm_records[index][0] for a, (p, _) in probed.items()}
    same = len(set(steps.values())) == 1
    # One label per activation (same colour in both panels); the step goes in
    # the title, or in the label when the runs stopped at different steps.
    curves = {(a if same else f'{a} (step {steps[a]})'):
              (depth, p.grad_norm_records[index][1])
              for a, (p, _) in probed.items()}
    panels.append(report.Panel(
        curves, title + (f' (step {steps[next(iter(steps))]})' if same else ''),
        f'layer depth (0 = {names[0]}, {len(names) - 1} = {names[-1]})',
        'kernel gradient L2 norm (probe batch)', logy=True,
        floor_label='exactly 0 in float32'))
  return panels


def compare_activations(base: config_lib.Config, activations: Sequence[str],
                        root: str, probe_size: int = probes.PROBE_SIZE
                        ) -> Dict[str, Any]:
  """A grid over `activation` (runs in `root/<activation>/`), each with a
  DepthProbe on `probe_size` validation examples recorded at the start, every
  `histogram_every_steps` and after each epoch. Returns `grid.run`'s dict plus
  'table' (comparison lines) and 'probes' (activation -> [(step, norms)]).
  """
  by_activation, table = {}, []   # activation -> (probe, layer names)

  def probe_hooks(exp):
    probe = probes.activation_probe(exp, exp.config.histogram_every_steps,
                                    write_images=True, size=probe_size)
    if probe is None:
      return []
    by_activation[exp.config.activation] = (probe, exp.trainer.layer_names)
    probe.record_start(exp)     # taken at the first hook call
    return [probe]

  def write(config, rows, workdir):
    files = {'table_md': os.path.join(workdir, 'comparison.md'),
             'table_csv': os.path.join(workdir, 'comparison.csv'),
             'grad_png': os.path.join(workdir, 'grad_norm_vs_depth.png'),
             'val_png': os.path.join(workdir, 'val_accuracy.png')}
    for probe, _ in by_activation.values():   # a run that stopped first
      probe.flush_pending()
    table[:] = [activation_row(config.replace(**r['overrides']), r,
                               by_activation.get(r['name'], (None,))[0])
                for r in rows]
    report.write_table(table, files['table_md'], files['table_csv'])
    probed = {a: p for a, p in by_activation.items()
              if p[0].grad_norm_records}
    if probed:
      report.plot_panels(_depth_panels(probed), files['grad_png'],
                         f'Gradient norm vs depth: {config.depth} x Dense('
                         f'{config.width}), {config.optimizer} '
                         f'lr={config.learning_rate}')
    report.plot_panels([report.Panel(
        {r['name']: (range(1, len(r['val_accuracy']) + 1), r['val_accuracy'])
         for r in rows}, 'validation accuracy per epoch', 'epoch',
        'validation accuracy')], files['val_png'])
    return files

  variants = grid.expand({'activation': list(activations)}, base, {},
                         {'activation': 'activation'}, {'activation': ''})
  out = grid.run(base, variants, root, write, probe_hooks)
  out['table'] = table
  out['probes'] = {a: p.grad_norm_records
                   for a, (p, _) in by_activation.items()}
  return out
