r"""AlexNet or VGG-13 on ImageNet (ILSVRC 2012), as in the paper: dense against ProxSGD-compacted.

    python examples/imagenet.py --model=alexnet --data_dir=/data/tfds --out_dir=out/alexnet

ImageNet is read through tensorflow-datasets from --data_dir and never
downloaded: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in
DIR/downloads/manual and run `tfds build imagenet2012 --data_dir=DIR` once.
Images are scaled to --image_size (227 for AlexNet, 224 for VGG-13 by
default), randomly flipped and shifted for training; top-1 accuracy is on the
50,000 validation images. The paper reports AlexNet 60M -> 14M and VGG
133M -> 74M parameters with no top-1 loss.

The default strength is a starting point, not tuned on ImageNet (no ImageNet
on the machines that made BENCHMARKS.md).
"""

from absl import app
from absl import flags

import common
from keras_compact_examples import models

common.define_flags(
    datasets=["imagenet2012"],
    dataset="imagenet2012",
    epochs=90,
    batch_size=128,
    learning_rate=0.01,
    lr_schedule="constant",
    strength=2e-6,
    finetune_epochs=5,
    finetune_lr_scale=0.1,
    weighted_groups=True,
)
flags.DEFINE_enum("model", "alexnet", ["alexnet", "vgg13"], "Which network.")
flags.DEFINE_integer(
    "image_size",
    None,
    "Image side in pixels; default 227 (AlexNet) or 224 (VGG-13).",
    lower_bound=32,
)

FLAGS = flags.FLAGS

_BUILDERS = {"alexnet": models.alexnet, "vgg13": models.vgg13}
_IMAGE_SIZES = {"alexnet": 227, "vgg13": 224}


def build_model(input_shape, num_classes, activation, width):
    return _BUILDERS[FLAGS.model](input_shape, num_classes, activation=activation, width=width)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    experiment = common.Experiment(
        build_model, image_size=FLAGS.image_size or _IMAGE_SIZES[FLAGS.model]
    )
    experiment.write(experiment.run())


if __name__ == "__main__":
    app.run(main)
