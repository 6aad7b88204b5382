"""Shared helpers for benchmarks: machine info, tables, targets, MNIST setup."""

import json
import os
import platform
import statistics
import time
from typing import Dict, List, Sequence

import tensorflow as tf

from tftrain import data
from tftrain import models
from tftrain import optimizers
from tftrain import schedules
from tftrain import summaries
from tftrain import trainer as trainer_lib

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def machine() -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return (f'{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), '
          f'TF {tf.__version__}, Keras {tf.keras.__version__ if hasattr(tf.keras, "__version__") else "3"}, '
          f'Python {platform.python_version()}, load avg {os.getloadavg()[0]:.2f} at start')


def table(rows: Sequence[Dict], columns: Sequence[str]) -> str:
  def fmt(v):
    if isinstance(v, float):
      return f'{v:,.3f}' if abs(v) < 100 else f'{v:,.0f}'
    return str(v)
  lines = ['| ' + ' | '.join(columns) + ' |',
           '|' + '|'.join('---' for _ in columns) + '|']
  lines += ['| ' + ' | '.join(fmt(r.get(c, '')) for c in columns) + ' |'
            for r in rows]
  return '\n'.join(lines)


def report(name: str, title: str, rows: List[Dict], columns: Sequence[str],
           targets: List[Dict]) -> bool:
  """Prints and saves (Markdown + JSON) a table and its targets; True if all met."""
  ok = all(t['met'] for t in targets)
  text = [f'## {title}', '', f'Machine: {machine()}', '', table(rows, columns), '']
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
  with open(os.path.join(RESULTS_DIR, f'{name}.json'), 'w') as f:
    json.dump({'machine': machine(), 'rows': rows, 'targets': targets}, f,
              indent=2, default=float)
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


def mnist_cached(data_dir=None, raw_data_dir=None, validation_size=5000):
  """Cached MNIST splits prepared through TFDS (as the launchers do)."""
  from tftrain import data  # pylint: disable=g-import-not-at-top
  data_dir = data.prepare('mnist', data_dir, raw_data_dir)
  splits, info = data.load_splits('mnist', data_dir, validation_size)
  cached = {k: d.cache() for k, d in splits.items()}
  for d in cached.values():      # fill the caches once, outside any timing
    for _ in d.batch(10000):
      pass
  return cached, info, data_dir


def add_common_flags(flags):
  flags.DEFINE_string('data_dir', None, 'TFDS data dir.')
  flags.DEFINE_string('raw_data_dir', None, 'Raw download files mirror.')


def tftrain_epoch_fn(cached, batch, config, logdir):
  """A warm tftrain Trainer (MLP 300-100, SGD 0.3) with launcher defaults; returns run_epoch(epoch)."""
  model = models.mlp(seed=0)
  opt = optimizers.build_optimizer('sgd', schedules.Constant(0.3), config)
  writer = summaries.create_writers(logdir)[summaries.TRAIN]
  trainer = trainer_lib.Trainer(
      model, opt, tf.distribute.get_strategy(), batch, train_writer=writer,
      log_every_steps=config.log_every_steps, grad_norms=config.grad_norms,
      jit_compile=config.jit_compile)
  steps = 55000 // batch

  def run_epoch(epoch):
    it = iter(data.train_batches(cached, batch, 0, epoch))
    done = 0
    while done < steps:
      n = min(config.steps_per_loop, steps - done)
      trainer.train_steps(it, n)
      done += n
    return steps * batch
  return run_epoch
