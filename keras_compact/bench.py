"""On-device cost of a model: TFLite latency, file sizes, parameters, multiply-adds."""

import os
import statistics
import tempfile
import time

import keras
import numpy as np

from keras_compact.compaction.report import multiply_adds
from keras_compact.exporter import ExportConversionError
from keras_compact.exporter import export
from keras_compact.exporter import tflite_input_detail
from keras_compact.exporter import tflite_interpreter
from keras_compact.graph import check_open_dim_size


def tflite_latency(model_path, *, num_threads=1, batch_size=1, runs=100, warmup=10, open_dim_size=None):
    """Median wall time of one `invoke()` of a .tflite model, in seconds.

    The interpreter is `ai_edge_litert`'s, with its default XNNPACK delegate,
    on seeded random normal inputs, or zeros for an integer input (token ids:
    an id every vocabulary has); latency does not depend on the values.
    The first `warmup` calls are not timed: they pay for delegate set-up and
    cold caches. A model whose input leaves a dimension open (a sequence
    length) is timed with it at `open_dim_size`, which it then needs.
    """
    _check_count("batch_size", batch_size)
    _check_count("runs", runs)
    _check_count("warmup", warmup, minimum=0)
    if num_threads is not None:
        _check_count("num_threads", num_threads)
    open_dim_size = check_open_dim_size(open_dim_size, "tflite_latency")
    input_detail = tflite_input_detail(model_path)
    shape = [batch_size] + _sized(input_detail["shape_signature"][1:], open_dim_size, model_path)
    interpreter = tflite_interpreter(model_path, shape, num_threads)
    dtype = input_detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        inputs = np.zeros(shape, dtype)
    else:
        inputs = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    interpreter.set_tensor(input_detail["index"], inputs)
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sized(shape, open_dim_size, model_path):
    """`shape` (beyond the batch; None or -1 where open) with each open dimension at `open_dim_size`.

    TFLite reports an open dimension as 1 in an input's `shape` (-1 in its
    `shape_signature`): timed as it stands, a sequence model would run on
    one token, so an open dimension without a size is refused.
    """
    open_dims = [d is None or d < 0 for d in shape]
    if any(open_dims) and open_dim_size is None:
        shown = ", ".join("None" if is_open else str(int(d)) for d, is_open in zip(shape, open_dims))
        raise ValueError(
            f"{model_path}: its input shape (batch, {shown}) leaves a dimension open (a sequence "
            "length, say): give the size to time it at, open_dim_size=N (--open-dim-size N)."
        )
    return [open_dim_size if is_open else int(d) for d, is_open in zip(shape, open_dims)]


def benchmark(
    model_path,
    *,
    threads=(1, None),
    batch_size=1,
    runs=100,
    quantize=None,
    representative_data=None,
    model=None,
    open_dim_size=None,
):
    """Sizes and TFLite latencies of a `.keras` or `.tflite` model.

    A `.keras` model is first exported to TFLite (verified, with `quantize`
    and `representative_data` as in `keras_compact.export`), and its
    parameters and multiply-adds are counted too.

    Args:
        model_path: a `.keras` or `.tflite` file.
        threads: interpreter thread counts to time; `None` means all cores.
        batch_size, runs: see `tflite_latency`.
        model: the Keras model saved at `model_path`, if the caller has
            already loaded it (the command line does, for its clear errors).
        open_dim_size: the size of each dimension the input leaves open (a
            sequence length): the latency, the multiply-adds and, without
            `representative_data`, the export's check are at that size.
            Required for such a model.

    Returns:
        A dict: `tflite_bytes`, `latency_us` ({threads: median microseconds}),
        `batch_size`, `runs`, `open_dim_size` where given, and for `.keras`
        inputs `keras_bytes`, `parameters`, `multiply_adds`.
    """
    model_path = os.fspath(model_path)
    threads = list(threads)
    if not threads:
        raise ValueError("threads is empty: give at least one thread count (None for all cores).")
    for count in threads:
        if count is not None:
            _check_count("threads", count)
    _check_count("batch_size", batch_size)
    _check_count("runs", runs)
    open_dim_size = check_open_dim_size(open_dim_size, "benchmark")
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{model_path}: no such file to benchmark.")
    if model_path.endswith(".tflite"):
        return _benchmark_tflite(model_path, threads, batch_size, runs, open_dim_size)
    if not model_path.endswith(".keras"):
        raise ValueError(
            f"{model_path}: expected a .keras or a .tflite file to benchmark."
        )
    if model is None:
        model = keras.saving.load_model(model_path, compile=False)
    # Checked before the export, whose message would not speak of timing.
    _sized(tuple(model.inputs[0].shape[1:]), open_dim_size, model_path)
    with tempfile.TemporaryDirectory() as scratch:
        tflite_path = os.path.join(scratch, "model.tflite")
        try:
            export(
                model,
                tflite_path,
                format="tflite",
                quantize=quantize,
                representative_data=representative_data,
                open_dim_size=open_dim_size,
            )
        except ExportConversionError as error:
            raise ExportConversionError(f"{model_path}: {error}") from None
        result = _benchmark_tflite(tflite_path, threads, batch_size, runs, open_dim_size)
    result.update(
        keras_bytes=os.path.getsize(model_path),
        parameters=model.count_params(),
        multiply_adds=multiply_adds(model, open_dim_size),
    )
    return result


def _benchmark_tflite(tflite_path, threads, batch_size, runs, open_dim_size):
    latency_us = {}
    for num_threads in threads:
        num_threads = num_threads or os.cpu_count()
        seconds = tflite_latency(
            tflite_path, num_threads=num_threads, batch_size=batch_size, runs=runs,
            open_dim_size=open_dim_size,
        )
        latency_us[num_threads] = seconds * 1e6
    result = {
        "tflite_bytes": os.path.getsize(tflite_path),
        "latency_us": latency_us,
        "batch_size": batch_size,
        "runs": runs,
    }
    if open_dim_size is not None:
        result["open_dim_size"] = open_dim_size
    return result


def _check_count(name, value, minimum=1):
    """Raise a `ValueError` naming `name` unless `value` is an integer >= `minimum`:
    checked before any work (runs=0 would otherwise fail late, in `median([])`)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
