"""Small models shared by several test files (and their subprocesses)."""

import keras


def convnet(seed=0):
    """A small conv net: conv 6 3x3, pool, dense 16, dense 4 (logits)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((10, 10, 1)),
            keras.layers.Conv2D(6, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu", name="fc"),
            keras.layers.Dense(4, name="out"),
        ]
    )
