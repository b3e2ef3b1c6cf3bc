"""Compaction time of VGG16 and ResNet50 against clone_model + set_weights.

    python benchmarks/bench_compaction.py [--runs 5] [--fraction 0.25] [--models vgg16 resnet50]

For each model, both are timed in this one process, alternately, on the same
model; the medians and their ratio are printed (target: compaction <= 2x the
clone). `compact` is timed with and without its built-in verification (two
forward passes on a random batch of 2), with its default factorization
("auto": none here, since no low-rank penalty trained these models).
VGG16 runs at 224x224 (138M parameters), ResNet50 at 32x32.
"""

import argparse
import json
import statistics
import time

import keras
import numpy as np

import keras_compact
from keras_compact.penalties import GroupLasso


def zero_neuron_groups(model, fraction):
    """Zero the first `fraction` of every hidden layer's neurons, as the group lasso leaves them."""
    for target in GroupLasso(1.0).resolve(model):
        dead = slice(0, int(target.num_neurons * fraction))
        for member in target.members:
            value = np.array(member.view(member.variable))
            value[:, dead, :] = 0.0
            member.variable.assign(value.reshape(member.variable.shape))


def clone_and_set_weights(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


MODELS = {
    "vgg16": ("VGG16 224x224 (weights=None)", lambda: keras.applications.VGG16(weights=None)),
    "resnet50": (
        "ResNet50 32x32 (weights=None)",
        lambda: keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10),
    ),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fraction", type=float, default=0.25, help="dead neurons per hidden layer")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["vgg16", "resnet50"])
    args = parser.parse_args()
    print(json.dumps([measure(name, args) for name in args.models], indent=2))


def measure(name, args):
    label, build = MODELS[name]
    model = build()
    zero_neuron_groups(model, args.fraction)
    times = {"clone_model+set_weights": [], "compact(verify=False)": [], "compact(verify=True)": []}
    report = None
    for _ in range(args.runs):
        seconds, clone = timed(lambda: clone_and_set_weights(model))
        times["clone_model+set_weights"].append(seconds)
        del clone
        seconds, (compact_model, report) = timed(lambda: keras_compact.compact(model, verify=False))
        times["compact(verify=False)"].append(seconds)
        del compact_model
        seconds, (compact_model, report) = timed(lambda: keras_compact.compact(model, atol=1e-4))
        times["compact(verify=True)"].append(seconds)
        del compact_model
    medians = {name: statistics.median(values) for name, values in times.items()}
    baseline = medians["clone_model+set_weights"]
    result = {
        "model": label,
        "params_before": report.params_before,
        "params_after": report.params_after,
        "dead_fraction": args.fraction,
        "runs": args.runs,
        "median_seconds": medians,
        "ratio_to_clone": {name: value / baseline for name, value in medians.items()},
        "max_abs_diff": report.max_abs_diff,
    }
    keras.backend.clear_session()
    return result


if __name__ == "__main__":
    main()
