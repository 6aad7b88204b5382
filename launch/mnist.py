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


def main(argv):
  del argv
  launch_flags.setup_devices()

  def body():
    config = launch_flags.config_from_flags()   # bad flags fail before TF loads
    workdir = launch_flags.default_workdir('mnist')
    from tftrain import loop  # pylint: disable=g-import-not-at-top
    result = loop.train_and_evaluate(config, workdir)
    return launch_flags.report(result)
  launch_flags.run_main(body)


if __name__ == '__main__':
  launch_flags.run(main)
