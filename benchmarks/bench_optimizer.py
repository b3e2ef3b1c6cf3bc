"""Step time of ProxSGD against SGD on each Keras backend, interleaved within each backend.

Each backend runs in its own process (`KERAS_BACKEND` is fixed at Keras's
import). In it, copies of each network (same initial weights) train on the
same batch: one with SGD, one with ProxSGD(GroupLasso) on every hidden layer,
and (where the case asks for it) two with ProxSGD(TensorLowRank) applied
every step and every 10 steps. Blocks of steps alternate between them so all
see the same machine load; a block is a multiple of 10 steps, so each holds
exactly one step of `every=10`. Reports the median and mean time per step of
each and their ratios to SGD (target for GroupLasso: <= 1.05; the mean shows
the amortized cost of `every=10`, which a median hides). Ratios compare
optimizers within one backend; across backends only the absolute times do.
One JSON file holds every backend's rows, and one markdown table is printed.

The peer, tensorflow-model-optimization's prune_low_magnitude, runs in its
own process (peer_tfmot_step.py) because importing it switches the process to
tf_keras; it runs with the TensorFlow backend's CPU cases only.

    python benchmarks/bench_optimizer.py [--backend tensorflow,jax,torch] [--quick]
    python benchmarks/bench_optimizer.py --backend jax,torch --gpu-models   # ResNet50, VGG16, VGG-style

(the GPU table: about 3 minutes on an H200, JAX's compilations included).

Nothing here imports TensorFlow unless the TensorFlow backend is asked for.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ("tensorflow", "jax", "torch")
LOW_RANK = ("low rank, every=1", "low rank, every=10")

# name: (model factory name, input shape, batch size, steps per block, optimizers beyond SGD)
CPU_CASES = {
    "lenet5": ("lenet5", (28, 28, 1), 128, 20, ("group lasso", *LOW_RANK)),
    "vgg_cifar": ("vgg_cifar", (32, 32, 3), 64, 10, ("group lasso", *LOW_RANK)),
}
GPU_CASES = {
    "resnet50": ("resnet50", (224, 224, 3), 64, 10, ("group lasso",)),
    "vgg16": ("vgg16", (224, 224, 3), 32, 10, ("group lasso",)),
    "vgg_cifar": ("vgg_cifar", (32, 32, 3), 64, 10, ("group lasso", *LOW_RANK)),
}


def factory(name):
    import keras

    from keras_compact_examples import models

    if name == "resnet50":
        return lambda: keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    if name == "vgg16":
        return lambda: keras.applications.VGG16(weights=None, input_shape=(224, 224, 3))
    return getattr(models, name)


def optimizer(label):
    import keras

    import keras_compact as kc

    if label == "SGD":
        return keras.optimizers.SGD(0.01, momentum=0.9)
    penalty = {
        "group lasso": lambda: kc.GroupLasso(1e-4),
        "low rank, every=1": lambda: kc.TensorLowRank(1e-4),
        "low rank, every=10": lambda: kc.TensorLowRank(1e-4, every=10),
    }[label]()
    return kc.ProxSGD(0.01, 0.9, penalties=[penalty])


def device_name():
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{device.platform}: {device.device_kind}"
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"cuda: {torch.cuda.get_device_name()}"
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return f"gpu: {tf.config.experimental.get_device_details(gpus[0]).get('device_name', gpus[0].name)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def step_times(model, x, y, steps):
    # train_on_batch returns the loss as numpy, so each step has finished
    # (also on a GPU) when the clock stops.
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return times


def bench_case(name, case, blocks):
    import keras
    import numpy as np

    factory_name, shape, batch, steps, labels = case
    build = factory(factory_name)
    rng = np.random.default_rng(0)
    x = rng.random((batch, *shape), dtype=np.float32)
    trained = {}
    for label in ("SGD", *labels):
        keras.utils.set_random_seed(0)
        model = build()
        model.compile(optimizer=optimizer(label), loss="sparse_categorical_crossentropy")
        trained[label] = model
    classes = trained["SGD"].output_shape[-1]
    y = rng.integers(0, classes, batch)
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
            "backend": keras.backend.backend(),
            "model": name,
            "optimizer": label if label == "SGD" else f"ProxSGD {label}",
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


def worker(args):
    """One backend, in this process: prints its result as the last line of JSON."""
    import keras

    cases = GPU_CASES if args.gpu_models else CPU_CASES
    names = args.models.split(",") if args.models else list(cases)
    blocks = 2 if args.quick else args.blocks
    load_before = os.getloadavg()
    rows = [row for name in names for row in bench_case(name, cases[name], blocks)]
    versions = {"keras": keras.version()}
    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    versions[backend] = __import__(module).__version__
    print(
        json.dumps(
            {
                "backend": backend,
                "device": device_name(),
                "versions": versions,
                "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
                "rows": rows,
            }
        )
    )


def run_backend(backend, args):
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--backend", backend]
    command += ["--blocks", str(args.blocks)] + (["--quick"] if args.quick else [])
    command += (["--gpu-models"] if args.gpu_models else []) + (["--models", args.models] if args.models else [])
    environment = dict(os.environ, KERAS_BACKEND=backend)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # stderr goes straight to the terminal: progress and warnings stay visible.
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=environment)
    if result.returncode != 0:
        print(f"{backend}: failed (exit {result.returncode})", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def peer_tfmot(quick):
    """Run the tfmot peer in its own process; None if the `compare` extra is missing."""
    command = [sys.executable, os.path.join(HERE, "peer_tfmot_step.py")] + (["--quick"] if quick else [])
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"tfmot peer failed or is not installed:\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(results):
    lines = [
        "| backend | model | params | batch | optimizer | steps | median ms/step | ratio to SGD "
        "| mean ms/step | ratio to SGD |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for r in result["rows"]:
            lines.append(
                f"| {r['backend']} | {r['model']} | {r['params']:,} | {r['batch']} | {r['optimizer']} "
                f"| {r['steps']} | {r['median_ms']} | {r['median_ratio']} | {r['mean_ms']} "
                f"| {r['mean_ratio']} |"
            )
    lines.append("")
    for result in results:
        versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
        load = result["load_average_1min"]
        lines.append(
            f"- {result['backend']}: {result['device']}; {versions}; "
            f"1-minute load average {load[0]} before, {load[1]} after"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=",".join(BACKENDS), help="comma-separated: tensorflow,jax,torch")
    parser.add_argument("--quick", action="store_true", help="2 blocks (a smoke run)")
    parser.add_argument("--blocks", type=int, default=5, help="interleaved blocks of steps per optimizer")
    parser.add_argument("--models", default=None, help="comma-separated subset of the cases")
    parser.add_argument(
        "--gpu-models", action="store_true",
        help="ResNet50 (224, batch 64) and VGG16 (224, batch 32) with group lasso, and the "
        "VGG-style net with low rank too: the GPU table",
    )
    parser.add_argument("--out", default=None, help="JSON file (default: out/bench_optimizer[_gpu].json)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    backends = args.backend.split(",")
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}; choose from {BACKENDS}")
    results = [r for r in (run_backend(b, args) for b in backends) if r is not None]
    peer = None
    if "tensorflow" in backends and not args.gpu_models:
        peer = peer_tfmot(args.quick)
    out = args.out or os.path.join("out", "bench_optimizer_gpu.json" if args.gpu_models else "bench_optimizer.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump({"backends": results, "tfmot_peer": peer}, f, indent=1)
    print(markdown(results))
    if peer:
        print(
            f"\ntfmot prune_low_magnitude (tf_keras, own process), LeNet-5 batch {peer['batch']}: "
            f"SGD {peer['sgd_ms']} ms, pruned {peer['pruned_ms']} ms, ratio {peer['ratio']}"
        )
    print(f"\nwritten: {out}")
    if len(results) < len(backends):
        sys.exit("some backends failed")


if __name__ == "__main__":
    main()
