"""Step time of ProxSGD against SGD, interleaved in one process.

Copies of each network (same initial weights) train on the same batch: one
with SGD, one with ProxSGD(GroupLasso) on every hidden layer, and two with
ProxSGD(TensorLowRank) applied every step and every 10 steps. Blocks of steps
alternate between them so all see the same machine load. Reports the median
and mean time per step of each and their ratios to SGD (target for GroupLasso: <= 1.05; the
mean shows the amortized cost of `every=10`, which a median hides).
The peer,
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
from keras_compact_examples import models  # noqa: E402

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


def optimizers():
    """The optimizers compared, SGD first (the baseline of every ratio)."""
    return {
        "SGD": keras.optimizers.SGD(0.01, momentum=0.9),
        "ProxSGD group lasso": kc.ProxSGD(0.01, 0.9, penalties=[kc.GroupLasso(1e-4)]),
        "ProxSGD low rank, every=1": kc.ProxSGD(0.01, 0.9, penalties=[kc.TensorLowRank(1e-4)]),
        "ProxSGD low rank, every=10": kc.ProxSGD(
            0.01, 0.9, penalties=[kc.TensorLowRank(1e-4, every=10)]
        ),
    }


def bench_case(name, blocks):
    factory, shape, batch, steps = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.random((batch, *shape), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    trained = {label: make(factory, optimizer) for label, optimizer in optimizers().items()}
    for model in trained.values():  # trace and warm up
        step_times(model, x, y, 3)
    times = {label: [] for label in trained}
    for _ in range(blocks):
        for label, model in trained.items():
            times[label] += step_times(model, x, y, steps)
    medians = {label: statistics.median(t) * 1e3 for label, t in times.items()}
    # The mean counts the one costly step in `every` that a median hides.
    means = {label: statistics.fmean(t) * 1e3 for label, t in times.items()}
    return [
        {
            "model": name,
            "optimizer": label,
            "params": trained["SGD"].count_params(),
            "batch": batch,
            "steps": len(times[label]),
            "median_ms": round(medians[label], 2),
            "median_ratio": round(medians[label] / medians["SGD"], 3),
            "mean_ms": round(means[label], 2),
            "mean_ratio": round(means[label] / means["SGD"], 3),
        }
        for label in trained
    ]


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
    rows = [row for name in args.models.split(",") for row in bench_case(name, blocks)]
    print(
        "| model | params | batch | optimizer | steps | median ms/step | ratio to SGD "
        "| mean ms/step | ratio to SGD |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['params']:,} | {r['batch']} | {r['optimizer']} | {r['steps']} "
            f"| {r['median_ms']} | {r['median_ratio']} | {r['mean_ms']} | {r['mean_ratio']} |"
        )
    peer = peer_tfmot(args.quick)
    if peer:
        print(
            f"\ntfmot prune_low_magnitude (tf_keras, own process), LeNet-5 batch {peer['batch']}: "
            f"SGD {peer['sgd_ms']} ms, pruned {peer['pruned_ms']} ms, ratio {peer['ratio']}"
        )


if __name__ == "__main__":
    main()
