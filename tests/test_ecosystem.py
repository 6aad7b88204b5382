"""A run records itself (config.json, flags.txt, HParams, a custom-scalars
layout), resumes only what it can, and behaves in a notebook."""

import json
import os

from absl import flags
import pytest

from launch import flags as launch_flags
from tests import testing
from tests.test_loop import small_config
from tftrain import config as config_lib
from tftrain import loop
from tftrain import workdir as workdir_lib


@pytest.fixture(scope='module')
def recorded_run(tiny_cifar_data_dir, tmp_path_factory):
  """One tiny run, shared by the tests that only read what it wrote."""
  workdir = str(tmp_path_factory.mktemp('recorded') / 'run')
  config = small_config(tiny_cifar_data_dir, epochs=2, hidden=(16, 8),
                        learning_rate=0.0125, standardize=True,
                        profile_steps=(3, 6))
  result = loop.train_and_evaluate(config, workdir)
  return config, workdir, result


def test_config_json_is_the_resolved_config(recorded_run):
  config, workdir, _ = recorded_run
  with open(os.path.join(workdir, workdir_lib.CONFIG_JSON)) as f:
    saved = json.load(f)
  assert saved['learning_rate'] == 0.0125 and saved['hidden'] == [16, 8]
  assert saved['standardize'] is True and saved['max_steps_per_epoch'] is None
  from tftrain import record  # pylint: disable=g-import-not-at-top
  assert config_lib.Config(**record.config_from_json(saved)) == config


def test_flags_txt_replays_the_config_through_the_launcher_flags(recorded_run):
  config, workdir, _ = recorded_run
  path = os.path.join(workdir, workdir_lib.FLAGS_TXT)
  with open(path) as f:
    lines = f.read().splitlines()
  assert '--learning_rate=0.0125' in lines and '--hidden=16,8' in lines
  assert '--standardize=true' in lines and '--progress=false' in lines
  assert '--profile_steps=3,6' in lines
  # Through the flags of a launcher whose defaults differ (cifar10-like).
  fv = flags.FlagValues()
  launch_flags.define_flags(flag_values=fv, dataset='mnist', epochs=50,
                            hidden=(300, 100), learning_rate=5e-4)
  fv(['prog', f'--flagfile={path}'])
  assert launch_flags.config_from_flags(flag_values=fv) == config


def test_every_run_writes_one_hparams_session(recorded_run):
  _, workdir, _ = recorded_run
  events = [e for e in testing.read_events(workdir) if e.plugin == 'hparams']
  assert [e.tag for e in events] == ['_hparams_/session_start_info']
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  info = plugin_data_pb2.HParamsPluginData.FromString(
      events[0].value.metadata.plugin_data.content).session_start_info
  assert info.hparams['learning_rate'].number_value == 0.0125
  assert info.hparams['optimizer'].string_value == 'adam'
  assert info.hparams['hidden'].string_value == '(16, 8)'


def test_custom_scalars_layout_has_the_epoch_metrics_then_every_layer(
    recorded_run):
  _, workdir, _ = recorded_run
  from tensorboard.plugins.custom_scalar import layout_pb2  # pylint: disable=g-import-not-at-top
  events = [e for e in testing.read_events(os.path.join(workdir, 'train'))
            if e.plugin == 'custom_scalars']
  assert len(events) == 1 and events[0].step == 0
  layout = layout_pb2.Layout.FromString(testing.array(events[0].value).item())
  epoch, layers = layout.category
  assert [c.title for c in epoch.chart][:2] == ['epoch_loss', 'epoch_accuracy']
  charts = {c.title.split(':')[0].split(' ')[0]: list(c.multiline.tag)
            for c in layers.chart}
  assert list(charts) == ['grad_norm', 'update_ratio', 'weight_norm',
                          'activation_std', 'activation_saturated',
                          'activation_dead']
  # Each regex picks every layer's tag of its quantity (TensorBoard re.match).
  import re  # pylint: disable=g-import-not-at-top
  tags = testing.read_tags(os.path.join(workdir, 'train'))
  grad = [t for t in tags if re.match(charts['grad_norm'][0], t)]
  assert grad == sorted(grad) == ['grad_norm/dense_000', 'grad_norm/dense_001',
                                  'grad_norm/logits']
  assert [t for t in tags if re.match(charts['activation_dead'][0], t)] == [
      'activation_dead/act_000', 'activation_dead/act_001']


def test_readme_notebook_example_twice(tiny_mnist_data_dir, tmp_path,
                                       monkeypatch, capsys):
  """The README's notebook cell, run twice in one process: one printed line
  per epoch, the model in the result, global state restored, and the second
  run says the run is already complete."""
  import random  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tftrain  # pylint: disable=g-import-not-at-top
  from tests.test_user_model import readme_example  # pylint: disable=g-import-not-at-top
  real = config_lib.Config
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(tftrain, 'Config', lambda **kw: real(**{
      **kw, 'data_dir': tiny_mnist_data_dir, 'validation_size': 100,
      'hidden': (16,), 'log_every_steps': 5, 'trace_graph': False,
      'mixed_precision': 'mixed_bfloat16'}), raising=False)
  tf.keras.mixed_precision.set_global_policy('float32')
  random.seed(1)
  np.random.seed(1)
  expected = (random.random(), np.random.random())
  random.seed(1)
  np.random.seed(1)
  code = readme_example('notebook')
  namespace = {}
  exec(code, namespace)  # pylint: disable=exec-used
  first = capsys.readouterr().out
  result = namespace['result']
  epochs = [l for l in first.splitlines() if l.startswith('epoch ')]
  assert [l.split()[1] for l in epochs] == ['1/3', '2/3', '3/3']
  assert isinstance(result.model, tf.keras.Model)
  assert isinstance(result, dict) and json.loads(json.dumps(result))[
      'test_accuracy'] == result['test_accuracy']
  # The run's mixed_bfloat16 policy and seeding did not leak out.
  assert tf.keras.mixed_precision.global_policy().name == 'float32'
  assert (random.random(), np.random.random()) == expected

  namespace = {}
  exec(code, namespace)  # pylint: disable=exec-used
  second = capsys.readouterr().out
  assert second.startswith(
      'runs/notebook: already complete (metrics from 20')
  assert 'epoch 1/3' not in second
  assert namespace['result']['test_accuracy'] == result['test_accuracy']
  assert isinstance(namespace['result'].model, tf.keras.Model)   # the export


def test_errors_name_the_python_argument_or_the_flag():
  from tftrain import errors  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.ConfigError) as e:
    config_lib.Config(batch_size=0)
  assert str(e.value).startswith('batch_size=0: must be a positive integer')
  e.value.from_flags = True
  assert str(e.value).startswith('--batch_size=0: must be a positive integer')
  with pytest.raises(errors.ConfigError) as e:
    config_lib.Config(optimizer='adamax')
  assert str(e.value).startswith("optimizer='adamax': choose one of")


def test_package_lists_its_public_names():
  import tftrain  # pylint: disable=g-import-not-at-top
  assert tftrain.__all__ == ['Config', 'Result', 'train_and_evaluate',
                             'errors']
  assert set(tftrain.__all__) <= set(dir(tftrain))


def test_profile_steps_trace_into_the_run_directory(recorded_run):
  _, workdir, result = recorded_run
  import glob  # pylint: disable=g-import-not-at-top
  traces = glob.glob(os.path.join(workdir, 'plugins', 'profile', '*',
                                  '*.xplane.pb'))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 1000
  # The calls cut at the window did not change what was trained or logged.
  assert len(result['history']) == 2
  # 20 steps, every --log_every_steps=2 of them logged (a value the user
  # set is kept; only the default interval shortens for short runs).
  loss = testing.read_scalars(os.path.join(workdir, 'train'))['loss']
  assert [step for step, _ in loss] == list(range(2, 21, 2))


def test_a_run_on_tensorflows_in_memory_filesystem(tiny_cifar_data_dir,
                                                   monkeypatch, capsys):
  """Every run file goes through tf.io.gfile: a `ram://` workdir (as
  `gs://` would be) trains, checkpoints, exports, resumes and is found
  complete; the pid lock is skipped with a note."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  del monkeypatch
  fs = tf.io.gfile
  workdir = 'ram://tftrain-test/run'
  config = small_config(tiny_cifar_data_dir, epochs=1, trace_graph=False)
  first = loop.train_and_evaluate(config, workdir)
  assert first['status'] == 'completed'
  names = set(n.rstrip('/') for n in fs.listdir(workdir))
  assert {'config.json', 'flags.txt', 'metrics.json', 'history.json',
          'observations.jsonl', 'checkpoints', 'best', 'export', 'train',
          'validation'} <= names, names
  assert '.lock' not in names
  assert workdir_lib.read_json(os.path.join(workdir, 'metrics.json'))[
      'test_loss'] == first['test_loss']
  assert fs.exists(os.path.join(workdir, 'export', 'saved_model',
                                'saved_model.pb'))
  # Resumed for one more epoch from the ram:// checkpoint, then complete.
  second = loop.train_and_evaluate(config.replace(epochs=2), workdir)
  assert second['resumed'] and len(second['history']) == 2
  capsys.readouterr()
  third = loop.train_and_evaluate(config.replace(epochs=2), workdir)
  assert third['already_complete']
  assert 'already complete' in capsys.readouterr().out
  assert isinstance(third.model, tf.keras.Model)   # from ram:// model.keras
  fs.rmtree('ram://tftrain-test')


def test_launcher_report_prints_the_mc_dropout_metrics(capsys):
  result = {'workdir': 'runs/x', 'status': 'completed', 'epochs_run': 2,
            'wall_seconds': 3.0, 'test_accuracy': 0.5, 'test_loss': 1.5,
            'mc_val_accuracy': 0.52, 'mc_test_accuracy': 0.51,
            'mc_test_loss': 1.4, 'mc_dropout_samples': 10}
  assert launch_flags.report(result) == 0
  out = capsys.readouterr().out
  assert ('MC dropout (10 samples): val accuracy 0.5200  test accuracy '
          '0.5100  test loss 1.4000') in out


@pytest.mark.parametrize('schedule, used', [('onecycle', 'minimum of smoothed'),
                                            ('constant', 'divergence')])
def test_lr_finder_plot_says_which_suggestion_the_run_used(schedule, used,
                                                           monkeypatch,
                                                           tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tftrain import lr_finder  # pylint: disable=g-import-not-at-top
  from tftrain import report  # pylint: disable=g-import-not-at-top
  lrs = np.geomspace(1e-4, 1.0, 60)
  losses = 2.0 - np.log10(lrs / 1e-4) * 0.3 + np.maximum(
      0, np.log10(lrs) + 1) ** 2 * 20
  result = lr_finder.Result(
      lrs=lrs, losses=losses, smoothed=lr_finder.smooth(losses, 0.5),
      suggestions=lr_finder.suggestions_for(lrs, losses, 'diverged'),
      default='divergence', stop_reason='diverged', min_lr=0.05, min_loss=0.9,
      schedule=schedule)
  labels = {}
  real = report.figure_png

  def capture(fig):
    labels['texts'] = [t.get_text() for t in fig.axes[0].get_legend().texts]
    return real(fig)
  monkeypatch.setattr(report, 'figure_png', capture)
  lr_finder.plot(result, str(tmp_path / 'p.png'))
  marked = [t for t in labels['texts'] if 'used by this run' in t]
  assert len(marked) == 1 and marked[0].startswith(used), labels['texts']
  assert not any('(default)' in t for t in labels['texts'])
  assert result.summary()['used'] == ('onecycle_max' if schedule == 'onecycle'
                                      else 'divergence')
