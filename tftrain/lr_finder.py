"""The learning-rate finder: an exponential LR sweep, its suggestions, its plot.

The sweep runs on the Trainer's own compiled train step (the same in-graph
multi-step loop that training uses), with the optimizer's schedule swapped for
`schedules.ExponentialGrowth`, for at most one epoch. It records the raw
per-batch loss (not a running mean) and a bias-corrected EMA of it, and stops
at a non-finite loss or when the smoothed loss exceeds `stop_factor` times its
minimum. Model weights, optimizer slots and step counter, the LR schedule and
the random-number state are restored afterwards whatever happens, so training
starts from exactly the state it had before the sweep.

A first SIGINT/SIGTERM stops the sweep between two of its calls: the state is
restored, nothing is written and `errors.Interrupted` is raised (a second
signal exits at once). The outputs are written to a temporary folder renamed to
`outdir` at the end, so `outdir` is either complete or absent.

Outputs (in `outdir`): `lr_finder.png` (loss vs LR, log-x), `lr_finder.csv`
(step, lr, loss, smoothed_loss), `lr_finder.json` (suggestions and settings)
and TensorBoard events: scalars `lr_finder/lr`, `lr_finder/loss`,
`lr_finder/smoothed_loss` per sweep step and the plot as image `lr_finder/plot`.
"""

import contextlib
import csv
import dataclasses
import glob
import io
import math
import os
import random
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from tftrain import config as config_lib
from tftrain import data
from tftrain import errors
from tftrain import progress
from tftrain import schedules
from tftrain import signals
from tftrain import workdir as workdir_lib

SUGGESTIONS = config_lib.LR_SUGGESTIONS
PNG = 'lr_finder.png'
CSV = 'lr_finder.csv'
JSON = 'lr_finder.json'
TAG_LR = 'lr_finder/lr'
TAG_LOSS = 'lr_finder/loss'
TAG_SMOOTHED = 'lr_finder/smoothed_loss'
TAG_PLOT = 'lr_finder/plot'


@dataclasses.dataclass
class Result:
  """What a sweep found.

  Attributes:
    lrs, losses, smoothed: per recorded step (raw loss may be inf/nan at the
      last step when the sweep ended on a non-finite loss).
    suggestions: name -> learning rate (a name maps to None when the curve
      is too short for that rule).
    default: the name of the suggestion `suggestion` returns.
    schedule: the training schedule the suggestion is for; with 'onecycle'
      `suggestion` is the cycle's peak, `onecycle_max`.
    stop_reason: 'diverged' (smoothed loss > stop_factor x minimum),
      'non_finite', 'end_lr' or 'max_steps'.
    paths: output file paths (png, csv, json, tensorboard).
  """
  lrs: np.ndarray
  losses: np.ndarray
  smoothed: np.ndarray
  suggestions: Dict[str, Optional[float]]
  default: str
  stop_reason: str
  min_lr: float
  min_loss: float
  seconds: float = 0.0
  paths: Dict[str, str] = dataclasses.field(default_factory=dict)
  settings: Dict[str, Any] = dataclasses.field(default_factory=dict)
  schedule: str = 'constant'

  @property
  def onecycle_max(self) -> float:
    """1cycle's peak LR: the LR at the smoothed-loss minimum (Smith's rule).

    The largest LR at which the loss still falls; the cycle itself supplies
    the margin (it starts at peak/10, spends little time at the peak and
    anneals). Measured on MNIST: 1cycle peaking here reached 98% test
    accuracy in fewer epochs than constant training at `suggestion`, while
    peaking at the constant-LR suggestion (4x lower) was slower than both.
    """
    return float(self.min_lr)

  @property
  def suggestion(self) -> float:
    """The LR to train with: `onecycle_max` for a 1cycle schedule, else the
    rule named by `default` (falling back to any rule that produced a value).
    """
    if self.schedule == 'onecycle':
      return self.onecycle_max
    value = self.suggestions.get(self.default)
    if value is None:
      for name in SUGGESTIONS:
        if self.suggestions.get(name) is not None:
          return float(self.suggestions[name])
      raise errors.ConfigError(
          'lr_find_start', self.settings.get('start_lr'),
          f'the LR finder recorded {len(self.lrs)} steps, too few for any '
          'suggestion; lower --lr_find_start or raise --lr_find_max_steps.')
    return float(value)

  @property
  def used(self) -> str:
    """Which rule `suggestion` follows: 'onecycle_max' (the smoothed-loss
    minimum, for 1cycle) or the `default` (--lr_suggestion) rule's name."""
    if self.schedule == 'onecycle':
      return 'onecycle_max'
    if self.suggestions.get(self.default) is not None:
      return self.default
    return next((n for n in SUGGESTIONS
                 if self.suggestions.get(n) is not None), self.default)

  def summary(self) -> Dict[str, Any]:
    """A JSON-able digest (what `lr_finder.json` holds)."""
    return {
        'suggestion': self.suggestion, 'default': self.default,
        'used': self.used,
        'schedule': self.schedule, 'onecycle_max': self.onecycle_max,
        'suggestions': {k: (None if v is None else float(v))
                        for k, v in self.suggestions.items()},
        'steps': int(len(self.lrs)), 'stop_reason': self.stop_reason,
        'min_smoothed_loss': float(self.min_loss),
        'lr_at_min_smoothed_loss': float(self.min_lr),
        'first_lr': float(self.lrs[0]) if len(self.lrs) else None,
        'last_lr': float(self.lrs[-1]) if len(self.lrs) else None,
        'seconds': float(self.seconds), 'paths': dict(self.paths),
        'settings': dict(self.settings)}


# ------------------------------------------------------------ the curve ----


class _Smoothed:
  """The bias-corrected exponential moving average of the loss (as in Adam /
  fastai), and its minimum: the one implementation of the smoothing."""

  def __init__(self, beta: float):
    self.beta = beta
    self.avg, self.corrected, self.best, self.count = 0.0, 0.0, math.inf, 0

  def add(self, loss: float) -> float:
    """Adds one step's loss; returns the smoothed loss up to it."""
    self.count += 1
    self.avg = self.beta * self.avg + (1.0 - self.beta) * loss
    self.corrected = self.avg / (1.0 - self.beta ** self.count)
    self.best = min(self.best, self.corrected)
    return self.corrected

  def diverged(self, stop_factor: float) -> bool:
    """The smoothed loss passed `stop_factor` x its minimum."""
    return self.count > 1 and self.corrected > stop_factor * self.best

  def near_divergence(self, stop_factor: float) -> bool:
    return (self.best < math.inf
            and self.corrected > 0.5 * stop_factor * self.best)


def smooth(losses, beta: float) -> np.ndarray:
  """Bias-corrected exponential moving average (as in Adam / fastai).

  Args:
    losses: raw per-step losses.
    beta: EMA decay in [0, 1); 0 returns the raw losses.

  Returns:
    smoothed[i] = ema_i / (1 - beta**(i+1)).
  """
  smoothed = _Smoothed(beta)
  return np.array([smoothed.add(float(loss)) for loss in losses], np.float64)


def suggest_minimum(lrs, smoothed, divisor: float = 10.0) -> Optional[float]:
  """The seed's rule: about 10x below the LR of the smoothed-loss minimum."""
  finite = np.isfinite(smoothed)
  if not finite.any():
    return None
  i = int(np.nanargmin(np.where(finite, smoothed, np.nan)))
  return float(lrs[i] / divisor)


def suggest_steepest(lrs, smoothed, skip_begin: int = 10,
                     skip_end: int = 1) -> Optional[float]:
  """LR of the steepest descent of smoothed loss vs log10(LR), before its minimum.

  Like Lightning's rule (skipping the first `skip_begin` and last `skip_end`
  points), but limited to the descending part of the curve, so the blow-up
  at the end cannot be picked.
  """
  lrs, smoothed = np.asarray(lrs, np.float64), np.asarray(smoothed, np.float64)
  finite = np.isfinite(smoothed)
  if not finite.any():
    return None
  end = int(np.nanargmin(np.where(finite, smoothed, np.nan))) + 1
  end = min(end, len(lrs) - skip_end)
  begin = min(skip_begin, max(end - 3, 0))
  if end - begin < 3:
    return None
  slope = np.gradient(smoothed[begin:end], np.log10(lrs[begin:end]))
  return float(lrs[begin + int(np.argmin(slope))])


def suggest_valley(lrs, smoothed) -> Optional[float]:
  """fastai's 'valley': inside the longest descending stretch, 2/3 of the way down.

  The longest strictly decreasing subsequence of the (trimmed: first 10%, last
  5 points) smoothed loss marks the valley; the suggestion sits at
  start + 1/3 + 1/6 of its length, as in fastai's `valley`.
  """
  lrs, losses = np.asarray(lrs, np.float64), np.asarray(smoothed, np.float64)
  n_all = len(losses)
  begin, end = n_all // 10, n_all - 5
  if end - begin < 3:
    return None
  lrs, losses = lrs[begin:end], losses[begin:end]
  losses = np.where(np.isfinite(losses), losses, np.inf)
  n = len(losses)
  lds = np.ones(n, np.int64)
  max_start = max_end = 0
  for i in range(1, n):
    earlier = losses[:i] > losses[i]
    if earlier.any():
      lds[i] = lds[:i][earlier].max() + 1
    if lds[i] > lds[max_end]:
      max_end = i
      max_start = max_end - lds[max_end]
  sections = (max_end - max_start) / 3
  index = max_start + int(sections) + int(sections / 2)
  return float(lrs[min(max(index, 0), n - 1)])


def suggest_divergence(lrs, stop_reason: str, divisor: float = 10.0,
                       smoothed=None) -> Optional[float]:
  """About 10x below the LR where the loss blew up (Geron's rule), capped
  at the LR of the smoothed-loss minimum.

  The blow-up is the step where the sweep stopped: the smoothed loss passed
  stop_factor x its minimum, or the loss became non-finite. Over a long
  (one-epoch) sweep the smoothed-loss minimum sits well below the blow-up,
  because the loss there also reflects the training done so far; this rule
  is then the one that lands near the LR that trains fastest. The cap: an
  adaptive optimizer's loss can rise for decades before it blows up (Nadam
  on the 20-layer CIFAR-10 net with batch norm: minimum at 3.5e-3, blow-up
  at 0.79, so 10x below it is 0.079, 160x the recipe's 5e-4 and 23 points
  below it after 3 epochs); past the minimum the sweep's loss was already
  rising, so the rule never goes above it. (SGD on MNIST: 10x below the
  blow-up is below the minimum, uncapped.)
  """
  if stop_reason not in ('diverged', 'non_finite') or not len(lrs):
    return None
  lr = float(lrs[-1] / divisor)
  if smoothed is not None:
    finite = np.isfinite(np.asarray(smoothed, np.float64))
    if finite.any():
      at_min = float(lrs[int(np.nanargmin(np.where(finite, smoothed,
                                                   np.nan)))])
      lr = min(lr, at_min)
  return lr


def suggestions_for(lrs, smoothed,
                    stop_reason: str) -> Dict[str, Optional[float]]:
  """All suggestion rules on one curve."""
  return {'divergence': suggest_divergence(lrs, stop_reason,
                                            smoothed=smoothed),
          'minimum': suggest_minimum(lrs, smoothed),
          'steepest': suggest_steepest(lrs, smoothed),
          'valley': suggest_valley(lrs, smoothed)}


# ------------------------------------------------------------ the state ----


def _keras_global_seed_generator():
  try:  # Keras 3 keeps its global SeedGenerator in private global state.
    from keras.src.backend.common import global_state  # pylint: disable=g-import-not-at-top
    return global_state.get_global_attribute('global_seed_generator')
  except ImportError:
    return None


@contextlib.contextmanager
def _preserved_state(exp):
  """Restores weights, optimizer (slots, iterations, schedule) and RNGs."""
  trainer = exp.trainer
  weights = trainer.snapshot()
  schedule = trainer.learning_rate_schedule
  py_state, np_state = random.getstate(), np.random.get_state()
  try:
    tf_gen = tf.random.get_global_generator()
  except RuntimeError:   # op determinism on and no global generator yet:
    tf_gen = None        # none exists whose state the sweep could change
  tf_state = tf_gen.state.numpy() if tf_gen is not None else None
  keras_gen = _keras_global_seed_generator()
  keras_state = keras_gen.state.numpy() if keras_gen is not None else None
  try:
    yield
  finally:
    trainer.restore(weights)
    trainer.set_learning_rate(schedule)
    random.setstate(py_state)
    np.random.set_state(np_state)
    if tf_gen is not None:
      tf_gen.reset(tf_state)
    if keras_gen is not None:
      keras_gen.state.assign(keras_state)


# ------------------------------------------------------------ the sweep ----


SMOOTHING_BETA = 0.98            # the seed's (and fastai's) smoothing
SMOOTHING_DECADES = 0.22         # span of the moving average, in LR decades


def smoothing(config, factor: float) -> float:
  """The loss smoothing of a sweep growing by `factor` per step.

  `--lr_find_beta` when given; else 0.98, lowered for fast sweeps so the
  moving average spans at most ~0.22 of a decade of LR (its lag would
  otherwise move the minimum to higher LRs: measured on MNIST at batch 256,
  a one-epoch sweep of 215 steps; BUILD.md). Sweeps of at least ~230 steps
  per decade (one epoch at batch 32 on MNIST or CIFAR-10) keep 0.98.
  """
  if config.lr_find_beta is not None:
    return config.lr_find_beta
  steps_per_decade = math.log(10.0) / math.log(factor)
  return min(SMOOTHING_BETA,
             1.0 - 1.0 / max(SMOOTHING_DECADES * steps_per_decade, 2.0))


def _sweep_length(config, steps_per_epoch: int) -> int:
  steps = steps_per_epoch
  if config.lr_find_max_steps:
    steps = min(steps, config.lr_find_max_steps)
  if config.lr_find_factor:
    # Growing by a factor: stop where the LR would pass lr_find_end.
    to_end = math.log(config.lr_find_end / config.lr_find_start) / math.log(
        config.lr_find_factor)
    steps = min(steps, int(math.floor(to_end)) + 1)
  return max(steps, 1)


def sweep(exp, num_steps: Optional[int] = None,
          should_stop: Optional[Callable[[], bool]] = None):
  """Runs the LR sweep on `exp.trainer` (state is NOT restored here).

  Args:
    exp: the Experiment.
    num_steps: sweep length (default: `_sweep_length`).
    should_stop: checked before every call of the compiled loop; True stops
      the sweep with `Interrupted`.

  Returns:
    (lrs, losses, smoothed, stop_reason, settings) as numpy arrays / str / dict.

  Raises:
    errors.Interrupted: `should_stop()` returned True.
  """
  config, trainer = exp.config, exp.trainer
  num_steps = num_steps or _sweep_length(config, exp.steps_per_epoch)
  offset = int(trainer.optimizer.iterations.numpy())
  if config.lr_find_factor:
    schedule = schedules.ExponentialGrowth(config.lr_find_start,
                                           config.lr_find_factor, offset)
  else:
    schedule = schedules.ExponentialGrowth.from_range(
        config.lr_find_start, config.lr_find_end, num_steps, offset)
  trainer.set_learning_rate(schedule)   # plain steps: no step summaries
  logging.info('LR finder: sweeping up to %d steps from lr=%.3g (x%.5g per '
               'step)', num_steps, float(schedule(offset)), schedule.factor)
  beta = smoothing(config, schedule.factor)
  losses, stop_reason = _sweep_losses(exp, schedule, num_steps, beta,
                                      should_stop)
  lrs = np.array([float(schedule(offset + i)) for i in range(len(losses))])
  losses_arr = np.array(losses, np.float64)
  settings = {'start_lr': config.lr_find_start, 'end_lr': config.lr_find_end,
              'factor': schedule.factor, 'planned_steps': num_steps,
              'beta': beta,
              'stop_factor': config.lr_find_stop_factor,
              'batch_size': config.batch_size, 'optimizer': config.optimizer,
              'steps_per_epoch': exp.steps_per_epoch}
  return lrs, losses_arr, smooth(losses_arr, beta), stop_reason, settings


def _sweep_losses(exp, schedule, num_steps: int, beta: float, should_stop):
  """The sweep's per-step losses and why it stopped."""
  config, trainer = exp.config, exp.trainer
  offset = int(trainer.optimizer.iterations.numpy())
  batches = data.train_batches(exp.datasets['train'], config.batch_size,
                               config.seed, epoch=0)
  iterator = data.Feed(exp.strategy, batches, num_steps, config.steps_per_loop,
                       offset)
  # Calls of at most 25 steps and at most 2x LR growth: the stop check runs
  # between calls, and a non-finite loss loses the failing call's losses.
  chunk = max(1, min(config.steps_per_loop, 25,
                     int(math.log(2.0) / math.log(schedule.factor))))
  smoothed, stop_factor = _Smoothed(beta), config.lr_find_stop_factor
  losses: List[float] = []
  stop_reason = 'max_steps' if config.lr_find_max_steps and (
      num_steps == config.lr_find_max_steps) else 'end_lr'
  while len(losses) < num_steps:
    if should_stop is not None and should_stop():
      raise errors.Interrupted(len(losses), num_steps)
    # Near the blow-up, run one step per call so the stop lands on its step
    # and a non-finite loss loses no recorded steps.
    n = min(1 if smoothed.near_divergence(stop_factor) else chunk,
            num_steps - len(losses))
    try:
      new = [float(x) for x in trainer.train_steps(iterator, n)['losses']]
    except errors.NonFiniteError as e:
      # The normal end of a sweep. The failing call's losses are lost, so the
      # bad step is recorded only when it directly follows the recorded ones
      # (always so in the one-step calls near the blow-up).
      if e.step - offset - 1 == len(losses):
        losses.append(math.inf)
      return losses, 'non_finite'
    for loss in new:
      losses.append(loss)
      smoothed.add(loss)
      if smoothed.diverged(stop_factor):
        return losses, 'diverged'
  return losses, stop_reason


# ------------------------------------------------------------ outputs ------


def plot(result: Result, path: str) -> None:
  """Writes the loss-vs-LR figure (log-x, raw and smoothed, minimum, suggestions)."""
  from tftrain import report  # pylint: disable=g-import-not-at-top
  plt = report.pyplot()

  lrs, raw, smoothed = result.lrs, result.losses, result.smoothed
  fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
  finite = np.isfinite(raw)
  ax.plot(lrs[finite], raw[finite], color='0.6', alpha=0.5, lw=0.8,
          label='loss per batch')
  ax.plot(lrs, smoothed, color='C0', lw=2.0,
          label=f'smoothed (EMA, beta={result.settings.get("beta", "?")})')
  onecycle = result.schedule == 'onecycle'
  ax.axvline(result.min_lr, color='k', ls='--', lw=1.0,
             label=f'minimum of smoothed loss (1cycle peak'
             f'{", used by this run" if onecycle else ""}): '
             f'lr={result.min_lr:.3g}')
  if result.stop_reason in ('diverged', 'non_finite'):
    ax.axvline(lrs[-1], color='C4', ls=':', lw=1.2,
               label=f'blow-up (sweep stopped): lr={lrs[-1]:.3g}')
  colors = {'divergence': 'C4', 'minimum': 'C3', 'steepest': 'C2',
            'valley': 'C1'}
  markers = {'divergence': 'v', 'minimum': 'o', 'steepest': 's',
             'valley': 'D'}
  for name in SUGGESTIONS:
    lr = result.suggestions.get(name)
    if lr is None:
      continue
    y = float(np.interp(np.log10(lr), np.log10(lrs), smoothed))
    note = ''
    if name == result.default:   # --lr_suggestion: used unless 1cycle
      note = (' (--lr_suggestion; not used: 1cycle peaks at the minimum)'
              if onecycle else ' (--lr_suggestion, used by this run)')
    ax.plot([lr], [y], marker=markers[name], color=colors[name], ms=10,
            ls='none', markeredgecolor='k', label=f'{name}{note}: lr={lr:.3g}')
  ax.set_xscale('log')
  # The interesting part is below the start loss; the blow-up is clipped.
  fin_s = smoothed[np.isfinite(smoothed)]
  if len(fin_s):
    low, start = float(np.min(fin_s)), float(fin_s[0])
    top = max(start, low) * 1.15 + 1e-12
    span = top - low
    ax.set_ylim(max(low - 0.1 * span, 0.0), top)
  ax.set_xlabel('learning rate (log scale)')
  ax.set_ylabel('training loss')
  ax.set_title(f'LR finder: {len(lrs)} steps, batch '
               f'{result.settings.get("batch_size", "?")}, '
               f'{result.settings.get("optimizer", "")} '
               f'(stopped: {result.stop_reason})')
  ax.grid(True, which='major', alpha=0.4)
  ax.grid(True, which='minor', alpha=0.12)
  # Lower left is empty: the curve starts high and ends on the right.
  ax.legend(loc='lower left', fontsize=9, framealpha=0.9)
  fig.tight_layout()
  workdir_lib.write_text(path, report.figure_png(fig), 'wb')


def write_csv(result: Result, path: str) -> None:
  buf = io.StringIO()
  writer = csv.writer(buf)
  writer.writerow(['step', 'lr', 'loss', 'smoothed_loss'])
  for i, (lr, loss, sm) in enumerate(
      zip(result.lrs, result.losses, result.smoothed)):
    writer.writerow([i, repr(float(lr)), repr(float(loss)), repr(float(sm))])
  workdir_lib.write_text(path, buf.getvalue())


def write_summaries(result: Result, logdir: str, png_path: str) -> None:
  writer = tf.summary.create_file_writer(logdir)
  with writer.as_default():
    for i, (lr, loss, sm) in enumerate(
        zip(result.lrs, result.losses, result.smoothed)):
      tf.summary.scalar(TAG_LR, lr, step=i)
      if math.isfinite(loss):
        tf.summary.scalar(TAG_LOSS, loss, step=i)
      if math.isfinite(sm):
        tf.summary.scalar(TAG_SMOOTHED, sm, step=i)
    with tf.io.gfile.GFile(png_path, 'rb') as f:
      image = tf.image.decode_png(f.read(), channels=4)
    tf.summary.image(TAG_PLOT, image[tf.newaxis], step=0)
  writer.flush()
  writer.close()


def _write_outputs(result: Result, outdir: str) -> None:
  """PNG, CSV, JSON and events into a temporary folder, then renamed to
  `outdir` (written in place where folders cannot be renamed: ram://, gs://)."""
  fs = tf.io.gfile
  if workdir_lib.is_local(outdir):
    outdir = os.path.abspath(outdir)
  fs.makedirs(os.path.dirname(outdir))
  # Left by a process that was killed while writing (the workdir lock makes
  # sure no other finder is writing here now).
  for stale in fs.glob(glob.escape(outdir) + '.tmp-*') + fs.glob(
      glob.escape(outdir) + '.old-*'):
    workdir_lib.remove_tree(stale)
  tmp = workdir_lib.staging_dir(outdir, f'tmp-{os.getpid()}')
  if tmp == outdir:     # no folder renames here: written in place
    workdir_lib.remove_tree(outdir)
  fs.makedirs(tmp)
  try:
    plot(result, os.path.join(tmp, PNG))
    write_csv(result, os.path.join(tmp, CSV))
    write_summaries(result, tmp, os.path.join(tmp, PNG))
    workdir_lib.write_json(os.path.join(tmp, JSON), result.summary(),
                           sort_keys=True)
    if tmp != outdir and fs.exists(outdir):   # an earlier, unfinished start
      old = f'{outdir}.old-{os.getpid()}'
      fs.rename(outdir, old)
      fs.rename(tmp, outdir)
      workdir_lib.remove_tree(old)
    elif tmp != outdir:
      fs.rename(tmp, outdir)
  except BaseException:
    workdir_lib.remove_tree(tmp)
    raise


def _result(config, lrs, losses, smoothed, reason, settings,
            seconds) -> Result:
  finite = np.isfinite(smoothed)
  if not finite.any():
    raise errors.ConfigError(
        'lr_find_start', config.lr_find_start,
        'the LR finder\'s first loss was already non-finite; lower it.')
  i_min = int(np.nanargmin(np.where(finite, smoothed, np.nan)))
  return Result(lrs=lrs, losses=losses, smoothed=smoothed,
                suggestions=suggestions_for(lrs, smoothed, reason),
                default=config.lr_suggestion, stop_reason=reason,
                min_lr=float(lrs[i_min]), min_loss=float(smoothed[i_min]),
                seconds=seconds, settings=settings,
                schedule=config.lr_schedule)


def choose(exp, saved, should_stop: Optional[Callable[[], bool]] = None
           ) -> Tuple[float, Optional[Dict[str, Any]]]:
  """The run's learning rate: the Config's, or with learning_rate='auto' the
  one `saved` holds (a resume) or else this finder's pick (into
  `<workdir>/lr_finder/`). `saved` (a checkpointed variable) is set to it.

  Returns:
    (learning rate, the finder's summary when it ran now, else None).

  Raises:
    errors.Interrupted: `should_stop` said so during the sweep.
  """
  found = None
  if exp.config.learning_rate != 'auto':
    learning_rate = float(exp.config.learning_rate)
  else:
    learning_rate = float(saved.numpy())
    if not learning_rate:
      result = find(exp, os.path.join(exp.workdir, workdir_lib.LR_FINDER),
                    should_stop=should_stop)
      learning_rate, found = result.suggestion, result.summary()
  saved.assign(learning_rate)
  return learning_rate, found


def find(exp, outdir: str, num_steps: Optional[int] = None,
         should_stop: Optional[Callable[[], bool]] = None) -> Result:
  """Runs the LR finder on an Experiment and restores its state afterwards.

  Args:
    exp: an `experiment.Experiment` (trainer, cached train split, config with the
      lr_find_* fields and lr_suggestion, strategy, steps_per_epoch).
    outdir: folder for the PNG, CSV, JSON and TensorBoard events (chief only),
      written whole at the end (complete or absent).
    num_steps: sweep length; default one epoch, capped by
      `config.lr_find_max_steps` (and by lr_find_end when a factor is given).
    should_stop: checked between the sweep's calls; True stops it. Default:
      the first SIGINT/SIGTERM received during the sweep (a second one exits).

  Returns:
    A `Result`; `.suggestion` is the LR of the rule `config.lr_suggestion`,
    or, when the schedule is 1cycle (`config.lr_schedule`), the cycle's peak
    (`.onecycle_max`, the LR at the smoothed-loss minimum).

  Raises:
    ConfigError: the first loss was already non-finite (--lr_find_start).
    errors.Interrupted: stopped by `should_stop` (or a signal); state
      restored, nothing written.
  """
  config = exp.config
  started = time.time()
  # The guard is shared with an enclosing one (training's), if any.
  with signals.SignalGuard() as guard:
    if should_stop is None:
      should_stop = lambda: guard.signum is not None
    try:
      with _preserved_state(exp):
        lrs, losses, smoothed, reason, settings = sweep(exp, num_steps,
                                                        should_stop)
    except errors.Interrupted as e:
      logging.warning('LR finder interrupted after %d of %d steps; model '
                      'restored, nothing written.', e.steps_done,
                      e.planned_steps)
      raise errors.Interrupted(e.steps_done, e.planned_steps,
                               outdir) from None
    result = _result(config, lrs, losses, smoothed, reason, settings,
                     time.time() - started)
    progress.say('LR finder: %d steps (%s) in %.1f s; suggestions %s',
                 len(lrs), reason, result.seconds,
                 {k: v and round(v, 5) for k, v in result.suggestions.items()})
    if getattr(exp, 'is_chief', True):
      result.paths = {'png': os.path.join(outdir, PNG),
                      'csv': os.path.join(outdir, CSV),
                      'json': os.path.join(outdir, JSON),
                      'tensorboard': outdir}
      # A signal from here on is noted (the guard) but does not cut the
      # writes short; an enclosing training loop then stops at its first check.
      _write_outputs(result, outdir)
  return result
