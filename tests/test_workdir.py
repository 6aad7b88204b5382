"""tftrain.workdir: writability check and a lock that a dead process cannot hold."""

import json
import os
import socket
import subprocess

import pytest

from tftrain import errors
from tftrain import workdir as workdir_lib


def write_lock(workdir, pid, host=None):
  with open(os.path.join(workdir, '.lock'), 'w') as f:
    json.dump({'pid': pid, 'host': host or socket.gethostname()}, f)


@pytest.fixture
def live_pid():
  """The pid of a live process other than this one."""
  proc = subprocess.Popen(['sleep', '60'])
  yield proc.pid
  proc.kill()
  proc.wait()


@pytest.fixture
def dead_pid():
  proc = subprocess.Popen(['true'])
  proc.wait()
  return proc.pid


def test_ensure_writable_creates_nested_folders_and_leaves_no_probe(tmp_path):
  workdir = str(tmp_path / 'a' / 'b')
  workdir_lib.ensure_writable(workdir)
  assert os.path.isdir(workdir) and os.listdir(workdir) == []


def test_ensure_writable_keeps_existing_files(tmp_path):
  (tmp_path / 'metrics.json').write_text('{"status": "completed"}')
  workdir_lib.ensure_writable(str(tmp_path))
  assert (tmp_path / 'metrics.json').read_text() == '{"status": "completed"}'


def test_workdir_under_a_file_is_a_one_line_error(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(errors.WorkdirError) as e:
    workdir_lib.ensure_writable(str(blocker / 'run'))
  message = str(e.value)
  assert message.startswith(f'--workdir={blocker}/run: cannot be created')
  assert 'choose a writable folder' in message and '\n' not in message


def test_lock_writes_owner_and_release_removes_it(tmp_path):
  lock = workdir_lib.WorkdirLock(str(tmp_path))
  with lock:
    owner = json.loads((tmp_path / '.lock').read_text())
    assert owner == {'pid': os.getpid(), 'host': socket.gethostname()}
  assert not (tmp_path / '.lock').exists()


def test_second_lock_is_refused_while_the_owner_lives(tmp_path, live_pid):
  write_lock(str(tmp_path), live_pid)
  with pytest.raises(errors.WorkdirError) as e:
    workdir_lib.WorkdirLock(str(tmp_path)).acquire()
  assert f'in use by another run (pid {live_pid})' in str(e.value)
  assert f'--workdir={tmp_path}' in str(e.value)
  # The refused run leaves the owner's lock alone.
  assert json.loads((tmp_path / '.lock').read_text())['pid'] == live_pid


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, dead_pid):
  write_lock(str(tmp_path), dead_pid)
  with workdir_lib.WorkdirLock(str(tmp_path)):
    assert json.loads((tmp_path / '.lock').read_text())['pid'] == os.getpid()
  assert not (tmp_path / '.lock').exists()


@pytest.mark.parametrize('content', ['', '{not json', '{"host": "x"}'])
def test_unreadable_lock_is_taken_over(tmp_path, content):
  (tmp_path / '.lock').write_text(content)
  with workdir_lib.WorkdirLock(str(tmp_path)):
    assert json.loads((tmp_path / '.lock').read_text())['pid'] == os.getpid()


def test_lock_from_another_host_is_not_taken_over(tmp_path, dead_pid):
  write_lock(str(tmp_path), dead_pid, host='elsewhere.example')
  with pytest.raises(errors.WorkdirError, match='on elsewhere.example'):
    workdir_lib.WorkdirLock(str(tmp_path)).acquire()
  assert (tmp_path / '.lock').exists()


def test_release_never_removes_a_lock_another_process_now_holds(
    tmp_path, live_pid):
  first = workdir_lib.WorkdirLock(str(tmp_path))
  first.acquire()
  # Meanwhile another live process took the lock over (e.g. ours looked stale).
  write_lock(str(tmp_path), live_pid)
  first.release()
  assert json.loads((tmp_path / '.lock').read_text())['pid'] == live_pid
  with pytest.raises(errors.WorkdirError):
    workdir_lib.WorkdirLock(str(tmp_path)).acquire()
