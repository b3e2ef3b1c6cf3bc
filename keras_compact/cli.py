"""The `keras-compact` command line.

    keras-compact compact IN.keras OUT.keras [--report R.json]
    keras-compact report MODEL.keras

Each subcommand is a pair `_add_<name>_command(subparsers)` + `_run_<name>`:
adding a subcommand is adding a pair and one line in `build_parser`.
"""

import argparse
import json
import os
import sys
import tempfile


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


def _load_sample_data(path):
    import numpy as np

    if path is None:
        return None
    try:
        data = np.load(path)
    except Exception as error:  # noqa: BLE001
        raise CliError(f"cannot read sample data '{path}': {error}") from None
    if hasattr(data, "files"):  # .npz: one array per model input, in order
        arrays = [data[name] for name in data.files]
        return arrays[0] if len(arrays) == 1 else arrays
    return data


def _compact(model, args, path):
    from keras_compact.compaction import CompactionError, compact

    try:
        return compact(
            model,
            sample_data=_load_sample_data(getattr(args, "sample_data", None)),
            atol=args.atol,
            rtol=args.rtol,
            verify=not args.no_verify,
            factorize=not args.no_factorize,
            rank_rtol=args.rank_rtol,
        )
    except CompactionError:
        raise
    except ValueError as error:  # subclassed or unbuilt model: graph.functional_of says what to do
        raise CliError(f"'{path}': {error}") from None


def _atomic_write(path, write, suffix):
    """Call write(tmp) for a temp file beside `path`, then move it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".keras-compact-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
    parser.set_defaults(handler=_run_compact)


def _run_compact(args):
    if not args.output.endswith(".keras"):
        raise CliError(f"OUT must be a .keras file, got '{args.output}'.")
    if _same_file(args.input, args.output):
        raise CliError("OUT is IN: refusing to overwrite the input model; choose another path.")
    model = _load_model(args.input, unsafe=args.unsafe)
    compact_model, report = _compact(model, args, args.input)
    _atomic_write(args.output, compact_model.save, ".keras")
    if args.report:
        text = json.dumps(report.to_dict(), indent=2)

        def write_json(tmp):
            with open(tmp, "w") as f:
                f.write(text + "\n")

        _atomic_write(args.report, write_json, ".json")
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


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-compact",
        description="Remove dead neurons from Keras models, exactly.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_compact_command(subparsers)
    _add_report_command(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CliError as error:
        print(f"keras-compact: error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        from keras_compact.compaction import CompactionError

        if not isinstance(error, CompactionError):
            raise
        # The compactor's own failure: the compact model is not written.
        print(f"keras-compact: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
