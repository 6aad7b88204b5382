"""Variant grids (tftrain.grid): expand, select, run, HParams; launch.compare."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tftrain import config as config_lib
from tftrain import errors
from tftrain import grid as grid_lib
from tests import conftest
from tests import testing

BASE = config_lib.Config(optimizer='nadam', learning_rate=5e-4)
DEFAULT_GRID = {'batch_norm': ('none', 'before'),
                'optimizer': ('sgd', 'momentum', 'nesterov', 'adam', 'nadam')}


def test_default_grid_names_and_per_optimizer_learning_rates():
  grid = grid_lib.expand(DEFAULT_GRID, BASE)
  assert [v.name for v in grid] == [
      f'bn-{bn}_opt-{opt}' for bn in ('none', 'before')
      for opt in ('sgd', 'momentum', 'nesterov', 'adam', 'nadam')]
  lrs = {v.name: v.overrides['learning_rate'] for v in grid}
  assert lrs['bn-none_opt-sgd'] == lrs['bn-before_opt-sgd'] == 1e-2
  assert lrs['bn-before_opt-momentum'] == 2e-3
  assert lrs['bn-before_opt-nadam'] == 5e-4
  assert grid[0].overrides == {'batch_norm': 'none', 'optimizer': 'sgd',
                               'learning_rate': 1e-2}


def test_variant_learning_rate_beats_optimizer_rate():
  rates = dict(grid_lib.DEFAULT_LEARNING_RATES, adam=1e-3,
               **{'bn-none_opt-adam': 7e-5})
  grid = grid_lib.expand({'batch_norm': ['none', 'before'],
                               'optimizer': ['adam']}, BASE, rates)
  assert [v.overrides['learning_rate'] for v in grid] == [7e-5, 1e-3]


def test_a_grid_over_learning_rate_keeps_its_values():
  grid = grid_lib.expand({'learning_rate': [0.1, 0.01]}, BASE)
  assert [(v.name, v.overrides) for v in grid] == [
      ('lr-0.1', {'learning_rate': 0.1}), ('lr-0.01', {'learning_rate': 0.01})]


@pytest.mark.parametrize('grid,rates,flag', [
    ({'optimizer': ['adamax']}, None, '--grid_optimizer=adamax: choose one of'),
    ({'batch_norm': ['middle']}, None, '--grid_batch_norm=middle'),
    ({'colour': ['red']}, None, '--grid=colour: is not a Config field'),
    ({'optimizer': []}, None, '--grid=optimizer: needs at least one value'),
    ({'depth': ['x']}, None, '--grid=depth=x: must be a positive integer'),
    ({'dropout': ['1.5']}, None, '--grid=dropout=1.5: must be a rate'),
    ({'optimizer': ['sgd']}, {'bn-none_opt-sgd': 0.1},
     '--learning_rates=bn-none_opt-sgd'),
])
def test_bad_grid_fails_before_training_naming_the_flag(grid, rates, flag):
  flags = {'depth': 'grid', 'dropout': 'grid'}   # the generic --grid flag
  with pytest.raises(errors.ConfigError) as info:
    grid_lib.expand(grid, BASE, rates, flags)
  assert str(info.value).startswith(flag) and '\n' not in str(info.value)


def test_any_config_field_is_an_axis_and_flag_text_is_parsed():
  grid = grid_lib.expand({'depth': ['3', '5'], 'hidden': ['30:10'],
                          'kernel_initializer': ['none'],
                          'standardize': ['true'], 'learning_rate': ['auto']},
                         BASE)
  assert [v.name for v in grid] == [
      'depth-3_hidden-30:10_init-None_standardize-True_lr-auto',
      'depth-5_hidden-30:10_init-None_standardize-True_lr-auto']
  assert grid[0].overrides == {'depth': 3, 'hidden': (30, 10),
                               'kernel_initializer': None,
                               'standardize': True, 'learning_rate': 'auto'}
  assert config_lib.parse_field('dropout', '0.25') == 0.25
  assert config_lib.parse_field('max_steps_per_epoch', 'None') is None
  assert config_lib.parse_field('batch_norm', 'before') == 'before'


def test_activation_axis_takes_each_activations_initializer():
  base = config_lib.Config(dataset='cifar10', model='deep_mlp', depth=20,
                           activation='elu', optimizer='nadam',
                           learning_rate=7e-4)
  grid = grid_lib.expand({'batch_norm': ['none'], 'optimizer': ['nadam'],
                          'activation': ['elu', 'selu']}, base, {})
  assert [v.name for v in grid] == ['bn-none_opt-nadam_act-elu',
                                    'bn-none_opt-nadam_act-selu']
  selu = base.replace(**grid[1].overrides)
  assert selu.learning_rate == 7e-4 and selu.standardize_inputs
  from tftrain import models  # pylint: disable=g-import-not-at-top
  assert models.default_initializer(selu.activation) == 'lecun_normal'


def test_explicit_rate_for_all_but_named_variants():
  rates = {'adam': 2e-3, 'bn-before_opt-sgd': 0.05}   # no table: explicit lr
  grid = grid_lib.expand({'batch_norm': ['none', 'before'],
                          'optimizer': ['sgd', 'adam', 'nadam']},
                         BASE.replace(learning_rate=0.01), rates)
  assert {v.name: v.overrides['learning_rate'] for v in grid} == {
      'bn-none_opt-sgd': 0.01, 'bn-none_opt-adam': 2e-3,
      'bn-none_opt-nadam': 0.01, 'bn-before_opt-sgd': 0.05,
      'bn-before_opt-adam': 2e-3, 'bn-before_opt-nadam': 0.01}


def test_select_by_pattern_and_unknown_pattern():
  grid = grid_lib.expand(DEFAULT_GRID, BASE)
  chosen = grid_lib.select(grid, ['bn-before_*', '*opt-sgd'])
  assert [v.name for v in chosen] == [
      'bn-none_opt-sgd', 'bn-before_opt-sgd', 'bn-before_opt-momentum',
      'bn-before_opt-nesterov', 'bn-before_opt-adam', 'bn-before_opt-nadam']
  assert grid_lib.select(grid, []) == grid
  with pytest.raises(errors.ConfigError, match='--only=bn-after'):
    grid_lib.select(grid, ['bn-after*'])


def _history(val_losses, val_accs, seconds=10.0):
  return [{'epoch': i, 'seconds': seconds, 'val_loss': l, 'val_accuracy': a}
          for i, (l, a) in enumerate(zip(val_losses, val_accs), 1)]


def test_summary_numbers_and_batch_norm_speedup_table(tmp_path):
  plain = grid_lib.Variant('bn-none_opt-adam', {'batch_norm': 'none',
                                                'optimizer': 'adam',
                                                'learning_rate': 1e-3})
  bn = grid_lib.Variant('bn-before_opt-adam', {'batch_norm': 'before',
                                               'optimizer': 'adam',
                                               'learning_rate': 1e-3})
  rows = [
      grid_lib.summarize(plain, _history([2.0, 1.6, 1.5, 1.7],
                                         [0.3, 0.40, 0.45, 0.44]),
                         'completed', wall_seconds=[12, 24, 36, 48]),
      grid_lib.summarize(bn, _history([1.8, 1.55, 1.45, 1.3],
                                      [0.35, 0.42, 0.5, 0.55], seconds=15.0),
                         'completed'),
  ]
  assert rows[0]['best_val_accuracy'] == 0.45
  assert rows[0]['best_val_accuracy_epoch'] == 3
  assert (rows[0]['best_val_loss'], rows[0]['best_val_loss_epoch']) == (1.5, 3)
  assert rows[0]['wall_seconds_to_best'] == 36 and rows[0]['wall_time_exact']
  assert rows[1]['wall_seconds_to_best'] == 60 and not rows[1]['wall_time_exact']
  assert rows[1]['seconds_per_epoch'] == 15.0
  assert grid_lib.epoch_reaching(rows[1]['val_loss'], 1.5) == 3
  assert grid_lib.epoch_reaching([2.0, None], 1.0) is None
  speed = grid_lib.batch_norm_speedups(rows)
  assert speed == [{
      'plain': 'bn-none_opt-adam', 'batch_norm': 'bn-before_opt-adam',
      'plain_best_val_loss': 1.5, 'plain_best_epoch': 3, 'bn_epoch_reaching': 3,
      'bn_best_val_loss': 1.3, 'bn_seconds_per_epoch': 15.0,
      'plain_seconds_per_epoch': 10.0}]
  for row in rows:
    row['health'] = ''
  paths = grid_lib.write_comparison(BASE, rows, str(tmp_path))
  with open(paths['md']) as f:
    table = f.read()
  assert table.startswith(
      '| variant | learning rate | best val accuracy | epoch of best | '
      'best val loss (epoch) | s/epoch | wall s to best | test accuracy | '
      'MC dropout test accuracy | epochs run | status | health |\n')
  assert ('| no-BN variant | its best val loss (epoch) | BN variant | '
          'BN epoch reaching it | BN best val loss | s/epoch BN / no-BN |'
          ) in table
  assert ('| bn-none_opt-adam | 0.001 | 0.4500 | 3 | 1.5000 (3) | 10.0 | 36 | '
          '– | – | 4 | completed |  |') in table
  assert '| bn-before_opt-adam | 0.001 | 0.5500 | 4 | 1.3000 (4) | 15.0 | 60* |' in table
  assert '| bn-none_opt-adam | 1.5000 (3) | bn-before_opt-adam | 3 | 1.3000 | 1.50 |' in table
  assert 'no wall-clock stamp for every epoch' in table   # the '*' footnote
  with open(paths['csv']) as f:
    saved = list(csv.DictReader(f))
  assert [r['variant'] for r in saved] == ['bn-none_opt-adam',
                                           'bn-before_opt-adam']
  assert float(saved[0]['best val accuracy']) == 0.45
  assert saved[0]['test accuracy'] == '' and saved[1]['wall s to best'] == '60*'


def test_grid_on_tiny_data_writes_runs_table_png_and_hparams(
    tiny_mnist_data_dir, tmp_path):
  base = config_lib.Config(
      dataset='mnist', data_dir=tiny_mnist_data_dir, validation_size=100,
      model='deep_mlp', depth=3, width=16, activation='elu', batch_size=50,
      eval_batch_size=100, epochs=2, patience=0, steps_per_loop=5,
      progress=False, trace_graph=False, monitor='val_loss', seed=1)
  grid = grid_lib.expand(
      {'batch_norm': ['none', 'before'], 'optimizer': ['sgd', 'adam']}, base,
      {'sgd': 0.05, 'adam': 3e-3})
  root = str(tmp_path / 'grid')
  out = grid_lib.run(base, grid, root)

  names = ['bn-none_opt-sgd', 'bn-none_opt-adam', 'bn-before_opt-sgd',
           'bn-before_opt-adam']
  assert [r['name'] for r in out['rows']] == names
  for name, row in zip(names, out['rows']):
    run_dir = os.path.join(root, name)
    with open(os.path.join(run_dir, 'metrics.json')) as f:
      metrics = json.load(f)
    assert metrics['epochs_run'] == 2 and row['epochs_run'] == 2
    assert row['val_loss'] == [h['val_loss'] for h in metrics['history']]
    assert 0.0 <= row['best_val_accuracy'] <= 1.0
    assert row['wall_time_exact'] and row['seconds_per_epoch'] > 0
    # The run's HParams values and final metrics.
    tags = testing.read_tags(run_dir)
    scalars = testing.read_scalars(run_dir)
    assert tags['_hparams_/session_start_info'] == 'hparams'
    for tag in ('best_val_loss', 'best_val_accuracy', 'test_accuracy'):
      assert scalars[tag][-1][1] == pytest.approx(
          row[tag] if tag != 'test_accuracy' else metrics['test_accuracy'])
    assert os.path.isdir(os.path.join(run_dir, 'validation'))
  adam = out['rows'][1]
  assert adam['val_loss'][-1] < adam['val_loss'][0]       # it learned

  # The experiment-level HParams config lists both axes and the metrics.
  root_events = testing.read_events(root)
  assert [e.tag for e in root_events if e.plugin == 'hparams'] == [
      '_hparams_/experiment']
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  content = plugin_data_pb2.HParamsPluginData.FromString(
      root_events[0].value.metadata.plugin_data.content)
  assert {h.name for h in content.experiment.hparam_infos} == {
      'batch_norm', 'optimizer', 'learning_rate'}
  assert {(m.name.group, m.name.tag) for m in content.experiment.metric_infos} >= {
      ('', 'best_val_accuracy'), ('validation', 'epoch_loss')}

  paths = out['paths']
  with open(paths['png'], 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert os.path.getsize(paths['png']) > 20000
  with open(paths['md']) as f:
    table = f.read()
  for name in names:
    assert f'| {name} |' in table
  assert 'epochs to reach the no-BN best validation loss' in table
  # Each variant's health findings are in its row ('healthy' or the kinds).
  assert '| status | health |' in table
  from tftrain import health  # pylint: disable=g-import-not-at-top
  for row in out['rows']:
    assert row['health'] == health.summary_cell(os.path.join(root, row['name']))
    assert row['health'] and row['health'] in table
  with open(paths['json']) as f:
    saved = json.load(f)
  assert [r['name'] for r in saved['variants']] == names
  assert len(saved['batch_norm_speedups']) == 2

  # Rerunning resumes every finished variant instead of training again.
  again = grid_lib.run(base, grid[:1], root)
  assert again['rows'][0]['val_loss'] == out['rows'][0]['val_loss']


def test_a_diverged_variant_is_recorded_and_the_grid_goes_on(
    tiny_mnist_data_dir, tmp_path):
  base = config_lib.Config(
      dataset='mnist', data_dir=tiny_mnist_data_dir, validation_size=100,
      model='deep_mlp', depth=3, width=16, batch_size=50, eval_batch_size=100,
      epochs=1, patience=0, steps_per_loop=2, progress=False,
      trace_graph=False)
  grid = grid_lib.expand({'learning_rate': [1e12, 0.01]}, base)
  out = grid_lib.run(base, grid, str(tmp_path))
  diverged, fine = out['rows']
  assert diverged['status'] == 'diverged' and diverged['diverged_step'] >= 1
  assert diverged['epochs_run'] == 0 and diverged['best_val_loss'] is None
  assert out['results']['lr-1e+12']['status'] == 'diverged'
  assert diverged['health'] and fine['status'] == 'completed'
  with open(out['paths']['md']) as f:
    assert '| lr-1e+12 | 1e+12 | – |' in f.read()


def built_recipe(config, steps_per_epoch=100):
  """What a Config trains, read off the model, schedule and optimizer it builds.

  Returns:
    dict: `layers` (one string per layer after Flatten: 'Dense(units,
    bias=..., Initializer)', the activation's name, 'BatchNormalization',
    'AlphaDropout(rate)'...), `optimizer` and `schedule` (class names), and
    the LR at the first step, its peak and at the last step.
  """
  from tftrain import models  # pylint: disable=g-import-not-at-top
  from tftrain import optimizers  # pylint: disable=g-import-not-at-top
  from tftrain import schedules  # pylint: disable=g-import-not-at-top

  def kind(layer):
    if isinstance(layer, tf.keras.layers.Dense):
      return (f'Dense({layer.units}, bias={layer.use_bias}, '
              f'{type(layer.kernel_initializer).__name__})')
    if isinstance(layer, tf.keras.layers.Activation):
      return layer.get_config()['activation']
    rate = getattr(layer, 'rate', None)
    return type(layer).__name__ + ('' if rate is None else f'({rate:g})')

  model = models.build_model(config, (32, 32, 3), 10)
  schedule = schedules.build_schedule(config, config.learning_rate,
                                      steps_per_epoch)
  optimizer = optimizers.build_optimizer(config.optimizer, schedule, config)
  lrs = schedule(tf.range(steps_per_epoch * config.epochs)).numpy()
  lrs = np.broadcast_to(lrs, [steps_per_epoch * config.epochs])
  return dict(layers=[kind(l) for l in model.layers
                      if not isinstance(l, tf.keras.layers.Flatten)],
              optimizer=type(optimizer).__name__,
              schedule=type(schedule).__name__,
              lr=(float(lrs[0]), float(lrs.max()), float(lrs[-1])))


def seed_flags_config():
  """The Config `python -m launch.cifar10` builds with no flags (its process)."""
  code = ('import json\n'
          'from absl import flags\n'
          'from launch import cifar10\n'
          'from launch import flags as f\n'
          'flags.FLAGS(["x"])\n'
          'print(json.dumps(f.config_from_flags().__dict__))\n')
  proc = conftest.run_python(['-c', code], timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  values = json.loads(proc.stdout.strip().splitlines()[-1])
  return config_lib.Config(**{k: tuple(v) if isinstance(v, list) else v
                              for k, v in values.items()})


ELU_BN_BLOCK = ['Dense(100, bias=False, HeNormal)', 'BatchNormalization',
                'elu']
LOGITS = ['Dense(10, bias=True, GlorotUniform)']


def test_cifar10_launcher_defaults_are_the_seed():
  """Hands-On ML ch. 11 ex. 8 (the seed): CIFAR-10, 20 hidden Dense(100), He
  init, ELU, batch norm before each activation, Nadam at 5e-4, early
  stopping; written out here, not read from the launcher's table."""
  config = seed_flags_config()
  recipe = built_recipe(config)
  assert recipe['layers'] == ELU_BN_BLOCK * 20 + LOGITS
  assert recipe['optimizer'] == 'Nadam'
  assert recipe['schedule'] == 'Constant'
  assert recipe['lr'] == pytest.approx((5e-4, 5e-4, 5e-4))
  assert (config.beta_1, config.beta_2) == (0.9, 0.999)    # Keras' Nadam
  assert config.dataset == 'cifar10'
  assert config.validation_size == 5000       # the last 5000 of 50000 train
  assert config.batch_size == 32 and config.epochs == 50
  # Early stopping on validation loss, patience 10, best weights restored.
  assert config.early_stopping_patience == 10
  assert config.monitor == 'val_loss' and config.restore_best_weights
  # The seed's input BatchNormalization: standardized inputs.
  assert config.standardize_inputs


def test_compare_launcher_end_to_end_and_one_line_errors(
    tiny_mnist_data_dir, tmp_path, run_launcher):
  workdir = str(tmp_path / 'cmp')
  proc = run_launcher(
      'launch.compare', '--dataset=mnist', f'--data_dir={tiny_mnist_data_dir}',
      '--validation_size=100', '--depth=2', '--width=8', '--batch_size=50',
      '--epochs=1', '--grid_optimizer=adam,sgd', '--only=bn-before_*',
      '--learning_rate=0.01', '--learning_rates=adam=2e-3', '--noprogress',
      f'--workdir={workdir}',
      timeout=180)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert sorted(os.listdir(workdir)) == sorted([
      'bn-before_opt-adam', 'bn-before_opt-sgd', 'comparison.csv',
      'comparison.json', 'comparison.md', 'comparison.png'] + [
          n for n in os.listdir(workdir) if n.startswith('events.out')])
  # --learning_rate applies to every variant --learning_rates does not name.
  assert '| bn-before_opt-adam | 0.002 |' in proc.stdout
  assert '| bn-before_opt-sgd | 0.01 |' in proc.stdout
  assert '2 variant(s) in' in proc.stdout

  for flag, error in (
      ('--grid_optimizer=adamax', '--grid_optimizer=adamax: choose one of sgd'),
      ('--grid_activation=elu,softmax',
       '--grid_activation=softmax: choose one of sigmoid')):
    bad = run_launcher('launch.compare', flag,
                       f'--data_dir={tiny_mnist_data_dir}',
                       f'--workdir={tmp_path / "bad"}')
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith('error: ' + error)
  assert not os.path.exists(tmp_path / 'bad')


def test_chapter11_preset_variants_are_valid_configs():
  """The chapter's variants, each checked on the model and optimizer it
  builds: no BN, BN, SELU, SELU + alpha dropout with MC dropout, 1cycle."""
  base = config_lib.Config(dataset='cifar10', model='deep_mlp', depth=20,
                           width=100, activation='elu', batch_norm='before',
                           optimizer='nadam', learning_rate=5e-4)
  chosen = grid_lib.preset('chapter11', base)
  assert [v.name for v in chosen] == [
      'no-bn_nadam-5e-5', 'bn_nadam-5e-4', 'selu_nadam-7e-4',
      'selu_alpha-dropout-0.1', 'selu_alpha-dropout_1cycle']
  configs = [base.replace(**v.overrides) for v in chosen]
  recipes = [built_recipe(c) for c in configs]
  elu = ['Dense(100, bias=True, HeNormal)', 'elu']
  selu = ['Dense(100, bias=True, LecunNormal)', 'selu']
  alpha_dropout = ['AlphaDropout(0.1)']
  # 1. No batch norm, Nadam at 5e-5.
  assert recipes[0]['layers'] == elu * 20 + LOGITS
  assert (recipes[0]['optimizer'], recipes[0]['lr']) == (
      'Nadam', pytest.approx((5e-5,) * 3))
  # 2. Batch norm before each ELU, Nadam at 5e-4.
  assert recipes[1]['layers'] == ELU_BN_BLOCK * 20 + LOGITS
  assert (recipes[1]['optimizer'], recipes[1]['lr']) == (
      'Nadam', pytest.approx((5e-4,) * 3))
  # 3. SELU: LeCun normal init, no batch norm, standardized inputs; 7e-4.
  assert recipes[2]['layers'] == selu * 20 + LOGITS
  assert configs[2].standardize_inputs
  assert (recipes[2]['optimizer'], recipes[2]['lr']) == (
      'Nadam', pytest.approx((7e-4,) * 3))
  # 4. SELU with alpha dropout 0.1 before the output, evaluated by MC
  # dropout over 10 samples.
  assert recipes[3]['layers'] == selu * 20 + alpha_dropout + LOGITS
  assert configs[3].standardize_inputs and configs[3].mc_dropout_samples == 10
  assert (recipes[3]['optimizer'], recipes[3]['lr']) == (
      'Nadam', pytest.approx((5e-4,) * 3))
  # 5. The same net trained by 1cycle: SGD whose momentum cycles, LR from
  # 0.005 up to 0.05 and annealed to 5e-5, batch 128, 15 epochs, and no early
  # stopping (the cycle runs whole).
  assert recipes[4]['layers'] == selu * 20 + alpha_dropout + LOGITS
  assert recipes[4]['schedule'] == 'OneCycle'
  assert recipes[4]['optimizer'] == 'CyclicMomentumSGD'
  assert recipes[4]['lr'] == pytest.approx((0.005, 0.05, 5e-5), rel=1e-3)
  assert (configs[4].batch_size, configs[4].epochs) == (128, 15)
  assert configs[4].early_stopping_patience == 0
  assert configs[4].mc_dropout_samples == 10
  with pytest.raises(config_lib.ConfigError) as e:
    grid_lib.preset('chapter12', base)
  assert str(e.value).startswith('--preset=chapter12: choose one of')
