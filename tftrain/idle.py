"""Work that runs while this thread waits outside the GIL.

A run's main thread waits twice before its first step: for its in-memory
caches to fill (`experiment.CachedSplits`) and for its step function's first
call, which optimizes the graph in C++ (seconds for a 100-layer model). Python
work queued here (`IdleWork.add`), such as another function's trace, starts in
a thread at the first such wait (`IdleWork.start`) and so costs no wall time on
2 cores. The caller `wait()`s on the job before it uses what the work made; a
job that never started then runs in the caller's thread.

Work that reads variable values (`reads_variables=True`, e.g. the DepthProbe's
record of the initial weights) must be done before anything writes them: the
Trainer `settle()`s before each training call and the run before it restores a
checkpoint.
"""

import threading
from typing import Callable, List, Optional


class Job:
  """One piece of work: run in a thread once started, else in `wait()`."""

  def __init__(self, work: Callable[[], None]):
    self._work = work
    self._thread: Optional[threading.Thread] = None
    self._error: Optional[BaseException] = None
    self._lock = threading.Lock()
    self._ran_inline = False

  @property
  def pending(self) -> bool:
    """Neither started nor run yet."""
    return self._thread is None and not self._ran_inline

  def start(self) -> None:
    with self._lock:
      if self.pending:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='tftrain-idle-work')
        self._thread.start()

  def _run(self) -> None:
    try:
      self._work()
    except BaseException as e:  # pylint: disable=broad-except
      self._error = e           # raised by wait(), in the caller's thread

  def wait(self) -> None:
    """Returns once the work is done (runs it here if it has not started);
    raises its error."""
    with self._lock:
      inline = self.pending
      self._ran_inline = self._ran_inline or inline
    if inline:
      self._work()
      return
    if self._thread is not None:
      self._thread.join()
      if self._error is not None:
        raise self._error


class IdleWork:
  """The queue: `add(work)` -> `Job`; `start()` starts every queued job;
  `settle()` returns once every job that reads variables is done.

  Work must not write variables; without `reads_variables` it must not read
  their values either (it may run beside training).
  """

  def __init__(self):
    self._jobs: List[Job] = []      # not started
    self._readers: List[Job] = []   # reads_variables, not yet settled
    self._lock = threading.Lock()

  def add(self, work: Callable[[], None], reads_variables: bool = False
          ) -> Job:
    job = Job(work)
    with self._lock:
      self._jobs.append(job)
      if reads_variables:
        self._readers.append(job)
    return job

  def start(self) -> None:
    with self._lock:
      jobs, self._jobs = self._jobs, []
    for job in jobs:
      job.start()

  def settle(self) -> None:
    """Waits for (or runs) the jobs that read variables."""
    with self._lock:
      readers, self._readers = self._readers, []
    for job in readers:
      job.wait()

  def __bool__(self) -> bool:
    """Whether any job waits to start or to settle."""
    with self._lock:
      self._jobs = [j for j in self._jobs if j.pending]
      return bool(self._jobs or self._readers)
