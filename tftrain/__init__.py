"""tftrain: see how deep networks train (pure TensorFlow 2).

  from tftrain import Config, train_and_evaluate
  result = train_and_evaluate(Config(dataset='mnist'), 'runs/mine',
                              model=my_model_fn)
  result['test_accuracy'], result.model

`Config`, `train_and_evaluate` and `Result` are loaded on first use, so
importing `tftrain` (e.g. for its config in a launcher) does not import
TensorFlow.
"""

__version__ = '0.2.0'

__all__ = ['Config', 'Result', 'train_and_evaluate', 'errors']

_LAZY = {'Config': ('tftrain.config', 'Config'),
         'Result': ('tftrain.record', 'Result'),
         'train_and_evaluate': ('tftrain.loop', 'train_and_evaluate'),
         'errors': ('tftrain.errors', None)}


def __getattr__(name):
  if name in _LAZY:
    import importlib  # pylint: disable=g-import-not-at-top
    module, attr = _LAZY[name]
    module = importlib.import_module(module)
    return module if attr is None else getattr(module, attr)
  raise AttributeError(f'module tftrain has no attribute {name!r}')


def __dir__():
  return sorted(set(globals()) | set(__all__))
