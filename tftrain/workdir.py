"""The run directory: its file names, writability, a lock a dead process
cannot hold, a full disk, and the one JSON writer and JSON-lines appender.

Every run file goes through `tf.io.gfile`, so a workdir may be any filesystem
TensorFlow has (`gs://...`, `ram://...` in tests), not only a local folder.
The pid lock needs a local filesystem and is skipped, with a note, elsewhere.
"""

import errno
import json
import os
import socket
import time
from typing import Optional

from tftrain import errors


def gfile():
  """`tf.io.gfile`, imported on first use (launchers import this module for
  the file names before TensorFlow loads)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile

# The files and folders of a run directory.
METRICS_JSON = 'metrics.json'          # the result (also partial: diverged, interrupted)
HISTORY_JSON = 'history.json'          # epoch records, written before each checkpoint
OBSERVATIONS = 'observations.jsonl'    # per observed step (StepLogger)
ACTIVATIONS = 'activations.jsonl'      # per probe (DepthProbe)
CHECKPOINTS = 'checkpoints'            # the latest checkpoints (resume)
BEST = 'best'                          # the best epoch's weights
LR_FINDER = 'lr_finder'                # the LR finder's outputs
GRAD_NORM_HEATMAP = 'grad_norm_heatmap.png'
CONFIG_JSON = 'config.json'            # the resolved Config (dataclasses.asdict)
FLAGS_TXT = 'flags.txt'                # the Config as flags: --flagfile replays it
LOCK = '.lock'


def is_local(path: str) -> bool:
  """Whether `path` is on the local filesystem (no `scheme://` but file://)."""
  return '://' not in path or path.startswith('file://')


def write_json(path: str, obj, sort_keys: bool = False) -> None:
  """Writes `obj` as indented JSON, atomically (a reader never sees half a
  file; numpy scalars are written as floats)."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys,
                              default=float))


def write_metrics(workdir: str, result) -> None:
  """The run's result as `workdir/metrics.json` (also a partial one)."""
  write_json(os.path.join(workdir, METRICS_JSON), result, sort_keys=True)


def read_json(path: str):
  """The JSON value in `path`."""
  with gfile().GFile(path, 'r') as f:
    return json.loads(f.read())


def read_text(path: str) -> str:
  with gfile().GFile(path, 'r') as f:
    return f.read()


def write_text(path: str, text, mode: str = 'w') -> None:
  """Writes `text` (str, or bytes with mode 'wb') to `path` atomically."""
  fs = gfile()
  tmp = path + '.tmp'
  with fs.GFile(tmp, mode) as f:
    f.write(text)
  fs.rename(tmp, path, overwrite=True)


def append_jsonl(path: str, record) -> None:
  """Appends `record` as one JSON line (a line cut short by a kill is skipped
  by the readers)."""
  with gfile().GFile(path, 'a') as f:
    f.write(json.dumps(record) + '\n')


def remove_tree(path: str) -> None:
  """Deletes the folder or file `path` if it exists (errors ignored)."""
  fs = gfile()
  try:
    if fs.isdir(path):
      fs.rmtree(path)
    elif fs.exists(path):
      fs.remove(path)
  except Exception:  # pylint: disable=broad-except
    pass   # as shutil.rmtree(ignore_errors=True)


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
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  fs = tf.io.gfile
  try:
    fs.makedirs(workdir)
    probe = os.path.join(workdir, f'.write_probe.{os.getpid()}')
    with fs.GFile(probe, 'w') as f:
      f.write('ok')
    fs.remove(probe)
  except (OSError, tf.errors.OpError) as e:
    reason = getattr(e, 'strerror', None) or errors.first_line(e)
    raise errors.WorkdirError(
        f'--workdir={workdir}: cannot be created or written ({reason}); '
        'choose a writable folder.') from e


def staging_dir(final: str, tag: str = 'tmp') -> str:
  """Where to write a folder that replaces `final` whole: `final.<tag>` on a
  local filesystem (`replace_dir` then renames it, atomically), `final`
  itself elsewhere (object stores and ram:// cannot rename a folder)."""
  return f'{final}.{tag}' if is_local(final) else final


def replace_dir(staged: str, final: str) -> None:
  """Puts the folder `staging_dir` gave in place of `final`."""
  if staged != final:
    remove_tree(final)
    gfile().rename(staged, final)


def move(src: str, dst: str) -> None:
  """Moves the file or folder `src` to `dst` (file by file where folders
  cannot be renamed)."""
  fs = gfile()
  if is_local(src) or not fs.isdir(src):
    fs.rename(src, dst)
    return
  for root, _, files in fs.walk(src):
    target = os.path.join(dst, os.path.relpath(root, src))
    fs.makedirs(target)
    for name in files:
      fs.rename(os.path.join(root, name), os.path.join(target, name))
  remove_tree(src)


def move_aside(workdir: str) -> Optional[str]:
  """Moves everything in `workdir` but the lock to `<workdir>.old-<time>`.

  Returns:
    The folder the old run is now in (None: `workdir` held nothing).
  """
  fs = gfile()
  entries = [e.rstrip('/') for e in fs.listdir(workdir)]
  entries = [e for e in entries if e != LOCK]
  if not entries:
    return None
  base = f'{workdir.rstrip("/")}.old-{time.strftime("%Y%m%d-%H%M%S")}'
  dest, n = base, 1
  while fs.exists(dest):
    n += 1
    dest = f'{base}-{n}'
  fs.makedirs(dest)
  for entry in entries:
    move(os.path.join(workdir, entry), os.path.join(dest, entry))
  return dest


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """`workdir/.lock` holding the owner's pid; stale locks (dead pid) are taken over.

  Only on a local filesystem: an object store (`gs://`) has no exclusive
  create, so there the lock is skipped with a logged note (one run per
  workdir is then up to you).
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK)
    self._held = False
    self.skipped = not is_local(workdir)

  def acquire(self) -> None:
    if self.skipped:
      from absl import logging  # pylint: disable=g-import-not-at-top
      logging.warning('--workdir=%s: not a local filesystem, so no pid lock '
                      'guards it; make sure no other run uses it.',
                      os.path.dirname(self.path))
      return
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
