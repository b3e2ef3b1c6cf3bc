"""Export round trips (SavedModel, TFLite float32/float16/int8), each verified."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

import keras_compact
from keras_compact.bench import benchmark
from keras_compact.compaction.report import multiply_adds
import keras_compact_cli as cli
from keras_compact.exporter import ExportConversionError
from keras_compact.exporter import ExportVerificationError
from keras_compact.exporter import as_input_array
from keras_compact.exporter import run_tflite
from keras_compact.numerics import relative_difference


def run_saved_model(path, x):
    loaded = tf.saved_model.load(str(path))  # must outlive the call: it owns the variables
    return loaded.serve(x).numpy()


def small_convnet(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(6, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


@pytest.fixture(scope="module")
def digits():
    """A small convnet trained on sklearn's 8x8 digits (offline), with held-out
    test samples: quantized exports are judged on real class margins."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    model = small_convnet()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:1400], y[:1400], epochs=15, batch_size=64, verbose=0)
    return model, x[:1400], x[1400:], y[1400:]


@pytest.mark.parametrize("format", ["saved_model", "tflite"])
def test_float32_round_trip_matches_keras(tmp_path, format):
    model = small_convnet()
    path = str(tmp_path / ("model.tflite" if format == "tflite" else "model"))

    report = keras_compact.export(model, path, format=format)

    assert report.max_rel_diff <= 1e-4
    assert report.class_agreement == 1.0
    assert report.size_bytes > 0
    x = np.random.default_rng(5).random((3, 8, 8, 1), dtype=np.float32)
    if format == "tflite":
        assert report.size_bytes == os.path.getsize(path)
        actual = run_tflite(path, x)
    else:
        actual = run_saved_model(path, x)
    np.testing.assert_allclose(actual, model(x), atol=1e-5)
    assert set(report.to_dict()) >= {"format", "quantize", "path", "size_bytes",
                                     "max_abs_diff", "max_rel_diff"}


def token_model(length=12, seed=0):
    """Token ids in (int32, of `length`, None for any), an embedding, a 'valid' conv
    of width 3 (so at least 3 tokens), a pooled classifier."""
    keras.utils.set_random_seed(seed)
    ids = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(50, 8)(ids)
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Conv1D(16, 3, activation="relu")(x))
    return keras.Model(ids, keras.layers.Dense(3)(x))


@pytest.mark.parametrize("format", ["saved_model", "tflite"])
def test_token_id_model_exports_verified(tmp_path, format):
    """An integer input keeps its dtype through export, and its check runs on
    valid ids: by default any id of the Embedding that reads it, else the
    samples given."""
    model = token_model()
    path = str(tmp_path / ("model.tflite" if format == "tflite" else "model"))
    report = keras_compact.export(model, path, format=format)
    assert report.max_rel_diff <= 1e-4
    ids = np.random.default_rng(1).integers(0, 50, size=(5, 12)).astype("int32")
    actual = run_tflite(path, ids) if format == "tflite" else run_saved_model(path, ids)
    np.testing.assert_allclose(actual, model(ids), atol=1e-5)
    report = keras_compact.export(model, path, format=format, sample_data=ids)
    assert report.max_rel_diff <= 1e-4


@pytest.mark.parametrize("quantize", ["float16", "int8"])
def test_quantized_tflite_keeps_classes_and_shrinks(tmp_path, digits, quantize):
    model, x_train, x_test, y_test = digits
    float_report = keras_compact.export(
        model, tmp_path / "float.tflite", format="tflite"
    )

    report = keras_compact.export(
        model,
        tmp_path / f"{quantize}.tflite",
        format="tflite",
        quantize=quantize,
        representative_data=x_train,
        sample_data=x_test,
        labels=y_test,
    )

    assert report.num_samples == len(x_test)
    assert report.keras_accuracy > 0.7  # trained: its classes have real margins
    assert report.class_agreement >= 0.95
    assert abs(report.accuracy - report.keras_accuracy) <= 0.03
    assert report.size_bytes < float_report.size_bytes


def test_int8_calibrates_on_a_dataset_of_batches(tmp_path, digits):
    model, x_train, _, y_train = digits
    dataset = tf.data.Dataset.from_tensor_slices((x_train, x_train[:, 0, 0, 0])).batch(32)

    report = keras_compact.export(
        model, tmp_path / "m.tflite", format="tflite", quantize="int8",
        representative_data=dataset,
    )

    assert report.num_samples == 64  # verified on the calibration inputs
    assert report.class_agreement >= 0.9
    np.testing.assert_array_equal(as_input_array(dataset, 40), x_train[:40])


def test_compact_model_reproduces_dense_model_and_shrinks_on_disk(tmp_path):
    """A dense net whose hidden neurons 8..31 are dead (zero kernel column and
    bias), against its compact form built by hand: the compact .tflite gives
    the dense model's outputs, and is smaller by the removed weights."""
    keras.utils.set_random_seed(1)
    dense = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10)])
    (k1, b1), (k2, b2) = dense.layers[0].get_weights(), dense.layers[1].get_weights()
    k1[:, 8:], b1[8:] = 0.0, 0.0
    dense.layers[0].set_weights([k1, b1])
    compact = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8, activation="relu"),
                                keras.layers.Dense(10)])
    compact.set_weights([k1[:, :8], b1[:8], k2[:8], b2])
    x = np.random.default_rng(2).standard_normal((16, 64), dtype=np.float32)

    dense_report = keras_compact.export(dense, tmp_path / "dense.tflite", format="tflite")
    compact_report = keras_compact.export(
        compact, tmp_path / "compact.tflite", format="tflite", sample_data=x
    )

    np.testing.assert_allclose(run_tflite(str(tmp_path / "compact.tflite"), x), dense(x),
                               rtol=1e-5, atol=1e-5)
    removed_bytes = 4 * (dense.count_params() - compact.count_params())
    saved_bytes = dense_report.size_bytes - compact_report.size_bytes
    assert abs(saved_bytes - removed_bytes) <= 128  # buffer alignment, shape metadata
    assert compact_report.max_rel_diff <= 1e-4


def test_export_of_keras_compact_compact_output(tmp_path):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    kernel, bias = model.layers[0].get_weights()
    kernel[..., 4:], bias[4:] = 0.0, 0.0
    model.layers[0].set_weights([kernel, bias])
    x = np.random.default_rng(4).random((16, 8, 8, 1), dtype=np.float32)
    compact_model, _ = keras_compact.compact(model, sample_data=x)

    for format in ("saved_model", "tflite"):
        path = tmp_path / ("m.tflite" if format == "tflite" else "m")
        report = keras_compact.export(compact_model, path, format=format, sample_data=x)
        assert report.max_rel_diff <= 1e-4
    np.testing.assert_allclose(run_tflite(str(tmp_path / "m.tflite"), x), model(x), atol=1e-5)


def test_int8_without_representative_data_is_refused(tmp_path):
    with pytest.raises(ValueError, match="representative_data="):
        keras_compact.export(small_convnet(), tmp_path / "m.tflite", format="tflite",
                             quantize="int8")
    with pytest.raises(ValueError, match="format='tflite' only"):
        keras_compact.export(small_convnet(), tmp_path / "m", quantize="float16")
    assert os.listdir(tmp_path) == []


def test_failed_verification_names_the_file_and_leaves_it_untouched(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"previous model")
    # TFLite's kernels sum in another order than TensorFlow's: over 512
    # products they cannot agree to the last bit, so rtol=0 must fail.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(4)])

    with pytest.raises(ExportVerificationError, match="m.tflite.*not written"):
        keras_compact.export(model, path, format="tflite", rtol=0.0)

    assert path.read_bytes() == b"previous model"
    assert os.listdir(tmp_path) == ["m.tflite"]  # no temporary left behind


@pytest.mark.parametrize("gain", [1e-3, 1e2])
def test_max_rel_diff_is_relative_to_an_output_scale_of_at_least_one(tmp_path, gain):
    """One definition with the compactor (numerics.relative_difference):
    max |diff| / max(1, max |output|). Below a scale of 1 it is the absolute
    difference, not a ratio inflated by small outputs."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(4)])
    kernel, bias = model.layers[0].get_weights()
    model.layers[0].set_weights([kernel * gain, bias])
    x = np.random.default_rng(1).standard_normal((32, 512), dtype=np.float32)
    path = str(tmp_path / "m.tflite")

    report = keras_compact.export(model, path, format="tflite", sample_data=x, rtol=1.0)

    expected = model(x).numpy()
    scale = float(np.abs(expected).max())
    assert (scale < 1) == (gain < 1)
    assert report.max_abs_diff > 0  # TFLite sums 512 products in another order
    assert report.max_rel_diff == pytest.approx(report.max_abs_diff / max(1.0, scale))
    assert report.max_rel_diff == pytest.approx(relative_difference(expected, run_tflite(path, x)))


def test_saved_model_directory_is_replaced_whole(tmp_path):
    path = tmp_path / "model"
    keras_compact.export(small_convnet(seed=0), path)
    keras_compact.export(small_convnet(seed=1), path)

    x = np.ones((1, 8, 8, 1), np.float32)
    np.testing.assert_allclose(run_saved_model(path, x),
                               small_convnet(seed=1)(x), atol=1e-6)
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_multiply_adds_of_lenet5():
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(20, 5), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(50, 5), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(500), keras.layers.Dense(10),
    ])
    conv1 = 24 * 24 * (5 * 5 * 1 * 20)
    conv2 = 8 * 8 * (5 * 5 * 20 * 50)
    assert multiply_adds(model) == conv1 + conv2 + 800 * 500 + 500 * 10
    channels_first = keras.Sequential([
        keras.Input((3, 10, 10)), keras.layers.Conv2D(8, 3, data_format="channels_first"),
    ])
    assert multiply_adds(channels_first) == 8 * 8 * (3 * 3 * 3 * 8)


def test_cli_exports_verified_artefacts_and_benches_them(tmp_path, digits, capsys):
    model, x_train, x_test, y_test = digits
    model_path = str(tmp_path / "in.keras")
    model.save(model_path)
    np.savez(tmp_path / "data.npz", x=x_test, y=y_test)
    tflite_path = str(tmp_path / "out.tflite")
    assert cli.main([
        "compact", model_path, str(tmp_path / "out.keras"), "--tflite", tflite_path,
        "--quantize", "int8", "--saved-model", str(tmp_path / "sm"),
        "--representative-data", str(tmp_path / "data.npz"),
    ]) == 0
    out = capsys.readouterr().out
    assert "saved_model" in out and "tflite (int8)" in out
    assert os.path.getsize(tflite_path) > 0 and os.path.isdir(tmp_path / "sm")

    for path in (tflite_path, model_path):
        assert cli.main(["bench", path, "--runs", "3", "--threads", "1", "0",
                         "--json", str(tmp_path / "bench.json")]) == 0
        result = benchmark(path, threads=(1,), runs=3)
        assert result["latency_us"][1] > 0
    assert result["parameters"] == model.count_params()
    assert result["keras_bytes"] == os.path.getsize(model_path)
    assert "latency, batch 1, median of 3 runs: 1 thread" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tflite", "{in}"], "is the input IN.keras"),
        (["--quantize", "float16"], "add --tflite FILE"),
        (["--tflite", "{tmp}/m.tflite", "--quantize", "int8"], "--representative-data FILE"),
        (["--tflite", "{tmp}/m.tflite", "--representative-data", "{tmp}/x.csv"], "takes a .npy or .npz"),
    ],
)
def test_cli_refuses_unsafe_or_incomplete_exports(tmp_path, capsys, extra, message):
    model_path = str(tmp_path / "in.keras")
    small_convnet().save(model_path)
    extra = [e.format(tmp=tmp_path, **{"in": model_path}) for e in extra]
    assert cli.main(["compact", model_path, str(tmp_path / "o.keras"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o.keras")  # refused before any work


def test_cli_bench_of_a_missing_file(tmp_path, capsys):
    assert cli.main(["bench", str(tmp_path / "missing.tflite")]) == 2
    assert "missing.tflite': no such file" in capsys.readouterr().err


def test_bench_of_a_model_of_open_length_needs_the_length(tmp_path, capsys):
    """TFLite reports an open dimension as 1: without a size, the bench would
    time one token (here it could not even run: the conv needs 3). It is
    refused, then timed and counted at the size given, for the .keras model
    and for its .tflite."""
    model = token_model(length=None)
    model_path = str(tmp_path / "tokens.keras")
    model.save(model_path)
    tflite_path = str(tmp_path / "tokens.tflite")
    keras_compact.export(model, tflite_path, format="tflite", sample_data=np.ones((4, 9), "int32"))
    for path in (model_path, tflite_path):
        with pytest.raises(ValueError, match=r"\(batch, None\) leaves a dimension open.*--open-dim-size N"):
            benchmark(path, threads=(1,), runs=1)
        assert cli.main(["bench", path, "--runs", "1", "--threads", "1"]) == 2
        assert "--open-dim-size N" in capsys.readouterr().err
    short, long = (benchmark(model_path, threads=(1,), runs=3, open_dim_size=n) for n in (8, 64))
    assert short["multiply_adds"] == multiply_adds(model, 8) > 0
    assert long["multiply_adds"] == multiply_adds(model, 64)
    assert long["multiply_adds"] - short["multiply_adds"] == (64 - 8) * 3 * 8 * 16  # the conv, per token
    assert long["open_dim_size"] == 64
    assert benchmark(tflite_path, threads=(1,), runs=3, open_dim_size=8)["latency_us"][1] > 0
    assert cli.main(["bench", model_path, "--runs", "2", "--threads", "1", "--open-dim-size", "16"]) == 0
    assert "latency, batch 1, open dimensions at 16, median of 2 runs" in capsys.readouterr().out


def _mixed_float16_convnet(scaled_layer=None):
    """A small convnet built under mixed_float16 (float32 head), biases nonzero."""
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.Conv2D(6, 3, activation="relu", bias_initializer="ones")(inputs)
        if scaled_layer is not None:
            x = scaled_layer(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(3, dtype="float32")(x))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_a_mixed_precision_model_exports_to_tflite_in_float32(tmp_path):
    """TFLite's builtins have no float16 convolutions: the .tflite computes in
    float32, checked against the model rebuilt in float32 (itself checked
    against the model at its own precision); a SavedModel keeps float16."""
    model = _mixed_float16_convnet()
    path = str(tmp_path / "m.tflite")
    report = keras_compact.export(model, path, format="tflite")
    assert report.max_rel_diff <= 1e-4
    x = np.random.default_rng(3).standard_normal((4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(run_tflite(path, x), model(x), atol=4 * 2.0**-10)
    assert keras_compact.export(model, str(tmp_path / "sm")).max_rel_diff <= 1e-4
    assert model.layers[1].compute_dtype == "float16"  # the model itself is untouched


@keras.saving.register_keras_serializable(package="tests")
class ForgetfulScale(keras.layers.Layer):
    """Multiplies by `factor`, which its get_config forgets (a custom layer's usual bug)."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return super().get_config()  # without `factor` (the default one would hold it)


def test_a_half_precision_model_that_does_not_rebuild_is_not_exported(tmp_path):
    model = _mixed_float16_convnet(ForgetfulScale(3.0))
    path = tmp_path / "m.tflite"
    with pytest.raises(ExportVerificationError, match="rebuilt to compute in float32 for TFLite, it differs"):
        keras_compact.export(model, str(path), format="tflite")
    assert not path.exists()


def test_a_model_tflite_cannot_convert_is_one_clear_error(tmp_path, capsys):
    """An LSTM needs ops outside TFLite's builtins: `ExportConversionError`
    names the op; on the command line, one line and exit status 2, nothing
    written."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 8))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.LSTM(16)(inputs)))
    with pytest.raises(ExportConversionError, match=r"builtin ops only \(ConverterError: 'tf\.TensorList"):
        keras_compact.export(model, str(tmp_path / "m.tflite"), format="tflite")
    model_path = str(tmp_path / "lstm.keras")
    model.save(model_path)
    out = tmp_path / "out.keras"
    assert cli.main(["compact", model_path, str(out), "--tflite", str(tmp_path / "o.tflite")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'tf.TensorListReserve' op" in error
    assert not out.exists() and not (tmp_path / "o.tflite").exists() and not (tmp_path / "m.tflite").exists()


def test_exports_of_a_model_of_open_length_check_on_inputs_of_a_size(tmp_path, capsys):
    """Random check inputs need a size for the open dimension: given as
    open_dim_size (--open-dim-size), or by the inputs given (--sample-data)."""
    model = token_model(length=None)
    with pytest.raises(ValueError, match=r"sample_data= .*--sample-data FILE.*open_dim_size=N"):
        keras_compact.export(model, str(tmp_path / "m.tflite"), format="tflite")
    report = keras_compact.export(model, str(tmp_path / "m.tflite"), format="tflite", open_dim_size=10)
    assert report.max_rel_diff <= 1e-4 and report.num_samples == 64
    model_path = str(tmp_path / "tokens.keras")
    model.save(model_path)
    ids = np.random.default_rng(0).integers(0, 50, size=(6, 9)).astype("int32")
    np.save(tmp_path / "ids.npy", ids)
    base = ["compact", model_path, str(tmp_path / "out.keras"), "--tflite", str(tmp_path / "out.tflite")]
    assert cli.main(base) == 2
    assert "--open-dim-size N" in capsys.readouterr().err
    for extra in (["--open-dim-size", "16"], ["--sample-data", str(tmp_path / "ids.npy")]):
        assert cli.main(base + extra) == 0
        out = capsys.readouterr().out
        assert "tflite -> " in out and f"on {64 if '--open-dim-size' in extra else 6} samples" in out
