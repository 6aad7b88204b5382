"""tf.distribute strategy from a name; CPU replicas; who is chief; a lost peer."""

import itertools
import json
import os
import re
from typing import Optional

from absl import logging
import tensorflow as tf

from tftrain import config as config_lib
from tftrain import errors

STRATEGIES = config_lib.STRATEGIES

# Errors a collective raises when another worker is gone (killed, crashed,
# unreachable): the survivor's next all-reduce fails with one of these.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError,
               tf.errors.CancelledError, tf.errors.DeadlineExceededError)


def configure_cpu_replicas(num_replicas: int) -> None:
  """Splits the CPU into `num_replicas` logical devices (MirroredStrategy on CPU).

  Must run before TensorFlow initializes its devices.

  Raises:
    ValueError: devices are already initialized.
  """
  if num_replicas <= 1:
    return
  cpu = tf.config.list_physical_devices('CPU')[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * num_replicas)
  except RuntimeError as e:
    existing = len(tf.config.list_logical_devices('CPU'))
    if existing != num_replicas:
      raise errors.ConfigError(
          'cpu_replicas', num_replicas,
          f'TensorFlow devices are already initialized with {existing} CPU '
          'device(s); set it before any TensorFlow work (first thing in the '
          'process).') from e


def create_strategy(name: str) -> tf.distribute.Strategy:
  """Strategy by name: default | one_device | mirrored | multi_worker (TF_CONFIG)."""
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'one_device':
    device = '/gpu:0' if tf.config.list_logical_devices('GPU') else '/cpu:0'
    return tf.distribute.OneDeviceStrategy(device)
  if name == 'mirrored':
    gpus = tf.config.list_logical_devices('GPU')
    devices = [d.name for d in (gpus or tf.config.list_logical_devices('CPU'))]
    return tf.distribute.MirroredStrategy(devices)
  if name == 'multi_worker':
    check_tf_config()
    # One per process: it configures the process's collectives, which can
    # happen only before TensorFlow's first op (so it is created first, by the
    # checks that run before the workdir, and reused by the run).
    global _MULTI_WORKER
    if _MULTI_WORKER is None:
      _MULTI_WORKER = tf.distribute.MultiWorkerMirroredStrategy()
    return _MULTI_WORKER
  raise errors.ConfigError('strategy', name,
                           f'choose one of {", ".join(STRATEGIES)}.')


_MULTI_WORKER = None


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True unless this is a non-chief worker of a multi-worker strategy."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == 'chief':
    return True
  cluster = resolver.cluster_spec().as_dict()
  return (resolver.task_type == 'worker' and resolver.task_id == 0
          and 'chief' not in cluster)


def task_from_tf_config():
  """(task_type, task_id, cluster dict) from $TF_CONFIG, or (None, 0, {})."""
  try:
    tf_config = json.loads(os.environ.get('TF_CONFIG') or '{}')
  except ValueError as e:
    raise errors.ConfigError(
        'strategy', 'multi_worker',
        f'$TF_CONFIG is not valid JSON ({e}); see the README\'s multi-worker '
        'example.') from None
  task = tf_config.get('task') or {}
  return task.get('type'), int(task.get('index', 0)), tf_config.get('cluster') or {}


def check_tf_config() -> None:
  """Raises a one-line ConfigError when $TF_CONFIG cannot describe this worker.

  Run before the multi-worker strategy is created (TensorFlow's own errors
  for these cases are tracebacks).
  """

  def bad(fix):
    return errors.ConfigError('strategy', 'multi_worker', fix)

  try:
    tf_config = json.loads(os.environ.get('TF_CONFIG') or '{}')
  except ValueError as e:
    raise bad(f'TF_CONFIG is not valid JSON ({e}); see the README\'s '
              'multi-worker example.') from None
  if not tf_config:
    return   # no cluster: one local worker
  if not isinstance(tf_config, dict):
    raise bad('TF_CONFIG must be a JSON object with "cluster" and "task".')
  cluster, task = tf_config.get('cluster'), tf_config.get('task')
  if not isinstance(cluster, dict) or not cluster or not all(
      isinstance(v, list) and v and all(isinstance(a, str) and ':' in a
                                        for a in v)
      for v in cluster.values()):
    raise bad('TF_CONFIG "cluster" must map job names to lists of '
              '"host:port" addresses, e.g. {"worker": ["host1:12345", '
              '"host2:12345"]}.')
  if not isinstance(task, dict) or task.get('type') not in cluster:
    raise bad(f'TF_CONFIG "task" must name a job of the cluster '
              f'({", ".join(cluster)}), e.g. {{"type": "worker", "index": 0}}.')
  index = task.get('index', 0)
  if (not isinstance(index, int) or isinstance(index, bool)
      or not 0 <= index < len(cluster[task['type']])):
    raise bad(f'TF_CONFIG task index {index!r} is not in 0..'
              f'{len(cluster[task["type"]]) - 1} for job "{task["type"]}".')


def is_chief_from_env() -> bool:
  """Chief by $TF_CONFIG alone (before the strategy exists)."""
  task_type, task_id, cluster = task_from_tf_config()
  if task_type in (None, 'chief'):
    return True
  return task_type == 'worker' and task_id == 0 and 'chief' not in cluster


def is_peer_error(error: BaseException) -> bool:
  """True for the errors a multi-worker collective raises when a peer is gone."""
  if isinstance(error, PEER_ERRORS):
    return True
  # Some TF versions report an aborted collective as an InternalError.
  return (isinstance(error, tf.errors.OpError)
          and 'collective ops is aborted' in str(error).lower())


def lost_peer_error(error: BaseException,
                    latest_checkpoint: Optional[str] = None
                    ) -> errors.WorkerLostError:
  """A one-line WorkerLostError naming the peer that `error` says is gone.

  The peer is read from the error text (a `/job:worker/.../task:N` device or a
  `host:port` of the cluster); with two workers it is simply the other one.
  """
  task_type, task_id, cluster = task_from_tf_config()
  text = str(error)
  peers = {}   # (type, index) -> address
  for job, addresses in cluster.items():
    for index, address in enumerate(addresses):
      if (job, index) != (task_type, task_id):
        peers[(job, index)] = address
  named = []
  for job, index in re.findall(r'/job:(\w+)/replica:\d+/task:(\d+)', text):
    key = (job, int(index))
    if key in peers and key not in named:
      named.append(key)
  for key, address in peers.items():
    if key not in named and address in text:
      named.append(key)
  if not named and len(peers) == 1:
    named = list(peers)
  if named:
    who = ', '.join(f'{job} {index} ({peers[(job, index)]})'
                    for job, index in named)
  else:
    who = 'another worker'
  resume = (f'from the last checkpoint ({os.path.basename(latest_checkpoint)})'
            if latest_checkpoint else 'from the start (no checkpoint yet)')
  return errors.WorkerLostError(
      f'--strategy=multi_worker: lost {who} ({type(error).__name__}); this '
      f'worker ({task_type} {task_id}) stops. Rerun the same command on all '
      f'workers to resume {resume}.')


_barrier_ids = itertools.count()


def wait_for_all_workers(strategy: tf.distribute.Strategy,
                         timeout_seconds: float = 600.0) -> None:
  """Multi-worker: returns once every worker has reached this call.

  Called at the end of a run so that the workers leave together: a worker
  that exits while the chief (which hosts TF's coordination service) still
  writes its reports is taken for a crashed task and the chief logs
  "The tasks have crashed". A failure here (a peer gone by now) is only
  logged: the run itself has completed.
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return
  from tensorflow.python.eager import context  # pylint: disable=g-import-not-at-top
  try:
    context.context().wait_at_barrier(f'tftrain_end_{next(_barrier_ids)}',
                                      int(timeout_seconds * 1000))
  except (tf.errors.OpError, AttributeError) as e:
    logging.warning('workers did not all reach the end of the run (%s)',
                    errors.first_line(e))
