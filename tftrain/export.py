"""Export: a trained model that loads without tftrain's code or flags.

`export(model, data_info, workdir)` writes `<workdir>/export/` (replacing an
older one whole: atomically on a local filesystem):
  saved_model/   a TF SavedModel whose `serving_default` signature takes raw
                 uint8 images [batch, H, W, C] and returns `logits` and
                 `probabilities` (the scaling to [0, 1] and the training
                 split's standardization are inside it);
  model.keras    the Keras model (input: preprocessed float32 images);
  export.json    image shape, classes, the preprocessing, whether the model
                 has dropout (for MC dropout).
Load with `tf.saved_model.load(path).signatures['serving_default']` or
`tf.keras.models.load_model(path)`.
"""

import os
from typing import Dict

import tensorflow as tf

from tftrain import errors
from tftrain import models
from tftrain import trainer as trainer_lib
from tftrain import workdir as workdir_lib

EXPORT_DIR = 'export'


class _Serving(tf.Module):
  """Raw uint8 images in; logits and probabilities out.

  It tracks the model's variables, not the model: SavedModel would walk a
  Keras model's ~40k trackable children and trace its call twice more for
  Keras's own signatures (a 100-layer MLP: 7.5 s of an 8 s export here),
  none of which the serving signature needs.
  """

  def __init__(self, model, image_shape, mean, std):
    super().__init__()
    self.model_variables = list(model.variables)
    mean = tf.constant(mean if mean else 0.0, tf.float32)
    std = tf.constant(std if std else 1.0, tf.float32)

    def serve(images):
      x = (tf.cast(images, tf.float32) / 255.0 - mean) / std
      logits = tf.cast(model(x, training=False), tf.float32)
      return {'logits': logits, 'probabilities': tf.nn.softmax(logits)}
    self.serve = tf.function(serve, input_signature=[
        tf.TensorSpec([None, *image_shape], tf.uint8, name='images')])


def export(model: tf.keras.Model, data_info, workdir: str,
           dataset: str = None) -> Dict[str, str]:
  """Writes `workdir/export/` (replacing an older export atomically)."""
  final = os.path.join(workdir, EXPORT_DIR)
  tmp = workdir_lib.staging_dir(final)
  workdir_lib.remove_tree(tmp)
  tf.io.gfile.makedirs(tmp)
  serving = _Serving(model, tuple(data_info.image_shape), data_info.mean,
                     data_info.std)
  tf.saved_model.save(serving, os.path.join(tmp, 'saved_model'),
                      signatures={'serving_default': serving.serve})
  keras_error = None
  try:
    model.save(os.path.join(tmp, 'model.keras'))
  except Exception as e:  # pylint: disable=broad-except
    # e.g. a subclassed model
    keras_error = f'{type(e).__name__}: {errors.first_line(e, default="")}'
  meta = {'dataset': dataset, 'image_shape': list(data_info.image_shape),
          'keras_file_error': keras_error,
          'num_classes': int(data_info.num_classes),
          'input': 'uint8 images, scaled to [0, 1] inside the SavedModel',
          'mean': list(data_info.mean) if data_info.mean else None,
          'std': list(data_info.std) if data_info.std else None,
          'dropout': models.has_dropout(model)}
  workdir_lib.write_json(os.path.join(tmp, 'export.json'), meta)
  workdir_lib.replace_dir(tmp, final)
  return {'dir': final, 'saved_model': os.path.join(final, 'saved_model'),
          'keras': os.path.join(final, 'model.keras')}


def keras_path(workdir: str) -> str:
  """Where a completed run's `.keras` model is."""
  return os.path.join(workdir, EXPORT_DIR, 'model.keras')


def _metrics(probs, labels):
  """Loss sum and correct count of a batch of predicted probabilities."""
  loss, correct, _ = trainer_lib.probability_sums(probs, labels).numpy()
  return float(loss), float(correct)


def evaluate(workdir: str, data_dir=None, raw_data_dir=None,
             mc_dropout_samples: int = 0, batch_size: int = 1000,
             split: str = 'test') -> Dict[str, float]:
  """Test metrics of `workdir/export` from the export alone (and MC dropout).

  Only the data comes through tftrain (TFDS, the offline mirror); the model
  is the SavedModel's serving signature on raw uint8 images.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tftrain import data  # pylint: disable=g-import-not-at-top
  root = os.path.join(workdir, EXPORT_DIR)
  meta_path = os.path.join(root, 'export.json')
  if not tf.io.gfile.exists(meta_path):
    raise errors.WorkdirError(
        f'--workdir={workdir}: no export/ in it; a completed run writes one '
        '(rerun the training command to finish the run).')
  meta = workdir_lib.read_json(meta_path)
  data_dir = data.prepare(meta['dataset'], data_dir, raw_data_dir)
  test = tfds.load(meta['dataset'], split=split, data_dir=data_dir,
                   as_supervised=True, download=False).batch(batch_size)
  serve = tf.saved_model.load(os.path.join(root, 'saved_model')).signatures[
      'serving_default']
  keras_model = None
  if mc_dropout_samples and meta.get('dropout'):
    keras_model = tf.keras.models.load_model(os.path.join(root, 'model.keras'))
    mean = tf.constant(meta['mean'] or 0.0, tf.float32)
    std = tf.constant(meta['std'] or 1.0, tf.float32)
  sums = {'loss': 0.0, 'correct': 0.0, 'mc_loss': 0.0, 'mc_correct': 0.0}
  count = 0
  for images, labels in test:
    labels = tf.cast(labels, tf.int32)
    loss, correct = _metrics(serve(images=images)['probabilities'], labels)
    sums['loss'] += loss
    sums['correct'] += correct
    if keras_model is not None:
      x = (tf.cast(images, tf.float32) / 255.0 - mean) / std
      loss, correct = _metrics(
          models.mc_dropout_probabilities(keras_model, x, mc_dropout_samples),
          labels)
      sums['mc_loss'] += loss
      sums['mc_correct'] += correct
    count += int(labels.shape[0])
  out = {f'{split}_loss': sums['loss'] / count,
         f'{split}_accuracy': sums['correct'] / count, 'examples': count}
  if keras_model is not None:
    out[f'mc_{split}_loss'] = sums['mc_loss'] / count
    out[f'mc_{split}_accuracy'] = sums['mc_correct'] / count
    out['mc_dropout_samples'] = mc_dropout_samples
  return out
