"""Diagnosis benchmark: broken training runs, their healthy twins, and scores.

  python -m benchmarks.diagnosis            # the whole suite (24 min on a 2-core Intel Xeon)
  python -m benchmarks.diagnosis --quick    # a few cases (the slow test)
  python -m benchmarks.diagnosis --only=mlp/softmax_output,mlp/unscaled
  python -m benchmarks.diagnosis --repair   # also repair each broken case

Every case goes through the public API (`train_and_evaluate` with `model=` and
`datasets=`): a base model (MNIST MLP, 20-layer CIFAR-10 net with and without
batch norm, the CNN, a deep MLP) with one fault operator applied. The healthy
twins are the bases trained correctly, over 3 seeds.

Ground truth comes from the outcome, not from the report: a case is broken
when it ends non-finite, at chance, or at least 5 points below its twin's
mean test accuracy. A case whose operator did not hurt is listed apart, and a
finding on it is not counted as a miss or a false alarm.

Scores: detection recall (broken cases with any finding), false alarms
(healthy twin runs with any warning or error), symptom precision (findings
whose kind fits the fault, out of all findings on broken cases) and the step
of the first finding (the live checks log it while training). Writes
benchmarks/results/diagnosis.md|json and exits 1 when a target is missed.

`--repair` then repairs every broken case (`tftrain.repair.repair` on its run
directory: its errors, or its warnings when it has no error; with --rescore
the findings of the saved run judged again) and scores it (`repair_scores`):
the repair rate (broken cases whose repaired run reaches the same-seed
healthy twin's test accuracy minus 1 point, with the original's final
budget; the rate against the twin seeds' mean is printed beside it), the
same rate for
a random-remedy baseline (as many candidates as the repair tried, drawn at
random from every remedy that applies to the case's model, through the same
short trials and final run: the same compute) and the compute of each as a
multiple of the original budget. Writes
benchmarks/results/diagnosis_repair.md|json.
"""

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
import zlib
from typing import Any, Callable, Dict, Optional

from absl import app
from absl import logging
from absl import flags
import numpy as np
import tensorflow as tf

from benchmarks import common
from tftrain import checkup
from tftrain import config as config_lib
from tftrain import data
from tftrain import errors
from tftrain import health as health_lib
from tftrain import loop
from tftrain import models
from tftrain import repair as repair_lib
from tftrain import workdir as workdir_lib

FLAGS = flags.FLAGS


def define_flags():
  """The benchmark's flags (defined only when it runs: launch.flags, imported
  beside it in one process, defines --workdir too)."""
  flags.DEFINE_bool('quick', False, 'A few MNIST MLP cases and one twin seed.')
  flags.DEFINE_list('only', [], 'Run only these cases (base/operator).')
  flags.DEFINE_integer('seeds', 3, 'Seeds per healthy twin.')
  flags.DEFINE_string('workdir', None, 'Where the runs go (default: a temp dir).')
  flags.DEFINE_bool('rescore', False, 'Train nothing: judge the runs already in '
                    '--workdir again with the current detectors (their saved '
                    'records; the live first-finding step is the saved one).')
  flags.DEFINE_bool('repair', False, 'Also repair every broken case and score '
                    'the repairs against a random-remedy baseline.')


SIZES = {'mnist': (8000, 2000, 2000), 'cifar10': (10000, 2000, 2000)}
COMMON = dict(progress=False, trace_graph=False, export=False, patience=0,
              schedule='constant', validation_size=0)

# The bases: a config each, trained correctly.
BASES = {
    'mlp': dict(dataset='mnist', model='mlp', activation='relu',
                optimizer='sgd', learning_rate=0.1, batch_size=32, epochs=3),
    'deep': dict(dataset='mnist', model='deep_mlp', depth=30, width=100,
                 activation='relu', optimizer='nadam', learning_rate=1e-3,
                 batch_size=64, epochs=3),
    'cifar_bn': dict(dataset='cifar10', model='deep_mlp', depth=20, width=100,
                     activation='elu', kernel_initializer='he_normal',
                     batch_norm='before', optimizer='nadam',
                     learning_rate=5e-4, batch_size=32, epochs=3),
    'cifar_nobn': dict(dataset='cifar10', model='deep_mlp', depth=20,
                       width=100, activation='elu',
                       kernel_initializer='he_normal', optimizer='nadam',
                       learning_rate=5e-4, batch_size=32, epochs=3),
    'cnn': dict(dataset='cifar10', model='cnn', optimizer='nadam',
                learning_rate=2e-3, batch_size=64, epochs=3),
}
STANDARDIZED = ('cifar_bn', 'cifar_nobn', 'cnn')   # inputs: mean 0, std 1


@dataclasses.dataclass
class Fault:
  """A fault operator: config changes, a model change, a data change."""
  kinds: tuple                      # finding kinds that fit the fault
  config: Optional[Callable[[Dict], Dict]] = None
  model: Optional[Callable[[tf.keras.Model], tf.keras.Model]] = None
  data: Optional[Callable[[Dict[str, Any], int], Dict[str, Any]]] = None


def _clone(model, change):
  """`model` rebuilt with `change(layer_class, config) -> config` per layer."""
  def clone(layer):
    cfg = change(type(layer), layer.get_config())
    return type(layer).from_config(cfg)
  return tf.keras.models.clone_model(model, clone_function=clone)


def _kernels(initializer):
  def change(cls, cfg):
    if 'kernel_initializer' in cfg:
      cfg['kernel_initializer'] = tf.keras.initializers.serialize(
          tf.keras.initializers.get(initializer))
    return cfg
  return lambda m: _clone(m, change)


def _linear(m):
  def change(cls, cfg):
    if issubclass(cls, tf.keras.layers.Activation):
      cfg['activation'] = 'linear'
    return cfg
  return _clone(m, change)


def _softmax_output(m):
  def change(cls, cfg):
    if cfg.get('name') == 'logits':
      cfg['activation'] = 'softmax'
    return cfg
  return _clone(m, change)


def _activation(name):
  def apply(m):
    def change(cls, cfg):
      if issubclass(cls, tf.keras.layers.Activation):
        cfg['activation'] = name
      if 'kernel_initializer' in cfg and cfg.get('name') != 'logits':
        cfg['kernel_initializer'] = 'glorot_uniform'
      return cfg
    return _clone(m, change)
  return apply


def _frozen(hidden_only):
  def apply(m):
    for layer in m.layers:
      if not (hidden_only and layer.name == 'logits'):
        layer.trainable = False
    return m
  return apply


def _unscaled(arrays, seed):
  del seed
  return {k: (x * 255.0, y) for k, (x, y) in arrays.items()}


def _shuffled(arrays, seed):
  x, y = arrays['train']
  rng = np.random.default_rng(seed)
  return {**arrays, 'train': (x, rng.permutation(y))}


def _noisy(arrays, seed, fraction=0.5):
  x, y = arrays['train']
  rng = np.random.default_rng(seed)
  noisy = y.copy()
  flip = rng.random(len(y)) < fraction
  noisy[flip] = rng.integers(0, 10, flip.sum())
  return {**arrays, 'train': (x, noisy)}


def _set(**changes):
  return lambda c: {**c, **changes}


def _scale_lr(factor):
  return lambda c: {**c, 'learning_rate': c['learning_rate'] * factor}


LR_HIGH = ('lr_too_high', 'diverged', 'exploding_gradients', 'dead_units',
           'chance_accuracy', 'oscillating_loss', 'saturated_units')
LR_LOW = ('lr_too_low', 'slow_convergence', 'under_training',
          'chance_accuracy', 'lr_far_from_finder')
BAD_INIT = ('symmetric_units', 'dead_units', 'vanishing_gradients',
            'exploding_gradients', 'saturated_units', 'chance_accuracy',
            'diverged', 'lr_too_high', 'model_not_training', 'slow_convergence',
            'oscillating_loss')
SATURATING = ('vanishing_gradients', 'saturated_units', 'chance_accuracy',
              'lr_too_low', 'slow_convergence', 'under_training')
LABELS = ('labels_unlearnable', 'chance_accuracy', 'overfitting',
          'label_noise')
FAULTS = {
    'lr_x100': Fault(LR_HIGH, config=_scale_lr(100.0)),
    'lr_div100': Fault(LR_LOW, config=_scale_lr(0.01)),
    'init_zeros': Fault(BAD_INIT, model=_kernels('zeros')),
    'init_ones': Fault(BAD_INIT, model=_kernels('ones')),
    'init_large': Fault(BAD_INIT, model=_kernels(
        tf.keras.initializers.RandomNormal(stddev=3.0))),
    'sigmoid': Fault(SATURATING, model=_activation('sigmoid')),
    'tanh': Fault(SATURATING, model=_activation('tanh')),
    'hard_sigmoid': Fault(SATURATING, model=_activation('hard_sigmoid')),
    'linear': Fault(('linear_stack', 'slow_convergence', 'under_training'),
                    model=_linear),
    'softmax_output': Fault(('probabilities_as_logits',), model=_softmax_output),
    'unscaled': Fault(('unscaled_inputs', 'lr_too_high', 'diverged',
                       'exploding_gradients', 'dead_units', 'saturated_units',
                       'chance_accuracy', 'oscillating_loss'), data=_unscaled),
    'labels_shuffled': Fault(LABELS, data=_shuffled),
    'labels_noise50': Fault(LABELS, data=_noisy),
    'frozen': Fault(('model_not_training', 'frozen_layers',
                     'chance_accuracy'),
                    model=_frozen(False)),
    'frozen_hidden': Fault(('model_not_training', 'frozen_layers',
                            'under_training',
                            'slow_convergence'), model=_frozen(True)),
    'batch_1': Fault(LR_HIGH + ('under_training',), config=_set(batch_size=1)),
    'batch_full': Fault(('too_few_steps', 'under_training', 'lr_too_low',
                         'slow_convergence', 'chance_accuracy'),
                        config=lambda c: {**c, 'batch_size': SIZES[
                            c['dataset']][0]}),
    'dropout_0.9': Fault(('too_much_regularization', 'under_training',
                          'chance_accuracy', 'slow_convergence'),
                         config=_set(dropout=0.9, dropout_placement='every')),
    'adam_kills_relu': Fault(('dead_units', 'lr_too_high', 'chance_accuracy',
                              'diverged', 'exploding_gradients',
                              'oscillating_loss'),
                             config=_set(optimizer='adam', learning_rate=0.05)),
}
CASES = {
    'mlp': ['lr_x100', 'lr_div100', 'init_zeros', 'init_ones', 'init_large',
            'linear', 'softmax_output', 'unscaled', 'labels_shuffled',
            'labels_noise50', 'frozen', 'frozen_hidden', 'batch_1',
            'batch_full', 'dropout_0.9', 'adam_kills_relu'],
    'deep': ['sigmoid', 'tanh', 'hard_sigmoid', 'lr_x100', 'init_large',
             'softmax_output', 'unscaled'],
    'cifar_bn': ['lr_x100', 'lr_div100', 'init_zeros', 'softmax_output',
                 'unscaled', 'labels_shuffled', 'frozen_hidden'],
    'cifar_nobn': ['sigmoid', 'lr_x100', 'lr_div100', 'init_large',
                   'softmax_output', 'unscaled', 'labels_noise50'],
    'cnn': ['lr_x100', 'lr_div100', 'init_zeros', 'linear', 'softmax_output',
            'unscaled', 'labels_shuffled'],
}
QUICK = ['mlp/softmax_output', 'mlp/lr_x100', 'mlp/unscaled',
         'mlp/labels_shuffled', 'mlp/frozen', 'mlp/init_zeros']


def load_arrays(dataset: str) -> Dict[str, Any]:
  """Train/validation/test subsets as numpy in [0, 1], as TFDS gives them."""
  data_dir = data.prepare(dataset, None, None)
  splits, _ = data.load_splits(dataset, data_dir, validation_size=5000)
  n = dict(zip(('train', 'validation', 'test'), SIZES[dataset]))
  out = {}
  for split, size in n.items():
    x, y = next(iter(splits[split].batch(size).take(1)))
    out[split] = (x.numpy(), y.numpy())
  return out


def standardized(arrays):
  """Per-channel standardization by the train subset's mean and std."""
  x = arrays['train'][0]
  axes = tuple(range(x.ndim - 1))
  mean, std = x.mean(axes), x.std(axes)
  return {k: ((v - mean) / std, y) for k, (v, y) in arrays.items()}


def to_datasets(arrays):
  return {k: tf.data.Dataset.from_tensor_slices(v) for k, v in arrays.items()}


def run_case(base: str, fault: Optional[str], seed: int, arrays, root: str,
             rescore: bool = False) -> Dict[str, Any]:
  """One training run through the public API; its outcome and findings."""
  cfg = {**COMMON, **BASES[base], 'seed': seed}
  op = FAULTS[fault] if fault else Fault(())
  if op.config:
    cfg = op.config(cfg)
  if op.data:
    arrays = op.data(arrays, seed)
  elif base in STANDARDIZED:
    arrays = standardized(arrays)
  config = config_lib.Config(**cfg)

  def build(shape, classes):
    m = models.build_model(config, shape, classes)
    return op.model(m) if op.model else m
  name = f'{base}-{fault or "healthy"}-{seed}'
  if rescore:
    return rescore_saved(root, name)
  start = time.perf_counter()
  try:
    result = loop.train_and_evaluate(
        config, os.path.join(root, name), model=build,
        datasets=to_datasets(arrays), num_classes=10)
  except errors.NonFiniteError:      # the run wrote its report
    report = os.path.join(root, name, health_lib.HEALTH_JSON)
    with open(report) as f:
      findings = json.load(f)['findings']
    return {'case': name, 'seconds': time.perf_counter() - start,
            'findings': [f['kind'] for f in findings],
            'first_finding_step': min(
                (f['steps'][0] for f in findings if f['steps']), default=None),
            'test_accuracy': math.nan, 'finite': False}
  except Exception as e:  # pylint: disable=broad-except
    return {'case': name, 'error': f'{type(e).__name__}: {e}'[:200],
            'seconds': time.perf_counter() - start, 'findings': [],
            'test_accuracy': math.nan, 'finite': False}
  health = result.get('health', {})
  acc = result.get('test_accuracy', math.nan)
  return {'case': name, 'test_accuracy': acc,
          'finite': result.get('status') != 'diverged' and math.isfinite(
              result.get('test_loss', math.nan)),
          'findings': health.get('findings', []),
          'first_finding_step': health.get('first_finding_step'),
          'seconds': time.perf_counter() - start}


def rescore_saved(root: str, name: str) -> Dict[str, Any]:
  """A saved run's outcome, judged again from its records."""
  workdir = os.path.join(root, name)
  with open(os.path.join(workdir, workdir_lib.METRICS_JSON)) as f:
    result = json.load(f)
  findings = health_lib.analyze(checkup.record_from_files(workdir, 10))
  saved = result.get('health', {})
  acc = result.get('test_accuracy', math.nan)
  return {'case': name, 'test_accuracy': acc,
          'finite': result.get('status') != 'diverged' and math.isfinite(
              result.get('test_loss', math.nan)),
          'findings': [f.kind for f in findings],
          'first_finding_step': saved.get('first_finding_step', min(
              (f.steps[0] for f in findings if f.steps), default=None)),
          'seconds': result.get('wall_seconds', math.nan)}


def _step(outcome):
  step = outcome.get('first_finding_step')
  return '' if step is None else step


def verdict(outcome, twin_acc: float) -> str:
  chance_limit = 0.15      # health's chance threshold for 10 classes
  acc = outcome['test_accuracy']
  if not outcome['finite'] or not math.isfinite(acc):
    return 'broken (non-finite)'
  if acc <= chance_limit:
    return 'broken (chance)'
  if acc <= twin_acc - 0.05:
    return 'broken (-%.0f pts)' % (100 * (twin_acc - acc))
  return 'not hurt'


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  root = FLAGS.workdir or tempfile.mkdtemp(prefix='diagnosis-')
  cases = [f'{b}/{f}' for b, ops in CASES.items() for f in ops]
  seeds = FLAGS.seeds
  if FLAGS.quick:
    cases, seeds = QUICK, 1
  if FLAGS.only:
    unknown = [c for c in FLAGS.only if c not in cases]
    if unknown:
      sys.exit(f'--only: unknown cases {unknown}; known: {", ".join(cases)}')
    cases = FLAGS.only
  bases = sorted({c.split('/')[0] for c in cases}, key=list(BASES).index)
  started = time.perf_counter()
  arrays = {}
  rows, twins = [], {}
  for base in bases:
    dataset = BASES[base]['dataset']
    key = dataset
    if key not in arrays:
      arrays[key] = load_arrays(dataset)
    runs = [run_case(base, None, s, arrays[key], root, FLAGS.rescore)
            for s in range(seeds)]
    twins[base] = runs
    accs = [r['test_accuracy'] for r in runs]
    for r in runs:
      rows.append({'case': r['case'], 'fault': '-',
                   'test_acc': r['test_accuracy'], 'verdict': 'healthy twin',
                   'findings': ', '.join(r['findings']) or 'none',
                   'first_step': _step(r),
                   'seconds': r['seconds']})
    twin_acc = float(np.nanmean(accs))
    for case in [c for c in cases if c.startswith(base + '/')]:
      fault = case.split('/')[1]
      out = run_case(base, fault, 0, arrays[key], root, FLAGS.rescore)
      v = verdict(out, twin_acc)
      fits = [k for k in out['findings'] if k in FAULTS[fault].kinds]
      rows.append({'case': out['case'], 'fault': fault,
                   'test_acc': out['test_accuracy'], 'verdict': v,
                   'findings': ', '.join(out['findings']) or 'none',
                   'first_step': _step(out),
                   'seconds': out['seconds'], '_fits': len(fits),
                   '_n': len(out['findings']),
                   '_error': out.get('error', '')})
      print(rows[-1], flush=True)
  broken = [r for r in rows if r['verdict'].startswith('broken')]
  healthy = [r for r in rows if r['verdict'] == 'healthy twin']
  detected = [r for r in broken if r['_n']]
  alarms = [r for r in healthy if r['findings'] != 'none']
  findings = sum(r['_n'] for r in broken)
  fitting = sum(r['_fits'] for r in broken)
  first = [r['first_step'] for r in detected if r['first_step'] != '']
  recall = len(detected) / max(len(broken), 1)
  false_alarm = len(alarms) / max(len(healthy), 1)
  precision = fitting / max(findings, 1)
  for r in rows:
    if r.get('_error'):
      print(f'{r["case"]}: {r["_error"]}')
  table = [{k: v for k, v in r.items() if not k.startswith('_')}
           for r in rows]
  targets = [
      common.target(f'detection recall ({len(detected)}/{len(broken)} broken)',
                    recall, '>=', 0.90),
      common.target(f'false alarms ({len(alarms)}/{len(healthy)} healthy)',
                    false_alarm, '<=', 0.05),
      common.target(f'symptom precision ({fitting}/{findings} findings)',
                    precision, '>=', 0.80)]
  if first:
    print(f'steps to the first finding on detected broken cases: median '
          f'{np.median(first):.0f}, max {max(first)}')
  print(f'suite wall time: {time.perf_counter() - started:.0f} s '
        f'({len(rows)} runs{", judged again" if FLAGS.rescore else ""})')
  ok = common.report(
      'diagnosis' + ('_quick' if FLAGS.quick else ''),
      'Diagnosis benchmark: broken runs and healthy twins', table,
      ['case', 'fault', 'test_acc', 'verdict', 'findings', 'first_step',
       'seconds'], targets)
  if FLAGS.repair:
    ok = repair_scores(rows, twins, arrays, root, FLAGS.rescore) and ok
  sys.exit(0 if ok else 1)


# --------------------------------------------------------------- repair --

REPAIR_RATE = 0.80        # config/model-level broken cases repaired
RANDOM_MARGIN = 0.20      # repair rate above the random baseline's, at least
MAX_COMPUTE = 3.0         # mean multiple of the original budget


def case_inputs(base: str, fault: str, seed: int, arrays):
  """The Config, model function and datasets of a case, as `run_case`
  builds them."""
  cfg = {**COMMON, **BASES[base], 'seed': seed}
  op = FAULTS[fault]
  if op.config:
    cfg = op.config(cfg)
  if op.data:
    arrays = op.data(arrays, seed)
  elif base in STANDARDIZED:
    arrays = standardized(arrays)
  config = config_lib.Config(**cfg)

  def build(shape, classes):
    m = models.build_model(config, shape, classes)
    return op.model(m) if op.model else m
  return config, build, to_datasets(arrays)


def _final_accuracy(searched) -> float:
  final = searched.get('final')
  acc = final.get('test_accuracy') if final else None
  return acc if acc is not None and math.isfinite(acc) else math.nan


def repair_case(base: str, fault: str, arrays, root: str, twin_acc: float,
                twin_mean: float, rescore: bool = False) -> Dict[str, Any]:
  """Repairs one broken case and runs the random-remedy baseline on it.

  twin_acc: the same-seed healthy twin's test accuracy (the case without its
  fault), the repair criterion; twin_mean: the mean over the twin seeds,
  reported beside it. rescore: repair the findings of the saved run judged
  again by today's detectors (as the diagnosis table with --rescore shows
  them) instead of those its health.json saved when it ran.
  """
  name = f'{base}-{fault}-0'
  workdir = os.path.join(root, name)
  config, build, datasets = case_inputs(base, fault, 0, arrays)
  if rescore:
    findings = [f.to_dict() for f in health_lib.analyze(
        checkup.record_from_files(workdir, 10))]
  else:
    with open(os.path.join(workdir, health_lib.HEALTH_JSON)) as f:
      findings = json.load(f)['findings']
  # --repair=errors, or =warnings when the report has no error (a broken
  # run whose report only warns is still to be repaired).
  severities = {x['severity'] for x in findings}
  config = config.replace(
      repair='errors' if 'error' in severities else 'warnings')
  findings = [x for x in findings
              if x['severity'] in repair_lib.SEVERITIES[config.repair]]
  start = time.perf_counter()
  rep = repair_lib.repair(config, workdir, None, model=build,
                          datasets=datasets, num_classes=10,
                          findings=findings,
                          train=loop.train_and_evaluate)['repair']
  seconds = time.perf_counter() - start
  final = rep['before_after'][-1] if len(rep['before_after']) > 1 else {}
  acc = final.get('test_accuracy')
  acc = acc if acc is not None else math.nan
  # The baseline: as many candidates as the repair tried, drawn from every
  # remedy that applies to this model, through the same trials and final.
  subject = repair_lib.subject(config, workdir, None, build, datasets, 10,
                               train=loop.train_and_evaluate)
  pool = repair_lib.all_candidates(config, subject.info)
  k = min(len(rep['candidates']), len(pool))
  rng = np.random.default_rng(zlib.crc32(name.encode()))
  picks = [pool[i] for i in rng.choice(len(pool), k, replace=False)] if k \
      else []
  start = time.perf_counter()
  searched = repair_lib.search(subject, picks,
                               os.path.join(workdir, 'random_remedy'))
  random_seconds = time.perf_counter() - start
  random_comp = repair_lib.compute(subject, searched) if picks else {}
  random_acc = _final_accuracy(searched)
  limit, mean_limit = twin_acc - 0.01, twin_mean - 0.01
  comp = rep.get('compute') or {}
  return {
      'case': name, 'fault': fault, 'mode': config.repair,
      'level': 'data' if FAULTS[fault].data else 'config/model',
      'twin_acc': twin_acc, 'twin_mean': twin_mean,
      'broken_acc': rep['before_after'][0].get('test_accuracy'),
      'findings': ', '.join(f['kind'] for f in rep['findings']) or 'none',
      'candidates': ', '.join(c['name'] for c in rep['candidates']) or 'none',
      'chosen': rep.get('chosen') or '-', 'repaired_acc': acc,
      'repaired': bool(acc >= limit), 'repaired_vs_mean': bool(
          acc >= mean_limit), 'repair_x': comp.get('multiple'),
      'random_picks': ', '.join(c.name for c in picks) or 'none',
      'random_chosen': searched.get('chosen') or '-',
      'random_acc': random_acc, 'random_repaired': bool(random_acc >= limit),
      'random_vs_mean': bool(random_acc >= mean_limit),
      'random_x': random_comp.get('multiple'),
      'seconds': seconds, 'random_seconds': random_seconds}


def _rate(rows, key) -> float:
  return sum(r[key] for r in rows) / max(len(rows), 1)


def repair_scores(rows, twins, arrays, root, rescore=False) -> bool:
  """Repairs every broken case of the diagnosis table; prints and writes
  the repair table; True when every target is met.

  A case counts as repaired when its repaired run's test accuracy reaches
  its healthy twin's (the same seed, without the fault) minus 1 point. (The
  mean of the twin seeds minus 1 point, reported beside it, fails the twin
  itself where the seeds spread: the CIFAR-10 twins span 5 points.)
  """
  out = []
  for row in rows:
    if not row['verdict'].startswith('broken') or row.get('_error'):
      continue      # (a case that raised has no run to repair)
    base = row['case'].split('-')[0]
    twin_mean = float(np.nanmean([r['test_accuracy'] for r in twins[base]]))
    out.append(repair_case(base, row['fault'], arrays[BASES[base]['dataset']],
                           root, twins[base][0]['test_accuracy'], twin_mean,
                           rescore))
    print(out[-1], flush=True)
  level = [r for r in out if r['level'] == 'config/model']
  multiples = [r['repair_x'] for r in out if r['repair_x'] is not None]
  random_x = [r['random_x'] for r in out if r['random_x'] is not None]
  mean_x = float(np.mean(multiples)) if multiples else 0.0
  rate, random_rate = _rate(level, 'repaired'), _rate(level, 'random_repaired')
  n_rep = sum(r['repaired'] for r in level)
  n_rand = sum(r['random_repaired'] for r in level)
  print(f'against the twin seeds\' mean - 1 point, config/model-level: '
        f'repair {sum(r["repaired_vs_mean"] for r in level)}/{len(level)}, '
        f'random {sum(r["random_vs_mean"] for r in level)}/{len(level)}')
  print(f'all broken cases: repair {_rate(out, "repaired"):.2f}, random '
        f'{_rate(out, "random_repaired"):.2f} ({len(out)} cases); random '
        f'baseline compute: mean '
        f'{np.mean(random_x) if random_x else 0.0:.2f}x')
  targets = [
      common.target(f'repair rate, config/model-level faults ({n_rep}/'
                    f'{len(level)})', rate, '>=', REPAIR_RATE),
      common.target(f'repair rate minus random-remedy rate ({n_rep} vs '
                    f'{n_rand} of {len(level)})', rate - random_rate, '>=',
                    RANDOM_MARGIN),
      common.target(f'extra compute, mean x the original budget '
                    f'({len(multiples)} repairs)', mean_x, '<=', MAX_COMPUTE)]
  return common.report(
      'diagnosis_repair', 'Repair benchmark: broken cases repaired vs a '
      'random-remedy baseline (same compute)', out,
      ['case', 'level', 'mode', 'twin_acc', 'twin_mean', 'broken_acc',
       'findings', 'candidates', 'chosen', 'repaired_acc', 'repaired',
       'repaired_vs_mean', 'repair_x', 'random_picks', 'random_chosen',
       'random_acc', 'random_repaired', 'random_vs_mean', 'random_x',
       'seconds', 'random_seconds'], targets)


if __name__ == '__main__':
  define_flags()
  app.run(main)
