"""The host-side step loop: training steps as compiled calls, hooks between them.

`run_steps` is the one "N steps in chunks" loop: plain in-graph loops
(`Trainer.train_steps`) up to each step the `StepLogger` observes, that step as
a `Trainer.observed_step`, and the logger writing what each call measured.
`calls` cuts a stretch of steps into such calls, ending on multiples of
`--steps_per_loop` (where the hooks run), and yields each one's output;
`run_hooks` hands it to the hooks. The training loop (`loop._Run.train_epoch`)
and the benchmarks train through these three.
"""

import time
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from tftrain import summaries
from tftrain import trainer as trainer_lib


def run_steps(trainer: trainer_lib.Trainer, iterator, num_steps: int,
              logger: Optional[summaries.StepLogger] = None
              ) -> Dict[str, Any]:
  """Runs `num_steps` training steps: the one "N steps in chunks" loop.

  Plain in-graph loops run up to each step `logger` observes; that step is a
  `Trainer.observed_step`; the logger writes what each call measured.

  Returns:
    'loss_sum', 'correct', 'count' (sums), 'losses' (per step), 'steps_run',
    'step' (the global step after them) and 'observation' (the last observed
    step's measurements) if any.

  Raises:
    errors.NonFiniteError: at the first non-finite loss or gradient.
  """
  total = {'loss_sum': 0.0, 'correct': 0.0, 'count': 0.0, 'steps_run': 0}
  losses = []
  step = int(trainer.optimizer.iterations.numpy())
  while total['steps_run'] < num_steps:
    left = num_steps - total['steps_run']
    k = logger.steps_to_observation(step) if logger is not None else None
    if k is not None and k <= left:
      parts = [lambda k=k: trainer.train_steps(iterator, k - 1)] if k > 1 else []
      histograms = logger.wants_histograms(step + k)
      parts.append(lambda h=histograms: trainer.observed_step(iterator, h))
    else:
      parts = [lambda: trainer.train_steps(iterator, left)]
    for call in parts:
      out = call()
      if logger is not None:
        logger.write(step + 1, out, trainer.learning_rate_at)
      for key in ('loss_sum', 'correct', 'count', 'steps_run'):
        total[key] += out[key]
      losses.append(out['losses'])
      if 'observation' in out:
        total['observation'] = out['observation']
      step += out['steps_run']
  total['losses'] = np.concatenate(losses) if losses else np.zeros([0])
  total['step'] = step
  return total


def call_length(global_step: int, steps_left: int, steps_per_loop: int,
                logger: Optional[summaries.StepLogger] = None,
                first: bool = False) -> int:
  """Steps of the next compiled call.

  Calls end on multiples of `steps_per_loop` (global steps), where the hooks
  run; a `first` call trains only (compiling the observed step too would
  delay the first numbers by a second trace).
  """
  n = min(steps_per_loop - global_step % steps_per_loop, steps_left)
  if first and logger is not None:
    k = logger.steps_to_observation(global_step)
    n = min(n, k - 1) if k and k > 1 else n
  return n


def calls(trainer: trainer_lib.Trainer, iterator, num_steps: int,
          steps_per_loop: int, logger: Optional[summaries.StepLogger] = None,
          first: bool = False) -> Iterator[Tuple[Dict[str, Any], float]]:
  """Trains `num_steps` steps in calls of `call_length` steps.

  Yields:
    (`run_steps`' output, its seconds) after each call; the caller may stop
    between calls (a signal) by leaving the loop.
  """
  done = 0
  global_step = int(trainer.optimizer.iterations.numpy())
  while done < num_steps:
    n = call_length(global_step, num_steps - done, steps_per_loop, logger,
                    first and not done)
    start = time.perf_counter()
    out = run_steps(trainer, iterator, n, logger)
    seconds = time.perf_counter() - start
    done += n
    global_step = out['step']
    yield out, seconds


def run_hooks(hooks: Sequence, exp, out: Dict[str, Any], epoch: int) -> None:
  """The 'train' event: `hook(exp, 'train', outputs)` with the call's outputs
  plus 'step' (the global step after it) and 'epoch'."""
  for hook in hooks:
    hook(exp, 'train', dict(out, step=out['step'], epoch=epoch))
