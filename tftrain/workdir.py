"""The run directory: its file names, writability, a lock a dead process
cannot hold, a full disk, and the one JSON writer and JSON-lines appender."""

import errno
import json
import os
import socket

from tftrain import errors

# The files and folders of a run directory.
METRICS_JSON = 'metrics.json'          # the result (also partial: diverged, interrupted)
HISTORY_JSON = 'history.json'          # epoch records, written before each checkpoint
OBSERVATIONS = 'observations.jsonl'    # per observed step (StepLogger)
ACTIVATIONS = 'activations.jsonl'      # per probe (DepthProbe)
CHECKPOINTS = 'checkpoints'            # the latest checkpoints (resume)
BEST = 'best'                          # the best epoch's weights
LR_FINDER = 'lr_finder'                # the LR finder's outputs
GRAD_NORM_HEATMAP = 'grad_norm_heatmap.png'
LOCK = '.lock'


def write_json(path: str, obj, sort_keys: bool = False) -> None:
  """Writes `obj` as indented JSON, atomically (a reader never sees half a
  file; numpy scalars are written as floats)."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=sort_keys, default=float)
  os.replace(tmp, path)


def append_jsonl(path: str, record) -> None:
  """Appends `record` as one JSON line (a line cut short by a kill is skipped
  by the readers)."""
  with open(path, 'a') as f:
    f.write(json.dumps(record) + '\n')


_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ('no space left', 'disk quota exceeded', 'quota exceeded')


def is_disk_full(error: BaseException) -> bool:
  """True when `error` says the filesystem is full (or over quota).

  Python raises OSError(ENOSPC/EDQUOT); TensorFlow's file system maps both to
  RESOURCE_EXHAUSTED and keeps the OS message.
  """
  if isinstance(error, OSError) and error.errno in _NO_SPACE_ERRNOS:
    return True
  text = str(error).lower()
  return any(t in text for t in _NO_SPACE_TEXT)


def ensure_writable(workdir: str) -> None:
  """Creates `workdir` if needed and checks that files can be written in it."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_probe.{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise errors.WorkdirError(
        f'--workdir={workdir}: cannot be created or written ({e.strerror}); '
        'choose a writable folder.') from e


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """`workdir/.lock` holding the owner's pid; stale locks (dead pid) are taken over."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK)
    self._held = False

  def acquire(self) -> None:
    me = {'pid': os.getpid(), 'host': socket.gethostname()}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        try:
          with open(self.path) as f:
            owner = json.load(f)
        except (OSError, ValueError):
          owner = {}
        pid = owner.get('pid')
        same_host = owner.get('host', me['host']) == me['host']
        if isinstance(pid, int) and same_host and _pid_alive(pid) and pid != me['pid']:
          raise errors.WorkdirError(
              f'--workdir={os.path.dirname(self.path)}: in use by another run '
              f'(pid {pid}); wait for it to finish or choose another --workdir.')
        if not same_host and isinstance(pid, int):
          raise errors.WorkdirError(
              f'--workdir={os.path.dirname(self.path)}: locked by pid {pid} on '
              f'{owner.get("host")}; if that run is dead, delete {self.path}.')
        os.remove(self.path)   # stale: its owner is dead
        continue
      with os.fdopen(fd, 'w') as f:
        json.dump(me, f)
      self._held = True
      return
    raise errors.WorkdirError(f'could not take the lock {self.path}; delete it '
                              'if no run is using the workdir.')

  def release(self) -> None:
    """Removes the lock file if it is still this process's."""
    if self._held:
      try:
        with open(self.path) as f:
          if json.load(f).get('pid') == os.getpid():
            os.remove(self.path)
      except (OSError, ValueError):
        pass
      self._held = False

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
