"""The TFMOT peer at a budget: unstructured magnitude pruning to a number of non-zeros.

The same budgets as peer_torch_pruning.py, met with zeros instead of smaller
layers: LeNet-5 keeps 3%, 5%, 10% or 25% of its parameters non-zero; vgg_small
keeps 50% or 25% of its multiply-adds on non-zero weights (the sparsity of
every kernel is then 1 - fraction). One JSON record per (model, budget, seed),
the record shape of peer_torch_pruning.py; `parameters` and `multiply_adds`
stay the dense ones (a dense kernel multiplies its zeros too), beside
`nonzero_parameters` and `nonzero_multiply_adds`.

Per (model, seed): the tf_keras network of benchmarks/_common.py trained dense
for --epochs (SGD lr 0.01, momentum 0.9, batch 64); per budget, a copy of it
wrapped by `prune_low_magnitude` (every Conv2D/Dense kernel, biases kept),
sparsity raised by TFMOT's PolynomialDecay from 0 to the target over the first
80% of --finetune_epochs' steps (a mask update every 50 steps), fine-tuned for
--finetune_epochs, `strip_pruning`-ed and scored on the test digits. Like
peer_tfmot.py it runs in its own process (importing
tensorflow_model_optimization sets TF_USE_LEGACY_KERAS=1 process-wide). No new
seed is started after --time_limit seconds; the JSON is rewritten after every
record.

    python benchmarks/peer_tfmot_budget.py --models lenet5 --seeds 0 1 2 \\
        --out benchmarks/results/tfmot_budget_lenet5.json
"""

import argparse
import importlib.metadata
import math
import os
import platform
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402

from _common import ARCHITECTURES  # noqa: E402
from _common import BUDGETS  # noqa: E402
from _common import mnist5k  # noqa: E402
from keras_compact.files import write_json  # noqa: E402
from peer_tfmot import compile_sgd  # noqa: E402

FREQUENCY = 50
BATCH = 64


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(BUDGETS), default=list(BUDGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10, help="dense training epochs")
    parser.add_argument("--finetune_epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads")
    parser.add_argument("--time_limit", type=float, default=3600,
                        help="seconds; no seed is started after it")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    started = time.time()
    expected = [(name, kind, fraction, seed) for name in args.models for seed in args.seeds
                for kind, fraction in BUDGETS[name]]
    result = dict(
        peer="tfmot", command=" ".join(sys.argv),
        device=f"{os.cpu_count()}-core CPU ({platform.machine()}), no GPU",
        versions={name: importlib.metadata.version(name) for name in
                  ("tensorflow", "tf-keras", "tensorflow-model-optimization")},
        settings=dict(epochs=args.epochs, finetune_epochs=args.finetune_epochs, batch=BATCH,
                      lr=0.01, momentum=0.9, schedule="PolynomialDecay 0 -> target over 80% "
                      f"of the fine-tuning steps, frequency {FREQUENCY}", threads=args.threads),
        stopped=None, records=[],
    )
    for name in args.models:
        build, shape = ARCHITECTURES[name]
        (x_train, y_train), (x_test, y_test) = mnist5k(**shape)
        for seed in args.seeds:
            if time.time() - started > args.time_limit:
                result["stopped"] = f"--time_limit {args.time_limit:g} s reached before {name} seed {seed}"
                break
            seed_started = time.time()
            tf_keras.utils.set_random_seed(seed)
            dense = build(tf_keras)
            compile_sgd(dense)
            dense.fit(x_train, y_train, epochs=args.epochs, batch_size=BATCH, verbose=0)
            train_seconds = time.time() - seed_started
            dense_accuracy = accuracy(dense, x_test, y_test)
            counts = dict(parameters=dense.count_params(), multiply_adds=nonzero_macs(dense, None))
            print(f"{name} seed {seed}: dense accuracy {dense_accuracy:.4f} ({train_seconds:.0f} s)",
                  flush=True)
            for kind, fraction in BUDGETS[name]:
                budget_started = time.time()
                target = math.floor(fraction * counts[kind])
                sparsity = target_sparsity(dense, kind, target)
                pruned = prune(dense, sparsity, x_train, y_train, args.finetune_epochs)
                record = dict(
                    peer="tfmot",
                    model=name,
                    seed=seed,
                    budget=dict(kind=kind, fraction=fraction, target=target),
                    accuracy=accuracy(pruned, x_test, y_test),
                    accuracy_dense_trained=dense_accuracy,
                    parameters=pruned.count_params(),
                    nonzero_parameters=int(sum(np.count_nonzero(w) for w in pruned.get_weights())),
                    multiply_adds=counts["multiply_adds"],
                    nonzero_multiply_adds=nonzero_macs(pruned, np.count_nonzero),
                    kernel_sparsity=sparsity,
                    epochs=args.epochs,
                    finetune_epochs=args.finetune_epochs,
                    train_seconds=round(train_seconds, 1),
                    finetune_seconds=round(time.time() - budget_started, 1),
                )
                print(f"  {kind} <= {target:,}: sparsity {sparsity:.4f}, "
                      f"{record['nonzero_parameters']:,} non-zero params, "
                      f"{record['nonzero_multiply_adds']:,} non-zero MACs, "
                      f"accuracy {record['accuracy']:.4f}", flush=True)
                result["records"].append(record)
                write_partial(result, expected, started, args.out)
    write_partial(result, expected, started, args.out)
    print(f"{len(result['records'])}/{len(expected)} records in {result['wall_seconds']:.0f} s "
          f"-> {args.out}")


def kernels(model):
    return [layer for layer in model.layers
            if isinstance(layer, (tf_keras.layers.Conv2D, tf_keras.layers.Dense))]


def nonzero_macs(model, count):
    """Multiply-adds per sample on the kernels' non-zero weights (all weights when
    count is None): kernel entries x output positions, biases not counted."""
    total = 0
    for layer in kernels(model):
        kernel = layer.kernel.numpy()
        weights = kernel.size if count is None else int(count(kernel))
        positions = math.prod(layer.output_shape[1:-1])  # 1 for Dense
        total += weights * positions
    return total


def target_sparsity(model, kind, target):
    """The one sparsity for every kernel that meets the budget."""
    if kind == "multiply_adds":
        return 1 - target / nonzero_macs(model, None)
    kernel_weights = sum(layer.kernel.shape.num_elements() for layer in kernels(model))
    return 1 - (target - (model.count_params() - kernel_weights)) / kernel_weights


def prune(dense, sparsity, x_train, y_train, epochs):
    model = tf_keras.models.clone_model(dense)
    model.set_weights(dense.get_weights())
    steps = epochs * math.ceil(len(x_train) / BATCH)
    end_step = max(FREQUENCY, int(0.8 * steps) // FREQUENCY * FREQUENCY)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=end_step,
        frequency=FREQUENCY,
    )
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    compile_sgd(pruned)
    pruned.fit(x_train, y_train, epochs=epochs, batch_size=BATCH, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    return tfmot.sparsity.keras.strip_pruning(pruned)


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def write_partial(result, expected, started, path):
    done = {(r["model"], r["budget"]["kind"], r["budget"]["fraction"], r["seed"])
            for r in result["records"]}
    result.update(
        complete=len(done) == len(expected),
        not_run=[dict(model=m, kind=k, fraction=f, seed=s)
                 for m, k, f, s in expected if (m, k, f, s) not in done],
        wall_seconds=round(time.time() - started, 1),
    )
    write_json(path, result)


if __name__ == "__main__":
    main()
