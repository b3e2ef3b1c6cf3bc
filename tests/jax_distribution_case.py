"""Run under KERAS_BACKEND=jax with two virtual CPU devices (a subprocess of test_backends.py).

Trains the same convnet with ProxSGD on one device, under keras.distribution.DataParallel,
and under ModelParallel with the dense kernel sharded across the devices; changes the
strength mid-training in each; prints one JSON line with the final weights' differences.
"""

import json
import os
import sys

assert os.environ.get("KERAS_BACKEND") == "jax"
assert "xla_force_host_platform_device_count=2" in os.environ.get("XLA_FLAGS", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compact as kc  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from small_models import convnet  # noqa: E402


def train(x, y):
    model = convnet(seed=0)
    optimizer = kc.ProxSGD(0.05, momentum=0.9, penalties=[kc.GroupLasso(0.2)])
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    optimizer.set_strengths([10.0])  # strength as state, changed mid-training
    model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    return [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights]


def main():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10, 10, 1)).astype("float32")
    y = rng.integers(0, 4, 64)
    devices = keras.distribution.list_devices("cpu")
    single = train(x, y)
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    data_parallel = train(x, y)
    mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
    layout = keras.distribution.LayoutMap(mesh)
    layout[".*fc/kernel"] = (None, "model")
    keras.distribution.set_distribution(keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch"))
    model_parallel = train(x, y)
    keras.distribution.set_distribution(None)

    def max_difference(a, b):
        return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))

    fc_index = 2  # conv kernel, conv bias, fc kernel, ...
    print(
        json.dumps(
            {
                "devices": len(devices),
                "data_parallel": max_difference(single, data_parallel),
                "model_parallel": max_difference(single, model_parallel),
                "dead_fc": int((~single[fc_index].any(axis=0)).sum()),
            }
        )
    )


if __name__ == "__main__":
    main()
