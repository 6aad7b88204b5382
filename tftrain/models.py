"""Model builders: the seed's MLP and the deep Dense stack, one shared builder.

Layers are named so TensorBoard groups sort by depth: `dense_000`, `bn_000`,
`act_000`, ... and the output layer `logits` (float32 even under mixed
precision, so the loss is computed from float32 logits).
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple

import tensorflow as tf

DEFAULT_INITIALIZER = {
    'sigmoid': 'glorot_uniform', 'tanh': 'glorot_uniform',
    'relu': 'he_normal', 'leaky_relu': 'he_normal', 'elu': 'he_normal',
    'gelu': 'he_normal', 'swish': 'he_normal', 'selu': 'lecun_normal',
}


def default_initializer(activation: str) -> str:
  """Glorot for sigmoid/tanh, He for the ReLU/ELU family, LeCun normal for SELU."""
  if activation not in DEFAULT_INITIALIZER:
    raise ValueError(f'unknown activation {activation!r}; choose one of '
                     f'{", ".join(DEFAULT_INITIALIZER)}')
  return DEFAULT_INITIALIZER[activation]


def build_dense_stack(input_shape: Tuple[int, ...], hidden: Sequence[int],
                      num_classes: int = 10, activation: str = 'relu',
                      kernel_initializer: Optional[str] = None,
                      batch_norm: str = 'none', seed: Optional[int] = None,
                      name: str = 'mlp', dropout: float = 0.0,
                      dropout_kind: str = 'auto',
                      dropout_placement: str = 'output') -> tf.keras.Model:
  """Flatten -> [Dense -> (BN) -> activation -> (BN)] x len(hidden) -> logits.

  Args:
    input_shape: shape of one example, e.g. (28, 28, 1).
    hidden: width of each hidden layer.
    num_classes: size of the output layer (logits, no softmax).
    activation: activation of every hidden layer.
    kernel_initializer: Keras initializer name; None picks the activation's
      default (see `default_initializer`).
    batch_norm: 'none'; 'before' the activation (Dense without bias -> BN ->
      activation, as in the seed); or 'after' the activation.
    seed: seed of the initializers, for reproducible runs.
    name: model name.
    dropout: dropout rate (0: no dropout layers).
    dropout_kind: 'standard' (Dropout), 'alpha' (AlphaDropout, which keeps
      SELU's self-normalization) or 'auto' (alpha for SELU, else standard).
    dropout_placement: 'output' (one dropout layer before the output layer,
      as the seed's chapter does) or 'every' (after every hidden layer).

  Returns:
    An uncompiled Keras model returning float32 logits.
  """
  if batch_norm not in ('none', 'before', 'after'):
    raise ValueError(f'unknown batch_norm placement {batch_norm!r}; choose '
                     'none, before or after')
  init_name = kernel_initializer or default_initializer(activation)
  layers = [tf.keras.Input(shape=input_shape, name='image'),
            tf.keras.layers.Flatten(name='flatten')]
  for i, units in enumerate(hidden):
    init = tf.keras.initializers.get(
        {'class_name': init_name,
         'config': {'seed': None if seed is None else seed + i}})
    layers.append(tf.keras.layers.Dense(
        units, kernel_initializer=init, use_bias=batch_norm != 'before',
        name=f'dense_{i:03d}'))
    if batch_norm == 'before':
      layers.append(tf.keras.layers.BatchNormalization(name=f'bn_{i:03d}'))
    layers.append(tf.keras.layers.Activation(activation, name=f'act_{i:03d}'))
    if batch_norm == 'after':
      layers.append(tf.keras.layers.BatchNormalization(name=f'bn_{i:03d}'))
    if dropout and (dropout_placement == 'every' or i == len(hidden) - 1):
      layers.append(dropout_layer(dropout, dropout_kind, activation,
                                  f'dropout_{i:03d}', seed))
  out_init = tf.keras.initializers.get(
      {'class_name': 'glorot_uniform',
       'config': {'seed': None if seed is None else seed + len(hidden)}})
  layers.append(tf.keras.layers.Dense(num_classes, kernel_initializer=out_init,
                                      dtype='float32', name='logits'))
  return tf.keras.Sequential(layers, name=name)


def dropout_layer(rate: float, kind: str, activation: str, name: str,
                  seed: Optional[int] = None) -> tf.keras.layers.Layer:
  """Dropout, or AlphaDropout ('alpha', or 'auto' with SELU)."""
  alpha = kind == 'alpha' or (kind == 'auto' and activation == 'selu')
  cls = tf.keras.layers.AlphaDropout if alpha else tf.keras.layers.Dropout
  return cls(rate, seed=seed, name=name)


DROPOUT_LAYERS = (tf.keras.layers.Dropout, tf.keras.layers.AlphaDropout)


def has_dropout(model: tf.keras.Model) -> bool:
  return any(isinstance(l, DROPOUT_LAYERS) for l in model.layers)


def mc_dropout_probabilities(model: tf.keras.Model, x, samples: int):
  """MC dropout: the mean softmax of `samples` passes with only the dropout
  layers in training mode (batch norm keeps its moving statistics); the
  model must be a layer stack (Sequential)."""
  probs = 0.0
  for _ in range(samples):
    h = x
    for layer in model.layers:
      h = layer(h, training=isinstance(layer, DROPOUT_LAYERS))
    probs += tf.nn.softmax(tf.cast(h, tf.float32))
  return probs / samples


def mlp(input_shape=(28, 28, 1), hidden=(300, 100), num_classes=10,
        activation='relu', kernel_initializer=None, batch_norm='none',
        seed=None) -> tf.keras.Model:
  """The seed's MNIST MLP (300-100 ReLU by default)."""
  return build_dense_stack(input_shape, hidden, num_classes, activation,
                           kernel_initializer, batch_norm, seed, name='mlp')


def deep_mlp(input_shape=(28, 28, 1), depth=100, width=100, num_classes=10,
             activation='selu', kernel_initializer=None, batch_norm='none',
             seed=None) -> tf.keras.Model:
  """`depth` hidden Dense(`width`) layers: the vanishing-gradient testbed."""
  return build_dense_stack(input_shape, [width] * depth, num_classes,
                           activation, kernel_initializer, batch_norm, seed,
                           name='deep_mlp')


def cnn(input_shape=(32, 32, 3), num_classes=10, filters=(16, 32, 64),
        dropout: float = 0.0, seed=None) -> tf.keras.Model:
  """A small ConvNet with batch norm, sized for a 2-core CPU.

  Per stage: [Conv 3x3 (no bias) -> BN -> ReLU] x 2 -> MaxPool 2x2; then
  global average pooling, (dropout) and the logits. Layers are named
  `conv_SS_N`, `bn_SS_N`, `act_SS_N`, `pool_SS`, so TensorBoard sorts them by
  depth and the activation probe finds the ReLUs.
  """
  def init(i):
    return tf.keras.initializers.HeNormal(seed=None if seed is None
                                          else seed + i)
  layers = [tf.keras.Input(shape=input_shape, name='image')]
  k = 0
  for stage, width in enumerate(filters):
    for n in range(2):
      layers += [
          tf.keras.layers.Conv2D(width, 3, padding='same', use_bias=False,
                                 kernel_initializer=init(k),
                                 name=f'conv_{stage}{n}'),
          tf.keras.layers.BatchNormalization(name=f'bn_{stage}{n}'),
          tf.keras.layers.Activation('relu', name=f'act_{stage}{n}')]
      k += 1
    layers.append(tf.keras.layers.MaxPooling2D(name=f'pool_{stage}'))
  layers.append(tf.keras.layers.GlobalAveragePooling2D(name='gap'))
  if dropout:
    layers.append(tf.keras.layers.Dropout(dropout, seed=seed, name='dropout'))
  layers.append(tf.keras.layers.Dense(
      num_classes, kernel_initializer=tf.keras.initializers.GlorotUniform(
          seed=None if seed is None else seed + k), dtype='float32',
      name='logits'))
  return tf.keras.Sequential(layers, name='cnn')


def build_model(config, image_shape, num_classes) -> tf.keras.Model:
  """The model a `Config` asks for."""
  if config.model == 'cnn':
    return cnn(image_shape, num_classes, config.filters, config.dropout,
               config.seed)
  hidden = (config.hidden if config.model == 'mlp'
            else [config.width] * config.depth)
  return build_dense_stack(
      image_shape, hidden, num_classes, config.activation,
      config.kernel_initializer, config.batch_norm, config.seed,
      name=config.model, dropout=config.dropout,
      dropout_kind=config.dropout_kind,
      dropout_placement=config.dropout_placement)


class WeightedLayer(NamedTuple):
  """A layer with trainable weights: its path name and variable indices.

  `indices` index `model.trainable_variables`; `kernel` is the index of its
  kernel (or embeddings / depthwise kernel), or None (e.g. batch norm).
  """
  name: str
  indices: Tuple[int, ...]
  kernel: Optional[int]


_KERNEL_NAMES = ('kernel', 'depthwise_kernel', 'embeddings')


def has_convolutions(model: tf.keras.Model) -> bool:
  """Whether any layer of `model` (nested ones too) is a convolution: a class
  in its MRO named like Keras' conv bases (Conv, ConvTranspose, Depthwise,
  Separable, ConvLSTM) or a user's own `...Conv...` layer."""
  for layer in model._flatten_layers(include_self=False, recursive=True):  # pylint: disable=protected-access
    if any('Conv' in cls.__name__ for cls in type(layer).__mro__):
      return True
  return False


def weighted_layers(model: tf.keras.Model) -> List[WeightedLayer]:
  """Every layer with trainable weights, in the model's variable (depth) order.

  Variables are grouped by the path of the layer that owns them (Keras 3
  `variable.path`, e.g. `mlp/dense_003/kernel`), with the model's own name
  dropped: nested layers keep their sub-model path (`block1/conv`), so
  TensorBoard groups them in depth order. Frozen layers and layers without
  weights do not appear.
  """
  groups = {}
  prefix = model.name + '/'
  for i, v in enumerate(model.trainable_variables):
    path = getattr(v, 'path', None) or v.name.split(':')[0]
    owner, _, leaf = path.rpartition('/')
    if owner.startswith(prefix):
      owner = owner[len(prefix):]
    owner = owner or model.name
    indices, kernel = groups.get(owner, ((), None))
    if kernel is None and leaf in _KERNEL_NAMES:
      kernel = i
    groups[owner] = (indices + (i,), kernel)
  return [WeightedLayer(name, indices, kernel)
          for name, (indices, kernel) in groups.items()]

