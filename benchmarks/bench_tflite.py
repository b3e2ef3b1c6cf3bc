"""Dense against compact on TFLite, with TFMOT's unstructured pruning as the peer.

For each network (LeNet-5; a VGG-style net on 32x32x3 inputs), trained with
ProxSGD + GroupLasso on mnist5k: parameters, multiply-adds, test accuracy,
.tflite size (float32 and int8) and TFLite latency (ai_edge_litert, XNNPACK,
batch 1; 1 thread and all cores), for
- dense: the trained network as it is (dead neurons included);
- compact: `keras_compact.compact` of it;
- compact_xM: the same with `channel_multiple=M` (default 8), which
  keeps a few dead channels so each width is a multiple of XNNPACK's blocks;
- tfmot80: the same architecture pruned to 80% unstructured sparsity by
  tensorflow-model-optimization, in its own process (peer_tfmot.py).

Latencies are medians of `--runs` invocations, taken `--repeats` times with
the models interleaved (so that load from other processes hits all alike);
the table gives the median over repeats.

    python benchmarks/bench_tflite.py                           # everything
    python benchmarks/bench_tflite.py --models lenet5 --repeats 3

Trained dense models are cached in --out_dir: a second run only compacts,
converts and times (delete the .keras files to retrain).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

import keras
import numpy as np

import keras_compact
from _common import ARCHITECTURES
from _common import gzip_bytes
from _common import mnist5k
from keras_compact.compaction.report import multiply_adds
from keras_compact.bench import tflite_latency
from keras_compact.exporter import run_tflite
from keras_compact.files import write_json

HERE = os.path.dirname(os.path.abspath(__file__))
# GroupLasso(strength, weighted=True) per network: strong enough to kill
# neurons within the epochs given, at a small cost in accuracy.
STRENGTHS = {"lenet5": 0.01, "vgg_small": 0.004}
EPOCHS = {"lenet5": 10, "vgg_small": 15}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES))
    parser.add_argument("--out_dir", default="out/bench_tflite")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--strength", type=float,
                        help="GroupLasso strength for every model (default: STRENGTHS)")
    parser.add_argument("--no_peer", action="store_true", help="skip TFMOT")
    parser.add_argument("--channel_multiple", type=int, default=8,
                        help="also measure compact(channel_multiple=M) (1: skip)")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    threads = sorted({1, os.cpu_count()})

    rows = []
    for name in args.models:
        build, shape = ARCHITECTURES[name]
        data = mnist5k(**shape)
        strength = args.strength or STRENGTHS[name]
        dense = train_dense(name, build, data, strength, args.out_dir)
        rows.append(measure(name, "dense", dense, data, strength, args.out_dir))
        compact, _ = keras_compact.compact(dense, sample_data=data[1][0][:256])
        rows.append(measure(name, "compact", compact, data, strength, args.out_dir))
        if args.channel_multiple > 1:
            rounded, _ = keras_compact.compact(
                dense, sample_data=data[1][0][:256], channel_multiple=args.channel_multiple
            )
            variant = f"compact_x{args.channel_multiple}"
            rows.append(measure(name, variant, rounded, data, strength, args.out_dir))
        if not args.no_peer:
            rows.append(run_peer(name, data, args.out_dir))

    for row in rows:
        row["latency_us"] = {t: [] for t in threads}
    for _ in range(args.repeats):
        for row in rows:
            for t in threads:
                seconds = tflite_latency(row["float32_path"], num_threads=t, runs=args.runs)
                row["latency_us"][t].append(seconds * 1e6)
    for row in rows:
        row["latency_us"] = {t: statistics.median(v) for t, v in row["latency_us"].items()}

    write_json(os.path.join(args.out_dir, "results.json"), rows)
    print(markdown_table(rows, threads, args))


def train_dense(name, build, data, strength, out_dir):
    path = os.path.join(out_dir, f"{name}_grouplasso{strength:g}_dense.keras")
    if os.path.exists(path):
        return keras.saving.load_model(path)
    (x_train, y_train), _ = data
    keras.utils.set_random_seed(0)
    model = build(keras_module=keras)
    penalty = keras_compact.GroupLasso(strength, weighted=True)
    model.compile(
        optimizer=keras_compact.ProxSGD(0.01, momentum=0.9, penalties=[penalty]),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        x_train, y_train, epochs=EPOCHS[name], batch_size=64, verbose=2,
        callbacks=[keras_compact.NeuronMonitor()],
    )
    model.save(path)
    return model


def measure(name, variant, model, data, strength, out_dir):
    (x_train, _), (x_test, y_test) = data
    row = dict(
        model=name,
        variant=variant,
        strength=strength,
        parameters=model.count_params(),
        multiply_adds=multiply_adds(model),
    )
    for quantize in (None, "int8"):
        kind = quantize or "float32"
        path = os.path.join(out_dir, f"{name}_{variant}_{kind}.tflite")
        report = keras_compact.export(
            model, path, format="tflite", quantize=quantize,
            representative_data=x_train, sample_data=x_test, labels=y_test,
        )
        row[f"{kind}_path"] = path
        row[f"{kind}_bytes"] = report.size_bytes
        row[f"{kind}_gzip_bytes"] = gzip_bytes(path)
        row[f"{kind}_accuracy"] = report.accuracy
        row["accuracy"] = report.keras_accuracy
    return row


def run_peer(name, data, out_dir):
    """TFMOT in its own process (it sets TF_USE_LEGACY_KERAS=1 on import);
    its outputs are checked against its own model's here."""
    result_path = os.path.join(out_dir, f"{name}_tfmot80.json")
    subprocess.run(
        [sys.executable, os.path.join(HERE, "peer_tfmot.py"), "--model", name,
         "--out_dir", out_dir, "--result", result_path],
        check=True,
    )
    with open(result_path) as f:
        row = json.load(f)
    _, (x_test, y_test) = data
    reference = np.load(row.pop("reference_outputs_path"))
    max_abs_diff = float(np.max(np.abs(run_tflite(row["float32_path"], x_test) - reference)))
    if max_abs_diff > 1e-4:
        raise RuntimeError(
            f"{row['float32_path']} differs from its tf_keras model by {max_abs_diff:.2e}"
        )
    int8_predicted = np.argmax(run_tflite(row["int8_path"], x_test), axis=-1)
    row["int8_accuracy"] = float(np.mean(int8_predicted == y_test))
    return row


def markdown_table(rows, threads, args):
    thread_columns = [f"latency {t} thr (us)" for t in threads]
    header = ["model", "variant", "params", "MACs", "accuracy", "int8 acc",
              "float32 .tflite", "gzip", "int8 .tflite", *thread_columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["model"], row["variant"], f"{row['parameters']:,}",
                 f"{row['multiply_adds']:,}" if row.get("multiply_adds") else "-",
                 f"{row['accuracy']:.4f}", f"{row['int8_accuracy']:.4f}",
                 f"{row['float32_bytes']:,}", f"{row['float32_gzip_bytes']:,}",
                 f"{row['int8_bytes']:,}"]
        cells += [f"{row['latency_us'][t]:.1f}" for t in threads]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"batch 1, XNNPACK, median over {args.repeats} repeats of the median of "
                 f"{args.runs} invocations; {os.cpu_count()} cores")
    by_key = {(r["model"], r["variant"]): r for r in rows}
    for name in args.models:
        dense, compact = by_key.get((name, "dense")), by_key.get((name, "compact"))
        if dense and compact:
            mac_reduction = dense["multiply_adds"] / compact["multiply_adds"]
            speed_up = dense["latency_us"][1] / compact["latency_us"][1]
            lines.append(
                f"{name}: MACs / {mac_reduction:.2f}, 1-thread latency / {speed_up:.2f} "
                f"(ratio {speed_up / mac_reduction:.2f}; goal >= 0.8); params / "
                f"{dense['parameters'] / compact['parameters']:.2f}, float32 .tflite / "
                f"{dense['float32_bytes'] / compact['float32_bytes']:.2f}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
