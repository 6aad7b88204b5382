"""A fork server for the tests' launcher processes (`python -m launch.x`).

Importing TensorFlow costs 3-10 s of CPU per process on the 2-core machines
here (AMD EPYC: 9 s), and the tests start about 80 launcher processes. The
server imports TensorFlow, TFDS and tftrain once, then forks one child per
request. The child is a fresh process as far as the launcher can tell: its
own pid (signals and SIGKILL reach it), argv, environment, working
directory, stdin from /dev/null, stdout and stderr to the pipes the test
gave, and `python -m`'s `__main__` through `runpy`; its exit status is the
launcher's. No TensorFlow op runs in the server before a fork (importing
creates no runtime thread), so every child starts TensorFlow's runtime
itself: logical CPU devices, strategies and multi-worker servers included.

A test that sets a variable TensorFlow reads when it is imported, or checks
what a module imports, keeps a real subprocess.

Protocol, over a SOCK_SEQPACKET socket (file descriptor given as the
argument): a request is one message {id, argv, env, cwd, sigint_default}
carrying two file descriptors (the child's stdout and stderr); argv is what
follows `python` (['-m', module, ...] or ['-c', code, ...]). Replies:
{id, pid} once forked, {id, returncode} once it ended.
"""

import atexit
import importlib
import json
import os
import runpy
import select
import signal
import socket
import sys
import traceback

PRELOAD = ('tensorflow', 'tensorflow_datasets', 'matplotlib',
           'tftrain.loop', 'absl.app', 'absl.flags')


def _child(request, out_fd: int, err_fd: int) -> int:
  """Runs the request's `python` argv in this (forked) process."""
  devnull = os.open(os.devnull, os.O_RDONLY)
  os.dup2(devnull, 0)
  os.dup2(out_fd, 1)
  os.dup2(err_fd, 2)
  for fd in (devnull, out_fd, err_fd):
    os.close(fd)
  if request.get('sigint_default'):
    signal.signal(signal.SIGINT, signal.SIG_DFL)
  os.chdir(request['cwd'])
  os.environ.clear()
  os.environ.update(request['env'])
  flag, target, *args = request['argv']
  try:
    if flag == '-m':
      sys.argv = [target, *args]      # runpy sets argv[0] to the file
      runpy.run_module(target, run_name='__main__', alter_sys=True)
    elif flag == '-c':
      sys.argv = ['-c', *args]
      exec(compile(target, '<string>', 'exec'), {'__name__': '__main__'})  # pylint: disable=exec-used
    else:
      raise ValueError(f'forkserver: unsupported argv {request["argv"]}')
    return 0
  except SystemExit as e:
    if e.code is None or isinstance(e.code, int):
      return e.code or 0
    print(e.code, file=sys.stderr)
    return 1
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    return 1


def _fork(sock: socket.socket, request, fds) -> int:
  """Forks the child of `request`; returns its pid (in the server)."""
  sys.stdout.flush()
  sys.stderr.flush()
  pid = os.fork()
  if pid == 0:
    sock.close()
    code = _child(request, *fds)
    try:
      atexit._run_exitfuncs()  # pylint: disable=protected-access
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(code if 0 <= code < 256 else 1)
  for fd in fds:
    os.close(fd)
  return pid


def serve(sock: socket.socket) -> None:
  """Forks a child per request on `sock`, replies there; ends at EOF."""
  for name in PRELOAD:
    importlib.import_module(name)
  children = {}
  while True:
    ready, _, _ = select.select([sock], [], [], 0.02 if children else None)
    if ready:
      message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 2)
      if not message:              # the tests are done: so are the children
        for pid in children:
          os.kill(pid, signal.SIGKILL)
        return
      request = json.loads(message)
      pid = _fork(sock, request, fds)
      children[pid] = request['id']
      sock.send(json.dumps({'id': request['id'], 'pid': pid}).encode())
    while children:
      pid, status = os.waitpid(-1, os.WNOHANG)
      if pid == 0:
        break
      sock.send(json.dumps({'id': children.pop(pid), 'returncode':
                            os.waitstatus_to_exitcode(status)}).encode())


if __name__ == '__main__':
  serve(socket.socket(fileno=int(sys.argv[1])))
