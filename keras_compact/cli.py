"""The `keras-compact` command line.

    keras-compact compact IN.keras OUT.keras [--report R.json]
                          [--tflite FILE [--quantize float16|int8]] [--saved-model DIR]
    keras-compact report MODEL.keras
    keras-compact bench MODEL.keras|MODEL.tflite

Each subcommand is a pair `_add_<name>_command(subparsers)` + `_run_<name>`:
adding a subcommand is adding a pair and one line in `build_parser`.
"""

import argparse
import os
import sys


from keras_compact.files import atomic_path, write_json


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def _load_model(path, unsafe=False):
    """Load a .keras file with clear errors; safe mode unless `unsafe`."""
    import keras  # noqa: deferred: argparse errors and --help stay fast

    if not os.path.exists(path):
        raise CliError(f"'{path}': no such file.")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as error:  # noqa: BLE001 - every reading failure gets the same advice
        message = str(error)
        if "safe_mode" in message or "Lambda" in message:
            raise CliError(
                f"'{path}' holds a Lambda layer (arbitrary code); it is refused in safe "
                "mode. Pass --unsafe only if you trust the file."
            ) from None
        raise CliError(
            f"cannot read '{path}' as a Keras model ({type(error).__name__}: "
            f"{message.splitlines()[0] if message else 'no detail'}). Is it a .keras file "
            "saved by Keras 3, with any custom layer importable?"
        ) from None


def _load_arrays(path, flag):
    """(inputs, labels or None) from a .npy or .npz file named by `flag`.

    A .npy holds the inputs of a one-input model. A .npz holds either `x`
    (and integer labels `y`), or one array per model input, in input order.
    """
    import numpy as np

    if path is None:
        return None, None
    if not path.endswith((".npy", ".npz")):
        raise CliError(f"{flag} takes a .npy or .npz file, got '{path}'.")
    try:
        data = np.load(path)
    except Exception as error:  # noqa: BLE001 - every reading failure gets the same advice
        raise CliError(f"cannot read {flag} '{path}': {error}") from None
    if not hasattr(data, "files"):
        return data, None
    with data:
        if "x" in data.files:
            return data["x"], data["y"] if "y" in data.files else None
        arrays = [data[name] for name in data.files]
    return (arrays[0] if len(arrays) == 1 else arrays), None


def _compact(model, args, path):
    from keras_compact.compaction import CompactionError, compact

    try:
        return compact(
            model,
            sample_data=_load_arrays(getattr(args, "sample_data", None), "--sample-data")[0],
            atol=args.atol,
            rtol=args.rtol,
            verify=not args.no_verify,
            factorize=not args.no_factorize,
            rank_rtol=args.rank_rtol,
            channel_multiple=args.channel_multiple,
        )
    except CompactionError:
        raise
    except ValueError as error:  # subclassed or unbuilt model: graph.functional_of says what to do
        raise CliError(f"'{path}': {error}") from None


def _same_file(a, b):
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _add_common_options(parser):
    parser.add_argument("--unsafe", action="store_true", help="allow Lambda layers (runs code from the file)")
    parser.add_argument("--atol", type=float, default=1e-5, help="verification tolerance, absolute")
    parser.add_argument("--rtol", type=float, default=1e-4, help="verification tolerance, relative")
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison of the two models")
    parser.add_argument(
        "--no-factorize", action="store_true", help="do not split low-rank layers into two thin ones"
    )
    parser.add_argument(
        "--rank-rtol",
        type=float,
        default=1e-5,
        help="singular values at or below this fraction of a kernel's largest count as zero",
    )
    parser.add_argument(
        "--channel-multiple",
        type=int,
        default=1,
        metavar="M",
        help="keep each layer's width a multiple of M (8 runs fastest under XNNPACK); exact",
    )


def _add_compact_command(subparsers):
    parser = subparsers.add_parser(
        "compact", help="write a copy of a model without its dead neurons"
    )
    parser.add_argument("input", metavar="IN.keras")
    parser.add_argument("output", metavar="OUT.keras")
    parser.add_argument("--report", metavar="R.json", help="write the report as JSON")
    parser.add_argument(
        "--sample-data",
        metavar="X.npy",
        help="inputs (.npy, or .npz with one array per model input) to verify on, beside a random batch",
    )
    _add_common_options(parser)
    exports = parser.add_argument_group("export (each artefact is run and compared with Keras)")
    exports.add_argument("--tflite", metavar="FILE", help="also export the compact model to TFLite")
    exports.add_argument("--saved-model", metavar="DIR", help="also export a SavedModel")
    _add_quantize_options(exports)
    parser.set_defaults(handler=_run_compact)


def _add_quantize_options(parser):
    parser.add_argument(
        "--quantize",
        choices=("float16", "int8"),
        help="TFLite weights in float16, or int8 kernels (needs --representative-data)",
    )
    parser.add_argument(
        "--representative-data",
        metavar="FILE",
        help="inputs for int8 calibration and for checking exports: a .npy of samples, "
        "or a .npz with x (and integer labels y, to report accuracy)",
    )


def _calibration(args):
    inputs, labels = _load_arrays(args.representative_data, "--representative-data")
    if inputs is None and args.quantize == "int8":
        raise CliError(
            "--quantize int8 calibrates activation ranges on real inputs: add "
            "--representative-data FILE (.npy of a few hundred training inputs, or .npz with x and y)."
        )
    return inputs, labels


def _check_export_options(args):
    """Refuse bad export options before any work; return (inputs, labels) for the exports."""
    if args.quantize and not args.tflite:
        raise CliError(f"--quantize {args.quantize} applies to the TFLite export: add --tflite FILE.")
    for path in (args.tflite, args.saved_model):
        if path and _same_file(path, args.input):
            raise CliError(f"'{path}' is the input model: export to another path.")
    return _calibration(args)


def _export_artefacts(model, args, inputs, labels):
    """The exports `compact` was asked for (SavedModel first), each verified."""
    from keras_compact.exporter import export

    reports = []
    if args.saved_model:
        reports.append(
            export(model, args.saved_model, format="saved_model", sample_data=inputs, labels=labels)
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


def _run_compact(args):
    if not args.output.endswith(".keras"):
        raise CliError(f"OUT must be a .keras file, got '{args.output}'.")
    if _same_file(args.input, args.output):
        raise CliError("OUT is IN: refusing to overwrite the input model; choose another path.")
    inputs, labels = _check_export_options(args)
    model = _load_model(args.input, unsafe=args.unsafe)
    compact_model, report = _compact(model, args, args.input)
    with atomic_path(args.output) as temporary:
        compact_model.save(temporary)
    _export_artefacts(compact_model, args, inputs, labels)
    if args.report:
        write_json(args.report, report.to_dict())
    print(
        f"{args.input} -> {args.output}: parameters {report.params_before:,} -> "
        f"{report.params_after:,}, max abs diff "
        f"{'not verified' if report.max_abs_diff is None else f'{report.max_abs_diff:.3g}'}"
    )
    return 0


def _add_report_command(subparsers):
    parser = subparsers.add_parser(
        "report", help="print units, parameters, FLOPs and dead neurons per layer"
    )
    parser.add_argument("model", metavar="MODEL.keras")
    _add_common_options(parser)
    parser.set_defaults(handler=_run_report)


def _run_report(args):
    model = _load_model(args.model, unsafe=args.unsafe)
    _, report = _compact(model, args, args.model)
    print(report.table())
    return 0


def _add_bench_command(subparsers):
    parser = subparsers.add_parser(
        "bench",
        help="TFLite latency and file size of a .keras or .tflite model",
        description=(
            "Median TFLite invoke() latency (ai_edge_litert, XNNPACK) with 1 thread and with all "
            "cores, and file sizes. A .keras model is first exported to TFLite (verified); its "
            "parameters and multiply-adds are reported too."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="a .keras or .tflite file")
    parser.add_argument("--runs", type=int, default=100, help="timed invocations (default 100)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 0],
        help="interpreter thread counts; 0 means all cores (default: 1 0)",
    )
    _add_quantize_options(parser)
    parser.add_argument("--json", metavar="FILE", help="also write the measurements to FILE")
    parser.set_defaults(handler=_run_bench)


def _run_bench(args):
    from keras_compact.bench import benchmark

    if not os.path.exists(args.model):
        raise CliError(f"'{args.model}': no such file.")
    if args.quantize and args.model.endswith(".tflite"):
        raise CliError(f"--quantize applies to .keras inputs; '{args.model}' is already converted.")
    inputs, _ = _calibration(args)
    result = benchmark(
        args.model,
        threads=[count or None for count in args.threads],
        batch_size=args.batch_size,
        runs=args.runs,
        quantize=args.quantize,
        representative_data=inputs,
    )
    sizes = [f"{result['tflite_bytes']:,} bytes as .tflite"]
    if "keras_bytes" in result:  # converted here, so its dtype is known
        sizes = [
            f"{result['keras_bytes']:,} bytes as .keras",
            f"{sizes[0]} ({args.quantize or 'float32'})",
            f"{result['parameters']:,} parameters",
            f"{result['multiply_adds']:,} multiply-adds per sample",
        ]
    print(f"{args.model}: " + ", ".join(sizes))
    latencies = ", ".join(
        f"{threads} thread{'s' if threads > 1 else ''}: {us:,.1f} us"
        for threads, us in result["latency_us"].items()
    )
    print(f"latency, batch {args.batch_size}, median of {args.runs} runs: {latencies}")
    if args.json:
        write_json(args.json, result)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-compact",
        description="Remove dead neurons from Keras models, exactly.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_compact_command(subparsers)
    _add_report_command(subparsers)
    _add_bench_command(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CliError as error:
        print(f"keras-compact: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as error:
        from keras_compact.compaction import CompactionError
        from keras_compact.exporter import ExportVerificationError

        if not isinstance(error, (CompactionError, ExportVerificationError)):
            raise
        # A result that is not what the model computes is never written.
        print(f"keras-compact: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
