"""Run under KERAS_BACKEND=jax or torch (a subprocess of test_backends.py): prints one JSON line.

The prox operators, penalties, optimizers and compactor use only keras.ops
and Keras's optimizer hooks, so they run on another backend unchanged.
"""

import json
import os
import sys

assert os.environ.get("KERAS_BACKEND") in ("jax", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compact as kc  # noqa: E402

# Keras's own fit may use tf.data when TensorFlow is installed; our import must not need it.
TENSORFLOW_IMPORTED_BY_US = "tensorflow" in sys.modules

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from small_models import convnet  # noqa: E402


def main():
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(5, 4, 1)).astype("float32"), rng.normal(size=(1, 4, 1)).astype("float32")]
    shrunk = [keras.ops.convert_to_numpy(b) for b in kc.prox.group_soft_threshold(blocks, 1.5)]
    x = rng.normal(size=(96, 10, 10, 1)).astype("float32")
    y = rng.integers(0, 4, 96)
    runs = {}
    for name, optimizer in [
        ("ProxSGD", kc.ProxSGD(0.05, 0.9, penalties=[kc.GroupLasso(1.0)])),
        ("ProxAdam", kc.ProxAdam(0.01, penalties=[kc.GroupLasso(2.0), kc.TensorLowRank(1.0, every=2)])),
    ]:
        model = convnet()
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[kc.NeuronMonitor(verbose=0)])
        compact_model, report = kc.compact(model, sample_data=x[:8])
        # Strength as state: a new value takes effect in the compiled step.
        optimizer.set_strengths([1e4] * len(optimizer.penalties))
        after = model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[kc.NeuronMonitor(verbose=0)])
        runs[name] = {
            "backend": keras.backend.backend(),
            "live_conv": history.history["live_neurons/conv"],
            "live_conv_after_strength_change": after.history["live_neurons/conv"][-1],
            "params": [report.params_before, report.params_after],
            "max_abs_diff": report.max_abs_diff,
        }
    # TensorLowRank every=3, strong enough to zero the output kernel: zero right
    # after steps 1, 4, 7 (iterations 0, 3, 6), regrown by the gradient between.
    model = convnet()
    model.compile(
        kc.ProxSGD(0.05, penalties=[kc.TensorLowRank(1e4, layers=["out"], every=3)]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    out_kernel_zero = []
    for _ in range(7):
        model.train_on_batch(x[:16], y[:16])
        out_kernel_zero.append(bool(np.all(keras.ops.convert_to_numpy(model.get_layer("out").kernel) == 0)))
    # The wrapped optimizer's own step: with a zero strength, ProxSGD and
    # ProxAdam equal Keras's SGD and Adam (on torch, Keras's fused classes).
    same_as_keras = {}
    for name, proximal, plain in [
        ("ProxSGD", kc.ProxSGD(0.05, 0.9, penalties=[kc.GroupLasso(0.0)]), keras.optimizers.SGD(0.05, 0.9)),
        ("ProxAdam", kc.ProxAdam(0.01, penalties=[kc.GroupLasso(0.0)]), keras.optimizers.Adam(0.01)),
    ]:
        weights = []
        for optimizer in (proximal, plain):
            model = convnet()
            model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            for step in range(3):
                model.train_on_batch(x[16 * step : 16 * (step + 1)], y[16 * step : 16 * (step + 1)])
            weights.append([keras.ops.convert_to_numpy(v) for v in model.trainable_variables])
        same_as_keras[name] = {
            "max_abs_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(*weights)),
            "base_classes": [c.__name__ for c in type(proximal).__mro__],
        }
    print(
        json.dumps(
            {
                "same_as_keras": same_as_keras,
                "shrunk": [b.tolist() for b in shrunk],
                "runs": runs,
                "out_kernel_zero_every_3": out_kernel_zero,
                "tf": TENSORFLOW_IMPORTED_BY_US,
            }
        )
    )


if __name__ == "__main__":
    main()
