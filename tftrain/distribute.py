"""tf.distribute strategy from a name; CPU replicas; who is chief."""

import json
import os

import tensorflow as tf

STRATEGIES = ('default', 'one_device', 'mirrored', 'multi_worker')


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
      raise ValueError(
          f'--cpu_replicas={num_replicas}: TensorFlow devices are already '
          f'initialized with {existing} CPU device(s); set it before any '
          'TensorFlow work (first thing in the process).') from e


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
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f'--strategy={name}: choose one of {", ".join(STRATEGIES)}.')


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
    raise ValueError(f'TF_CONFIG is not valid JSON ({e}); see the README\'s '
                     'multi-worker example.') from None
  task = tf_config.get('task') or {}
  return task.get('type'), int(task.get('index', 0)), tf_config.get('cluster') or {}


def is_chief_from_env() -> bool:
  """Chief by $TF_CONFIG alone (before the strategy exists)."""
  task_type, task_id, cluster = task_from_tf_config()
  if task_type in (None, 'chief'):
    return True
  return task_type == 'worker' and task_id == 0 and 'chief' not in cluster
