"""What goes to tf.summary: step scalars, per-layer gradient norms, histograms.

Tags (nested names become TensorBoard groups):
  train/:       loss, learning_rate, grad_norm/<layer>, grad_norm_ratio/first_to_last,
                grad/<layer>, weight/<layer> (histograms), examples_per_second,
                epoch_loss, epoch_accuracy
  validation/:  epoch_loss, epoch_accuracy
"""

import os
from typing import Dict, Sequence

import tensorflow as tf

TRAIN = 'train'
VALIDATION = 'validation'


def create_writers(workdir: str, is_chief: bool = True, temp_dir: str = None):
  """`train/` and `validation/` writers; non-chief workers write to temp_dir."""
  root = workdir if is_chief else temp_dir
  return {name: tf.summary.create_file_writer(os.path.join(root, name))
          for name in (TRAIN, VALIDATION)}


def write_step_scalars(loss, learning_rate, layer_names: Sequence[str], norms):
  """Per-step scalars; call under a writer and a `record_if` (graph-safe)."""
  tf.summary.scalar('loss', loss)
  tf.summary.scalar('learning_rate', learning_rate)
  for i, name in enumerate(layer_names):
    tf.summary.scalar(f'grad_norm/{name}', norms[i])
  if len(layer_names) > 1:
    tf.summary.scalar('grad_norm_ratio/first_to_last',
                      norms[0] / tf.maximum(norms[-2 if len(layer_names) > 2 else -1], 1e-30))


def write_histograms(layers, kernel_grads):
  """Histograms of each Dense layer's kernel gradient and kernel."""
  for layer, grad in zip(layers, kernel_grads):
    tf.summary.histogram(f'grad/{layer.name}', grad)
    tf.summary.histogram(f'weight/{layer.name}', layer.kernel)


def write_scalars(writer, step: int, values: Dict[str, float]):
  """Host-side scalars (epoch metrics, throughput)."""
  with writer.as_default(step=step):
    for tag, value in values.items():
      tf.summary.scalar(tag, value)
  writer.flush()


def trace_model_graph(writer, model, example_batch):
  """Writes the forward graph once so TensorBoard's Graphs tab shows the model."""
  @tf.function
  def forward(x):
    return model(x, training=False)
  tf.summary.trace_on(graph=True, profiler=False)
  forward(example_batch)
  with writer.as_default(step=0):
    tf.summary.trace_export(name='model', step=0)
  writer.flush()
