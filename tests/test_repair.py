"""Repair: findings -> candidates (table tests), user models rebuilt, a tiny
repair end to end that leaves the original run as it was."""

import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from launch import flags as launch_flags
from tftrain import config as config_lib
from tftrain import errors
from tftrain import health
from tftrain import loop
from tftrain import repair

DEEP_SIGMOID = config_lib.Config(
    model='deep_mlp', depth=20, activation='sigmoid', optimizer='nadam',
    learning_rate=1e-4, schedule='exponential', epochs=5, batch_size=32)


def user_info(**changes):
  """describe_model's dict for a rebuildable Sequential ReLU/He model."""
  info = {'kind': 'sequential', 'rebuildable': True, 'source': 'function',
          'user_data': True, 'standardized': False, 'activation': 'relu',
          'activations': ['relu'], 'initializers': ['he_normal'],
          'output_initializer': 'glorot_uniform', 'batch_norm': False,
          'dropout': 0.0, 'output_activation': None, 'frozen': False,
          'learning_rate': 0.1, 'train_examples': 8000, 'linear_pairs': []}
  return {**info, **changes}


def finding(kind, severity='error'):
  return {'kind': kind, 'severity': severity, 'summary': kind,
          'remedy': health.REMEDIES[kind]}


def names(cands):
  return [c.name for c in cands]


RELU_GLOROT = config_lib.Config(kernel_initializer='glorot_uniform')
# kind -> (config, model info, expected candidate names, expected changes of
# the first candidate: Config fields, model change).
BUILTIN = repair.describe_model(DEEP_SIGMOID)
CASES = {
    'vanishing_gradients': (DEEP_SIGMOID, BUILTIN,
                            ['selu_lecun', 'batch_norm', 'relu_he'],
                            {'activation': 'selu', 'standardize': True,
                             'kernel_initializer': 'lecun_normal'}, None),
    'saturated_units': (DEEP_SIGMOID, BUILTIN,
                        ['relu_he', 'selu_lecun', 'batch_norm'],
                        {'activation': 'relu',
                         'kernel_initializer': 'he_normal'}, None),
    'exploding_gradients': (DEEP_SIGMOID, BUILTIN,
                            ['lr_div10', 'lr_div100', 'batch_norm'],
                            {'learning_rate': pytest.approx(1e-5)}, None),
    'lr_too_high': (DEEP_SIGMOID, BUILTIN,
                    ['lr_finder', 'lr_div10', 'lr_div100'],
                    {'learning_rate': 'auto'}, None),
    'oscillating_loss': (DEEP_SIGMOID, BUILTIN, ['lr_div10', 'lr_finder',
                                                 'lr_div100'],
                         {'learning_rate': pytest.approx(1e-5)}, None),
    'diverged': (DEEP_SIGMOID, BUILTIN, ['lr_div10', 'lr_finder_onecycle',
                                         'lr_div100'],
                 {'learning_rate': pytest.approx(1e-5)}, None),
    'lr_too_low': (config_lib.Config(learning_rate=0.003), repair.describe_model(
        config_lib.Config(learning_rate=0.003)),
                   ['lr_x10', 'lr_x100', 'lr_finder', 'adam'],
                   {'learning_rate': pytest.approx(0.03)}, None),
    # A ReLU net with Glorot kernels: back to He (the default for ReLU).
    'dead_units': (RELU_GLOROT, repair.describe_model(RELU_GLOROT),
                   ['default_init', 'leaky_relu_he', 'lr_div10', 'lr_div100'],
                   {'kernel_initializer': 'he_normal'}, None),
    'unscaled_inputs': (DEEP_SIGMOID, BUILTIN, ['standardize'],
                        {'standardize': True}, None),
    'overfitting': (DEEP_SIGMOID, BUILTIN, ['add_dropout'], {'dropout': 0.2},
                    None),
    'too_much_regularization': (
        config_lib.Config(dropout=0.9), repair.describe_model(
            config_lib.Config(dropout=0.9)), ['less_dropout'],
        {'dropout': 0.1}, None),
    'too_few_steps': (
        config_lib.Config(batch_size=8000, epochs=3),
        user_info(), ['smaller_batch'], {'batch_size': 32}, None),
    'probabilities_as_logits': (config_lib.Config(), user_info(
        output_activation='softmax'), ['logits'], {}, {'output': 'linear'}),
    'output_activation': (config_lib.Config(), user_info(
        output_activation='relu'), ['logits'], {}, {'output': 'linear'}),
    'model_not_training': (config_lib.Config(), user_info(frozen=True),
                           ['unfreeze'], {}, {'trainable': True}),
    'frozen_layers': (config_lib.Config(), user_info(frozen=True),
                      ['unfreeze'], {}, {'trainable': True}),
    'symmetric_units': (config_lib.Config(), user_info(initializers=['zeros'],
                                                       output_initializer='zeros'),
                        ['default_init'], {},
                        {'kernel_initializer': 'he_normal',
                         'output_initializer': 'glorot_uniform'}),
    'linear_stack': (config_lib.Config(), user_info(
        activations=[], activation=None,
        linear_pairs=[['dense_000', 'dense_001']]), ['nonlinear'], {},
                     # He kernels already: only the activation changes.
                     {'activation': 'relu', 'linear_layers': ('dense_000',)}),
    'chance_accuracy': (DEEP_SIGMOID, BUILTIN,
                        ['lr_finder', 'standardize', 'batch_norm'],
                        {'learning_rate': 'auto'}, None),
    'labels_unlearnable': (DEEP_SIGMOID, BUILTIN, [], None, None),
    'label_noise': (DEEP_SIGMOID, BUILTIN, [], None, None),
}


@pytest.mark.parametrize('kind', sorted(CASES))
def test_candidates_per_finding_kind(kind):
  config, info, expected, changes, model_change = CASES[kind]
  got = repair.candidates([finding(kind)], config, info)
  assert names(got) == expected
  if expected:
    first = got[0]
    assert all(first.config_changes[k] == v for k, v in changes.items())
    assert (None if first.model_change is None
            else first.model_change.as_dict()) == model_change
    assert first.kinds == (kind,)


def test_every_health_kind_has_a_row():
  missing = set(health.KINDS) - set(repair.KIND_REMEDIES)
  assert not missing, (f'add {missing} to repair.KIND_REMEDIES (() when '
                       'nothing mechanical can be tried)')
  assert set(repair.KIND_REMEDIES) - {'lr_far_from_finder'} <= set(CASES)
  for names_ in repair.KIND_REMEDIES.values():
    assert set(names_) <= set(repair.REMEDIES)


def test_candidates_are_deduplicated_and_symptoms_are_fallbacks():
  findings = [finding('vanishing_gradients'), finding('chance_accuracy'),
              finding('saturated_units', 'warning')]
  got = repair.candidates(findings, DEEP_SIGMOID, BUILTIN)
  # Round robin over the cause findings; chance_accuracy gives none of its
  # own because the causes gave some; each name once, with every kind.
  assert names(got) == ['selu_lecun', 'relu_he', 'batch_norm']
  assert got[1].kinds == ('saturated_units', 'vanishing_gradients')
  # The same change under two names is kept once.
  onecycle = config_lib.Config(schedule='onecycle', learning_rate=0.3)
  got = repair.candidates([finding('diverged'), finding('lr_too_high')],
                          onecycle, repair.describe_model(onecycle))
  # lr_finder_onecycle = lr_finder
  assert names(got) == ['lr_div10', 'lr_finder', 'lr_div100']


def test_a_diverged_user_model_with_a_wild_init_gets_the_default_init():
  wild = user_info(initializers=['random_normal'],
                   output_initializer='random_normal')
  got = repair.candidates([finding('diverged')], config_lib.Config(), wild)
  assert names(got) == ['lr_div10', 'default_init', 'lr_finder_onecycle',
                        'lr_div100']
  assert got[1].model_change.as_dict() == {
      'kernel_initializer': 'he_normal', 'output_initializer': 'glorot_uniform'}
  # Where the init is the default already, only the LR changes are tried.
  assert names(repair.candidates([finding('diverged')], config_lib.Config(),
                                 user_info())) == [
                                     'lr_div10', 'lr_finder_onecycle',
                                     'lr_div100']


def test_the_reports_warnings_fill_the_candidates_the_errors_leave():
  relu = config_lib.Config(model='deep_mlp', depth=20, learning_rate=1.0)
  info = repair.describe_model(relu)
  errors = [finding('dead_units'), finding('chance_accuracy')]
  report = errors + [finding('exploding_gradients', 'warning')]
  alone = repair.candidates(errors, relu, info)
  assert names(alone) == ['leaky_relu_he', 'lr_div10', 'lr_div100']
  got = repair.with_context(alone, errors, report, relu, info)
  # The errors' candidates first, then the warning's new ones, up to 4.
  assert names(got)[:3] == names(alone)
  assert names(got)[3] == 'batch_norm'
  assert got[3].kinds == ('exploding_gradients',)
  # Errors that are only symptoms: the warnings' causes come first.
  symptom = [finding('chance_accuracy')]
  got = repair.with_context(
      repair.candidates(symptom, relu, info), symptom,
      symptom + [finding('lr_too_high', 'warning')], relu, info)
  assert names(got)[:3] == ['lr_finder', 'lr_div10', 'lr_div100']
  # Four from the errors already, or no other finding: unchanged.
  full = repair.candidates([finding('lr_too_low')], relu, info)
  assert repair.with_context(full, [finding('lr_too_low')], report, relu,
                             info) == full
  assert repair.with_context(alone, errors, errors, relu, info) == alone


def test_no_op_remedies_are_left_out():
  # A ReLU/He model: he_init and relu_he change nothing.
  got = repair.candidates([finding('dead_units'),
                           finding('saturated_units')], config_lib.Config(),
                          user_info())
  assert 'he_init' not in names(got) and 'relu_he' not in names(got)
  # The LR finder when the run already used it.
  auto = config_lib.Config(learning_rate='auto')
  assert repair.candidates([finding('lr_too_high')], auto,
                           {**repair.describe_model(auto),
                            'learning_rate': 0.08}) [0].name == 'lr_div10'


@pytest.mark.parametrize('epochs, steps_per_epoch, n, expected', [
    (3, 250, 3, {'epochs': 1}),
    (5, 1718, 3, {'epochs': 2}),          # round(1.67); 6 <= 1.5 x 5 epochs
    (5, 1718, 4, {'epochs': 1}),          # 4 x 2 epochs would exceed 1.5x
    (20, 100, 2, {'epochs': 7}),
    (1, 300, 3, {'epochs': 1, 'max_steps_per_epoch': 100}),
    (2, 300, 6, {'epochs': 1, 'max_steps_per_epoch': 150}),   # 1.5x / 6
])
def test_trial_budget(epochs, steps_per_epoch, n, expected):
  config = config_lib.Config(epochs=epochs)
  assert repair.trial_budget(config, steps_per_epoch, n) == expected


def softmax_model(shape=(4, 4, 1), classes=3):
  return tf.keras.Sequential([
      tf.keras.Input(shape), tf.keras.layers.Flatten(name='flatten'),
      tf.keras.layers.Dense(8, activation='relu', name='hidden'),
      tf.keras.layers.Dense(classes, activation='softmax', name='out')])


def test_softmax_user_model_is_rebuilt_without_the_softmax():
  model = softmax_model()
  info = repair.describe_model(config_lib.Config(), model=model)
  assert info['output_activation'] == 'softmax' and info['rebuildable']
  cand, = repair.candidates([finding('probabilities_as_logits')],
                            config_lib.Config(), info)
  rebuilt = repair.rebuild(model, cand.model_change, seed=0)
  last = rebuilt.layers[-1]
  assert last.name == 'out'
  assert last.activation is tf.keras.activations.linear
  assert [w.shape for w in rebuilt.get_weights()] == [
      w.shape for w in model.get_weights()]
  for a, b in zip(rebuilt.get_weights(), model.get_weights()):
    np.testing.assert_array_equal(a, b)          # the same starting weights
  x = np.random.default_rng(0).normal(size=(5, 4, 4, 1)).astype(np.float32)
  np.testing.assert_allclose(tf.nn.softmax(rebuilt(x)), model(x), rtol=1e-5)


def test_final_softmax_layer_is_dropped_from_a_functional_model():
  x = tf.keras.Input((6,))
  h = tf.keras.layers.Dense(4, activation='tanh', name='h')(x)
  out = tf.keras.layers.Softmax(name='softmax')(
      tf.keras.layers.Dense(3, name='logits')(h))
  model = tf.keras.Model(x, out)
  rebuilt = repair.rebuild(model, repair.ModelChange.of({'output': 'linear'}))
  assert rebuilt.layers[-1].name == 'logits'
  data = np.ones((2, 6), np.float32)
  np.testing.assert_allclose(tf.nn.softmax(rebuilt(data)), model(data),
                             rtol=1e-5)


def test_rebuild_changes_activations_initializers_and_inserts_batch_norm():
  model = tf.keras.Sequential([
      tf.keras.Input((4,)),
      tf.keras.layers.Dense(8, activation='sigmoid', name='d0'),
      tf.keras.layers.Dense(8, name='d1'),
      tf.keras.layers.Activation('sigmoid', name='a1'),
      tf.keras.layers.Dense(2, name='logits')])
  selu = repair.rebuild(model, repair.ModelChange.of(
      {'activation': 'selu', 'kernel_initializer': 'lecun_normal'}), seed=3)
  layers = {l.name: l for l in selu.layers}
  assert layers['d0'].activation.__name__ == 'selu'
  assert layers['a1'].get_config()['activation'] == 'selu'
  assert type(layers['d1'].kernel_initializer).__name__ == 'LecunNormal'
  assert layers['logits'].activation.__name__ == 'linear'
  bn = repair.rebuild(model, repair.ModelChange.of({'batch_norm': 'before'}))
  assert [l.name for l in bn.layers] == [
      'd0', 'd0_bn', 'd0_act', 'd1', 'd1_bn', 'a1', 'logits']


class Subclassed(tf.keras.Model):

  def __init__(self, classes=3):
    super().__init__(name='sub')
    self.flat = tf.keras.layers.Flatten()
    self.hidden = tf.keras.layers.Dense(8, activation='sigmoid')
    self.head = tf.keras.layers.Dense(classes)

  def call(self, x, training=False):
    return self.head(self.hidden(self.flat(x)))


MODEL_PRESERVING = {'learning_rate', 'schedule', 'optimizer', 'batch_size',
                    'standardize'}


def test_subclassed_model_gets_only_model_preserving_candidates():
  info = repair.describe_model(config_lib.Config(),
                               model=lambda shape, n: Subclassed(n),
                               datasets=toy_datasets(), num_classes=3)
  assert info['kind'] == 'subclassed' and not info['rebuildable']
  assert 'cannot be rebuilt' in info['note']
  every = [finding(k) for k in health.KINDS]
  got = repair.candidates(every, config_lib.Config(), info)
  assert got and all(c.model_change is None for c in got)
  assert all(set(c.config_changes) <= MODEL_PRESERVING for c in got)
  pool = repair.all_candidates(config_lib.Config(), info)
  assert all(set(c.config_changes) <= MODEL_PRESERVING for c in pool)
  assert 'selu_lecun' not in names(pool) and 'logits' not in names(pool)
  assert repair.candidates([finding('vanishing_gradients')],
                           config_lib.Config(), info) == []


def toy_arrays(n=600, seed=0, scale=1.0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, n).astype(np.int32)
  images = rng.normal(size=(n, 4, 4, 1)).astype(np.float32) * 0.5
  images[np.arange(n), labels, 0, 0] += 2.0          # learnable
  return images * scale, labels


def toy_datasets(scale=1.0):
  images, labels = toy_arrays(scale=scale)
  ds = lambda a, b: tf.data.Dataset.from_tensor_slices((images[a:b],
                                                        labels[a:b]))
  return {'train': ds(0, 400), 'validation': ds(400, 500),
          'test': ds(500, 600)}


def tiny_config(**changes):
  base = dict(hidden=(16,), learning_rate=0.3, epochs=3, batch_size=10,
              patience=0, progress=False, trace_graph=False, seed=1)
  return config_lib.Config(**{**base, **changes})


def fingerprint(workdir):
  """sha1 of every file of the original run (not repair's own outputs)."""
  out = {}
  for root, dirs, files in os.walk(workdir):
    if os.path.abspath(root) == os.path.abspath(workdir):
      dirs[:] = [d for d in dirs if d != repair.REPAIR_DIR]
    for name in files:
      if name in (repair.REPAIR_MD, repair.REPAIR_JSON):
        continue
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, workdir)] = hashlib.sha1(f.read()).hexdigest()
  return out


def test_tiny_repair_end_to_end(tmp_path, monkeypatch):
  """SGD at 30 (100x the healthy 0.3) diverges; --repair tries the remedies
  of 'diverged', keeps the best trial and leaves the original as it was."""
  workdir = str(tmp_path / 'run')
  seen = {}
  real = repair.repair

  def spy(*args, **kwargs):
    seen['before'] = fingerprint(workdir)
    with open(os.path.join(workdir, 'metrics.json')) as f:
      seen['metrics'] = f.read()
    return real(*args, **kwargs)
  monkeypatch.setattr(repair, 'repair', spy)
  result = loop.train_and_evaluate(
      tiny_config(learning_rate=30.0, repair='errors'), workdir,
      datasets=toy_datasets(), num_classes=3)
  assert result['status'] == 'diverged'            # the original's result
  rep = result['repair']
  # The original run's files are untouched.
  assert fingerprint(workdir) == seen['before']
  with open(os.path.join(workdir, 'metrics.json')) as f:
    assert f.read() == seen['metrics']
  # The report and its files.
  with open(os.path.join(workdir, repair.REPAIR_JSON)) as f:
    saved = json.load(f)
  markdown = open(os.path.join(workdir, repair.REPAIR_MD)).read()
  assert saved['status'] == rep['status'] == 'repaired'
  assert [f['kind'] for f in saved['findings']] == ['diverged']
  tried = [c['name'] for c in saved['candidates']]
  assert tried[:3] == ['lr_div10', 'lr_finder_onecycle', 'lr_div100']
  # The rest come from the report's warnings (with_context).
  with open(os.path.join(workdir, 'health.json')) as f:
    warnings = {f['kind'] for f in json.load(f)['findings']
                if f['severity'] == 'warning'}
  for c in saved['candidates'][3:]:
    assert set(c['kinds']) & warnings, (c, warnings)
  assert len(tried) <= repair.MAX_CANDIDATES
  for name in tried:
    assert name in markdown
    assert os.path.exists(os.path.join(workdir, 'repair', 'trials', name,
                                       'metrics.json'))
    # Trials are not exported (export=False); the final run is.
    assert not os.path.exists(os.path.join(workdir, 'repair', 'trials', name,
                                           'export'))
  # The choice is the best short-budget validation accuracy.
  scores = {c['name']: c['trial']['best_val_accuracy']
            for c in saved['candidates']}
  assert saved['chosen'] == max(scores, key=scores.get)
  final_dir = os.path.join(workdir, 'repair', saved['chosen'])
  assert os.path.exists(os.path.join(final_dir, 'health.json'))
  assert os.path.isdir(os.path.join(final_dir, 'export'))
  before, after = saved['before_after']
  assert before['status'] == 'diverged' and after['status'] == 'completed'
  assert after['val_accuracy'] > 0.9 and after['run_dir'] == final_dir
  # Compute: every trial's steps and the final's, over the original budget
  # (3 epochs x 40 steps).
  comp = saved['compute']
  assert comp['original_budget_steps'] == 120
  assert comp['trial_runs'] == len(tried)
  assert comp['final_steps'] == 120
  assert comp['trial_steps'] == sum(
      c['trial']['steps'] + c['trial']['lr_finder_steps']
      for c in saved['candidates'])
  assert comp['multiple'] == pytest.approx(
      (comp['trial_steps'] + comp['final_steps']) / 120)
  assert 'repair report:' in rep['block'] and '<- chosen' in rep['block']


def test_subclassed_repair_says_it_cannot_be_rebuilt(tmp_path):
  """A subclassed model on inputs x255: only input scaling is tried."""
  workdir = str(tmp_path / 'run')
  config = tiny_config(optimizer='adam', learning_rate=1e-3)
  datasets = toy_datasets(scale=255.0)
  result = loop.train_and_evaluate(config, workdir,
                                   model=lambda s, n: Subclassed(n),
                                   datasets=datasets, num_classes=3)
  findings = [finding('vanishing_gradients'), finding('unscaled_inputs')]
  out = repair.repair(config.replace(repair='errors'), workdir, result,
                      model=lambda s, n: Subclassed(n), datasets=datasets,
                      num_classes=3, findings=findings,
                      train=loop.train_and_evaluate)['repair']
  assert [c['name'] for c in out['candidates']] == ['standardize']
  assert out['candidates'][0]['model_change'] is None
  markdown = open(os.path.join(workdir, repair.REPAIR_MD)).read()
  assert 'subclassed' in markdown and 'cannot be rebuilt' in markdown
  assert out['compute']['trial_runs'] == 0      # one candidate: no trial
  assert out['before_after'][1]['status'] == 'completed'


def test_not_needed_without_findings_of_the_severity(tmp_path):
  workdir = str(tmp_path)
  with open(os.path.join(workdir, 'metrics.json'), 'w') as f:
    json.dump({'status': 'completed', 'history': []}, f)
  health.write_report(workdir, [health.Finding('overfitting', 'warning', 's')])
  out = repair.maybe_repair(tiny_config(repair='errors'), workdir,
                            train=loop.train_and_evaluate)
  assert out['repair']['status'] == 'not_needed'
  assert not os.path.exists(os.path.join(workdir, repair.REPAIR_MD))
  assert repair.maybe_repair(tiny_config(), workdir,
                             train=loop.train_and_evaluate) == {
      'status': 'completed', 'history': []}


def test_repair_flag_bare_means_errors():
  assert launch_flags.bare_flags(['prog', '--repair', '--epochs=2']) == [
      'prog', '--repair=errors', '--epochs=2']
  assert launch_flags.bare_flags(['prog', '--norepair']) == [
      'prog', '--repair=off']
  assert launch_flags.bare_flags(['prog', '--repair=warnings']) == [
      'prog', '--repair=warnings']
  with pytest.raises(errors.ConfigError, match="repair='always': choose one"):
    config_lib.Config(repair='always')
  with pytest.raises(errors.ConfigError, match='multi_worker'):
    config_lib.Config(repair='errors', strategy='multi_worker')
