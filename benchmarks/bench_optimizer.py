"""Step time of ProxSGD against SGD, interleaved in one process.

Two copies of each network (same initial weights) train on the same batch,
one with SGD and one with ProxSGD(GroupLasso) on every hidden layer; blocks
of steps alternate between them so both see the same machine load. Reports
the median time per step of each and their ratio (target: <= 1.05). The peer,
tensorflow-model-optimization's prune_low_magnitude, runs in its own process
(peer_tfmot_step.py) because importing it switches the process to tf_keras.

    python benchmarks/bench_optimizer.py [--quick]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compact as kc  # noqa: E402
from keras_compact import models  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

CASES = {
    # name: (model factory, input shape, batch size, steps per block)
    "lenet5": (models.lenet5, (28, 28, 1), 128, 20),
    "vgg_cifar": (models.vgg_cifar, (32, 32, 3), 64, 3),
}


def make(factory, optimizer):
    keras.utils.set_random_seed(0)
    model = factory()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


def step_times(model, x, y, steps):
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return times


def bench_case(name, blocks):
    factory, shape, batch, steps = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.random((batch, *shape), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    sgd = make(factory, keras.optimizers.SGD(0.01, momentum=0.9))
    prox = make(factory, kc.ProxSGD(0.01, momentum=0.9, penalties=[kc.GroupLasso(1e-4)]))
    for model in (sgd, prox):  # trace and warm up
        step_times(model, x, y, 3)
    times = {"SGD": [], "ProxSGD": []}
    for _ in range(blocks):
        times["SGD"] += step_times(sgd, x, y, steps)
        times["ProxSGD"] += step_times(prox, x, y, steps)
    medians = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {
        "model": name,
        "params": sgd.count_params(),
        "batch": batch,
        "steps_each": len(times["SGD"]),
        "sgd_ms": round(medians["SGD"], 2),
        "proxsgd_ms": round(medians["ProxSGD"], 2),
        "ratio": round(medians["ProxSGD"] / medians["SGD"], 3),
    }


def peer_tfmot(quick):
    """Run the tfmot peer in its own process; None if the `compare` extra is missing."""
    command = [sys.executable, os.path.join(HERE, "peer_tfmot_step.py")] + (["--quick"] if quick else [])
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"tfmot peer failed or is not installed:\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer blocks (a smoke run)")
    parser.add_argument("--models", default="lenet5,vgg_cifar")
    args = parser.parse_args()
    blocks = 2 if args.quick else 7
    rows = [bench_case(name, blocks) for name in args.models.split(",")]
    print("| model | params | batch | steps each | SGD ms/step | ProxSGD ms/step | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['params']:,} | {r['batch']} | {r['steps_each']} | "
            f"{r['sgd_ms']} | {r['proxsgd_ms']} | {r['ratio']} |"
        )
    peer = peer_tfmot(args.quick)
    if peer:
        print(
            f"\ntfmot prune_low_magnitude (tf_keras, own process), LeNet-5 batch {peer['batch']}: "
            f"SGD {peer['sgd_ms']} ms, pruned {peer['pruned_ms']} ms, ratio {peer['ratio']}"
        )


if __name__ == "__main__":
    main()
