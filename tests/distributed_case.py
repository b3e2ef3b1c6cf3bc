"""The training run that the multi-worker test repeats on one device and on two workers.

Keras 3's `fit` does not run under MultiWorkerMirroredStrategy (upstream
keras-team/keras#20585), so this is the custom training loop such users write:
`strategy.run` of a step that calls `optimizer.apply`, after `optimizer.bind`.
"""

import keras
import numpy as np
import tensorflow as tf

import keras_compact as kc
from small_models import convnet

GLOBAL_BATCH = 32


def dataset():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(128, 10, 10, 1)).astype("float32")
    y = rng.integers(0, 4, 128)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    # Each worker takes its share of every global batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


def train(strategy, epochs=3):
    """Train under `strategy` (tf.distribute.get_strategy() for one device)."""
    with strategy.scope():
        model = convnet()
        optimizer = kc.ProxSGD(0.05, 0.9, penalties=[kc.GroupLasso(1.0)]).bind(model)
        optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

    @tf.function
    def train_step(x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(loss_fn(y, model(x, training=True))) / GLOBAL_BATCH
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)

        strategy.run(replica_step, args=(x, y))

    data = strategy.experimental_distribute_dataset(dataset())
    for _ in range(epochs):
        for x, y in data:
            train_step(x, y)
    return model
