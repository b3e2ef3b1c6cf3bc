"""On-device cost of a model: TFLite latency, file sizes, parameters, multiply-adds."""

import os
import statistics
import tempfile
import time

import keras
import numpy as np

from keras_compact.compaction.report import multiply_adds
from keras_compact.exporter import export
from keras_compact.exporter import tflite_interpreter


def tflite_latency(model_path, *, num_threads=1, batch_size=1, runs=100, warmup=10):
    """Median wall time of one `invoke()` of a .tflite model, in seconds.

    The interpreter is `ai_edge_litert`'s, with its default XNNPACK delegate,
    on seeded random normal inputs (latency does not depend on the values).
    The first `warmup` calls are not timed: they pay for delegate set-up and
    cold caches.
    """
    _check_count("batch_size", batch_size)
    _check_count("runs", runs)
    _check_count("warmup", warmup, minimum=0)
    if num_threads is not None:
        _check_count("num_threads", num_threads)
    probe = tflite_interpreter(model_path)
    input_detail = probe.get_input_details()[0]
    shape = [batch_size] + list(input_detail["shape"][1:])
    interpreter = tflite_interpreter(model_path, shape, num_threads)
    inputs = np.random.default_rng(0).standard_normal(shape)
    interpreter.set_tensor(
        input_detail["index"], inputs.astype(input_detail["dtype"])
    )
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def benchmark(
    model_path,
    *,
    threads=(1, None),
    batch_size=1,
    runs=100,
    quantize=None,
    representative_data=None,
    model=None,
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

    Returns:
        A dict: `tflite_bytes`, `latency_us` ({threads: median microseconds}),
        `batch_size`, `runs`, and for `.keras` inputs `keras_bytes`,
        `parameters`, `multiply_adds`.
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
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{model_path}: no such file to benchmark.")
    if model_path.endswith(".tflite"):
        return _benchmark_tflite(model_path, threads, batch_size, runs)
    if not model_path.endswith(".keras"):
        raise ValueError(
            f"{model_path}: expected a .keras or a .tflite file to benchmark."
        )
    if model is None:
        model = keras.saving.load_model(model_path, compile=False)
    with tempfile.TemporaryDirectory() as scratch:
        tflite_path = os.path.join(scratch, "model.tflite")
        export(
            model,
            tflite_path,
            format="tflite",
            quantize=quantize,
            representative_data=representative_data,
        )
        result = _benchmark_tflite(tflite_path, threads, batch_size, runs)
    result.update(
        keras_bytes=os.path.getsize(model_path),
        parameters=model.count_params(),
        multiply_adds=multiply_adds(model),
    )
    return result


def _benchmark_tflite(tflite_path, threads, batch_size, runs):
    latency_us = {}
    for num_threads in threads:
        num_threads = num_threads or os.cpu_count()
        seconds = tflite_latency(
            tflite_path, num_threads=num_threads, batch_size=batch_size, runs=runs
        )
        latency_us[num_threads] = seconds * 1e6
    return {
        "tflite_bytes": os.path.getsize(tflite_path),
        "latency_us": latency_us,
        "batch_size": batch_size,
        "runs": runs,
    }


def _check_count(name, value, minimum=1):
    """Raise a `ValueError` naming `name` unless `value` is an integer >= `minimum`:
    checked before any work (runs=0 would otherwise fail late, in `median([])`)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
