"""The `keras-compact` command line.

    keras-compact compact IN.keras OUT.keras [--report R.json]
                          [--tflite FILE [--quantize float16|int8]] [--saved-model DIR]
    keras-compact report MODEL.keras
    keras-compact bench MODEL.keras|MODEL.tflite
    keras-compact compress IN.keras OUT.keras --train-data TRAIN (--params F | --macs F) --epochs N

Each subcommand is a pair `_add_<name>_command(subparsers)` + `_run_<name>`:
adding a subcommand is adding a pair and one line in `build_parser`.

Exit status: 0 done; 1 a result that is not what the model computes (nothing
written); 2 bad input, options or destinations, or a failed write (one line
`keras-compact: error: ...`); 130 interrupted (SIGINT); 143 terminated
(SIGTERM while writing). Every destination is checked before any work.
"""

import argparse
import contextlib
import itertools
import math
import os
import sys
import tempfile


def _files():
    # Deferred, with every other keras_compact import: importing the package
    # imports Keras and its backend (seconds), which --help and argument
    # errors must not wait for. That is also why this module sits outside the
    # keras_compact package.
    from keras_compact import files

    return files


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are `CliError`s: one line, exit 2, and `main`
    returns instead of exiting (so it can be called in-process)."""

    def error(self, message):
        raise CliError(f"{message} (see '{self.prog} --help').")


def _bounded(convert, minimum, below=None):
    """An argparse type: `convert(text)`, finite, >= `minimum` (and < `below`),
    so a number that makes no sense fails at once, naming its flag."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= minimum and (below is None or value < below)):
            kind = "an integer" if convert is int else "a finite number"
            bounds = f">= {minimum}" + ("" if below is None else f" and < {below}")
            raise argparse.ArgumentTypeError(f"expected {kind} {bounds}, got '{text}'")
        return value

    return parse


def _load_model(path, unsafe=False, compile=False):
    """Load a .keras file with clear errors; safe mode unless `unsafe`.

    With `compile`, the model comes back compiled when its compile config can
    be restored (its loss and metrics), else uncompiled.
    """
    import keras  # noqa: deferred: argparse errors and --help stay fast

    if not os.path.exists(path):
        raise CliError(f"'{path}': no such file.")
    if compile:
        try:
            return keras.models.load_model(path, compile=True, safe_mode=not unsafe)
        except Exception:  # noqa: BLE001 - a custom loss or optimizer: load it uncompiled below
            pass
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
    (and integer labels `y`), or one array per model input: named as the
    inputs of a model that takes a dict of them, else in input order
    (`_check_fits` arranges them as the model takes them).
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
        try:
            if "x" in data.files:
                inputs, labels = data["x"], data["y"] if "y" in data.files else None
            else:
                inputs, labels = {name: data[name] for name in data.files}, None
        except Exception as error:  # noqa: BLE001 - a truncated member, or pickled objects
            raise CliError(f"cannot read {flag} '{path}': {error}") from None
    if isinstance(inputs, dict) and not inputs:
        raise CliError(f"{flag} '{path}' holds no arrays: save the model's inputs in it.")
    if labels is not None and np.shape(labels)[:1] != np.shape(inputs)[:1]:
        raise CliError(
            f"{flag} '{path}': y has shape {np.shape(labels)} for x of shape {np.shape(inputs)}: "
            "give one label per sample."
        )
    return inputs, labels


def _check_fits(model, inputs, flag, path):
    """`inputs` read from `path` as `model` takes them; refused unless they are
    numbers shaped for it.

    Arrays of a .npz named as the inputs of a model that takes a dict (a
    keras-hub backbone's token_ids, padding_mask, ...) become that dict;
    otherwise they are the inputs in order.
    """
    import keras

    from keras_compact.exporter import check_inputs

    if inputs is None:
        return None
    arrays = inputs
    if isinstance(inputs, dict):
        try:
            structure = model.input
        except AttributeError:  # a Sequential never called: one input, no names
            structure = None
        if isinstance(structure, dict) and set(inputs) == set(structure):
            arrays = keras.tree.flatten(inputs)  # keys sorted, as model.inputs are
        else:
            inputs = arrays = list(inputs.values())
            if len(inputs) == 1:
                inputs = arrays = inputs[0]
    try:
        check_inputs(model, arrays, flag)
    except ValueError as error:
        raise CliError(f"{error} (in '{path}')") from None
    return inputs


def _add_size_flags(parser, channel_multiple_help):
    """The flags that shape what compaction keeps and how its size is counted."""
    parser.add_argument(
        "--channel-multiple", type=_bounded(int, 1), default=1, metavar="M", help=channel_multiple_help
    )
    _add_open_dim_size_flag(
        parser, "count MACs with each dimension the model leaves open (None in an input shape, such as "
        "a sequence length) at N; a --macs budget on such a model needs it",
    )


def _add_open_dim_size_flag(parser, help):
    parser.add_argument("--open-dim-size", type=_bounded(int, 1), default=None, metavar="N", help=help)


def _compact(model, args, path, sample_data=None):
    from keras_compact.compaction import CompactionError, compact

    try:
        return compact(
            model,
            sample_data=sample_data,
            atol=args.atol,
            rtol=args.rtol,
            verify=not args.no_verify,
            factorize=args.factorize,
            rank_rtol=args.rank_rtol,
            channel_multiple=args.channel_multiple,
            open_dim_size=args.open_dim_size,
        )
    except CompactionError:
        raise
    except ValueError as error:  # subclassed or unbuilt model: graph.functional_of says what to do
        raise CliError(f"'{path}': {error}") from None


def _same_file(a, b):
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path != folder and os.path.commonpath([path, folder]) == folder


def _check_destinations(sources, destinations):
    """Refuse, before any work, a destination that cannot be written, or that
    would overwrite an input or another destination.

    `sources`: (flag, path) pairs the command reads; `destinations`: (flag,
    path, folder) triples, `folder` true for a SavedModel folder, which is
    replaced whole. Unset paths (None) are skipped.
    """
    from keras_compact.exporter import check_destination

    sources = [(flag, path) for flag, path in sources if path]
    destinations = [(flag, path, folder) for flag, path, folder in destinations if path]
    for flag, path, folder in destinations:
        for source_flag, source in sources:
            if _same_file(path, source):
                raise CliError(
                    f"{flag} '{path}' is the input {source_flag} '{source}': refusing to "
                    "overwrite it; choose another path."
                )
            if folder and _inside(source, path):
                raise CliError(
                    f"{flag} '{path}' holds the input {source_flag} '{source}' and would be "
                    "replaced whole: choose another folder."
                )
        try:
            if folder:
                check_destination(path, "saved_model", what=flag)
            else:
                _files().check_writable(path, flag)
        except OSError as error:
            raise CliError(str(error)) from None
    for (flag, path, folder), (other_flag, other, other_folder) in itertools.permutations(
        destinations, 2
    ):
        if _same_file(path, other):
            raise CliError(
                f"{flag} and {other_flag} name the same path '{path}': give each output its own."
            )
        if other_folder and _inside(path, other):
            raise CliError(
                f"{flag} '{path}' is inside {other_flag} '{other}', which is replaced whole: "
                "write it elsewhere."
            )


@contextlib.contextmanager
def _writing(flag, path, writer=None):
    """Runs the block inside `writer` (the context manager that writes `path`,
    if any). An OSError (disk full, read-only file system) becomes a one-line
    error naming `flag` and `path`, as does an export's refusal (ValueError:
    inputs or outputs unfit to verify on)."""
    try:
        with writer or contextlib.nullcontext() as value:
            yield value
    except OSError as error:
        raise CliError(
            f"cannot write {flag} '{path}': {error.strerror or error}. Free some space, or "
            "choose a folder you can write to."
        ) from None
    except ValueError as error:
        raise CliError(f"{flag} '{path}': {error}") from None


def _add_common_options(parser):
    parser.add_argument("--unsafe", action="store_true", help="allow Lambda layers (runs code from the file)")
    parser.add_argument(
        "--atol", type=_bounded(float, 0), default=None,
        help="verification tolerance, absolute (>= 0; default 1e-5, or 4 epsilons of a half-precision model)",
    )
    parser.add_argument(
        "--rtol", type=_bounded(float, 0), default=None,
        help="verification tolerance, relative (>= 0; default 1e-4, or 4 epsilons of a half-precision model)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison of the two models")
    factorize = parser.add_mutually_exclusive_group()
    factorize.add_argument(
        "--factorize",
        dest="factorize",
        action="store_const",
        const=True,
        default=False,
        help="split every Dense/Conv layer whose kernel has low rank into two thin ones (one SVD each)",
    )
    factorize.add_argument(
        "--no-factorize", dest="factorize", action="store_const", const=False, help="the default"
    )
    parser.add_argument(
        "--rank-rtol",
        type=_bounded(float, 0, below=1),
        default=1e-5,
        help="singular values at or below this fraction of a kernel's largest count as zero "
        "(in [0, 1))",
    )
    _add_size_flags(parser, "keep each layer's width a multiple of M >= 1 (8 runs fastest under XNNPACK); exact")


def _add_compact_command(subparsers):
    parser = subparsers.add_parser(
        "compact",
        help="write a copy of a model without its dead neurons",
        description=(
            "Write a copy of IN.keras without its dead neurons. All or nothing: every destination "
            "is checked before any work; OUT.keras, the report and the exports are written under "
            "temporary names beside their destinations, each export is run and compared with "
            "Keras, and only when all of them succeeded are they moved into place (OUT.keras "
            "last). On any error, Ctrl-C or SIGTERM, no destination is touched and no temporary "
            "is left. IN.keras is only read."
        ),
    )
    parser.add_argument("input", metavar="IN.keras")
    parser.add_argument("output", metavar="OUT.keras")
    parser.add_argument("--report", metavar="R.json", help="write the report as JSON")
    parser.add_argument(
        "--sample-data",
        metavar="X.npy",
        help="inputs to verify on, beside a random batch: a .npy, or a .npz with one array per model input "
        "(named as the inputs of a model that takes a dict, such as a keras-hub backbone; else in order)",
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
    return _calibration(args)


def _write_outputs(args, compact_model, report, inputs, labels, sample_data=None):
    """Writes OUT.keras, the exports and the report under temporary names,
    runs and verifies the exports, and only then moves all of them into place
    (in reverse order, OUT.keras last); returns the export reports.

    The exports are checked on the representative data, else on
    `sample_data`, else on random inputs (at --open-dim-size where the
    input leaves a dimension open)."""
    from keras_compact.exporter import exporting

    checked_on = {"sample_data": inputs, "labels": labels} if inputs is not None else {"sample_data": sample_data}

    exports = [
        ("--saved-model", args.saved_model, {"format": "saved_model"}),
        ("--tflite", args.tflite, {"format": "tflite", "quantize": args.quantize,
                                   "representative_data": inputs}),
    ]
    reports = []
    with contextlib.ExitStack() as stack:
        # Keras's and TensorFlow's own temporaries go where the stack removes them.
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="keras-compact-"))
        stack.enter_context(_files().temporary_files_in(scratch))
        temporary = stack.enter_context(_writing("OUT.keras", args.output, _files().atomic_path(args.output)))
        compact_model.save(temporary)
        for flag, path, options in exports:
            if path:
                writer = exporting(
                    compact_model, path, open_dim_size=args.open_dim_size, **checked_on, **options
                )
                reports.append(stack.enter_context(_writing(flag, path, writer)))
        if args.report:
            temporary = stack.enter_context(_writing("--report", args.report, _files().atomic_path(args.report)))
            with open(temporary, "w", encoding="utf-8") as file:
                file.write(_files().json_text(report.to_dict()))
    return reports


def _outputs(args):
    """What `_write_outputs` writes, as `_check_destinations` takes them: OUT.keras, the
    report and the exports."""
    if not args.output.endswith(".keras"):
        raise CliError(f"OUT must be a .keras file, got '{args.output}'.")
    return [
        ("OUT.keras", args.output, False),
        ("--report", args.report, False),
        ("--tflite", args.tflite, False),
        ("--saved-model", args.saved_model, True),
    ]


def _run_compact(args):
    sources = [
        ("IN.keras", args.input),
        ("--sample-data", args.sample_data),
        ("--representative-data", args.representative_data),
    ]
    _check_destinations(sources, _outputs(args))
    inputs, labels = _check_export_options(args)
    sample_data, _ = _load_arrays(args.sample_data, "--sample-data")
    model = _load_model(args.input, unsafe=args.unsafe)
    sample_data = _check_fits(model, sample_data, "--sample-data", args.sample_data)
    inputs = _check_fits(model, inputs, "--representative-data", args.representative_data)
    compact_model, report = _compact(model, args, args.input, sample_data)
    for export_report in _write_outputs(args, compact_model, report, inputs, labels, sample_data):
        print(export_report.summary())
    print(
        f"{args.input} -> {args.output}: parameters {report.params_before:,} -> "
        f"{report.params_after:,}, max abs diff "
        f"{'not verified' if report.max_abs_diff is None else f'{report.max_abs_diff:.3g}'}"
    )
    return 0


def _add_report_command(subparsers):
    parser = subparsers.add_parser(
        "report", help="print units, parameters, MACs and dead neurons per layer"
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
    parser.add_argument("--unsafe", action="store_true", help="allow Lambda layers (runs code from the file)")
    parser.add_argument(
        "--runs", type=_bounded(int, 1), default=100, help="timed invocations, >= 1 (default 100)"
    )
    parser.add_argument("--batch-size", type=_bounded(int, 1), default=1, help=">= 1 (default 1)")
    parser.add_argument(
        "--threads",
        type=_bounded(int, 0),
        nargs="+",
        default=[1, 0],
        help="interpreter thread counts; 0 means all cores (default: 1 0)",
    )
    _add_open_dim_size_flag(
        parser, "time the model, and count its MACs, with each dimension its input leaves open (such as "
        "a sequence length) at N; such a model needs it",
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
    _check_destinations(
        [("MODEL", args.model), ("--representative-data", args.representative_data)],
        [("--json", args.json, False)],
    )
    inputs, _ = _calibration(args)
    model = _load_model(args.model, unsafe=args.unsafe) if args.model.endswith(".keras") else None
    if model is not None:
        inputs = _check_fits(model, inputs, "--representative-data", args.representative_data)
    try:
        result = benchmark(
            args.model,
            threads=[count or None for count in args.threads],
            batch_size=args.batch_size,
            runs=args.runs,
            quantize=args.quantize,
            representative_data=inputs,
            model=model,
            open_dim_size=args.open_dim_size,
        )
    except ValueError as error:  # an unreadable .tflite, a model export cannot verify, an open shape
        raise CliError(str(error)) from None
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
    at_size = f", open dimensions at {args.open_dim_size}" if args.open_dim_size else ""
    print(f"latency, batch {args.batch_size}{at_size}, median of {args.runs} runs: {latencies}")
    if args.json:
        with _writing("--json", args.json):
            _files().write_json(args.json, result)
    return 0


def build_parser():
    parser = _Parser(
        prog="keras-compact",
        description="Remove dead neurons from Keras models, exactly.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_compact_command(subparsers)
    _add_report_command(subparsers)
    _add_bench_command(subparsers)
    _add_compress_command(subparsers)
    return parser


def _budget(text):
    """An argparse type: a fraction in (0, 1] or a whole count > 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0 and (value <= 1 or value == int(value))):
        raise argparse.ArgumentTypeError(
            f"expected a fraction of the dense model in (0, 1] or a whole count > 1, got '{text}'"
        )
    return value


def _add_compress_command(subparsers):
    parser = subparsers.add_parser(
        "compress",
        help="train a model's weights down to a budget, compact, fine-tune",
        description=(
            "Train a copy of IN.keras's weights with ProxSGD and a group lasso on every hidden "
            "layer, its strength driven by a BudgetController so that the compact model meets "
            "--params and/or --macs; compact it (verified), fine-tune the compact model, and "
            "write OUT.keras. The loss and metrics come from IN's compile config when it was saved "
            "compiled, else from --loss. IN.keras is only read; outputs are all or nothing, as "
            "for `compact`."
        ),
    )
    parser.add_argument("input", metavar="IN.keras")
    parser.add_argument("output", metavar="OUT.keras")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--train-data",
        required=True,
        metavar="TRAIN",
        help="a .npz with x and y, or a tensorflow-datasets name (NAME or NAME:SPLIT) with --data-dir",
    )
    data.add_argument(
        "--validation-data",
        metavar="VALID",
        help="the same forms; evaluated on before, after compaction and after fine-tuning",
    )
    data.add_argument("--data-dir", metavar="DIR", help="tensorflow-datasets data_dir (never downloads)")
    budget = parser.add_argument_group("budget (at least one)")
    budget.add_argument("--params", type=_budget, metavar="F", help="parameters: a fraction or a count")
    budget.add_argument("--macs", type=_budget, metavar="F", help="multiply-adds per sample, likewise")
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=_bounded(int, 1), required=True, help="epochs of sparse training")
    training.add_argument(
        "--finetune-epochs", type=_bounded(int, 0), help="epochs of fine-tuning (default: epochs // 2)"
    )
    training.add_argument("--batch-size", type=_bounded(int, 1), default=64)
    training.add_argument("--learning-rate", type=_bounded(float, 1e-12), default=0.01)
    training.add_argument("--loss", help="the loss when IN.keras was saved without one")
    training.add_argument(
        "--work-dir", metavar="DIR", help="resumable state: a rerun resumes where this one stopped"
    )
    training.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--unsafe", action="store_true", help="allow Lambda layers (runs code from the file)")
    _add_size_flags(parser, "keep each layer's width a multiple of M >= 1; the budget counts it")
    parser.add_argument("--report", metavar="R.json", help="write the report (compaction, budget, metrics)")
    exports = parser.add_argument_group("export (each artefact is run and compared with Keras)")
    exports.add_argument("--tflite", metavar="FILE", help="also export the compact model to TFLite")
    exports.add_argument("--saved-model", metavar="DIR", help="also export a SavedModel")
    _add_quantize_options(exports)
    parser.set_defaults(handler=_run_compress)


def _training_data(spec, flag, args, default_split):
    """(x, y) from a .npz, or a batched tf.data pipeline of a tensorflow-datasets dataset."""
    if spec is None:
        return None
    if spec.endswith(".npz"):
        if not os.path.exists(spec):
            raise CliError(f"{flag} '{spec}': no such file.")
        inputs, labels = _load_arrays(spec, flag)
        if labels is None:
            raise CliError(f"{flag} '{spec}' needs arrays named x and y (inputs and labels).")
        return inputs, labels
    if args.data_dir is None:
        raise CliError(
            f"{flag} '{spec}' is not a .npz file, so it names a tensorflow-datasets dataset: "
            "add --data-dir DIR (nothing is downloaded)."
        )
    name, _, split = spec.partition(":")
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError:
        raise CliError(
            f"{flag} '{spec}' needs tensorflow-datasets: pip install 'keras-compact[examples]', "
            "or give a .npz with x and y."
        ) from None
    try:
        dataset = tfds.load(
            name, split=split or default_split, data_dir=args.data_dir, download=False, as_supervised=True
        )
    except Exception as error:  # noqa: BLE001 - tfds raises several kinds for a missing dataset
        raise CliError(
            f"{flag} '{spec}' is not prepared in --data-dir '{args.data_dir}' "
            f"({type(error).__name__}). Prepare it once on a machine with network access: "
            f"tfds build {name} --data_dir={args.data_dir}"
        ) from None
    return dataset.map(lambda x, y: (tf.cast(x, "float32"), y)).batch(args.batch_size)


def _run_compress(args):
    if args.params is None and args.macs is None:
        raise CliError("give the budget: --params F and/or --macs F (a fraction in (0, 1] or a count).")
    sources = [
        ("IN.keras", args.input),
        ("--train-data", args.train_data),
        ("--validation-data", args.validation_data),
        ("--representative-data", args.representative_data),
    ]
    # A tensorflow-datasets name is no file to protect.
    _check_destinations([(f, p) for f, p in sources if p and os.path.exists(p)], _outputs(args))
    if args.work_dir:
        # Not an output: it is reused on purpose (a rerun resumes from it).
        try:
            _files().check_writable(args.work_dir, "--work-dir", folder=True)
        except OSError as error:
            raise CliError(str(error)) from None
    inputs, labels = _check_export_options(args)
    train = _training_data(args.train_data, "--train-data", args, "train")
    validation = _training_data(args.validation_data, "--validation-data", args, "test")
    model = _load_model(args.input, unsafe=args.unsafe, compile=True)
    if isinstance(train, tuple):
        _check_fits(model, train[0], "--train-data", args.train_data)
    inputs = _check_fits(model, inputs, "--representative-data", args.representative_data)

    from keras_compact.compress import compress

    try:
        result = compress(
            model,
            train,
            params=args.params,
            macs=args.macs,
            epochs=args.epochs,
            finetune_epochs=args.finetune_epochs,
            validation_data=validation,
            loss=args.loss,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            channel_multiple=args.channel_multiple,
            open_dim_size=args.open_dim_size,
            work_dir=args.work_dir,
            verbose=0 if args.quiet else 1,
        )
    except ValueError as error:
        from keras_compact.compaction import CompactionError

        if isinstance(error, CompactionError):
            raise
        raise CliError(f"'{args.input}': {error}") from None
    for export_report in _write_outputs(args, result.model, result, inputs, labels):
        print(export_report.summary())
    print(result.summary(args.input, args.output))
    return 0


def _error(error, status):
    # One line, whatever the message: a library's multi-line text would read
    # like a traceback.
    print(f"keras-compact: error: {' '.join(str(error).split())}", file=sys.stderr)
    return status


def _quiet_half_written_files():
    """Silence what objects left open by a signal print when they are collected.

    A signal that lands inside Keras's save leaves its zip file open; when
    that is collected, its close fails on the half-written file and Python
    prints the traceback as "Exception ignored". The temporary is already
    removed and the process is ending: nothing there is news.
    """
    sys.unraisablehook = lambda unraisable: None


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except CliError as error:
        return _error(error, 2)
    except KeyboardInterrupt:
        # The writers removed their temporaries on the way out; a traceback
        # would only say where Ctrl-C happened to land.
        _quiet_half_written_files()
        print("keras-compact: interrupted", file=sys.stderr)
        return 130
    except SystemExit:  # SIGTERM while writing (and argparse's own exits)
        _quiet_half_written_files()
        raise
    except (ValueError, RuntimeError) as error:
        from keras_compact.compaction import CompactionError
        from keras_compact.exporter import ExportConversionError, ExportVerificationError

        if isinstance(error, ExportConversionError):
            # The input model is one TFLite cannot hold: bad input, nothing written.
            return _error(error, 2)
        if not isinstance(error, (CompactionError, ExportVerificationError)):
            raise
        # A result that is not what the model computes is never written.
        return _error(error, 1)


if __name__ == "__main__":
    sys.exit(main())
