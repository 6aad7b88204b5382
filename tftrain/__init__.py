"""tftrain: see how deep networks train (pure TensorFlow 2)."""

__version__ = '0.1.0'
