"""Shared helpers for benchmarks: machine info, tables, targets, MNIST setup."""

import os
import platform
import statistics
import time
import types
from typing import Dict, List, Sequence

import tensorflow as tf

from tftrain import chunks
from tftrain import data
from tftrain import models
from tftrain import report as report_lib
from tftrain import summaries
from tftrain import trainer as trainer_lib
from tftrain import workdir as workdir_lib

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def cpu_model() -> str:
  """The CPU's model name (as `lscpu` prints it), else the architecture."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine() -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return (f'{os.cpu_count()} CPU cores ({cpu_model()}), '
          f'TF {tf.__version__}, Keras {tf.keras.__version__ if hasattr(tf.keras, "__version__") else "3"}, '
          f'Python {platform.python_version()}, load avg {os.getloadavg()[0]:.2f} at start')


def _number(v) -> str:
  return f'{v:,.3f}' if abs(v) < 100 else f'{v:,.0f}'


def report(name: str, title: str, rows: List[Dict], columns: Sequence[str],
           targets: List[Dict]) -> bool:
  """Prints and saves (Markdown + JSON) a table and its targets; True if all met."""
  ok = all(t['met'] for t in targets)
  text = [f'## {title}', '', f'Machine: {machine()}', '',
          report_lib.markdown_table(rows, columns, float_format=_number), '']
  if targets:
    text += ['Targets:', '']
    text += [f'- [{"x" if t["met"] else " "}] {t["name"]}: {t["value"]} '
             f'(target {t["target"]})' for t in targets]
    text.append('')
  text = '\n'.join(text)
  print(text, flush=True)
  os.makedirs(RESULTS_DIR, exist_ok=True)
  with open(os.path.join(RESULTS_DIR, f'{name}.md'), 'w') as f:
    f.write(text)
  workdir_lib.write_json(os.path.join(RESULTS_DIR, f'{name}.json'),
                         {'machine': machine(), 'rows': rows,
                          'targets': targets})
  return ok


def target(name: str, value: float, op: str, threshold: float, fmt='{:.2f}'):
  met = value >= threshold if op == '>=' else value <= threshold
  return {'name': name, 'value': fmt.format(value),
          'target': f'{op} {fmt.format(threshold)}', 'met': bool(met)}


def median(values):
  return statistics.median(values)


class Timer:
  def __enter__(self):
    self.start = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self.start


def cached_splits(name: str, data_dir=None, raw_data_dir=None,
                  validation_size=5000):
  """Cached splits of TFDS dataset `name` prepared as the launchers do, each
  filled once (outside any timing)."""
  data_dir = data.prepare(name, data_dir, raw_data_dir)
  splits, info = data.load_splits(name, data_dir, validation_size)
  cached = {k: d.cache() for k, d in splits.items()}
  for d in cached.values():
    for _ in d.batch(10000):
      pass
  return cached, info, data_dir


def mnist_cached(data_dir=None, raw_data_dir=None, validation_size=5000):
  return cached_splits('mnist', data_dir, raw_data_dir, validation_size)


def add_common_flags(flags):
  flags.DEFINE_string('data_dir', None, 'TFDS data dir.')
  flags.DEFINE_string('raw_data_dir', None, 'Raw download files mirror.')


def build_model(kind: str, seed: int = 0):
  """'mlp': the seed's MLP 300-100 ReLU; 'deep': 100 x Dense(100) SELU;
  'cnn': `--model=cnn` (CIFAR-10 shaped)."""
  if kind == 'mlp':
    return models.mlp(seed=seed)
  if kind == 'cnn':
    return models.cnn(seed=seed)
  return models.deep_mlp(depth=100, width=100, activation='selu', seed=seed)


def build_optimizer(kind: str):
  """The launchers' optimizers: SGD 0.3 for the MLP, Nadam 1e-4 for deep,
  the CIFAR-10 launcher's Nadam 5e-4 for the CNN."""
  if kind == 'mlp':
    return tf.keras.optimizers.SGD(0.3)
  if kind == 'cnn':
    return tf.keras.optimizers.Nadam(5e-4)
  return tf.keras.optimizers.Nadam(1e-4)


class TftrainRunner:
  """A warm tftrain Trainer driven by `chunks` (the launchers' step loop).

  `run(epoch, steps, logging)` trains `steps` steps of epoch `epoch`'s data
  order with the step logger on or off (one model, one data stream, so a
  logging comparison toggles only the logging), plus optional hooks (e.g. the
  depth probe) called after each in-graph loop as `loop.run` does.
  """

  def __init__(self, cached, kind: str, batch: int, config, logdir=None,
               hooks=()):
    self.cached, self.batch, self.config = cached, batch, config
    model = build_model(kind)
    # As a launcher plans it (`--jit_compile=auto` decides on the length):
    # `config.epochs` epochs of the train split.
    num_train = int(cached.cardinality())
    planned = config.epochs * (num_train if num_train > 0 else 55000) // batch
    self.trainer = trainer_lib.Trainer(
        model, build_optimizer(kind), tf.distribute.get_strategy(), batch,
        jit_compile=config.jit_compile, planned_steps=planned)
    writer = (summaries.create_writers(logdir)[summaries.TRAIN]
              if logdir else None)
    self.logger = summaries.StepLogger(
        writer, self.trainer.layer_names, config.log_every_steps,
        config.histogram_every_steps, config.grad_norms,
        asynchronous=True)          # as the launchers write
    self.hooks = list(hooks)
    # What the hooks see as `exp` (the probe needs trainer and writers).
    self.exp = types.SimpleNamespace(trainer=self.trainer, is_chief=True,
                                     writers={summaries.TRAIN: writer})

  def run(self, epoch: int, steps: int, logging: bool = True) -> int:
    """Trains `steps` steps; `last_cost` then holds what logging cost in
    this repetition by its own timers (`logging_cost`)."""
    it = data.Feed(self.trainer.strategy,
                   data.train_batches(self.cached, self.batch, 0, epoch),
                   steps, self.config.steps_per_loop,
                   int(self.trainer.optimizer.iterations.numpy()))
    t = {'calls': 0.0, 'observed': 0.0, 'observed_steps': 0, 'host': 0.0}
    for out, seconds in chunks.calls(self.trainer, it, steps,
                                     self.config.steps_per_loop,
                                     self.logger if logging else None):
      t['calls'] += seconds
      t['observed'] += out['observed_seconds']
      t['observed_steps'] += out['observed_steps']
      if logging:
        with Timer() as hooks:
          chunks.run_hooks(self.hooks, self.exp, out, epoch)
        t['host'] += hooks.seconds
    with Timer() as flush:
      self.logger.flush()       # the repetition's writes count in its time
    t['host'] += flush.seconds
    self.last_cost = logging_cost(t, steps)
    return steps * self.batch


def logging_cost(t: Dict, steps: int) -> float:
  """Logging's cost within one repetition, from its own timers: the
  observed steps' calls beyond what as many plain steps took in the same
  repetition, plus the host's hooks and the wait for the writes, over the
  plain steps' time. Speed flips between repetitions (this machine's) do not
  enter it, unlike a ratio of two repetitions' speeds."""
  plain_steps = steps - t['observed_steps']
  per_step = (t['calls'] - t['observed']) / max(plain_steps, 1)
  extra = t['observed'] - t['observed_steps'] * per_step + t['host']
  return extra / max(steps * per_step, 1e-9)


def fit_runner(cached, kind: str, batch: int, steps_per_execution=1,
               jit_compile=False):
  """Keras `fit` on the same model, data and optimizer; returns run(epoch, steps)."""
  model = build_model(kind)
  model.compile(optimizer=build_optimizer(kind),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True),
                metrics=['accuracy'], steps_per_execution=steps_per_execution,
                jit_compile=jit_compile)

  def run(epoch, steps):
    model.fit(data.train_batches(cached, batch, 0, epoch).take(steps),
              epochs=1, verbose=0)
    return steps * batch
  return run


def interleave(variants: Dict, repeats: int, warmup=None) -> Dict[str, List[float]]:
  """Examples/s of each variant: a warm-up call each, then `repeats` rounds.

  `variants` maps a name to fn(repetition) -> examples done; rounds run the
  variants one after another (interleaved), so a change of machine speed hits
  every variant alike.
  """
  for fn in variants.values():
    fn(0) if warmup is None else warmup(fn)
  speeds = {name: [] for name in variants}
  for rep in range(repeats):
    for name, fn in variants.items():
      with Timer() as t:
        n = fn(rep + 1)
      speeds[name].append(n / t.seconds)
  return speeds


def speed_row(name: str, values: Sequence[float], **extra) -> Dict:
  """Best-of-N beside median, min (examples/s)."""
  row = {'variant': name, 'best (ex/s)': max(values),
         'median': median(values), 'min': min(values), 'n': len(values)}
  row.update(extra)
  return row
