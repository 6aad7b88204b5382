"""The run's checkup: recorded series -> `health.analyze` -> report.

`model_facts` records, before the first step, what the model and the data
are (output activation and range, input scale, frozen layers, layers with no
activation between them) into model_facts.json; `LiveCheck` is the hook that
writes them and runs the health checks while the run trains (each quarter of
the first epoch, then every epoch), logging each new finding at once;
`health_run_record` gathers what `health.analyze` reads from the run's files
(observations.jsonl, activations.jsonl, model_facts.json) and its result;
`write_health` writes health.md/.json, the Text summary and the depth x time
heatmap.
"""

import os
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from tftrain import probes
from tftrain import summaries
from tftrain import workdir as workdir_lib

# The run-file names live in tftrain.workdir; `checkup.OBSERVATIONS` is kept
# for code written before they moved there.
OBSERVATIONS = workdir_lib.OBSERVATIONS
FACTS = 'model_facts.json'               # model and data facts (LiveCheck)

_MIXING = (tf.keras.layers.Dense, tf.keras.layers.Conv1D,
           tf.keras.layers.Conv2D, tf.keras.layers.Conv3D)
_TRANSPARENT = (tf.keras.layers.Flatten, tf.keras.layers.Reshape,
                tf.keras.layers.Dropout, tf.keras.layers.BatchNormalization,
                tf.keras.layers.LayerNormalization, tf.keras.layers.InputLayer,
                tf.keras.layers.AveragePooling2D,
                tf.keras.layers.GlobalAveragePooling2D)


def flat_layers(model) -> List[tf.keras.layers.Layer]:
  """`model`'s layers with nested models expanded, in order."""
  out = []
  for layer in model.layers:
    if getattr(layer, 'layers', None):
      out += flat_layers(layer)
    else:
      out.append(layer)
  return out


def linear_pairs(layers) -> List[List[str]]:
  """[a, b]: a Dense/Conv layer b fed by a linear Dense/Conv layer a with
  only linear layers (dropout, batch norm, reshapes) between them."""
  pairs, previous = [], None
  for layer in layers:
    act = probes.activation_name(layer)
    if isinstance(layer, _MIXING):
      if previous is not None:
        pairs.append([previous, layer.name])
      previous = layer.name if act is None else None
    elif act is not None or not isinstance(
        layer, _TRANSPARENT + (tf.keras.layers.Activation,)):
      previous = None
  return pairs


def model_facts(exp) -> Dict[str, Any]:
  """What the model and its inputs are, from the model and the probe batch."""
  model = exp.trainer.model
  images, _ = probes.probe_batch(exp)
  outputs = tf.cast(model(images, training=False), tf.float32).numpy()
  x = tf.cast(images, tf.float32).numpy()
  layers = flat_layers(model) if not _subclassed(model) else []
  weighted = [l for l in layers if l.weights] if layers else []
  last = layers[-1] if layers else None
  rows = outputs.reshape(len(outputs), -1)
  dropout = [float(getattr(l, 'rate', 0.0)) for l in layers
             if isinstance(l, tf.keras.layers.Dropout)]
  facts = {
      'output_layer': last.name if last is not None else 'output',
      'output_activation': probes.activation_name(last) if last else None,
      'output_min': float(rows.min()), 'output_max': float(rows.max()),
      'output_row_sum_error': float(np.abs(rows.sum(-1) - 1.0).max()),
      'input_abs_max': float(np.abs(x).max()), 'input_mean': float(x.mean()),
      'input_std': float(x.std()),
      'trainable_variables': len(model.trainable_variables),
      'weighted_layers': len(weighted),
      'frozen_layers': [l.name for l in weighted if not l.trainable_weights],
      'linear_pairs': linear_pairs(layers),
      'constant_kernels': constant_kernels(weighted),
      'dropout': max(dropout, default=0.0),
      'batch_size': exp.config.batch_size,
      'train_examples': exp.data_info.num_train or (
          exp.steps_per_epoch * exp.config.batch_size)}
  if rows.shape[-1] < 2:       # one output: a row sum says nothing
    facts['output_row_sum_error'] = float('inf')
  return facts


def _one_value(variable) -> Tuple[bool, float]:
  v = tf.convert_to_tensor(variable)
  low, high = float(tf.reduce_min(v)), float(tf.reduce_max(v))
  return low == high, low


def constant_kernels(weighted) -> List[Dict[str, Any]]:
  """Layers whose kernel of more than one unit holds one value (every unit
  starts as every other), with their index in the chain of weighted layers.

  A weighted layer without a kernel whose every variable holds one value
  (batch norm as initialized: gamma 1, beta 0) treats all units alike, so
  it is left out of the chain: the kernels on either side of it are
  neighbours. One with varied weights breaks the chain.
  """
  out, index = [], 0
  for layer in weighted:
    kernel = getattr(layer, 'kernel', None)
    if kernel is None:
      if not all(_one_value(w)[0] for w in layer.weights):
        index += 1
      continue
    if len(kernel.shape) >= 2 and kernel.shape[-1] >= 2:
      alike, value = _one_value(kernel)
      if alike:
        out.append({'index': index, 'layer': layer.name, 'value': value})
    index += 1
  return out


def _subclassed(model) -> bool:
  return not (isinstance(model, tf.keras.Sequential)
              or getattr(model, '_is_graph_network', False)
              or getattr(model, 'inputs', None))


class LiveCheck:
  """Hook: model facts before the first step, health checks while training.

  Checks run at each quarter of the first epoch and after every epoch; each
  new finding is logged at once. `first_step` is the global step of the
  first finding; `stop` turns True at the first error when `stop_on_error`.
  """

  def __init__(self, exp, stop_on_error: bool = False):
    self.stop_on_error = stop_on_error
    self.stop = False
    self.first_step: Optional[int] = None
    self.history: List[Dict[str, Any]] = []
    self.reported = set()
    self.facts = model_facts(exp)
    if exp.is_chief:
      workdir_lib.write_json(os.path.join(exp.workdir, FACTS), self.facts,
                             sort_keys=True)
    self.every = max(1, exp.steps_per_epoch // 4)
    self.next_step = int(exp.trainer.optimizer.iterations.numpy())
    self.check(exp, self.next_step)
    self.next_step += self.every

  def check(self, exp, step: int) -> None:
    """Runs the health checks on what is recorded so far; logs new ones."""
    from tftrain import health  # pylint: disable=g-import-not-at-top
    logger = getattr(exp, 'logger', None)
    if logger is not None:
      logger.flush()      # the observations written so far, on disk
    run = health_run_record(exp, {'history': self.history,
                                  'status': 'running'})
    for f in health.analyze(run):
      if f.kind in self.reported or f.kind in _END_ONLY:
        continue
      self.reported.add(f.kind)
      if self.first_step is None:
        self.first_step = step
      logging.warning('health at step %d: [%s] %s: %s Try: %s', step,
                      f.severity, f.kind, f.summary, f.remedy)
      if f.severity == 'error' and self.stop_on_error:
        self.stop = True

  def __call__(self, exp, event: str, outputs) -> None:
    if event == 'train':
      step = int(outputs['step'])
      if step >= self.next_step and not self.history:
        self.check(exp, step)
        self.next_step = step + self.every
    elif event == 'epoch':
      self.history.append(outputs)
      self.check(exp, int(exp.trainer.optimizer.iterations.numpy()))


# Judged on the whole run only (a part of it would mislead).
_END_ONLY = ('too_few_steps', 'overfitting')


def health_run_record(exp, result: Dict[str, Any]) -> Dict:
  """The series `health.analyze` reads, from the run's files and result."""
  run = {'layer_names': exp.trainer.layer_names,
         'num_classes': exp.data_info.num_classes,
         'activation': exp.config.activation,
         'total_steps': int(exp.trainer.optimizer.iterations.numpy())}
  return _recorded(exp.workdir, result, run)


def record_from_files(workdir: str, num_classes: int) -> Dict:
  """The same record rebuilt from a finished run's files alone (metrics.json,
  model_facts.json, observations.jsonl, activations.jsonl): to judge saved
  runs again with the current detectors. Layers are named by depth."""
  result = workdir_lib.read_json(os.path.join(workdir, workdir_lib.METRICS_JSON))
  run = _recorded(workdir, result, {'num_classes': num_classes})
  width = len(run['grad_norms'][0]) if run.get('grad_norms') else 0
  run['layer_names'] = [f'layer_{i:03d}' for i in range(width)]
  facts = run.get('model_facts') or {}
  if facts.get('batch_size') and facts.get('train_examples'):
    run['total_steps'] = (facts['train_examples'] // facts['batch_size']
                          * result.get('epochs_run', 0))
  return run


def _recorded(workdir: str, result: Dict[str, Any], run: Dict) -> Dict:
  """`run` plus the result's history/status and the run's recorded series."""
  run.update(history=result.get('history', []), status=result.get('status'))
  for key in ('diverged_step', 'diverged_loss'):
    if key in result:
      run[key] = result[key]
  records = summaries.read_records(
      os.path.join(workdir, workdir_lib.OBSERVATIONS))
  if records:
    run['steps'] = [r['step'] for r in records]
    for key in ('grad_norms', 'update_ratios', 'loss', 'learning_rate'):
      run[key] = [r[key] for r in records]
  facts_path = os.path.join(workdir, FACTS)
  if workdir_lib.gfile().exists(facts_path):
    run['model_facts'] = workdir_lib.read_json(facts_path)
  activations = probes.read_activation_records(workdir)
  if activations:
    run['activation_stats'] = activations
  finder = result.get('lr_finder')
  if finder:
    run['lr_finder'] = {'suggestion': finder.get('suggestion'),
                        'suggestions': finder.get('suggestions', {})}
  if 'learning_rate' in result:
    run['schedule_peak_lr'] = result['learning_rate']
  return run


def write_health(exp, result: Dict[str, Any],
                 live: Optional[LiveCheck] = None) -> None:
  """health.md/.json, a Text summary, the depth x time heatmap; result['health']."""
  from tftrain import health  # pylint: disable=g-import-not-at-top
  run = health_run_record(exp, result)
  findings = health.analyze(run)
  result['health'] = {'healthy': not findings,
                      'findings': [f.kind for f in findings],
                      'block': health.format_block(findings)}
  if live is not None and live.first_step is not None:
    result['health']['first_finding_step'] = live.first_step
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
      workdir_lib.write_text(
          os.path.join(exp.workdir, workdir_lib.GRAD_NORM_HEATMAP), png, 'wb')
      tf.summary.image('grad_norm_heatmap',
                       tf.image.decode_png(png, channels=3)[tf.newaxis])
  writer.flush()
