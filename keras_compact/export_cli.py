"""Command-line pieces for deployment: export flags of `compact`, and `bench`.

`keras_compact.cli` wires them in:

```python
add_export_arguments(compact_parser)     # --tflite, --quantize, --saved-model, ...
export_from_args(compact_model, args, input_path=args.input)
add_bench_command(subparsers)            # keras-compact bench MODEL; sets `handler`
```
"""

import json
import os

import numpy as np

from keras_compact.bench import benchmark
from keras_compact.exporter import export


def add_export_arguments(parser):
    """Adds `--tflite FILE [--quantize float16|int8] [--saved-model DIR]
    [--representative-data FILE]` to `parser`."""
    group = parser.add_argument_group("export (each artefact is verified)")
    group.add_argument(
        "--tflite", metavar="FILE", help="also export the model to this .tflite file"
    )
    group.add_argument(
        "--saved-model", metavar="DIR", help="also export a SavedModel to this directory"
    )
    _add_quantize_arguments(group)


def export_from_args(model, args, *, input_path=None):
    """Runs the exports that `args` asks for, prints one line per artefact.

    Args:
        model: the Keras model to export.
        args: parsed arguments from a parser given `add_export_arguments`.
        input_path: the model file read from, which no export may replace.

    Returns:
        The `ExportReport`s, SavedModel first.
    """
    if args.quantize and not args.tflite:
        raise ValueError(
            f"--quantize {args.quantize} applies to the TFLite export: add "
            "--tflite FILE."
        )
    destinations = [path for path in (args.tflite, args.saved_model) if path]
    for path in destinations:
        if input_path and _same_file(path, input_path):
            raise ValueError(
                f"{path} is the input model: export to another path."
            )
    inputs, labels = _load_samples(args.representative_data, args.quantize)
    reports = []
    if args.saved_model:
        reports.append(
            export(
                model,
                args.saved_model,
                format="saved_model",
                sample_data=inputs,
                labels=labels,
            )
        )
    if args.tflite:
        reports.append(
            export(
                model,
                args.tflite,
                format="tflite",
                quantize=args.quantize,
                representative_data=inputs,
                sample_data=inputs,
                labels=labels,
            )
        )
    for report in reports:
        print(report.summary())
    return reports


def add_bench_command(subparsers):
    """Adds `bench MODEL`: TFLite latency and sizes of a .keras or .tflite
    file. Its function is the parser's `handler` default."""
    parser = subparsers.add_parser(
        "bench",
        help="TFLite latency and file size of a .keras or .tflite model",
        description=(
            "Median TFLite invoke() latency (ai_edge_litert, XNNPACK) with 1 "
            "thread and with all cores, and file sizes. A .keras model is "
            "first exported to TFLite (verified); its parameters and "
            "multiply-adds are reported too."
        ),
    )
    parser.add_argument("model", help="a .keras or .tflite file")
    parser.add_argument(
        "--runs", type=int, default=100, help="timed invocations (default 100)"
    )
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 0],
        help="interpreter thread counts; 0 means all cores (default: 1 0)",
    )
    _add_quantize_arguments(parser)
    parser.add_argument(
        "--json", metavar="FILE", help="also write the measurements to FILE"
    )
    parser.set_defaults(handler=run_bench_command)
    return parser


def run_bench_command(args):
    """Handler of `bench`; prints the measurements. Returns the exit status."""
    if args.quantize and args.model.endswith(".tflite"):
        raise ValueError(
            f"--quantize applies to .keras inputs; {args.model} is already "
            "converted."
        )
    inputs, _ = _load_samples(args.representative_data, args.quantize)
    result = benchmark(
        args.model,
        threads=[count or None for count in args.threads],
        batch_size=args.batch_size,
        runs=args.runs,
        quantize=args.quantize,
        representative_data=inputs,
    )
    tflite_size = f"{result['tflite_bytes']:,} bytes as .tflite"
    sizes = [tflite_size]
    if "keras_bytes" in result:  # converted here, so its dtype is known
        sizes = [
            f"{result['keras_bytes']:,} bytes as .keras",
            f"{tflite_size} ({args.quantize or 'float32'})",
            f"{result['parameters']:,} parameters",
            f"{result['multiply_adds']:,} multiply-adds per sample",
        ]
    print(f"{args.model}: " + ", ".join(sizes))
    latencies = ", ".join(
        f"{threads} thread{'s' if threads > 1 else ''}: {us:,.1f} us"
        for threads, us in result["latency_us"].items()
    )
    print(
        f"latency, batch {args.batch_size}, median of {args.runs} runs: {latencies}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def _add_quantize_arguments(parser):
    parser.add_argument(
        "--quantize",
        choices=("float16", "int8"),
        help="TFLite weights in float16, or int8 kernels (needs --representative-data)",
    )
    parser.add_argument(
        "--representative-data",
        metavar="FILE",
        help=(
            "inputs for int8 calibration and for verification: a .npy array "
            "of samples, or a .npz with `x` (and integer labels `y`, to "
            "report accuracy)"
        ),
    )


def _load_samples(path, quantize):
    """(inputs, labels or None) from a .npy or .npz file; (None, None) when
    no file is given, which only int8 cannot do without."""
    if path is None:
        if quantize == "int8":
            raise ValueError(
                "--quantize int8 calibrates activation ranges on real inputs: "
                "add --representative-data FILE (.npy of a few hundred "
                "training inputs, or .npz with x and y)."
            )
        return None, None
    if path.endswith(".npy"):
        return np.load(path), None
    if path.endswith(".npz"):
        with np.load(path) as arrays:
            if "x" not in arrays:
                raise ValueError(
                    f"{path} has arrays {sorted(arrays)}; name the inputs `x` "
                    "(and the labels `y`)."
                )
            return arrays["x"], arrays["y"] if "y" in arrays else None
    raise ValueError(f"{path}: --representative-data takes a .npy or .npz file.")


def _same_file(a, b):
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
