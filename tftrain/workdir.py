"""The run directory: writability check, a lock a dead process cannot hold, a full disk."""

import errno
import json
import os
import socket


class WorkdirError(RuntimeError):
  """The workdir cannot be used; the message says why and what to do."""


class DiskFullError(WorkdirError):
  """A write in the workdir failed for lack of space; the run stopped."""


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
    raise WorkdirError(f'--workdir={workdir}: cannot be created or written '
                       f'({e.strerror}); choose a writable folder.') from e


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
    self.path = os.path.join(workdir, '.lock')
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
          raise WorkdirError(
              f'--workdir={os.path.dirname(self.path)}: in use by another run '
              f'(pid {pid}); wait for it to finish or choose another --workdir.')
        if not same_host and isinstance(pid, int):
          raise WorkdirError(
              f'--workdir={os.path.dirname(self.path)}: locked by pid {pid} on '
              f'{owner.get("host")}; if that run is dead, delete {self.path}.')
        os.remove(self.path)   # stale: its owner is dead
        continue
      with os.fdopen(fd, 'w') as f:
        json.dump(me, f)
      self._held = True
      return
    raise WorkdirError(f'could not take the lock {self.path}; delete it if no '
                       'run is using the workdir.')

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
