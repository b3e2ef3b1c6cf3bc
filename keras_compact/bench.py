"""On-device cost of a model: TFLite latency, file sizes, parameters, multiply-adds."""

import os
import statistics
import tempfile
import time

import keras
import numpy as np

from keras_compact.exporter import export
from keras_compact.exporter import tflite_interpreter


def tflite_latency(model_path, *, num_threads=1, batch_size=1, runs=100, warmup=10):
    """Median wall time of one `invoke()` of a .tflite model, in seconds.

    The interpreter is `ai_edge_litert`'s, with its default XNNPACK delegate,
    on seeded random normal inputs (latency does not depend on the values).
    The first `warmup` calls are not timed: they pay for delegate set-up and
    cold caches.
    """
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


def count_multiply_adds(model):
    """Multiply-adds of one sample through the Dense and convolution layers.

    Each kernel weight is used once per output position: Dense, ConvND,
    DepthwiseConv and SeparableConv (its two kernels) all cost
    `kernel size * output positions`. Transposed convolutions, which use each
    weight once per *input* position, are not counted; nor are the cheap
    element-wise layers (bias, activations, pooling, BatchNorm).
    """
    counted = (
        keras.layers.Dense,
        keras.layers.Conv1D,
        keras.layers.Conv2D,
        keras.layers.Conv3D,
        keras.layers.DepthwiseConv1D,
        keras.layers.DepthwiseConv2D,
        keras.layers.SeparableConv1D,
        keras.layers.SeparableConv2D,
    )
    transposed = (
        keras.layers.Conv1DTranspose,
        keras.layers.Conv2DTranspose,
        keras.layers.Conv3DTranspose,
    )
    total = 0
    for layer in model._flatten_layers(include_self=False):
        if not isinstance(layer, counted) or isinstance(layer, transposed):
            continue
        kernels = [w for w in layer.weights if "kernel" in w.path.split("/")[-1]]
        weights_per_position = sum(int(np.prod(k.shape)) for k in kernels)
        # Output shape (batch, *positions, channels) for channels_last.
        positions = layer.output.shape[1:-1]
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            positions = layer.output.shape[2:]
        total += weights_per_position * int(np.prod(positions))
    return total


def benchmark(
    model_path,
    *,
    threads=(1, None),
    batch_size=1,
    runs=100,
    quantize=None,
    representative_data=None,
):
    """Sizes and TFLite latencies of a `.keras` or `.tflite` model.

    A `.keras` model is first exported to TFLite (verified, with `quantize`
    and `representative_data` as in `keras_compact.export`), and its
    parameters and multiply-adds are counted too.

    Args:
        model_path: a `.keras` or `.tflite` file.
        threads: interpreter thread counts to time; `None` means all cores.
        batch_size, runs: see `tflite_latency`.

    Returns:
        A dict: `tflite_bytes`, `latency_us` ({threads: median microseconds}),
        `batch_size`, `runs`, and for `.keras` inputs `keras_bytes`,
        `parameters`, `multiply_adds`.
    """
    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{model_path}: no such file to benchmark.")
    if model_path.endswith(".tflite"):
        return _benchmark_tflite(model_path, threads, batch_size, runs)
    if not model_path.endswith(".keras"):
        raise ValueError(
            f"{model_path}: expected a .keras or a .tflite file to benchmark."
        )
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
        multiply_adds=count_multiply_adds(model),
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
