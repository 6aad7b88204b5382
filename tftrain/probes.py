"""Probes: activation statistics and gradient norm vs depth on a fixed batch.

`DepthProbe` is a hook (`hook(exp, event, outputs)`) that runs one
forward/backward pass on a probe batch (no update) at intervals and writes
activation_{mean,std,saturated,dead}/<layer> and the grad_norm_vs_depth image;
`activation_probe` builds the run's automatic one; `read_activation_records`
reads what it recorded (activations.jsonl) for the health report.
"""

import os
import time
from typing import Dict, Optional, Sequence

import tensorflow as tf

from tftrain import summaries
from tftrain import workdir as workdir_lib

# Where each activation saturates: (lower bound or None, upper bound or None);
# an output within SATURATION_TOLERANCE of a bound counts as saturated.
SATURATION_BOUNDS = {
    'sigmoid': (0.0, 1.0), 'tanh': (-1.0, 1.0), 'elu': (-1.0, None),
    'selu': (-1.0507009873554805 * 1.6732632423543772, None),
}
SATURATION_TOLERANCE = 0.01
# Other activations: an output counts as saturated where the activation's
# derivative is below this fraction of its largest (sigmoid: |z| > ~4.4).
SATURATION_DERIVATIVE = 0.05
# Activations whose units can die (output exactly 0 on every probe example).
DYING = ('relu',)


def derivative_peak(layer) -> float:
  """The largest |f'(z)| of an elementwise activation layer over |z| <= 10."""
  z = tf.linspace(-10.0, 10.0, 4001)
  with tf.GradientTape() as tape:
    tape.watch(z)
    y = layer(z)
  return float(tf.reduce_max(tf.abs(tape.gradient(y, z))))


def activation_statistics(activation: str, outputs, derivatives=None,
                          peak: Optional[float] = None
                          ) -> Dict[str, tf.Tensor]:
  """Mean, std, unit spread and saturated/dead fraction of a layer's outputs.

  Args:
    activation: the layer's activation name (decides saturated vs dead).
    outputs: [batch, ..., units] activations on the probe batch (the last
      axis holds the units: Dense units or conv channels).
    derivatives: f'(z) at the layer's inputs, for activations with no known
      bounds: then 'saturated' is the fraction below SATURATION_DERIVATIVE x
      `peak` (the activation's largest derivative).

  Returns:
    {'mean', 'std', 'spread'} plus 'saturated' (fraction of outputs within
    `SATURATION_TOLERANCE` of a bound, for bounded activations) or 'dead'
    (fraction of units that are 0 on every probe example, for ReLU).
    'spread' is the std across units (per example, averaged) over the mean
    |output|: 0 when every unit computes the same thing (a symmetric
    initialization), NaN for an all-zero layer.
  """
  outputs = tf.cast(outputs, tf.float32)
  stats = {'mean': tf.reduce_mean(outputs), 'std': tf.math.reduce_std(outputs)}
  units = tf.reshape(outputs, [-1, tf.shape(outputs)[-1]])
  scale = tf.reduce_mean(tf.abs(units))
  stats['spread'] = tf.where(   # NaN for an all-zero layer (dead, not alike)
      scale > 0, tf.reduce_mean(tf.math.reduce_std(units, axis=-1))
      / tf.maximum(scale, 1e-30), float('nan'))
  if derivatives is not None and peak:
    flat = tf.abs(tf.cast(derivatives, tf.float32))
    stats['saturated'] = tf.reduce_mean(tf.cast(
        flat < SATURATION_DERIVATIVE * peak, tf.float32))
  elif activation in SATURATION_BOUNDS:
    low, high = SATURATION_BOUNDS[activation]
    near = tf.zeros_like(outputs, tf.bool)
    if low is not None:
      near |= outputs <= low + SATURATION_TOLERANCE
    if high is not None:
      near |= outputs >= high - SATURATION_TOLERANCE
    stats['saturated'] = tf.reduce_mean(tf.cast(near, tf.float32))
  elif activation in DYING:
    dead = tf.reduce_all(tf.equal(units, 0.0), axis=0)
    stats['dead'] = tf.reduce_mean(tf.cast(dead, tf.float32))
  return stats


_ACTIVATION_LAYERS = {'ReLU': 'relu', 'LeakyReLU': 'leaky_relu', 'ELU': 'elu',
                      'PReLU': 'prelu', 'Softmax': 'softmax'}


def activation_name(layer) -> Optional[str]:
  """The non-linear activation `layer` applies ('relu', ...), else None."""
  if type(layer).__name__ in _ACTIVATION_LAYERS:
    return _ACTIVATION_LAYERS[type(layer).__name__]
  fn = getattr(layer, 'activation', None)
  name = getattr(fn, '__name__', None) if callable(fn) else None
  return None if name in (None, 'linear') else name


def probed_layers(model) -> list:
  """The layers of `model` that apply an activation, in depth order."""
  return [l for l in model.layers if activation_name(l) is not None]


def plot_grad_norms_png(layer_names: Sequence[str], norms, title: str) -> bytes:
  """PNG bytes: gradient norm vs layer depth, log y (zeros drawn at the floor)."""
  from tftrain import report  # pylint: disable=g-import-not-at-top
  plt = report.pyplot()
  import numpy as np  # pylint: disable=g-import-not-at-top
  norms = np.asarray(norms, np.float64)
  positive = norms[norms > 0]
  floor = positive.min() / 10 if positive.size else 1e-30
  fig, ax = plt.subplots(figsize=(6, 3.5), dpi=80)
  depth = np.arange(len(norms))
  ax.semilogy(depth, np.maximum(norms, floor), marker='.', lw=1)
  zeros = norms <= 0
  if zeros.any():
    ax.semilogy(depth[zeros], np.full(zeros.sum(), floor), 'rx',
                label='exactly 0 (float32 underflow)')
    ax.legend(loc='best', fontsize=8)
  ax.set_xlabel(f'layer depth (0 = {layer_names[0]}, '
                f'{len(layer_names) - 1} = {layer_names[-1]})')
  ax.set_ylabel('layer gradient L2 norm')
  ax.set_title(title, fontsize=10)
  ax.grid(True, which='major', alpha=0.3)
  fig.tight_layout()
  return report.figure_png(fig)


class DepthProbe:
  """Hook: activation statistics and gradient norm vs depth on a probe batch.

  A plain callable for `loop.run` hooks (`hook(exp, event, outputs)`). At each
  `every_steps` boundary crossed by a 'train' event, and after each epoch, it
  runs one forward/backward pass on a fixed probe batch (no update) and writes
  to the train writer:
    activation_mean/act_NNN, activation_std/act_NNN,
    activation_saturated/act_NNN (sigmoid, tanh, elu, selu) or
    activation_dead/act_NNN (relu), and the image grad_norm_vs_depth.
  The per-step scalars `grad_norm/<layer>` come from the Trainer itself; the
  probe keeps the measurement off the training hot path (one extra pass per
  interval). `grad_norm_records` keeps (step, probe grad norms) for later
  comparison; `activations_path` (JSON lines) gets the activation statistics.

  Args:
    images: the probe batch (fixed, preprocessed like the training data).
    labels: its labels.
    every_steps: interval in global steps; 0 = only at `record()` calls and
      epoch ends.
    activation: the hidden layers' activation (for saturated/dead).
    write_images: also write the grad-norm-vs-depth image summary.
  """

  def __init__(self, images, labels, every_steps: int, activation: str,
               write_images: bool = True, activations_path: Optional[str] = None):
    self.images = tf.convert_to_tensor(images)
    self.labels = tf.convert_to_tensor(labels)
    self.every_steps = every_steps
    self.activation = activation
    self.write_images = write_images
    self.activations_path = activations_path   # JSON lines of activation statistics
    self.grad_norm_records = []  # [(step, np.ndarray of per-layer grad norms)]
    self.activations = []      # [(step, {layer: {stat: float}})]
    self._probe_fn = None
    self._last_step = None
    self._pending = None  # record_start's (exp, step, job, its measurement)
    self.seconds = 0.0   # time the probe held the run up (not its idle work)

  def _build(self, trainer):
    model = trainer.model
    variables = model.trainable_variables
    groups = [[variables[i] for i in l.indices] for l in trainer.layers]
    probed = probed_layers(model)
    activations = {l.name: activation_name(l) for l in probed}
    sequential = isinstance(model, tf.keras.Sequential)
    if not sequential and probed and getattr(model, 'inputs', None):
      taps = tf.keras.Model(model.inputs,
                            [l.output for l in probed] + list(model.outputs))
    else:
      taps = None     # Sequential: walk the layers; subclassed: no taps

    # Activation layers without known bounds: saturation from the derivative.
    peaks = {l.name: derivative_peak(l) for l in probed
             if sequential and isinstance(l, tf.keras.layers.Activation)
             and activations[l.name] not in (*SATURATION_BOUNDS, *DYING)}
    derivatives = {}

    def forward(images):
      if taps is not None:
        *tapped, logits = taps(images, training=False)
        return logits, dict(zip(activations, tapped))
      if not sequential:
        return model(images, training=False), {}
      x, outputs = images, {}
      for layer in model.layers:
        if layer.name in peaks:       # its derivative at its inputs too
          with tf.GradientTape() as inner:
            inner.watch(x)
            y = layer(x, training=False)
          derivatives[layer.name] = inner.gradient(y, x)
          x = y
        else:
          x = layer(x, training=False)
        if layer.name in activations:
          outputs[layer.name] = x
      return x, outputs

    # No autograph: plain Python loops over layers, nothing data-dependent.
    @tf.function(autograph=False)
    def probe(images, labels):
      with tf.GradientTape() as tape:
        logits, outputs = forward(images)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels, tf.cast(logits, tf.float32)))
      grads = tape.gradient(loss, groups)
      norms = tf.stack([tf.linalg.global_norm(
          [tf.cast(g, tf.float32) for g in layer]) for layer in grads]
                       ) if groups else tf.zeros([0])
      stats = {name: activation_statistics(
          act, outputs[name], derivatives.get(name), peaks.get(name))
               for name, act in activations.items() if name in outputs}
      return norms, stats
    return probe

  def record_start(self, exp) -> None:
    """`record(exp, step)` of the model as it is now (training's start),
    measured while the run first waits and written at the next hook call
    (or `flush_pending()`): the same record, with the probe's trace and first
    call (~5 s for 100 layers) off the way to the first step. The measurement
    is `Trainer.idle` work that reads the variables: it runs in a thread
    while the run waits for its data or its first step's compile, and is
    done before anything trains or restores a checkpoint."""
    trainer = exp.trainer
    if self._probe_fn is None:
      self._probe_fn = self._build(trainer)
    measured = []
    job = trainer.idle.add(lambda: measured.append(self._measure()),
                           reads_variables=True)
    self._pending = (exp, int(trainer.optimizer.iterations.numpy()), job,
                     measured)

  def flush_pending(self) -> None:
    """Writes the `record_start` record now, if one is pending."""
    if self._pending is None:
      return
    exp, step, job, measured = self._pending
    self._pending = None
    start = time.perf_counter()
    try:
      job.wait()
      self._write(exp, step, True, *measured[0])
    finally:
      self.seconds += time.perf_counter() - start

  def record(self, exp, step: int, image: bool = True) -> None:
    """Probes now and writes the summaries at `step` (the image if `image`)."""
    start = time.perf_counter()
    try:
      if self._probe_fn is None:
        self._probe_fn = self._build(exp.trainer)
      self._write(exp, step, image, *self._measure())
    finally:
      self.seconds += time.perf_counter() - start

  def _measure(self):
    """(per-layer gradient norms, {layer: {stat: value}}) on the probe batch."""
    norms, stats = self._probe_fn(self.images, self.labels)
    return norms.numpy(), {layer: {k: float(v) for k, v in s.items()}
                           for layer, s in stats.items()}

  def _write(self, exp, step: int, image: bool, norms, stats) -> None:
    self.grad_norm_records.append((step, norms))
    self.activations.append((step, stats))
    self._last_step = step
    if self.activations_path:
      workdir_lib.append_jsonl(self.activations_path,
                               {'step': int(step), 'stats': stats})
    writer = exp.writers.get(summaries.TRAIN) if exp.is_chief else None
    if writer is None:
      return
    proto = summaries.SummaryProto()
    for layer, s in stats.items():
      for key, value in s.items():
        proto.scalar(f'activation_{key}/{layer}', value)
    proto.write(writer, step)
    with writer.as_default(step=step):
      if self.write_images and image:
        png = plot_grad_norms_png(
            exp.trainer.layer_names, norms,
            f'{self.activation}: probe-batch gradient norm vs depth, '
            f'step {step}')
        image = tf.image.decode_png(png, channels=3)[tf.newaxis]
        tf.summary.image('grad_norm_vs_depth', image)
    writer.flush()

  def __call__(self, exp, event: str, outputs) -> None:
    self.flush_pending()
    if event == 'train':
      step = int(outputs['step'])
      last = self._last_step if self._last_step is not None else 0
      if self.every_steps and step // self.every_steps > last // self.every_steps:
        self.record(exp, step, image=False)   # the PNG only at epoch ends
    elif event == 'epoch':
      step = int(exp.trainer.optimizer.iterations.numpy())
      if step != self._last_step:
        self.record(exp, step)


PROBE_SIZE = 128


def activation_probe(exp, every_steps: int,
                     write_images: bool = False, size: int = PROBE_SIZE):
  """A DepthProbe on validation examples for any model.

  It records the statistics of every layer that applies an activation (an
  Activation layer, or a Dense/Conv layer with a non-linear activation,
  the output layer included) by its name.
  """
  acts = probed_layers(exp.trainer.model)
  # The layers' own activation (e.g. ReLU in the cnn), else the Config's.
  activation = (activation_name(acts[0]) if acts else None
                ) or exp.config.activation
  images, labels = probe_batch(exp, size)
  return DepthProbe(
      images, labels, every_steps, activation,
      write_images=write_images,
      activations_path=os.path.join(exp.workdir, workdir_lib.ACTIVATIONS))


def probe_batch(exp, size: int = PROBE_SIZE):
  """The first `size` validation examples (train without a validation split)."""
  split = 'validation' if 'validation' in exp.datasets else 'train'
  return next(iter(exp.uncached(split).batch(size).take(1)))


def read_activation_records(workdir: str):
  """[(step, {layer: {stat: value}})] from activations.jsonl (last per step)."""
  return [(r['step'], r['stats']) for r in summaries.read_records(
      os.path.join(workdir, workdir_lib.ACTIVATIONS))]
