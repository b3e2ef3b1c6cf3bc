r"""A VGG-style net with BatchNorm on CIFAR-10: dense against ProxSGD-compacted.

    python examples/vgg_cifar.py --data_dir=~/tensorflow_datasets --out_dir=out/vgg_cifar

CIFAR-10 is read through tensorflow-datasets from --data_dir, never
downloaded; prepare it once with `tfds build cifar10 --data_dir=DIR`. The
offline datasets (mnist5k, digits) also work, for a quick look. Each conv's
neuron group holds its kernel slice and the gamma and beta of the
BatchNormalization after it, so a dead channel outputs exactly 0.

The default strength is a starting point, not tuned on CIFAR-10 (no CIFAR-10
on the machines that made BENCHMARKS.md): sweep it with --sweep.
"""

from absl import app
from absl import flags

import common
from keras_compact_examples import models

common.define_flags(
    datasets=["cifar10", "mnist5k", "digits"],
    dataset="cifar10",
    epochs=60,
    batch_size=128,
    learning_rate=0.05,
    lr_schedule="constant",
    strength=5e-5,
    finetune_epochs=5,
    finetune_lr_scale=0.1,
    weighted_groups=True,
)

FLAGS = flags.FLAGS


def build_vgg(input_shape, num_classes, activation, width):
    return models.vgg_cifar(input_shape, num_classes, activation=activation, width=width)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # Four 2x2 poolings need at least 16x16 inputs: scikit-learn's 8x8 digits are scaled up.
    experiment = common.Experiment(build_vgg, image_size=32 if FLAGS.dataset == "digits" else None)
    experiment.write(experiment.run())


if __name__ == "__main__":
    app.run(main)
