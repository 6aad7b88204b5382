"""MNIST / Fashion-MNIST MLP (the seed's 300-100 ReLU network).

  python -m launch.mnist                         # seed recipe: SGD 0.3, batch 32
  python -m launch.mnist --learning_rate=auto    # LR finder, then train
"""

from absl import flags

from launch import flags as launch_flags

FLAGS = flags.FLAGS
launch_flags.define_flags(dataset='mnist', model='mlp', optimizer='sgd',
                          learning_rate=0.3, batch_size=32, epochs=30,
                          patience=10)
flags.adopt_module_key_flags(launch_flags)   # --help lists them


main = launch_flags.train_main('mnist')


def console():
  """The `tftrain-mnist` console script (pyproject.toml)."""
  launch_flags.run(main)


if __name__ == '__main__':
  launch_flags.run(main)
