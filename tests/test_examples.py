"""The examples' data, reports and baseline, and each script end to end with tiny settings.

The scripts run in subprocesses (absl flags are process-global). The
tensorflow-datasets path runs on tfds' own mock data, inside the subprocess,
so no test can reach a download.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_compact import data
from keras_compact import report

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import srinivas_babu  # noqa: E402  (an example module, not a package)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs an example script with tfds' mock data (random examples of the real
# features), as `python script.py FLAGS` would.
_MOCK_RUNNER = """
import runpy, sys
import tensorflow_datasets as tfds
script = sys.argv[1]
sys.path.insert(0, __import__("os").path.dirname(script))
sys.argv = sys.argv[1:]
with tfds.testing.mock_data(num_examples=24):
    runpy.run_path(script, run_name="__main__")
"""


def run_script(name, flags, mock_tfds=False):
    script = os.path.join(ROOT, "examples", name)
    command = (
        [sys.executable, "-c", _MOCK_RUNNER, script] if mock_tfds else [sys.executable, script]
    )
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    environment["PYTHONPATH"] = os.pathsep.join([ROOT, environment.get("PYTHONPATH", "")])
    completed = subprocess.run(
        command + flags, capture_output=True, text=True, env=environment, timeout=600
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


def check_results(out_dir, extra_files=()):
    with open(os.path.join(out_dir, "results.json")) as file:
        results = json.load(file)
    for key in ("dense", "compact"):
        entry = results[key]
        assert 0.0 <= entry["accuracy"] <= 1.0
        assert entry["params"] > 0
    assert results["compact"]["params"] <= results["dense"]["params"]
    layers = results["layers"]
    assert layers and all(0 < layer["units_after"] <= layer["units_before"] for layer in layers)
    assert results["live_neurons_per_epoch"]
    for name in (
        "table.md",
        "neurons_kept.png",
        "live_neurons.png",
        "accuracy_vs_params.png",
        *extra_files,
    ):
        path = os.path.join(out_dir, name)
        assert os.path.getsize(path) > 0, name
        if name.endswith(".png"):
            with open(path, "rb") as file:
                assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    return results


def test_mnist5k_split_is_stratified_4000_1000():
    x_train, y_train, x_test, y_test = data.mnist5k_arrays()
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert np.bincount(y_train).tolist() == [400] * 10
    assert np.bincount(y_test).tolist() == [100] * 10
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0 and x_train.max() > 0.99


def test_limited_embedded_dataset_keeps_every_class():
    dataset = data.load("mnist5k", train_limit=200, test_limit=100)
    images, labels = next(iter(dataset.train(batch_size=200, seed=0)))
    assert images.shape == (200, 28, 28, 1)
    assert len(np.unique(labels.numpy())) == 10
    assert dataset.sample_images(16).shape == (16, 28, 28, 1)


def test_digits_resized_for_lenet():
    dataset = data.load("digits", image_size=28)
    assert dataset.input_shape == (28, 28, 1) and dataset.num_classes == 10
    images, _ = next(iter(dataset.test(8)))
    assert images.shape == (8, 28, 28, 1)


def test_missing_tfds_data_fails_fast_with_instructions(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="tfds build cifar10"):
        data.load("cifar10", data_dir=str(tmp_path))
    with pytest.raises(data.DataNotFoundError, match="downloads/manual"):
        data.load("imagenet2012", data_dir=str(tmp_path), image_size=64)


def test_tfds_datasets_on_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        cifar = data.load("cifar10", data_dir=str(tmp_path))
        images, labels = next(iter(cifar.train(batch_size=4, seed=0)))
        assert cifar.input_shape == (32, 32, 3) and cifar.num_classes == 10
        assert images.shape == (4, 32, 32, 3) and images.dtype == "float32"
        assert 0.0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 1.0
        assert labels.numpy().max() < 10

        imagenet = data.load("imagenet2012", data_dir=str(tmp_path), image_size=48, test_limit=5)
        assert imagenet.input_shape == (48, 48, 3) and imagenet.num_classes == 1000
        assert imagenet.sample_images(5).shape == (5, 48, 48, 3)


def test_unknown_dataset_and_bad_limits_are_rejected():
    with pytest.raises(ValueError, match="Unknown dataset"):
        data.load("mnist")
    with pytest.raises(ValueError, match="train_limit"):
        data.load("digits", train_limit=0)
    with pytest.raises(ValueError, match="image_size"):
        data.load("imagenet2012")


def test_srinivas_babu_merges_a_duplicate_neuron_first_and_exactly():
    rng = np.random.default_rng(0)
    kernel_in = rng.normal(size=(6, 5)).astype("float32")
    kernel_in[:, 3] = kernel_in[:, 1]
    bias_in = rng.normal(size=5).astype("float32")
    bias_in[3] = bias_in[1]
    kernel_out = rng.normal(size=(5, 4)).astype("float32")
    merges = srinivas_babu.merge_sequence(kernel_in, bias_in, kernel_out)
    assert len(merges) == 4
    assert set(merges[0]) == {1, 3}

    # Two neurons with the same incoming weights compute the same output, so
    # merging one into the other leaves the layer pair's function unchanged.
    new_in, new_bias, new_out = srinivas_babu.pruned_weights(
        kernel_in, bias_in, kernel_out, merges[:1]
    )
    x = rng.normal(size=(7, 6)).astype("float32")
    before = np.tanh(x @ kernel_in + bias_in) @ kernel_out
    after = np.tanh(x @ new_in + new_bias) @ new_out
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert not new_out[merges[0][0]].any() and not new_in[:, merges[0][0]].any()


def test_srinivas_babu_curve_restores_the_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", name="a"),
            keras.layers.Dense(3, name="b"),
        ]
    )
    original = [w.copy() for w in model.get_weights()]
    points = srinivas_babu.prune_curve(model, "a", "b", (0.0, 0.5), evaluate=lambda m: 1.0)
    assert [p["units"] for p in points] == [8, 4]
    assert points[1]["nonzero_params"] < points[0]["nonzero_params"]
    for restored, kept in zip(model.get_weights(), original):
        np.testing.assert_array_equal(restored, kept)


def test_report_tables_and_plots(tmp_path):
    dense = {"accuracy": 0.975, "params": 431080, "units": {"conv1": 20, "fc1": 500}}
    compact = {
        "accuracy": 0.972,
        "params": 20000,
        "units": {"conv1": 6, "fc1": 70},
        "tflite_bytes": 82000,
        "flops": 700000,
    }
    table = report.summary_table([("dense", dense), ("compact", compact)], ["conv1", "fc1"])
    assert (
        "| compact | 6-70 | 20.0K | 4.6% | 78.12 KiB | 700.0K | 80.08 KiB | 2.80 | +0.30 |" in table
    )
    assert "| dense | 20-500 | 431.1K | 100.0% | 1.64 MiB | - | - | 2.50 | +0.00 |" in table
    layers = [{"name": "conv1", "units_before": 20, "units_after": 6}]
    assert "| conv1 | 20 | 6 | 30.0% |" in report.layers_table(layers)

    report.plot_neurons_kept(layers, str(tmp_path / "kept.png"))
    report.plot_live_neurons({"conv1": [20, 10, 6]}, str(tmp_path / "live.png"))
    report.plot_accuracy_vs_params([{"strength": 0.1, **compact}], dense, str(tmp_path / "acc.png"))
    report.plot_error_increase(
        {"ours": [{"nonzero_params": 20000, "error_increase": 0.3}]}, str(tmp_path / "err.png")
    )
    report.write_json(str(tmp_path / "r.json"), {"a": 1})
    assert sorted(os.listdir(tmp_path)) == ["acc.png", "err.png", "kept.png", "live.png", "r.json"]


LENET5_TINY = ["--epochs=1", "--finetune_epochs=1", "--train_limit=256", "--test_limit=128"]


def test_lenet5_end_to_end(tmp_path):
    out_dir = str(tmp_path / "lenet5")
    stdout = run_script("lenet5.py", [f"--out_dir={out_dir}", *LENET5_TINY])
    assert "| dense | 20-50-500 | 431.1K |" in stdout
    results = check_results(out_dir, extra_files=("compact.tflite", "error_increase.png"))
    assert results["dense"]["params"] == 431080
    assert results["config"]["epochs"] == 1
    assert [entry["strength"] for entry in results["sweep"]] == [results["config"]["strength"]]
    assert results["srinivas_babu"][0]["units"] == 500
    assert results["compact"]["tflite_bytes"] > 0
    assert 0 < results["compact"]["flops"] <= results["dense"]["flops"]


@pytest.mark.slow
def test_lenet5_sweep_and_activation_experiment(tmp_path):
    out_dir = str(tmp_path / "lenet5")
    run_script(
        "lenet5.py",
        [
            f"--out_dir={out_dir}",
            *LENET5_TINY,
            "--strength=0.01",
            "--sweep=0.2",
            "--activation_experiment=relu,tanh",
            "--srinivas_babu=false",
            "--export_tflite=false",
        ],
    )
    results = check_results(out_dir)
    assert [entry["strength"] for entry in results["sweep"]] == [0.01, 0.2]
    assert set(results["activation_experiment"]) == {"relu", "tanh"}
    for entry in results["activation_experiment"].values():
        assert set(entry["removed"]) == {"conv1", "conv2", "fc1"}
        assert all(0 <= removed <= 500 for removed in entry["removed"].values())
    assert "srinivas_babu" not in results


def test_lenet5_low_rank_with_group_lasso_factorizes(tmp_path):
    out_dir = str(tmp_path / "lenet5")
    run_script(
        "lenet5.py",
        [
            f"--out_dir={out_dir}",
            *LENET5_TINY,
            "--penalty=group_lasso+low_rank",
            "--low_rank_strength=30",
            "--low_rank_layers=fc1",
            "--low_rank_every=1",
            "--srinivas_babu=false",
            "--export_tflite=false",
        ],
    )
    results = check_results(out_dir)
    factorized = {entry["name"]: entry for entry in results["compact"]["factorized"]}
    assert "fc1" in factorized
    assert factorized["fc1"]["rank"] < factorized["fc1"]["full_rank"]
    assert results["config"]["penalty"] == "group_lasso+low_rank"
    with open(os.path.join(out_dir, "table.md")) as file:
        assert "| fc1 | dense | " in file.read()


def test_script_rejects_bad_flags(tmp_path):
    script = os.path.join(ROOT, "examples", "lenet5.py")
    environment = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, script, f"--out_dir={tmp_path}", "--sweep=0.1,lots"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert completed.returncode != 0
    assert "--sweep must be a comma-separated list of numbers" in completed.stderr


@pytest.mark.slow
def test_vgg_cifar_end_to_end_on_mock_cifar10(tmp_path):
    out_dir = str(tmp_path / "vgg")
    run_script(
        "vgg_cifar.py",
        [
            f"--out_dir={out_dir}",
            f"--data_dir={tmp_path}",
            "--epochs=1",
            "--finetune_epochs=1",
            "--width=0.125",
            "--batch_size=8",
        ],
        mock_tfds=True,
    )
    results = check_results(out_dir, extra_files=("compact.tflite",))
    assert results["dense"]["units"]["conv1_1"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("model, image_size", [("alexnet", 96), ("vgg13", 64)])
def test_imagenet_end_to_end_on_mock_imagenet(tmp_path, model, image_size):
    out_dir = str(tmp_path / model)
    run_script(
        "imagenet.py",
        [
            f"--out_dir={out_dir}",
            f"--data_dir={tmp_path}",
            f"--model={model}",
            f"--image_size={image_size}",
            "--epochs=1",
            "--finetune_epochs=0",
            "--width=0.0625",
            "--batch_size=8",
            "--export_tflite=false",
        ],
        mock_tfds=True,
    )
    results = check_results(out_dir)
    assert results["dense"]["units"]["fc8"] == 1000
