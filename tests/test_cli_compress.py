"""`keras-compact compress`: a trained model in, a smaller one out, at a requested size."""

import json
import os

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import keras_compact_cli as cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A trained digits classifier saved compiled, one saved without a loss, and the data."""
    folder = tmp_path_factory.mktemp("compress")
    digits = load_digits()
    x, y = (digits.images / 16.0).astype("float32")[..., None], digits.target
    np.savez(folder / "train.npz", x=x[:1400], y=y[:1400])
    np.savez(folder / "test.npz", x=x[1400:], y=y[1400:])
    np.savez(folder / "no_labels.npz", x=x[:100])
    np.savez(folder / "wrong_shape.npz", x=x[:100, :4], y=y[:100])
    np.savez(folder / "labels_out_of_range.npz", x=x[:100], y=y[:100] + 5)
    np.savez(folder / "one_hot.npz", x=x[:100], y=np.eye(10)[y[:100]])
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu", name="fc"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x[:1400], y[:1400], epochs=4, verbose=0)
    model.save(folder / "in.keras")
    uncompiled = keras.Sequential.from_config(model.get_config())  # clone_model would copy the compile
    uncompiled.set_weights(model.get_weights())
    uncompiled.save(folder / "no_loss.keras")
    return folder


def run(files, *arguments):
    return cli.main([str(a) for a in arguments])


def fingerprint(path):
    return path.read_bytes(), os.stat(path).st_mtime_ns


def test_compress_end_to_end_meets_the_budget_and_leaves_the_input_alone(files, tmp_path, capsys):
    source = files / "in.keras"
    before = fingerprint(source)
    out, report, work = tmp_path / "out.keras", tmp_path / "r.json", tmp_path / "work"
    status = run(
        files, "compress", source, out, "--train-data", files / "train.npz", "--validation-data",
        files / "test.npz", "--params", "0.25", "--epochs", "4", "--quiet", "--report", report,
        "--work-dir", work,
    )
    assert status == 0, capsys.readouterr().err
    assert fingerprint(source) == before
    small = keras.models.load_model(out, compile=False)
    dense = keras.models.load_model(source, compile=False)
    assert small.count_params() <= 0.25 * dense.count_params()
    result = json.loads(report.read_text())
    assert result["budget"] == {"params": 0.25, "macs": None}
    assert result["compaction"]["params_after"] == small.count_params()
    assert result["metrics_after"]["accuracy"] > 0.8  # digits: chance 0.1
    assert "fine-tuned: accuracy" in capsys.readouterr().out
    # A rerun with the same work folder does not train again.
    trained = work / "trained.keras"
    stamp = os.stat(trained).st_mtime_ns
    assert run(
        files, "compress", source, tmp_path / "again.keras", "--train-data", files / "train.npz",
        "--params", "0.25", "--epochs", "4", "--finetune-epochs", "0", "--quiet", "--work-dir", work,
    ) == 0
    assert os.stat(trained).st_mtime_ns == stamp
    # Another budget does not reuse that run's stages: its model would break the new budget.
    other = tmp_path / "other.keras"
    assert run(
        files, "compress", source, other, "--train-data", files / "train.npz",
        "--params", "0.1", "--epochs", "4", "--quiet", "--work-dir", work,
    ) == 2
    error = capsys.readouterr().err
    assert "holds a run made with other budget" in error and "--work-dir" in error, error
    assert not other.exists() and os.stat(trained).st_mtime_ns == stamp


@pytest.mark.parametrize(
    "arguments, message",
    [
        ([], r"give the budget: --params F and/or --macs F"),
        (["--params", "1.5"], r"argument --params: expected a fraction of the dense model in \(0, 1\]"),
        (["--params", "0"], r"argument --params: expected a fraction"),
        (["--macs", "nan"], r"argument --macs: expected a fraction"),
        (["--params", "0.5", "--epochs", "0"], r"argument --epochs: expected an integer >= 1"),
        (["--params", "0.5", "--train-data", "{files}/missing.npz"], r"--train-data '.*missing.npz': no such file"),
        (["--params", "0.5", "--train-data", "{files}/no_labels.npz"], r"needs arrays named x and y"),
        (["--params", "0.5", "--train-data", "mnist"], r"names a tensorflow-datasets dataset: add --data-dir"),
        (["--params", "0.5", "--train-data", "mnist", "--data-dir", "{tmp}"], r"is not prepared in --data-dir.*tfds build mnist"),
        (["--params", "0.5", "--train-data", "{files}/wrong_shape.npz"], r"--train-data"),
        (["--params", "0.5", "--train-data", "{files}/labels_out_of_range.npz"],
         r"train_data \(--train-data\) holds labels from 5 to 14 \(class indices\), but the model has 10 outputs"),
        (["--params", "0.5", "--validation-data", "{files}/labels_out_of_range.npz"],
         r"validation_data \(--validation-data\) holds labels from 5 to 14"),
        (["--params", "0.5", "--train-data", "{files}/one_hot.npz"],
         r"holds labels of shape \(10,\) per sample.*one-hot labels need loss=categorical_crossentropy"),
        (["--params", "0.5", "--tflite", "{tmp}"], r"--tflite '.*' is a folder"),
        (["--params", "0.5", "--work-dir", "{files}/test.npz"], r"--work-dir '.*' is an existing file, not a folder"),
    ],
)
def test_bad_compress_inputs_are_one_line_errors(files, tmp_path, capsys, arguments, message):
    source = files / "in.keras"
    before = fingerprint(source)
    defaults = {"--train-data": str(files / "train.npz"), "--epochs": "2"}
    arguments = [a.format(files=files, tmp=tmp_path) for a in arguments]
    for flag, value in defaults.items():
        if flag not in arguments:
            arguments += [flag, value]
    out = tmp_path / "out.keras"
    assert run(files, "compress", source, out, *arguments) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("keras-compact: error: ")
    assert __import__("re").search(message, error), error
    assert fingerprint(source) == before and not out.exists()


def test_a_macs_budget_on_an_open_sequence_length_asks_for_open_dim_size(tmp_path, capsys):
    inputs = keras.Input((None, 6))
    x = keras.layers.Dense(8, activation="relu", name="fc")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling1D()(x)))
    model.compile(loss="sparse_categorical_crossentropy")
    source, out = tmp_path / "sequence.keras", tmp_path / "out.keras"
    model.save(source)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x=rng.normal(size=(64, 5, 6)).astype("float32"), y=rng.integers(0, 3, 64))
    arguments = ["compress", source, out, "--train-data", tmp_path / "train.npz", "--macs", "0.5", "--epochs", "2",
                 "--quiet"]
    assert run(tmp_path, *arguments) == 2
    error = capsys.readouterr().err
    assert "['fc']" in error and "--open-dim-size N" in error and not out.exists()
    assert run(tmp_path, *arguments, "--open-dim-size", "5") == 0
    assert out.exists()


def test_a_model_saved_without_a_loss_asks_for_one(files, tmp_path, capsys):
    out = tmp_path / "out.keras"
    arguments = ["compress", files / "no_loss.keras", out, "--train-data", files / "train.npz", "--params", "0.5",
                 "--epochs", "1", "--quiet"]
    assert run(files, *arguments) == 2
    assert "--loss" in capsys.readouterr().err and not out.exists()
    assert run(files, *arguments, "--loss", "sparse_categorical_crossentropy") == 0
    assert out.exists()


def test_out_is_in_is_refused(files, capsys):
    source = files / "in.keras"
    assert run(files, "compress", source, source, "--train-data", files / "train.npz", "--params", "0.5",
               "--epochs", "1") == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_help_and_argument_errors_import_no_keras():
    import subprocess
    import sys

    code = (
        "import sys, keras_compact_cli\n"
        "keras_compact_cli.build_parser().format_help()\n"
        "status = keras_compact_cli.main(['compress', 'a.keras', 'b.keras', '--train-data', 'x.npz', '--epochs', '0'])\n"
        "print(status, 'keras' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.split() == ["2", "False"]
