"""keras-compact at a size budget: BudgetController runs and a fixed-strength sweep, peers' protocol.

    python benchmarks/bench_budget.py --models lenet5 --seeds 0 1 2 \\
        --out benchmarks/results/budget_lenet5.json
    python benchmarks/bench_budget.py --models vgg_small --seeds 0 \\
        --out benchmarks/results/budget_vgg_small.json
    python benchmarks/bench_budget.py --models lenet5 --strengths 0.004 0.008 0.016 \\
        --seeds 0 --out benchmarks/results/fixed_lenet5.json

The protocol of the peers (benchmarks/PEERS.md: peer_torch_pruning.py,
peer_tfmot_budget.py), so that their JSON and these records sit in one table:
from scratch (seeded Glorot-uniform init), SGD lr 0.01, momentum 0.9, batch 64,
--epochs of training, then `keras_compact.compact`, then --finetune_epochs of
plain SGD on the compact model at the same lr 0.01 (the peers' fine-tuning lr;
the examples use lr * finetune_lr_scale instead). The training is ProxSGD with
a GroupLasso on every hidden layer, its groups weighted by sqrt(size) as in the
examples (--no-weighted_groups: unweighted, as in the README's quick start),
and either

- a `BudgetController` per budget of BUDGETS below, the peers' budgets
  (LeNet-5: 3/5/10/25% of the parameters; vgg_small: 50/25% of the MACs), or
- with --strengths, each fixed strength and no controller (the sweep the
  budget runs are compared with: what an expert tuning the strength gets).

One JSON record per (model, budget or strength, seed): sizes reached (counts
and fractions), whether the budget landed in [0.9, 1.0] x budget, accuracy of
the trained model, of the compact model before and after fine-tuning,
`landed_at_end`, the controller's `history`, and the controller's own cost:
seconds spent in its hooks (each projection timed) against the seconds of
`fit`, measured in this process. vgg_small records also have the compact
model's float32 TFLite size and its median latency (batch 1, 1 thread,
keras_compact.bench.tflite_latency). No run is started after --time_limit
seconds; the JSON is rewritten after every record. With its defaults (both
models, 3 seeds; what `make bench` runs) it took about 40 minutes of
wall time here (2 shared CPU cores). benchmarks/budget_report.py makes the tables and the plot.
"""

import argparse
import functools
import os
import platform
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import keras_compact
from keras_compact.bench import tflite_latency
from keras_compact.compaction.report import multiply_adds
from keras_compact.files import write_json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ARCHITECTURES  # noqa: E402
from _common import mnist5k  # noqa: E402

# The peers' settings (PEERS.md).
LEARNING_RATE = 0.01
MOMENTUM = 0.9
BATCH = 64
# name: [(budget kind, fraction)], the peers' budgets (their _common.BUDGETS).
BUDGETS = {
    "lenet5": [("parameters", f) for f in (0.03, 0.05, 0.10, 0.25)],
    "vgg_small": [("multiply_adds", f) for f in (0.50, 0.25)],
}
# The band a budget run must land in, as a fraction of the budget.
BAND = (0.9, 1.0)
# Test images the compactor's check and the TFLite export run on.
SAMPLE = 64


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(BUDGETS), default=list(BUDGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budgets", nargs="+", type=float, default=None,
                        help="only these budget fractions (default: all of the model's)")
    parser.add_argument("--strengths", nargs="+", type=float, default=None,
                        help="fixed strengths, no BudgetController (the sweep)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: 10 for lenet5, 4 for vgg_small)")
    parser.add_argument("--finetune_epochs", type=int, default=None,
                        help="fine-tuning epochs (default: 5 for lenet5, 2 for vgg_small)")
    parser.add_argument("--weighted_groups", action=argparse.BooleanOptionalAction, default=True,
                        help="GroupLasso(weighted=...): groups weighted by sqrt(size), the examples' choice")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads")
    parser.add_argument("--time_limit", type=float, default=3600,
                        help="seconds; no run is started after it")
    parser.add_argument("--out", default="benchmarks/results/budget.json")
    args = parser.parse_args()
    # One thread per process, as the peers ran: several benchmarks share 2 cores.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    started = time.time()
    runs = []
    for name in args.models:
        if args.strengths:
            runs += [(name, seed, None, s) for seed in args.seeds for s in args.strengths]
        else:
            budgets = [b for b in BUDGETS[name] if args.budgets is None or b[1] in args.budgets]
            runs += [(name, seed, b, None) for seed in args.seeds for b in budgets]
    result = dict(
        tool="keras-compact", command=" ".join(sys.argv),
        device=f"{os.cpu_count()}-core CPU ({platform.machine()}), no GPU, shared",
        versions=dict(keras=keras.__version__, tensorflow=tf.__version__),
        settings=dict(lr=LEARNING_RATE, momentum=MOMENTUM, batch=BATCH,
                      finetune="plain SGD, lr 0.01, momentum 0.9", threads=args.threads,
                      penalty=f"GroupLasso(weighted={args.weighted_groups}) on every hidden layer"),
        stopped=None, records=[], not_run=[],
    )
    data = {}
    for index, (name, seed, budget, strength) in enumerate(runs):
        if time.time() - started > args.time_limit:
            result["stopped"] = f"--time_limit {args.time_limit:g} s reached"
            result["not_run"] = [dict(model=n, seed=s, budget=b, strength=f)
                                 for n, s, b, f in runs[index:]]
            break
        if name not in data:
            data[name] = mnist5k(**ARCHITECTURES[name][1])
        epochs = args.epochs or {"lenet5": 10, "vgg_small": 4}[name]
        finetune = args.finetune_epochs if args.finetune_epochs is not None else {
            "lenet5": 5, "vgg_small": 2}[name]
        record = run(name, seed, budget, strength, data[name], epochs, finetune, args.weighted_groups)
        result["records"].append(record)
        result["wall_seconds"] = round(time.time() - started, 1)
        write_json(args.out, result)
        print(summary(record), flush=True)
    result["complete"] = not result["not_run"]
    result["wall_seconds"] = round(time.time() - started, 1)
    write_json(args.out, result)


def run(name, seed, budget, strength, data, epochs, finetune_epochs, weighted):
    run_started = time.time()
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = ARCHITECTURES[name][0](keras_module=keras)
    dense_params = int(model.count_params())
    dense_macs = int(multiply_adds(model))
    # A budget run's start strength is the controller's (only the penalties'
    # ratios are read); a sweep run's is the strength given.
    penalty = keras_compact.GroupLasso(strength if strength is not None else 1e-4, weighted=weighted)
    model.compile(
        optimizer=keras_compact.ProxSGD(LEARNING_RATE, momentum=MOMENTUM, penalties=[penalty]),
        loss="sparse_categorical_crossentropy", metrics=["accuracy"],
    )
    callbacks, controller = [], None
    if budget is not None:
        kind, fraction = budget
        controller = keras_compact.BudgetController(
            **{"params" if kind == "parameters" else "macs": fraction}, verbose=0)
        controller_cost = time_controller(controller)
        callbacks.append(controller)
    fit_started = time.time()
    model.fit(x_train, y_train, batch_size=BATCH, epochs=epochs, shuffle=True,
              callbacks=callbacks, verbose=0)
    train_seconds = time.time() - fit_started
    accuracy_sparse = evaluate(model, x_test, y_test)

    compact_started = time.time()
    small, report = keras_compact.compact(model, sample_data=x_test[:SAMPLE], factorize=False)
    compact_seconds = time.time() - compact_started
    small.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    accuracy_before_finetune = evaluate(small, x_test, y_test)
    finetune_started = time.time()
    if finetune_epochs:
        small.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        keras.utils.set_random_seed(seed + 1)
        small.fit(x_train, y_train, batch_size=BATCH, epochs=finetune_epochs, shuffle=True,
                  verbose=0)
    finetune_seconds = time.time() - finetune_started

    record = dict(
        tool="keras-compact", method="budget" if budget else "fixed strength",
        model=name, seed=seed, epochs=epochs, finetune_epochs=finetune_epochs,
        weighted_groups=weighted,
        dense=dict(parameters=dense_params, multiply_adds=dense_macs),
        parameters=int(report.params_after), multiply_adds=int(report.macs_after),
        parameters_fraction=report.params_after / dense_params,
        multiply_adds_fraction=report.macs_after / dense_macs,
        widths=widths(small),
        accuracy_sparse_trained=accuracy_sparse,
        accuracy_before_finetune=accuracy_before_finetune,
        accuracy=evaluate(small, x_test, y_test),
        compaction_max_abs_diff=report.max_abs_diff,
        train_seconds=round(train_seconds, 1), compact_seconds=round(compact_seconds, 2),
        finetune_seconds=round(finetune_seconds, 1),
    )
    if budget is not None:
        kind, fraction = budget
        cost = controller_cost()
        reached = record[f"{kind}_fraction"] / fraction
        record.update(
            budget=dict(kind=kind, fraction=fraction),
            reached_over_budget=reached,
            in_band=BAND[0] <= reached <= BAND[1],
            landed_at_end=controller.landed_at_end,
            history=[[int(step), float(s), int(p), int(m)] for step, s, p, m in controller.history],
            controller_cost=dict(cost, fit_seconds=train_seconds,
                                 fraction_of_fit=cost["seconds"] / train_seconds),
        )
    else:
        record["strength"] = strength
    if name == "vgg_small":
        record["tflite"] = tflite(small, x_test[:SAMPLE])
    record["wall_seconds"] = round(time.time() - run_started, 1)
    keras.backend.clear_session()
    return record


def time_controller(controller):
    """Wraps the controller's hooks, its landing and its projection with timers,
    in place; returns a function giving the totals so far.

    The hooks are the whole cost a user pays (checks, projections, the landing,
    the epoch-end logs); the landing (once per run: a binary search on
    projections) and each projection are also timed apart, since what a check
    costs is mostly its projection.
    """
    hooks = ("on_train_begin", "on_train_batch_end", "on_epoch_end", "on_train_end")
    seconds = {name: 0.0 for name in hooks + ("_land",)}
    projections = []

    def timed(name, method, into):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                into(name, time.perf_counter() - start)
        return wrapper

    def add(name, elapsed):
        seconds[name] += elapsed

    for name in hooks + ("_land",):
        setattr(controller, name, timed(name, getattr(controller, name), add))
    controller._project = timed("_project", controller._project,
                                lambda _, elapsed: projections.append(elapsed))

    def totals():
        return dict(
            seconds=sum(seconds[name] for name in hooks),
            hook_seconds={name: seconds[name] for name in hooks},
            landing_seconds=seconds["_land"],
            projections=len(projections),
            projection_seconds_median=float(np.median(projections)) if projections else None,
            projection_seconds_total=float(np.sum(projections)),
        )

    return totals


def evaluate(model, x, y):
    return float(model.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)["accuracy"])


def widths(model):
    """Neurons of each Dense/Conv layer, in order."""
    return [int(getattr(layer, "units", None) or layer.filters) for layer in model.layers
            if getattr(layer, "units", None) or getattr(layer, "filters", None)]


def tflite(model, sample):
    """float32 TFLite of `model`: size (bytes) and median latency (batch 1, 1 thread).

    The file goes to a temporary folder: only the numbers are kept.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.tflite")
        exported = keras_compact.export(model, path, format="tflite", representative_data=sample)
        latency = tflite_latency(path, num_threads=1, batch_size=1, runs=200, warmup=20)
    return dict(bytes=int(exported.size_bytes), latency_ms_median=1000 * latency,
                max_abs_diff=exported.max_abs_diff)


def summary(record):
    what = (f"budget {record['budget']['kind']} {record['budget']['fraction']:g}"
            if record["method"] == "budget" else f"strength {record['strength']:g}")
    line = (f"{record['model']} seed {record['seed']} {what}: {record['parameters']:,} params "
            f"({record['parameters_fraction']:.2%}), {record['multiply_adds']:,} MACs "
            f"({record['multiply_adds_fraction']:.2%}), widths {record['widths']}, accuracy "
            f"{record['accuracy_sparse_trained']:.4f} trained, "
            f"{record['accuracy_before_finetune']:.4f} compact, {record['accuracy']:.4f} fine-tuned; "
            f"{record['wall_seconds']:.0f} s")
    if record["method"] == "budget":
        cost = record["controller_cost"]
        line += (f"; reached/budget {record['reached_over_budget']:.3f}"
                 f"{'' if record['in_band'] else ' OUT OF BAND'}"
                 f"{', landed at end' if record['landed_at_end'] else ''}; controller "
                 f"{cost['seconds']:.2f} s of {cost['fit_seconds']:.0f} s fit "
                 f"({cost['fraction_of_fit']:.2%}), {cost['projections']} projections")
    return line


if __name__ == "__main__":
    main()
