"""The peer: step time of tfmot's prune_low_magnitude against SGD on LeNet-5 (tf_keras).

Runs in its own process: importing tensorflow_model_optimization sets
TF_USE_LEGACY_KERAS=1 for the whole process. Prints one JSON line.

    python benchmarks/peer_tfmot_step.py [--quick]
"""

import json
import os
import statistics
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402

from keras_compact_examples.models import lenet5  # noqa: E402


class StepTimer(tf_keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def timed_fit(model, x, y, callbacks, epochs):
    timer = StepTimer()
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=callbacks + [timer])
    return timer.times[5:]  # drop tracing and warm-up steps


def main():
    quick = "--quick" in sys.argv
    rng = np.random.default_rng(0)
    x = rng.random((128 * 20, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    tf_keras.utils.set_random_seed(0)
    dense = lenet5(keras_module=tf_keras)
    dense.compile(tf_keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.8, begin_step=0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        lenet5(keras_module=tf_keras), pruning_schedule=schedule
    )
    pruned.compile(tf_keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
    update = [tfmot.sparsity.keras.UpdatePruningStep()]
    times = {"sgd": [], "pruned": []}
    for _ in range(1 if quick else 4):  # alternate, as the main benchmark does
        times["sgd"] += timed_fit(dense, x, y, [], 1)
        times["pruned"] += timed_fit(pruned, x, y, update, 1)
    sgd_ms = statistics.median(times["sgd"]) * 1e3
    pruned_ms = statistics.median(times["pruned"]) * 1e3
    print(
        json.dumps(
            {
                "batch": 128,
                "sgd_ms": round(sgd_ms, 2),
                "pruned_ms": round(pruned_ms, 2),
                "ratio": round(pruned_ms / sgd_ms, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
