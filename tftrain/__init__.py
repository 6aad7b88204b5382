"""tftrain: see how deep networks train (pure TensorFlow 2).

  from tftrain import Config, train_and_evaluate
  result = train_and_evaluate(Config(dataset='mnist'), 'runs/mine',
                              model=my_model_fn)

`Config` and `train_and_evaluate` are loaded on first use, so importing
`tftrain` (e.g. for its config in a launcher) does not import TensorFlow.
"""

__version__ = '0.2.0'

_LAZY = {'Config': ('tftrain.config', 'Config'),
         'train_and_evaluate': ('tftrain.loop', 'train_and_evaluate')}


def __getattr__(name):
  if name in _LAZY:
    import importlib  # pylint: disable=g-import-not-at-top
    module, attr = _LAZY[name]
    return getattr(importlib.import_module(module), attr)
  raise AttributeError(f'module tftrain has no attribute {name!r}')
