"""The speed and accuracy benchmarks, one after the other, each in its own
process (`benchmarks.diagnosis`, hours in full, runs on its own).

  python -m benchmarks.run_all [--data_dir=...] [--raw_data_dir=...]

Exits non-zero when any target is missed; tables land in benchmarks/results/.
"""

import os
import subprocess
import sys
import time

BENCHMARKS = ('throughput', 'grad_logging', 'fixed_cost', 'input_pipeline',
              'time_to_accuracy')


def main():
  args = sys.argv[1:]
  failed = []
  start = time.time()
  for name in BENCHMARKS:
    t = time.time()
    code = subprocess.call([sys.executable, '-m', f'benchmarks.{name}'] + args,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    print(f'[{name}] exit {code} in {time.time() - t:.0f} s', flush=True)
    if code:
      failed.append(name)
  print(f'all benchmarks: {time.time() - start:.0f} s; '
        f'missed targets in: {", ".join(failed) or "none"}')
  sys.exit(1 if failed else 0)


if __name__ == '__main__':
  main()
