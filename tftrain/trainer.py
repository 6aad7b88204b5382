"""Trainer: owns model, optimizer and the compiled train/eval steps.

The step is strategy-agnostic (`strategy.run`, loss scaled by the global
batch) and returns its measurements; several steps run per `tf.function` call
in an in-graph loop that stops at the first non-finite loss or gradient.
"""

from typing import Dict, List

import numpy as np
import tensorflow as tf

from tftrain import models
from tftrain import summaries


class NonFiniteError(RuntimeError):
  """The loss or a gradient became NaN/Inf; `step` is the global step."""

  def __init__(self, step: int, loss: float):
    self.step = step
    self.loss = loss
    super().__init__(f'non-finite loss or gradient at step {step} '
                     f'(loss={loss}); lower --learning_rate or check the data.')


class Trainer:
  """Compiled training and evaluation for one model and optimizer.

  Args:
    model: Keras model returning logits; built under `strategy.scope()`.
    optimizer: Keras optimizer (LR may be a schedule); built under the scope.
    strategy: a tf.distribute strategy (the default strategy is fine).
    global_batch_size: examples per step over all replicas.
    train_writer: summary writer for per-step summaries, or None.
    log_every_steps: interval of per-step scalars (loss, lr, grad norms).
    histogram_every_steps: interval of gradient/weight histograms; 0 = off.
    grad_norms: compute per-layer gradient norms in the step.
    jit_compile: XLA-compile the step.
  """

  def __init__(self, model, optimizer, strategy, global_batch_size: int,
               train_writer=None, log_every_steps: int = 100,
               histogram_every_steps: int = 0, grad_norms: bool = True,
               jit_compile: bool = False):
    self.model = model
    self.optimizer = optimizer
    self.strategy = strategy
    self.global_batch_size = global_batch_size
    self.train_writer = train_writer
    self.log_every_steps = log_every_steps
    self.histogram_every_steps = histogram_every_steps
    self.grad_norms = grad_norms
    self.jit_compile = jit_compile
    self.layers = models.dense_layers(model)
    self.layer_names = [l.name for l in self.layers]
    variables = model.trainable_variables
    index = {id(v): i for i, v in enumerate(variables)}
    self._kernel_index = [index[id(l.kernel)] for l in self.layers]
    with strategy.scope():
      optimizer.build(variables)
    self._train_loop = None
    self._eval_fn = None

  # ---------------------------------------------------------------- steps --

  def _loss_fn(self, labels, logits):
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, tf.cast(logits, tf.float32))
    return per_example

  def _replica_step(self, batch):
    """One step on one replica; returns local sums and global grad norms."""
    images, labels = batch
    variables = self.model.trainable_variables
    with tf.GradientTape() as tape:
      logits = self.model(images, training=True)
      per_example = self._loss_fn(labels, logits)
      loss = tf.nn.compute_average_loss(
          per_example, global_batch_size=self.global_batch_size)
      if self.model.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
      scaled = loss
      if isinstance(self.optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
        scaled = self.optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, variables)
    replicas = self.strategy.num_replicas_in_sync
    if replicas > 1 and (self.grad_norms or self.histogram_every_steps):
      # Measure the gradients actually applied: all-reduce here, and hand
      # Keras (which all-reduces again by summing) each replica's 1/N share.
      grads = tf.distribute.get_replica_context().all_reduce('sum', grads)
      applied = [g / replicas for g in grads]
    else:
      applied = grads
    true_grads = grads
    if scaled is not loss:
      inv = 1.0 / tf.cast(self.optimizer.dynamic_scale, tf.float32)
      true_grads = [tf.cast(g, tf.float32) * inv for g in grads]
    norms = (tf.stack([tf.norm(tf.cast(true_grads[i], tf.float32))
                       for i in self._kernel_index])
             if self.grad_norms else tf.zeros([len(self._kernel_index)]))
    self.optimizer.apply_gradients(zip(applied, variables))
    if self.histogram_every_steps and self.train_writer is not None:
      step = self.optimizer.iterations
      kernel_grads = [true_grads[i] for i in self._kernel_index]

      def write_histograms():
        with self.train_writer.as_default(step=step), tf.name_scope('/'):
          summaries.write_histograms(self.layers, kernel_grads)
        return tf.constant(True)
      # One cond for all histograms: no per-summary branch on other steps.
      tf.cond(tf.equal(step % self.histogram_every_steps, 0), write_histograms,
              lambda: tf.constant(False))
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
    correct = tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float32))
    count = tf.cast(tf.shape(labels)[0], tf.float32)
    return {'loss': loss, 'loss_sum': tf.reduce_sum(per_example),
            'correct': correct, 'count': count, 'grad_norms': norms}

  def _make_train_loop(self):
    step_fn = self._replica_step
    if self.jit_compile:
      step_fn = tf.function(step_fn, jit_compile=True)
    strategy = self.strategy
    num_layers = len(self._kernel_index)

    def reduce_sum(x):
      return strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None)

    def first(x):
      return strategy.experimental_local_results(x)[0]

    @tf.function
    def train_loop(iterator, num_steps):
      sums = tf.zeros([3])
      norms = tf.zeros([num_layers])
      losses = tf.TensorArray(tf.float32, size=num_steps)
      finite = tf.constant(True)
      bad_loss = tf.constant(0.0)
      steps_run = tf.constant(0)
      for i in tf.range(num_steps):
        out = strategy.run(step_fn, args=(next(iterator),))
        loss = reduce_sum(out['loss'])
        norms = first(out['grad_norms'])
        sums += tf.stack([reduce_sum(out['loss_sum']),
                          reduce_sum(out['correct']), reduce_sum(out['count'])])
        losses = losses.write(i, loss)
        steps_run += 1
        if self.train_writer is not None:
          step = self.optimizer.iterations

          def write_scalars(loss=loss, norms=norms, step=step):
            # name_scope('/'): tags without the while loop's scope prefix.
            with self.train_writer.as_default(step=step), tf.name_scope('/'):
              summaries.write_step_scalars(
                  loss, self.optimizer.learning_rate,
                  self.layer_names if self.grad_norms else [], norms)
            return tf.constant(True)
          # One cond per step for all scalars (not one per summary op).
          tf.cond(tf.equal(step % self.log_every_steps, 0), write_scalars,
                  lambda: tf.constant(False))
        if not (tf.math.is_finite(loss)
                and tf.reduce_all(tf.math.is_finite(norms))):
          finite = tf.constant(False)
          bad_loss = loss
          break
      return {'sums': sums, 'grad_norms': norms, 'finite': finite,
              'bad_loss': bad_loss, 'steps_run': steps_run,
              'losses': losses.stack()[:steps_run]}

    return train_loop

  def train_steps(self, iterator, num_steps: int) -> Dict[str, np.ndarray]:
    """Runs `num_steps` steps from `iterator` (a distributed iterator).

    Returns:
      dict with 'loss_sum', 'correct', 'count' (sums over the steps),
      'grad_norms' (last step, per layer), 'losses' (per step).

    Raises:
      NonFiniteError: at the first non-finite loss or gradient norm.
    """
    if self._train_loop is None:
      self._train_loop = self._make_train_loop()
    out = self._train_loop(iterator, tf.constant(num_steps, tf.int32))
    out = tf.nest.map_structure(lambda t: t.numpy(), out)
    if not out['finite']:
      raise NonFiniteError(int(self.optimizer.iterations.numpy()),
                           float(out['bad_loss']))
    loss_sum, correct, count = out['sums']
    return {'loss_sum': float(loss_sum), 'correct': float(correct),
            'count': float(count), 'grad_norms': out['grad_norms'],
            'losses': out['losses'], 'steps_run': int(out['steps_run'])}

  def reset_train_function(self):
    """Forget the compiled loop (after swapping the LR schedule)."""
    self._train_loop = None

  # ----------------------------------------------------------------- eval --

  def _replica_eval(self, batch):
    images, labels = batch
    logits = self.model(images, training=False)
    per_example = self._loss_fn(labels, logits)
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.stack([
        tf.reduce_sum(per_example),
        tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float32)),
        tf.cast(tf.shape(labels)[0], tf.float32)])

  def evaluate(self, dist_dataset) -> Dict[str, float]:
    """Loss and accuracy over a distributed eval dataset (BN uses moving stats)."""
    if self._eval_fn is None:
      strategy = self.strategy

      @tf.function
      def eval_fn(dataset):
        sums = tf.zeros([3])
        for batch in dataset:
          out = strategy.run(self._replica_eval, args=(batch,))
          sums += strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)
        return sums
      self._eval_fn = eval_fn
    loss_sum, correct, count = self._eval_fn(dist_dataset).numpy()
    count = max(count, 1.0)
    return {'loss': float(loss_sum / count), 'accuracy': float(correct / count)}

  # ------------------------------------------------------------- weights --

  def snapshot(self) -> List[np.ndarray]:
    """Copies of model and optimizer variables (for the LR finder)."""
    return [v.numpy() for v in self._all_variables()]

  def restore(self, values: List[np.ndarray]) -> None:
    for v, value in zip(self._all_variables(), values):
      v.assign(value)

  def _all_variables(self):
    return list(self.model.variables) + list(self.optimizer.variables)

