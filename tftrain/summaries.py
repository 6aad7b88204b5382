"""What goes to tf.summary: step scalars, per-layer gradient norms, histograms.

Tags (nested names become TensorBoard groups):
  train/:       loss, learning_rate, grad_norm/<layer>, grad_norm_ratio/first_to_last,
                grad/<layer>, weight/<layer> (histograms), examples_per_second,
                epoch_loss, epoch_accuracy;
                with the `probes.DepthProbe` hook: activation_mean/act_NNN,
                activation_std/act_NNN, activation_saturated/act_NNN or
                activation_dead/act_NNN, grad_norm_vs_depth (image)
  validation/:  epoch_loss, epoch_accuracy

`write_layout` adds TensorBoard's Custom Scalars layout (once per run): the
epoch metrics, then one chart per per-layer quantity with every layer on it.
"""

import functools
import json
import math
import os
import queue
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.proto import tensor_pb2
from tensorboard.compat.proto import tensor_shape_pb2
from tensorboard.compat.proto import types_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
import tensorflow as tf

from tftrain import workdir as workdir_lib

TRAIN = 'train'
VALIDATION = 'validation'


def create_writers(workdir: str, is_chief: bool = True, temp_dir: str = None):
  """`train/` and `validation/` writers; non-chief workers write to temp_dir."""
  root = workdir if is_chief else temp_dir
  return {name: tf.summary.create_file_writer(os.path.join(root, name))
          for name in (TRAIN, VALIDATION)}


# float32's smallest subnormal: log10 histograms put exact zeros here.
LOG10_FLOOR = -45.0


def last_hidden_index(num_layers: int) -> int:
  """Index of the last hidden weighted layer (the one before the output)."""
  return num_layers - 2 if num_layers > 2 else num_layers - 1


HISTOGRAM_BUCKETS = 30   # TensorBoard's default


def histogram_buckets(values, buckets: int = HISTOGRAM_BUCKETS) -> np.ndarray:
  """[buckets, 3] (left, right, count), as `tf.summary.histogram` computes it."""
  data = np.asarray(values, np.float64).ravel()
  data = data[np.isfinite(data)]
  if data.size == 0:
    return np.zeros((buckets, 3))
  low, high = float(data.min()), float(data.max())
  if high == low:
    counts = np.zeros(buckets)
    counts[-1] = data.size
    return np.stack([np.full(buckets, low), np.full(buckets, low), counts], 1)
  width = (high - low) / buckets
  index = np.minimum(np.floor((data - low) / width).astype(np.int64),
                     buckets - 1)
  counts = np.bincount(index, minlength=buckets)
  edges = np.linspace(low, high, buckets + 1)
  return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], 1)


def histogram_buckets_many(arrays: Sequence[np.ndarray],
                           buckets: int = HISTOGRAM_BUCKETS) -> List[np.ndarray]:
  """`histogram_buckets` of each array, counted in one vectorized pass."""
  arrays = [np.asarray(a).ravel() for a in arrays]
  out = [None] * len(arrays)
  fast, lows, widths = [], [], []
  for i, a in enumerate(arrays):
    if a.size == 0:
      out[i] = histogram_buckets(a, buckets)
      continue
    low, high = float(a.min()), float(a.max())
    if not (math.isfinite(low) and math.isfinite(high)) or high == low:
      out[i] = histogram_buckets(a, buckets)    # rare: the per-array path
      continue
    fast.append(i)
    lows.append(low)
    widths.append((high - low) / buckets)
  if fast:
    sizes = [arrays[i].size for i in fast]
    data = np.concatenate([arrays[i] for i in fast]).astype(np.float64)
    low = np.repeat(np.asarray(lows), sizes)
    width = np.repeat(np.asarray(widths), sizes)
    index = np.minimum(np.floor((data - low) / width).astype(np.int64),
                       buckets - 1)
    index += np.repeat(np.arange(len(fast)) * buckets, sizes)
    counts = np.bincount(index, minlength=len(fast) * buckets).reshape(
        len(fast), buckets).astype(np.float64)
    for j, i in enumerate(fast):
      edges = np.linspace(lows[j], lows[j] + widths[j] * buckets, buckets + 1)
      edges[-1] = float(arrays[i].max())
      out[i] = np.stack([edges[:-1], edges[1:], counts[j]], 1)
  return out


class SummaryProto:
  """Many scalars and histograms of one step, written with a single op.

  TensorBoard's own value format (tensor + plugin metadata, as
  `tf.summary.scalar` / `histogram` write it), built on the host with numpy
  and written by one `write_raw_pb` call: no per-summary TF op.
  """

  _SCALAR = scalar_metadata.create_summary_metadata(display_name=None,
                                                    description=None)
  _HISTOGRAM = histogram_metadata.create_summary_metadata(display_name=None,
                                                          description=None)

  def __init__(self):
    self.proto = summary_pb2.Summary()

  def scalar(self, tag: str, value) -> None:
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT,
                                    float_val=[float(value)])
    self.proto.value.add(tag=tag, metadata=self._SCALAR, tensor=tensor)

  def histogram(self, tag: str, values=None, buckets=None) -> None:
    """A histogram of `values`, or of precomputed [k, 3] `buckets`."""
    if buckets is None:
      buckets = histogram_buckets(values)
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_DOUBLE,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[
            tensor_shape_pb2.TensorShapeProto.Dim(size=n)
            for n in buckets.shape]),
        tensor_content=buckets.astype('<f8').tobytes())
    self.proto.value.add(tag=tag, metadata=self._HISTOGRAM, tensor=tensor)

  def write(self, writer, step: int) -> None:
    """Writes everything added so far at `step` (nothing if empty)."""
    if writer is None or not self.proto.value:
      return
    with writer.as_default():
      tf.summary.experimental.write_raw_pb(self.proto.SerializeToString(),
                                           step=step)
    self.proto = summary_pb2.Summary()


class AsyncWrites:
  """Writes done in order by one background thread (CLU's `AsyncWriter`
  pattern): the step loop hands over the host-side work (histograms from
  the fetched arrays, protos, event and record writes) and goes on training
  while it is done; numpy and the writes run largely outside the GIL.

  `flush()` returns once everything handed over is written, and raises the
  first error a write met (also raised by the next `submit`).
  """

  def __init__(self):
    self._queue: Optional[queue.Queue] = None
    self._error: Optional[BaseException] = None

  def submit(self, work: Callable[[], None]) -> None:
    self._raise()
    if self._queue is None:
      self._queue = queue.Queue()
      threading.Thread(target=self._serve, args=(self._queue,), daemon=True,
                       name='tftrain-summaries').start()
    self._queue.put(work)

  def _serve(self, work_queue: queue.Queue) -> None:
    while True:
      work = work_queue.get()
      try:
        if self._error is None:
          work()
      except BaseException as e:  # pylint: disable=broad-except
        self._error = e
      finally:
        work_queue.task_done()

  def flush(self) -> None:
    if self._queue is not None:
      self._queue.join()
    self._raise()

  def _raise(self) -> None:
    if self._error is not None:
      error, self._error = self._error, None
      raise error


class StepLogger:
  """The host side of observability: which steps to observe, and the writes.

  The Trainer measures (`Trainer.observed_step`); this decides which global
  steps are observed and writes what was measured, so no summary op is ever
  inside a compiled step. Tags under the train writer:
    loss, learning_rate                         every `log_every_steps`
    grad_norm/<layer>, update_ratio/<layer>,
    weight_norm/<layer>, grad_norm/global,
    grad_norm_ratio/first_to_last              on observed steps
    grad/<layer>, weight/<layer>,
    grad_log10/<layer> (histograms)            every `histogram_every_steps`
  where <layer> is each layer with trainable weights (all its trainable
  variables together), named by its path in the model.

  Args:
    writer: a summary writer, or None (measure and record only).
    layer_names: the Trainer's `layer_names`.
    log_every_steps: interval of loss/lr scalars and observed steps.
    histogram_every_steps: interval of histograms (0: none).
    grad_norms: observe steps every `log_every_steps` (False: loss and lr
      only, observed steps only for histograms).
    records_path: JSON-lines file each observation is appended to (for the
      health report), or None.
    asynchronous: do the writes in a background thread (`AsyncWrites`);
      `flush()` before reading what was written (the run flushes at its
      health checks, checkpoints and end).
  """

  def __init__(self, writer, layer_names: Sequence[str], log_every_steps: int,
               histogram_every_steps: int = 0, grad_norms: bool = True,
               records_path: str = None, asynchronous: bool = False):
    self.writer = writer
    self._async = AsyncWrites() if asynchronous else None
    self.layer_names = list(layer_names)
    self.log_every_steps = log_every_steps
    self.histogram_every_steps = histogram_every_steps
    self.grad_norms = grad_norms
    self.records_path = records_path
    self.seconds = 0.0   # step-loop time spent writing (handing over if async)

  def wants_histograms(self, step: int) -> bool:
    return bool(self.histogram_every_steps
                and step % self.histogram_every_steps == 0)

  def steps_to_observation(self, step: int) -> Optional[int]:
    """k >= 1 such that step + k is the next observed step (None: never)."""
    intervals = [i for i, on in ((self.log_every_steps, self.grad_norms),
                                 (self.histogram_every_steps,
                                  self.histogram_every_steps > 0)) if on]
    if not intervals:
      return None
    return min(i - step % i for i in intervals)

  def write(self, first_step: int, out: Dict, learning_rate_fn=None) -> None:
    """Writes a chunk's measurements; `first_step` is its first global step."""
    start = time.perf_counter()
    losses = out.get('losses', ())
    obs = out.get('observation')
    # An observed step writes its own loss and learning rate.
    plain = losses[:-1] if obs is not None else losses
    scalars = []     # (step, loss, learning rate): the schedule is read here
    if self.writer is not None:
      for i, loss in enumerate(plain):
        step = first_step + i
        if step % self.log_every_steps == 0:
          scalars.append((step, loss, None if learning_rate_fn is None
                          else learning_rate_fn(step - 1)))
    work = functools.partial(self._write_now, scalars, obs,
                             first_step + len(losses) - 1)
    if self._async is not None:
      self._async.submit(work)
    else:
      work()
    self.seconds += time.perf_counter() - start

  def flush(self) -> None:
    """Returns once every write handed over is done (raises its error)."""
    if self._async is not None:
      self._async.flush()

  def _write_now(self, scalars, obs: Optional[Dict], obs_step: int) -> None:
    for step, loss, learning_rate in scalars:
      proto = SummaryProto()
      proto.scalar('loss', loss)
      if learning_rate is not None:
        proto.scalar('learning_rate', learning_rate)
      proto.write(self.writer, step)
    if obs is None:
      return
    if self.writer is not None:
      self._observation_proto(obs_step, obs).write(self.writer, obs_step)
    if self.records_path:
      self._append_record(obs_step, obs)

  def _observation_proto(self, step: int, obs: Dict) -> SummaryProto:
    names = self.layer_names
    proto = SummaryProto()
    proto.scalar('learning_rate', obs['learning_rate'])
    if step % self.log_every_steps == 0:
      proto.scalar('loss', obs['loss'])
    if self.grad_norms:
      for name, g, r, w in zip(names, obs['grad_norms'], obs['update_ratios'],
                               obs['weight_norms']):
        proto.scalar(f'grad_norm/{name}', g)
        proto.scalar(f'update_ratio/{name}', r)
        proto.scalar(f'weight_norm/{name}', w)
      proto.scalar('grad_norm/global', obs['global_grad_norm'])
      if len(names) > 1:
        norms = obs['grad_norms']
        proto.scalar('grad_norm_ratio/first_to_last',
                     norms[0] / max(norms[last_hidden_index(len(names))],
                                    1e-30))
    if 'grads' in obs and self.wants_histograms(step):
      grads, weights = list(obs['grads']), list(obs['weights'])
      logs = [np.log10(np.maximum(np.abs(g), np.float32(10.0 ** LOG10_FLOOR)))
              for g in grads]
      for kind, arrays in (('grad', grads), ('weight', weights),
                           ('grad_log10', logs)):
        for name, buckets in zip(names, histogram_buckets_many(arrays)):
          proto.histogram(f'{kind}/{name}', buckets=buckets)
    return proto

  def _append_record(self, step: int, obs: Dict) -> None:
    record = {'step': int(step), 'loss': float(obs['loss']),
              'learning_rate': float(obs['learning_rate']),
              'grad_norms': [float(x) for x in obs['grad_norms']],
              'update_ratios': [float(x) for x in obs['update_ratios']]}
    workdir_lib.append_jsonl(self.records_path, record)


def read_records(path: str) -> List[Dict]:
  """Observations appended by `StepLogger`, one per step (a rerun's last wins)."""
  if not path or not tf.io.gfile.exists(path):
    return []
  by_step = {}
  with tf.io.gfile.GFile(path, 'r') as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue      # a line cut short by a kill
      by_step[record['step']] = record
  return [by_step[s] for s in sorted(by_step)]


def write_scalars(writer, step: int, values: Dict[str, float],
                  flush: bool = True):
  """Host-side scalars (epoch metrics, throughput)."""
  with writer.as_default(step=step):
    for tag, value in values.items():
      tf.summary.scalar(tag, value)
  if flush:
    writer.flush()


def write_epoch_scalars(writers, record: Dict[str, float],
                        learning_rate: float) -> None:
  """An epoch record's train scalars (and validation ones, if it has them)."""
  write_scalars(writers[TRAIN], record['epoch'], {
      'epoch_loss': record['loss'], 'epoch_accuracy': record['accuracy'],
      'epoch_learning_rate': learning_rate})
  if 'val_loss' in record:
    write_scalars(writers[VALIDATION], record['epoch'], {
        'epoch_loss': record['val_loss'],
        'epoch_accuracy': record['val_accuracy']})


# Custom Scalars: (chart title, tag regexes) per category, first shown first.
# Each regex matches a tag from its start (TensorBoard's `re.match`); series
# are drawn per tag, and built-in layer names are numbered in depth order
# (dense_000, ..., logits; act_000, ...).
LAYOUT = (
    ('epoch metrics (train and validation)', (
        ('epoch_loss', (r'epoch_loss$',)),
        ('epoch_accuracy', (r'epoch_accuracy$',)),
        ('loss and learning rate per step', (r'loss$', r'learning_rate$')),
    )),
    ('every layer, input to output', (
        ('grad_norm: gradient norm per layer', (r'grad_norm/(?!global$).*',)),
        ('update_ratio: ||dW|| / ||W|| per layer', (r'update_ratio/.*',)),
        ('weight_norm per layer', (r'weight_norm/.*',)),
        ('activation_std per layer (probe batch)', (r'activation_std/.*',)),
        ('activation_saturated: fraction of saturated units',
         (r'activation_saturated/.*',)),
        ('activation_dead: fraction of dead units', (r'activation_dead/.*',)),
    )),
)


def scalars_layout() -> layout_pb2.Layout:
  """The Custom Scalars layout of `LAYOUT`: one multiline chart each."""
  layout = layout_pb2.Layout()
  for title, charts in LAYOUT:
    category = layout.category.add(title=title)
    for chart_title, regexes in charts:
      category.chart.add(title=chart_title,
                         multiline=layout_pb2.MultilineChartContent(
                             tag=list(regexes)))
  return layout


def write_layout(writer) -> None:
  """Writes `scalars_layout` (TensorBoard's Custom Scalars tab) at step 0."""
  tensor = tensor_pb2.TensorProto(
      dtype=types_pb2.DT_STRING,
      string_val=[scalars_layout().SerializeToString()])
  proto = summary_pb2.Summary()
  proto.value.add(tag=custom_scalar_metadata.CONFIG_SUMMARY_TAG,
                  metadata=custom_scalar_metadata.create_summary_metadata(),
                  tensor=tensor)
  with writer.as_default():
    tf.summary.experimental.write_raw_pb(proto.SerializeToString(), step=0)
  writer.flush()


def trace_model_graph(writer, model, dataset):
  """Writes the forward graph once so TensorBoard's Graphs tab shows the model
  (traced on two examples of `dataset`)."""
  example_batch = next(iter(dataset.batch(2)))[0]
  @tf.function
  def forward(x):
    return model(x, training=False)
  tf.summary.trace_on(graph=True, profiler=False)
  forward(example_batch)
  with writer.as_default(step=0):
    tf.summary.trace_export(name='model', step=0)
  writer.flush()
