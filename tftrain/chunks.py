"""The host-side step loop: training steps as compiled calls, hooks between them.

`run_steps` is the one "N steps in chunks" loop: in-graph loops
(`Trainer.train_steps`), each ending on a step the `StepLogger` observes (in
the same call), and the logger writing what each call measured.
`calls` cuts a stretch of steps into such calls, ending on multiples of
`--steps_per_loop` (where the hooks run), and yields each one's output;
`run_hooks` hands it to the hooks. The training loop (`loop._Run.train_epoch`)
and the benchmarks train through these three. A `ProfileWindow` traces the
calls of `--profile_steps` with `tf.profiler`.
"""

import time
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from tftrain import summaries
from tftrain import trainer as trainer_lib


def run_steps(trainer: trainer_lib.Trainer, iterator, num_steps: int,
              logger: Optional[summaries.StepLogger] = None,
              stretch_steps: Optional[int] = None) -> Dict[str, Any]:
  """Runs `num_steps` training steps: the one "N steps in chunks" loop.

  Each step `logger` observes ends a compiled call (`Trainer.train_steps`
  with `observe_last`); the logger writes what each call measured. When
  the stretch these steps begin (`stretch_steps`, default `num_steps`) holds
  an observed step, all its calls run the observing loop: a run compiles
  one loop.

  Returns:
    'loss_sum', 'correct', 'count' (sums), 'losses' (per step), 'steps_run',
    'step' (the global step after them), 'observed_steps' and
    'observed_seconds' (the calls ending on an observed step: their steps
    and seconds), and 'observation' (the last observed step's measurements)
    if any.

  Raises:
    errors.NonFiniteError: at the first non-finite loss or gradient.
  """
  total = {'loss_sum': 0.0, 'correct': 0.0, 'count': 0.0, 'steps_run': 0,
           'observed_steps': 0, 'observed_seconds': 0.0}
  losses = []
  step = int(trainer.optimizer.iterations.numpy())
  k = logger.steps_to_observation(step) if logger is not None else None
  # One compiled variant for the run: histograms or not.
  observing = (logger.histogram_every_steps > 0 if k is not None and k <= (
      stretch_steps or num_steps) else None)
  while total['steps_run'] < num_steps:
    left = num_steps - total['steps_run']
    k = logger.steps_to_observation(step) if logger is not None else None
    start = time.perf_counter()
    if k is not None and k <= left:
      out = trainer.train_steps(iterator, k, observe_last=True,
                                histograms=logger.wants_histograms(step + k),
                                observing=observing)
      total['observed_steps'] += out['steps_run']
      total['observed_seconds'] += time.perf_counter() - start
      total['observation'] = out['observation']
    else:
      out = trainer.train_steps(iterator, left, observing=observing)
    if logger is not None:
      logger.write(step + 1, out, trainer.learning_rate_at)
    for key in ('loss_sum', 'correct', 'count', 'steps_run'):
      total[key] += out[key]
    losses.append(out['losses'])
    step += out['steps_run']
  total['losses'] = np.concatenate(losses) if losses else np.zeros([0])
  total['step'] = step
  return total


class ProfileWindow:
  """A `tf.profiler` trace of global steps [start, end] into `logdir`.

  `calls` ends a compiled call after step start - 1 and after step end
  (`breaks`), starts the profiler before the call holding `start` and stops
  it after the one holding `end`, so the trace holds exactly those steps.
  TensorBoard's Profile tab reads `<logdir>/plugins/profile/<time>/`.
  """

  def __init__(self, steps: Sequence[int], logdir: str):
    self.start, self.end = int(steps[0]), int(steps[1])
    self.logdir = logdir
    self.active = False
    self.done = False

  @property
  def breaks(self) -> Tuple[int, int]:
    return self.start - 1, self.end

  def before_call(self, next_step: int) -> None:
    """Starts tracing if the call starting at global step `next_step` is in
    the window."""
    if self.active or self.done or not self.start <= next_step <= self.end:
      return
    try:
      tf.profiler.experimental.start(self.logdir)
    except (tf.errors.AlreadyExistsError, tf.errors.UnavailableError) as e:
      logging.warning('--profile_steps: not traced, another profiler is '
                      'running (%s).', type(e).__name__)
      self.done = True
      return
    self.active = True

  def after_call(self, step: int) -> None:
    """Stops tracing once global step `step` reached the window's end."""
    if self.active and step >= self.end:
      self.stop()

  def stop(self) -> None:
    if self.active:
      tf.profiler.experimental.stop()
      self.active = False
      self.done = True
      from tftrain import progress  # pylint: disable=g-import-not-at-top
      progress.say('profile: steps %d-%d traced into %s/plugins/profile/ '
                   "(TensorBoard's Profile tab: pip install "
                   "'tftrain[profile]')", self.start, self.end, self.logdir)


def call_length(global_step: int, steps_left: int, steps_per_loop: int,
                breaks: Sequence[int] = ()) -> int:
  """Steps of the next compiled call.

  Calls end on multiples of `steps_per_loop` (global steps), where the hooks
  run, and at each global step of `breaks`.
  """
  n = min(steps_per_loop - global_step % steps_per_loop, steps_left)
  for b in breaks:
    if global_step < b < global_step + n:
      n = b - global_step
  return n


def calls(trainer: trainer_lib.Trainer, iterator, num_steps: int,
          steps_per_loop: int, logger: Optional[summaries.StepLogger] = None,
          profile: Optional[ProfileWindow] = None
          ) -> Iterator[Tuple[Dict[str, Any], float]]:
  """Trains `num_steps` steps in calls of `call_length` steps (traced by
  `profile` where its window says).

  Yields:
    (`run_steps`' output plus 'compiled': whether the call traced a step
    function, its seconds) after each call; the caller may stop between
    calls (a signal) by leaving the loop.
  """
  done = 0
  global_step = int(trainer.optimizer.iterations.numpy())
  while done < num_steps:
    n = call_length(global_step, num_steps - done, steps_per_loop,
                    profile.breaks if profile else ())
    if profile is not None:
      profile.before_call(global_step + 1)
    traces = trainer.trace_count
    start = time.perf_counter()
    out = run_steps(trainer, iterator, n, logger, num_steps - done)
    seconds = time.perf_counter() - start
    out['compiled'] = trainer.trace_count != traces
    if profile is not None:
      profile.after_call(out['step'])
    done += n
    global_step = out['step']
    yield out, seconds


def run_hooks(hooks: Sequence, exp, out: Dict[str, Any], epoch: int) -> None:
  """The 'train' event: `hook(exp, 'train', outputs)` with the call's outputs
  plus 'step' (the global step after it) and 'epoch'."""
  for hook in hooks:    # deferred records first (DepthProbe.record_start)
    flush = getattr(hook, 'flush_pending', None)
    if flush is not None:
      flush()
  for hook in hooks:
    hook(exp, 'train', dict(out, step=out['step'], epoch=epoch))
