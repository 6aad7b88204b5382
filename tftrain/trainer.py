"""Trainer: owns model, optimizer and the compiled train/eval steps.

The step measures; the host writes. One compiled call trains n steps,
`train_steps(feed, n)`: an in-graph loop of plain steps that only train and
return loss sums and per-step losses, stopping at the first non-finite loss.
No summary writer, no logging interval, no `tf.cond` per step. A non-finite
gradient in any variable makes that variable non-finite, so the next step's
loss is non-finite and the loop stops there (one step later; a global
gradient norm on every step measured ~10% slower on the MLP at batch 32).
With `observe_last`, the call's last step is an observed step (one `tf.cond`
per call): one training step that also measures, for each layer with
trainable weights, the gradient norm (all its trainable variables together,
unscaled under mixed precision, checked finite too), the weight norm and the
update-to-weight ratio ||dW|| / ||W||, and (when asked) returns the
gradients for histograms; the host reads the weights after the call.
It takes its batches from a `data.Feed`: chunks of batches already on the
device, indexed inside the loop (no input iterator call per step; with
`jit_compile` and one replica XLA compiles the whole loop). The host loop
(`chunks.run_steps`) decides which steps are observed and writes the
summaries from what it returns. It is strategy-agnostic
(`strategy.run`, loss scaled by the global batch) and XLA-safe.
"""

import functools
from typing import Dict, List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from tensorflow.python.framework import config as config_lib  # pylint: disable=g-direct-tensorflow-import

from tftrain import errors
from tftrain import idle as idle_lib
from tftrain import models


def batch_sums(per_example_loss, scores, labels) -> tf.Tensor:
  """[loss sum, correct, count] of a batch: every loss and accuracy here is
  made of these sums. `scores`: logits or probabilities (argmax: the class)."""
  predictions = tf.argmax(scores, axis=-1, output_type=tf.int32)
  return tf.stack([
      tf.reduce_sum(per_example_loss),
      tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float32)),
      tf.cast(tf.shape(labels)[0], tf.float32)])


def probability_sums(probs, labels) -> tf.Tensor:
  """`batch_sums` of predicted probabilities (MC dropout, the export): the
  loss is their cross-entropy."""
  picked = tf.gather(probs, labels, batch_dims=1)
  return batch_sums(-tf.math.log(tf.maximum(picked, 1e-12)), probs, labels)


def _norm(tensors) -> tf.Tensor:
  return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(tf.cast(t, tf.float32)))
                           for t in tensors]))


def _flat(tensors) -> tf.Tensor:
  """The tensors (variables: their current values) as one float32 vector."""
  if not tensors:
    return tf.zeros([0])
  return tf.concat([tf.reshape(tf.cast(t, tf.float32), [-1])
                    for t in tensors], 0)


def _fused_measurements(grads, before, after, groups):
  """`Trainer._measurements` from flat vectors (`_flat` of each layer's
  variables in order; `groups`: each layer's variables, for their sizes):
  squares summed per layer by one segment sum, instead of a reduction, an
  add and a square root per variable and layer (100 layers: hundreds of
  small ops)."""
  if not groups:    # a frozen model
    empty = tf.zeros([0])
    return {'grad_norms': empty, 'global_grad_norm': tf.constant(0.0),
            'weight_norms': empty, 'update_ratios': empty}
  sizes = np.cumsum([sum(int(np.prod(v.shape)) for v in g) for g in groups])
  # Each element's layer (static shape; tf.repeat with a list of repeats
  # gives a padded result under XLA).
  ids = tf.searchsorted(tf.constant(sizes[:-1], tf.int64),
                        tf.range(int(sizes[-1]), dtype=tf.int64),
                        side='right', out_type=tf.int32)

  def norms(flat):
    return tf.sqrt(tf.math.unsorted_segment_sum(tf.square(flat), ids,
                                                len(groups)))
  grad_norms, weight_norms = norms(grads), norms(before)
  return {'grad_norms': grad_norms,
          'global_grad_norm': tf.norm(grad_norms),
          'weight_norms': weight_norms,
          'update_ratios': norms(after - before) / tf.maximum(weight_norms,
                                                              1e-30)}


# `jit_compile=None` (auto) turns XLA on for runs at least this long (BUILD.md,
# eighth session): its compile (~5-8 s more for a 50-step 100-layer run) is
# paid back after ~1,500 steps of that model (10.8 -> 6.3 ms a step at batch
# 32), but the MLP saves less per step and compiles twice with the LR finder:
# its 4,295-step time-to-accuracy recipe reached 98% later with XLA (median
# 10.4 s against 9.1 s), the 8,590-step 100-layer SELU run finished in 129 s
# against 5 min without.
AUTO_JIT_MIN_STEPS = 5000


def _convolutions_on_cpu(model) -> bool:
  """XLA:CPU's convolutions: slower than oneDNN's, and naive loops inside a
  whole-loop cluster (BUILD.md, eighth session)."""
  return (not tf.config.list_logical_devices('GPU')
          and models.has_convolutions(model))


def auto_jit_compile(model, strategy, planned_steps: Optional[int]
                     ) -> Tuple[bool, str]:
  """(XLA on?, why) for `jit_compile=None`: on only where it was measured
  faster than without (benchmarks.throughput, BUILD.md): one replica on the
  CPU, float32, no convolutions (XLA:CPU's convolutions ran at 0.68-0.72x of
  oneDNN's on the CNN, `fit`'s too), at least AUTO_JIT_MIN_STEPS steps."""
  if tf.config.list_logical_devices('GPU'):
    return False, 'not measured on a GPU yet'
  if strategy.num_replicas_in_sync != 1:
    return False, 'not measured with several replicas'
  if tf.keras.mixed_precision.global_policy().name != 'float32':
    return False, 'not measured with mixed precision'
  if config_lib.is_op_determinism_enabled():
    return False, 'not measured with op determinism'
  if _convolutions_on_cpu(model):
    return False, "XLA:CPU's convolutions are slower than oneDNN's"
  if planned_steps is None or planned_steps < AUTO_JIT_MIN_STEPS:
    return False, (f'a run of {planned_steps} steps does not pay back the '
                   f'compile (< {AUTO_JIT_MIN_STEPS})')
  return True, (f'one CPU replica, float32, no convolutions, '
                f'{planned_steps} steps')


def _is_xla_compile_error(error: Exception) -> bool:
  text = str(error)
  return 'XLA' in text or 'jit' in text.lower() or 'compil' in text.lower()


class _LazyLayers:
  """Per-layer flat arrays built from per-variable arrays on first access."""

  def __init__(self, values, indices):
    self._values, self._indices = values, indices

  def __len__(self):
    return len(self._indices)

  def __getitem__(self, i):
    return np.concatenate([self._values[j].ravel() for j in self._indices[i]])

  def __iter__(self):
    return (self[i] for i in range(len(self)))


class Trainer:
  """Compiled training and evaluation for one model and optimizer.

  Args:
    model: Keras model returning logits; built under `strategy.scope()`.
    optimizer: Keras optimizer (LR may be a schedule); built under the scope.
    strategy: a tf.distribute strategy (the default strategy is fine).
    global_batch_size: examples per step over all replicas.
    jit_compile: XLA-compile the steps (plain and observed); None: auto
      (`auto_jit_compile`), and a model XLA cannot compile then trains
      without it (one warning).
    planned_steps: the run's length in steps, for auto.
  """

  def __init__(self, model, optimizer, strategy, global_batch_size: int,
               jit_compile: Optional[bool] = False,
               planned_steps: Optional[int] = None):
    self.model = model
    self.optimizer = optimizer
    self.strategy = strategy
    self.global_batch_size = global_batch_size
    self.jit_auto = jit_compile is None
    if self.jit_auto:
      jit_compile, self.jit_reason = auto_jit_compile(model, strategy,
                                                      planned_steps)
    else:
      self.jit_reason = 'asked for' if jit_compile else 'off'
    self.jit_compile = bool(jit_compile)
    self.layers = models.weighted_layers(model)
    self.layer_names = [l.name for l in self.layers]
    with strategy.scope():
      optimizer.build(model.trainable_variables)
    # Per-layer norms as one fused computation over flat vectors
    # (`_fused_measurements`) instead of a reduction per variable and layer.
    # Off: measured no cheaper (benchmarks.grad_logging, BUILD.md round 4).
    self.fused_norms = False
    # With one replica, --jit_compile puts the whole in-graph loop in one XLA
    # cluster (deep MLP: 1.58x over the loop without XLA), except for
    # convolutions on the CPU: XLA:CPU emits the backprop convolutions inside
    # a while loop as naive elemental loops (not Eigen), ~2 s per CNN step at
    # batch 64 against ~0.06 s with the step compiled alone (BUILD.md).
    self.whole_loop_xla = bool(
        jit_compile and strategy.num_replicas_in_sync == 1
        and not _convolutions_on_cpu(model))
    # Per (chunk length (data.Feed), observing variant).
    self._train_loops = {}
    self._eval_fns = {}
    # Python work for the run's waits: its data fill, a first call's compile.
    self.idle = idle_lib.IdleWork()

  @property
  def loss_scaled(self) -> bool:
    return isinstance(self.optimizer,
                      tf.keras.mixed_precision.LossScaleOptimizer)

  # ---------------------------------------------------------------- steps --

  def _forward_backward(self, batch):
    """Loss, local gradients and batch statistics on one replica."""
    images, labels = batch
    variables = self.model.trainable_variables
    with tf.GradientTape() as tape:
      logits = self.model(images, training=True)
      per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels, tf.cast(logits, tf.float32))
      loss = tf.nn.compute_average_loss(
          per_example, global_batch_size=self.global_batch_size)
      if self.model.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
      scaled = self.optimizer.scale_loss(loss) if self.loss_scaled else loss
    grads = tape.gradient(scaled, variables)
    return loss, grads, batch_sums(per_example, logits, labels)

  def _apply(self, grads, variables):
    if variables:
      self.optimizer.apply_gradients(zip(grads, variables))
    else:     # a frozen model: nothing to update, but the step still counts
      self.optimizer.iterations.assign_add(1)

  def _plain_replica_step(self, batch):
    loss, grads, stats = self._forward_backward(batch)
    self._apply(grads, self.model.trainable_variables)
    return loss, stats

  def _observed_replica_step(self, batch, histograms: bool):
    loss, grads, stats = self._forward_backward(batch)
    variables = self.model.trainable_variables
    replicas = self.strategy.num_replicas_in_sync
    if replicas > 1:
      # Measure the gradients actually applied: all-reduce here, and hand
      # Keras (which all-reduces again by summing) each replica's 1/N share.
      grads = tf.distribute.get_replica_context().all_reduce('sum', grads)
      applied = [g / replicas for g in grads]
    else:
      applied = grads
    true_grads = [tf.cast(g, tf.float32) for g in grads]
    if self.loss_scaled:
      inv = 1.0 / tf.cast(self.optimizer.dynamic_scale, tf.float32)
      true_grads = [g * inv for g in true_grads]
    learning_rate = tf.cast(self.optimizer.learning_rate, tf.float32)
    groups = [l.indices for l in self.layers]
    if self.fused_norms:
      before = _flat([variables[i] for g in groups for i in g])
      self._apply(applied, variables)
      after = _flat([variables[i] for g in groups for i in g])
      measured = _fused_measurements(
          _flat([true_grads[i] for g in groups for i in g]), before, after,
          [[variables[i] for i in g] for g in groups])
    else:
      before = [[tf.identity(variables[i]) for i in g] for g in groups]
      self._apply(applied, variables)
      after = [[tf.identity(variables[i]) for i in g] for g in groups]
      measured = self._measurements(
          [[true_grads[i] for i in g] for g in groups], before, after)
    out = {'loss': loss, 'stats': stats, 'learning_rate': learning_rate}
    out.update(measured)
    if histograms:    # as they are: the host flattens them if it writes
      out['grads'] = true_grads
    return out

  def _no_observation(self, histograms: bool):
    """Zeros shaped as `_observed` returns: the loop's result on a call
    whose last step is not observed."""
    layers = tf.zeros([len(self.layers)])
    out = {'loss': tf.constant(0.0), 'sums': tf.zeros([3]),
           'learning_rate': tf.constant(0.0),
           'global_grad_norm': tf.constant(0.0), 'grad_norms': layers,
           'weight_norms': layers, 'update_ratios': layers}
    if histograms:
      out['grads'] = [tf.zeros(v.shape) for v in
                      self.model.trainable_variables]
    return out

  @staticmethod
  def _measurements(grads, before, after):
    """Per-layer gradient, weight and update norms (observed steps only)."""
    if not grads:    # a frozen model
      empty = tf.zeros([0])
      return {'grad_norms': empty, 'global_grad_norm': tf.constant(0.0),
              'weight_norms': empty, 'update_ratios': empty}
    grad_norms = tf.stack([_norm(g) for g in grads])
    weight_norms = tf.stack([_norm(w) for w in before])
    update_norms = tf.stack([_norm([a - b for a, b in zip(new, old)])
                             for new, old in zip(after, before)])
    return {'grad_norms': grad_norms,
            'global_grad_norm': tf.norm(grad_norms),
            'weight_norms': weight_norms,
            'update_ratios': update_norms / tf.maximum(weight_norms, 1e-30)}

  def _batch_of(self, chunk, j):
    """Batch `j` of a replica's part of a `data.Feed` chunk. A gather, not
    `t[j]`: XLA takes a strided slice's begin as a compile-time constant, so
    the whole-loop XLA cluster recompiled for every new start index."""
    axis = 0 if self.strategy.num_replicas_in_sync == 1 else 1
    return tf.nest.map_structure(lambda t: tf.gather(t, j, axis=axis), chunk)

  def _make_train_loop(self, chunk_steps: int,
                       observing: Optional[bool] = None):
    """The compiled call: `num_steps` plain steps of a chunk in a while
    loop; an `observing` loop (False: norms only, True: also the gradients
    for histograms) makes the last of them an observed step when the call
    asks (`observe_last`), in the same call: no second call's fixed cost
    (~7 ms on the 100-layer model), and under XLA one cluster."""
    # `whole_loop_xla`: XLA compiles the whole loop (the batches are a
    # tensor, not an iterator); otherwise, with --jit_compile, the step (a
    # while loop around strategy.run with several replicas cannot be one XLA
    # cluster).
    whole = self.whole_loop_xla
    step_fn = self._plain_replica_step
    observed_fn = functools.partial(self._observed_replica_step,
                                    histograms=bool(observing))
    if self.jit_compile and not whole:
      step_fn = tf.function(step_fn, jit_compile=True)
      observed_fn = tf.function(observed_fn, jit_compile=True)
    strategy = self.strategy

    def replica_step(chunk, j):
      return step_fn(self._batch_of(chunk, j))

    def replica_observed(chunk, j):
      return observed_fn(self._batch_of(chunk, j))

    def reduce_sum(x):
      return strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None)

    def observe(chunk, j):
      out = strategy.run(replica_observed, args=(chunk, j))
      first = strategy.experimental_local_results
      result = {k: first(v)[0] for k, v in out.items()
                if k not in ('loss', 'stats')}
      result['loss'] = reduce_sum(out['loss'])
      result['sums'] = reduce_sum(out['stats'])
      return result

    def train_loop(chunk, start, num_steps, observe_last):
      plain_steps = num_steps - tf.cast(observe_last, tf.int32)

      # A plain while loop whose condition holds the non-finite stop: no
      # `break` (autograph would guard the body with a cond on every step).
      def body(i, sums, losses, finite):
        loss, stats = strategy.run(replica_step, args=(chunk, start + i))
        loss = reduce_sum(loss)
        return (i + 1, sums + reduce_sum(stats), losses.write(i, loss),
                tf.math.is_finite(loss))

      def cond(i, sums, losses, finite):
        del sums, losses
        return tf.logical_and(i < plain_steps, finite)

      steps_run, sums, losses, finite = tf.while_loop(
          cond, body, (tf.constant(0), tf.zeros([3]),
                       tf.TensorArray(tf.float32, size=chunk_steps),
                       tf.constant(True)))
      losses = losses.stack()      # static [chunk_steps]: the host slices
      out = {'sums': sums, 'finite': finite,
             'bad_loss': losses[tf.maximum(steps_run - 1, 0)],
             'steps_run': steps_run, 'losses': losses}
      if observing is not None:    # one cond per call, none per step
        observed = tf.logical_and(observe_last, finite)
        out['observed'] = observed
        out['observation'] = tf.cond(
            observed, lambda: observe(chunk, start + steps_run),
            lambda: self._no_observation(observing))
      return out
    return tf.function(train_loop, jit_compile=whole)

  def _call(self, fn, *args):
    """`fn(*args)`; a first call of `fn` for these arguments is traced
    first, then starts the `idle` work (`idle.IdleWork`) for its compile in
    C++ outside the GIL; work that reads the variables is done before `fn`
    trains."""
    if self.idle:
      traces = fn.experimental_get_tracing_count()
      fn.get_concrete_function(*args)
      if fn.experimental_get_tracing_count() != traces:
        self.idle.start()
      self.idle.settle()
    return fn(*args)

  def _call_compiled(self, make_and_call):
    """`make_and_call()` (builds the compiled function if needed, calls
    it); with auto XLA, a function XLA cannot compile is rebuilt and run
    without XLA (nothing ran: compiling fails before any step)."""
    try:
      out = make_and_call()
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
            tf.errors.InternalError) as e:
      if not (self.jit_auto and self.jit_compile
              and _is_xla_compile_error(e)):
        raise
      logging.warning('XLA could not compile this model (%s); training '
                      'without XLA (--jit_compile=false skips the try).',
                      str(e).strip().splitlines()[0][:300])
      self.jit_compile = self.whole_loop_xla = False
      self.jit_reason = 'auto: XLA could not compile the model'
      self._train_loops = {}
      out = make_and_call()
    return out

  def _raise_if_non_finite(self, loss):
    raise errors.NonFiniteError(int(self.optimizer.iterations.numpy()),
                                float(loss))

  @staticmethod
  def _segment(feed, num_steps: int):
    try:
      return feed.segment(num_steps)
    except StopIteration:
      raise tf.errors.OutOfRangeError(
          None, None, f'the training feed ran out after {feed.consumed} '
          'batches') from None

  def _loop(self, chunk_steps: int, observing: Optional[bool]):
    """The compiled loop for `observing` (None: plain, unless an observing
    loop for this chunk length exists: a run compiles one loop)."""
    if observing is None:
      for key in ((chunk_steps, None), (chunk_steps, False),
                  (chunk_steps, True)):
        if key in self._train_loops:
          return self._train_loops[key]
    key = (chunk_steps, observing)
    if key not in self._train_loops:
      self._train_loops[key] = self._make_train_loop(chunk_steps, observing)
    return self._train_loops[key]

  def train_steps(self, feed, num_steps: int, observe_last: bool = False,
                  histograms: bool = False,
                  observing: Optional[bool] = None) -> Dict[str, np.ndarray]:
    """Runs `num_steps` steps from `feed` (a `data.Feed`): one compiled call
    per chunk it touches (one, when the call ends on a `steps_per_loop`
    multiple). With `observe_last`, the last step is an observed step in
    the same call.

    Args:
      observing: the compiled loop: None plain (or an observing loop
        already compiled), False an observing loop for norms, True one that
        also returns the gradients for histograms. `observe_last` needs one;
        `histograms` (return the gradients and weights) needs True.

    Returns:
      dict with 'loss_sum', 'correct', 'count' (sums over the steps),
      'losses' (per step) and 'steps_run'; with `observe_last`,
      'observation': 'loss', 'learning_rate', 'global_grad_norm', per layer
      'grad_norms', 'weight_norms', 'update_ratios' (numpy, in
      `layer_names` order) and, with `histograms`, 'grads' and 'weights'
      (flat per layer).

    Raises:
      errors.NonFiniteError: at the first non-finite loss or gradient.
    """
    if observe_last and observing is None:
      raise ValueError('observe_last needs an observing loop')
    if histograms and not observing:
      raise ValueError('histograms need observing=True')
    sums, losses, done, observation = np.zeros([3]), [], 0, None
    while done < num_steps:
      chunk, start, n = self._segment(feed, num_steps - done)
      last = bool(observe_last and done + n == num_steps)

      def call(chunk=chunk, start=start, n=n, last=last):
        loop = self._loop(feed.chunk_steps, observing)
        return self._call(loop, chunk, tf.constant(start, tf.int32),
                          tf.constant(n, tf.int32), tf.constant(last))
      raw = self._call_compiled(call)
      raw_observation = raw.pop('observation', None)
      out = tf.nest.map_structure(lambda t: t.numpy(), raw)
      steps_run = int(out['steps_run'])
      losses.append(out['losses'][:steps_run])
      if not out['finite']:
        feed.advance(steps_run)
        self._raise_if_non_finite(out['bad_loss'])
      sums += out['sums']
      if last:
        steps_run += 1
        observation = self._observation(raw_observation, histograms)
        losses.append(np.asarray([observation['loss']], np.float32))
        sums += observation.pop('sums')
      feed.advance(steps_run)
      done += steps_run
      if observation is not None and not (
          np.isfinite(observation['loss']) and (
              self.loss_scaled
              or np.isfinite(observation['global_grad_norm']))):
        self._raise_if_non_finite(observation['loss'])
    loss_sum, correct, count = sums
    result = {'loss_sum': float(loss_sum), 'correct': float(correct),
              'count': float(count),
              'losses': (np.concatenate(losses) if losses
                         else np.zeros([0], np.float32)),
              'steps_run': done}
    if observation is not None:
      result['observation'] = observation
    return result

  def _observation(self, raw, histograms: bool) -> Dict:
    """The host's copy of an observed step's measurements."""
    if not histograms:
      raw = {k: v for k, v in raw.items() if k != 'grads'}
    out = tf.nest.map_structure(lambda t: t.numpy(), raw)
    if histograms:     # per trainable variable -> flat per layer
      indices = [l.indices for l in self.layers]
      # The observed step was the call's last: the weights are its result.
      weights = [v.numpy() for v in self.model.trainable_variables]
      out['grads'] = _LazyLayers(out['grads'], indices)
      out['weights'] = _LazyLayers(weights, indices)
    return out

  def observed_step(self, feed, histograms: bool = False,
                    compiled_with_histograms: bool = False
                    ) -> Dict[str, np.ndarray]:
    """One training step that also measures each weighted layer: the
    `train_steps` dict of one observed step.

    Each observing loop compiles once (a 100-layer model: ~9 s each). A run
    that will want histograms at some steps passes
    `compiled_with_histograms`: all its observed steps then run the loop
    that returns them, so only one compiles, and the arrays are left out
    where not asked for.
    """
    return self.train_steps(
        feed, 1, observe_last=True, histograms=bool(histograms),
        observing=bool(histograms or compiled_with_histograms))

  @property
  def trace_count(self) -> int:
    """How many times the compiled train/observed steps were traced so far
    (a call that traced spent most of its time compiling)."""
    return sum(f.experimental_get_tracing_count()
               for f in self._train_loops.values())

  @property
  def learning_rate_schedule(self):
    """The LR schedule (or value) the optimizer uses."""
    return self._inner_optimizer._learning_rate  # pylint: disable=protected-access

  def set_learning_rate(self, schedule) -> None:
    """The one place the LR changes: swaps the schedule, drops compiled steps."""
    self._inner_optimizer.learning_rate = schedule
    self._train_loops = {}

  def learning_rate_at(self, step: int) -> float:
    """The LR the optimizer uses at (0-based) optimizer iteration `step`."""
    schedule = self.learning_rate_schedule
    if callable(schedule):
      return float(schedule(step))
    return float(tf.convert_to_tensor(schedule))

  @property
  def _inner_optimizer(self):
    return getattr(self.optimizer, 'inner_optimizer', self.optimizer)

  # ----------------------------------------------------------------- eval --

  def _replica_eval(self, batch):
    images, labels = batch
    logits = self.model(images, training=False)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, tf.cast(logits, tf.float32))
    return batch_sums(per_example, logits, labels)

  def _replica_mc_eval(self, batch, samples: int):
    """MC dropout (`models.mc_dropout_probabilities`) loss sum and correct."""
    images, labels = batch
    probs = models.mc_dropout_probabilities(self.model, images, samples)
    return probability_sums(probs, labels)

  def evaluate(self, dist_dataset, mc_samples: int = 0) -> Dict[str, float]:
    """Loss and accuracy over a distributed eval dataset (BN uses moving stats).

    With `mc_samples` > 0: MC dropout, the average of that many stochastic
    forward passes (dropout on) per example.
    """
    key = int(mc_samples)
    if self._eval_fns.get(key) is None:
      strategy = self.strategy
      replica_fn = (self._replica_eval if not key else functools.partial(
          self._replica_mc_eval, samples=key))

      @tf.function
      def eval_fn(dataset):
        sums = tf.zeros([3])
        for batch in dataset:
          out = strategy.run(replica_fn, args=(batch,))
          sums += strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)
        return sums
      self._eval_fns[key] = eval_fn
    loss_sum, correct, count = self._eval_fns[key](dist_dataset).numpy()
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
