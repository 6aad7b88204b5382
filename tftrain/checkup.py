"""The end-of-run checkup: a run's recorded series -> `health.analyze` -> report.

`health_run_record` gathers what `health.analyze` reads from the run's files
(observations.jsonl, activations.jsonl) and its result; `write_health` writes
health.md/.json, the Text summary and the depth x time heatmap.
"""

import os
from typing import Any, Dict

import tensorflow as tf

from tftrain import probes
from tftrain import summaries
from tftrain import workdir as workdir_lib

# The run-file names live in tftrain.workdir; `checkup.OBSERVATIONS` is kept
# for code written before they moved there.
OBSERVATIONS = workdir_lib.OBSERVATIONS


def health_run_record(exp, result: Dict[str, Any]) -> Dict:
  """The series `health.analyze` reads, from the run's files and result."""
  config = exp.config
  run = {'layer_names': exp.trainer.layer_names,
         'num_classes': exp.data_info.num_classes,
         'activation': config.activation,
         'history': result.get('history', []),
         'status': result.get('status')}
  for key in ('diverged_step', 'diverged_loss'):
    if key in result:
      run[key] = result[key]
  records = summaries.read_records(
      os.path.join(exp.workdir, workdir_lib.OBSERVATIONS))
  if records:
    run['steps'] = [r['step'] for r in records]
    for key in ('grad_norms', 'update_ratios', 'loss', 'learning_rate'):
      run[key] = [r[key] for r in records]
  activations = probes.read_activation_records(exp.workdir)
  if activations:
    run['activation_stats'] = activations
  finder = result.get('lr_finder')
  if finder:
    run['lr_finder'] = {'suggestion': finder.get('suggestion'),
                        'suggestions': finder.get('suggestions', {})}
  if 'learning_rate' in result:
    run['schedule_peak_lr'] = result['learning_rate']
  return run


def write_health(exp, result: Dict[str, Any]) -> None:
  """health.md/.json, a Text summary, the depth x time heatmap; result['health']."""
  from tftrain import health  # pylint: disable=g-import-not-at-top
  run = health_run_record(exp, result)
  findings = health.analyze(run)
  result['health'] = {'healthy': not findings,
                      'findings': [f.kind for f in findings],
                      'block': health.format_block(findings)}
  if not exp.is_chief:
    return
  title = f'Training health: {os.path.basename(os.path.abspath(exp.workdir))}'
  health.write_report(exp.workdir, findings, title)
  step = int(exp.trainer.optimizer.iterations.numpy())
  writer = exp.writers[summaries.TRAIN]
  with writer.as_default(step=step):
    tf.summary.text('health', health.format_markdown(findings, title))
    if len(run['layer_names']) >= 3 and run.get('steps'):
      png = health.depth_time_heatmap_png(
          run['layer_names'], run['steps'], run['grad_norms'],
          'log10 gradient norm by layer (rows) and step')
      with open(os.path.join(exp.workdir, workdir_lib.GRAD_NORM_HEATMAP),
                'wb') as f:
        f.write(png)
      tf.summary.image('grad_norm_heatmap',
                       tf.image.decode_png(png, channels=3)[tf.newaxis])
  writer.flush()
