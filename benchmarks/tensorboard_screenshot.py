"""A real browser's view of a run's TensorBoard: headless Chromium screenshots.

Starts `tensorboard --logdir=LOGDIR` on a free local port, opens the
Custom Scalars tab (tftrain's layout: one multiline chart per quantity with
every layer in depth order, epoch metrics first) and the Time Series tab in
headless Chromium, and saves a PNG of each. Exits non-zero when TensorBoard
does not come up or a screenshot is missing or blank.

  sudo apt-get install chromium          # Debian's package: /usr/bin/chromium
  python -m benchmarks.tensorboard_screenshot --logdir=runs/deep/sigmoid \
      --out=benchmarks/results/tensorboard
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string('logdir', None, 'A run directory (or a folder of runs).')
flags.DEFINE_string('out', os.path.join(os.path.dirname(__file__), 'results',
                                        'tensorboard'),
                    'Folder for the PNGs.')
flags.DEFINE_string('browser', None, 'Chromium binary (default: found on PATH).')
flags.DEFINE_integer('wait_ms', 25000, 'Virtual time the page gets to render.')

TABS = {'custom_scalars': '#custom_scalars', 'time_series': '#timeseries'}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def wait_for(url: str, seconds: float = 90) -> bool:
  deadline = time.time() + seconds
  while time.time() < deadline:
    try:
      with urllib.request.urlopen(url, timeout=5) as r:
        if r.status == 200:
          return True
    except OSError:
      time.sleep(1)
  return False


def blank(path: str) -> bool:
  """True when the PNG has (nearly) one colour: nothing rendered."""
  import matplotlib.image as mpimg  # pylint: disable=g-import-not-at-top
  pixels = mpimg.imread(path)[..., :3].reshape(-1, 3)
  return float(pixels.std(axis=0).max()) < 0.01


def main(argv):
  del argv
  browser = FLAGS.browser or next(
      (b for b in ('chromium', 'chromium-browser', 'google-chrome')
       if shutil.which(b)), None)
  if browser is None:
    sys.exit('no Chromium found: sudo apt-get install chromium, or pass '
             '--browser=PATH')
  os.makedirs(FLAGS.out, exist_ok=True)
  port = free_port()
  board = subprocess.Popen(
      [sys.executable, '-m', 'tensorboard.main', f'--logdir={FLAGS.logdir}',
       f'--port={port}', '--host=127.0.0.1'],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ok = True
  try:
    base = f'http://127.0.0.1:{port}/'
    if not wait_for(base):
      sys.exit(f'tensorboard did not answer on {base}')
    for name, fragment in TABS.items():
      path = os.path.abspath(os.path.join(FLAGS.out, f'{name}.png'))
      subprocess.run(
          [browser, '--headless', '--no-sandbox', '--disable-gpu',
           '--hide-scrollbars', '--window-size=1600,1400',
           f'--virtual-time-budget={FLAGS.wait_ms}', f'--screenshot={path}',
           base + fragment], check=False, capture_output=True, timeout=180)
      good = os.path.exists(path) and not blank(path)
      ok &= good
      print(f'{name}: {path} ({"ok" if good else "MISSING OR BLANK"})')
  finally:
    board.terminate()
    board.wait(timeout=30)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  flags.mark_flag_as_required('logdir')
  app.run(main)
