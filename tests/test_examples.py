"""The examples' data, tables, plots and baseline, and each script end to end with short settings.

The scripts run in subprocesses (absl flags are process-global). The
tensorflow-datasets path runs on tfds' own mock data, inside the subprocess,
so no test can reach a download.
"""

import ast
import glob
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_compact_examples import data, models, plots, srinivas_babu, tables

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
    """What every run must satisfy, whatever its settings; returns results.json.

    - Compaction is exact: the compact net before fine-tuning scores what the
      pruned, not yet compacted net scored, on the same test images.
    - Compaction removes the neurons NeuronMonitor saw die, no more, no fewer
      (unless a whole layer died: then what fed it goes too, and one unit stays).
    - The layers' parameter counts add up; parameters and multiply-adds fall
      exactly when a neuron went (without factorization).
    - table.md says what results.json says.
    """
    with open(os.path.join(out_dir, "results.json")) as file:
        results = json.load(file)
    dense, compact = results["dense"], results["compact"]
    for entry in results["sweep"]:
        assert entry["accuracy_before_finetune"] == entry["accuracy_sparse"], entry["strength"]

    layers = {layer["name"]: layer for layer in results["layers"]}
    final_live = {name: counts[-1] for name, counts in results["live_neurons_per_epoch"].items()}
    assert final_live and set(final_live) <= set(layers)
    if all(final_live.values()):
        assert {name: layers[name]["units_after"] for name in final_live} == final_live
    # The per-layer counts include what factorization saved.
    assert compact["params"] == dense["params"] - sum(
        layer["params_before"] - layer["params_after"] for layer in layers.values()
    )

    neurons_removed = any(layer["units_after"] < layer["units_before"] for layer in layers.values())
    if not compact["factorized"]:  # A factorized layer is two layers, with a smaller count each.
        assert {name: layer["units_after"] for name, layer in layers.items()} == compact["units"]
        assert (compact["params"] < dense["params"]) == neurons_removed
        assert (compact["macs"] < dense["macs"]) == neurons_removed

    with open(os.path.join(out_dir, "table.md")) as file:
        table = file.read()
    hidden = list(dense["units"])[:-1]
    for label, entry in (("dense", dense), (f"compact (strength {compact['strength']:g})", compact)):
        row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1] == "-".join(str(entry["units"][name]) for name in hidden), row
        assert cells[2] == tables.human_count(entry["params"]), row
        assert cells[7] == f"{100 * (1 - entry['accuracy']):.2f}", row
    for layer in layers.values():
        assert f"| {layer['name']} | {layer['units_before']} | {layer['units_after']} |" in table

    for name in ("neurons_kept.png", "live_neurons.png", "accuracy_vs_params.png", *extra_files):
        path = os.path.join(out_dir, name)
        with open(path, "rb") as file:
            header = file.read(8)
        if name.endswith(".png"):
            assert header == b"\x89PNG\r\n\x1a\n", name
        else:
            assert header, name
    return results


def lenet5_size(units, num_classes=10):
    """(parameters, multiply-adds) of LeNet-5 on 28x28x1 with `units` neurons, counted by hand.

    conv1 5x5 on 1 channel -> 24x24, pool -> 12x12; conv2 5x5 -> 8x8, pool ->
    4x4; fc1 reads 4*4*conv2 values; every layer has a bias.
    """
    conv1, conv2, fc1 = units["conv1"], units["conv2"], units["fc1"]
    params = (
        conv1 * (25 + 1) + conv2 * (25 * conv1 + 1) + fc1 * (16 * conv2 + 1)
        + num_classes * (fc1 + 1)
    )
    macs = 24 * 24 * conv1 * 25 + 8 * 8 * conv2 * 25 * conv1 + 16 * conv2 * fc1 + fc1 * num_classes
    return params, macs


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


# The example side's own dependencies (the `examples` extra), none of which the library needs.
_EXAMPLE_ONLY = {
    "keras_compact_examples", "tensorflow_datasets", "mlxtend", "sklearn", "matplotlib", "absl"
}


def test_library_imports_nothing_from_the_example_side():
    """keras_compact/ stays installable and importable without the `examples` extra."""
    offenders = []
    for path in sorted(glob.glob(os.path.join(ROOT, "keras_compact", "**", "*.py"), recursive=True)):
        with open(path) as file:
            tree = ast.parse(file.read(), path)
        for node in ast.walk(tree):  # function-level imports too
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            offenders += [
                f"{os.path.relpath(path, ROOT)}:{node.lineno} {module}"
                for module in modules
                if module.split(".")[0] in _EXAMPLE_ONLY
            ]
    assert not offenders


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


def test_tables_and_plots(tmp_path):
    dense = {"accuracy": 0.975, "params": 431080, "units": {"conv1": 20, "fc1": 500}}
    compact = {
        "accuracy": 0.972,
        "params": 20000,
        "units": {"conv1": 6, "fc1": 70},
        "tflite_bytes": 82000,
        "macs": 700000,
    }
    table = tables.summary_table([("dense", dense), ("compact", compact)], ["conv1", "fc1"])
    assert "| memory (float32) | MACs | TFLite file |" in table
    assert (
        "| compact | 6-70 | 20.0K | 4.6% | 78.12 KiB | 700.0K | 80.08 KiB | 2.80 | +0.30 |" in table
    )
    assert "| dense | 20-500 | 431.1K | 100.0% | 1.64 MiB | - | - | 2.50 | +0.00 |" in table
    layers = [{"name": "conv1", "units_before": 20, "units_after": 6}]
    assert "| conv1 | 20 | 6 | 30.0% |" in tables.layers_table(layers)

    plots.plot_neurons_kept(layers, str(tmp_path / "kept.png"))
    plots.plot_live_neurons({"conv1": [20, 10, 6]}, str(tmp_path / "live.png"))
    plots.plot_accuracy_vs_params([{"strength": 0.1, **compact}], dense, str(tmp_path / "acc.png"))
    plots.plot_error_increase(
        {"ours": [{"nonzero_params": 20000, "error_increase": 0.3}]}, str(tmp_path / "err.png")
    )
    # Atomic writes leave no temporary beside the plots.
    assert sorted(os.listdir(tmp_path)) == ["acc.png", "err.png", "kept.png", "live.png"]


# Short enough for the fast suite (about 30 s), long enough to learn (chance is
# 10%) and, at this strength, to kill neurons in conv2 and fc1 (seed 0).
LENET5_SHORT = [
    "--epochs=4",
    "--finetune_epochs=1",
    "--train_limit=2000",
    "--test_limit=200",
    "--strength=0.03",
]
# For runs that check plumbing, not learning.
LENET5_TINY = ["--epochs=1", "--finetune_epochs=1", "--train_limit=256", "--test_limit=128"]


def test_lenet5_end_to_end(tmp_path):
    out_dir = str(tmp_path / "lenet5")
    stdout = run_script("lenet5.py", [f"--out_dir={out_dir}", *LENET5_SHORT])
    assert "| dense | 20-50-500 | 431.1K |" in stdout
    results = check_results(out_dir, extra_files=("compact.tflite", "error_increase.png"))
    dense, compact = results["dense"], results["compact"]
    assert results["config"]["epochs"] == 4
    assert [entry["strength"] for entry in results["sweep"]] == [0.03]

    assert (dense["params"], dense["macs"]) == lenet5_size(dense["units"]) == (431080, 2293000)
    assert (compact["params"], compact["macs"]) == lenet5_size(compact["units"])
    assert compact["units"]["conv2"] < 50 and compact["units"]["fc1"] < 500
    assert dense["accuracy"] > 0.6 and compact["accuracy"] > 0.6

    tflite_path = os.path.join(out_dir, "compact.tflite")
    assert compact["tflite_bytes"] == os.path.getsize(tflite_path)
    assert compact["tflite_bytes"] > 4 * compact["params"]  # float32 weights, plus the graph

    # Merging no neuron leaves the dense net as it was; each merge removes weights.
    curve = results["srinivas_babu"]
    assert curve[0]["units"] == 500 and curve[0]["accuracy"] == dense["accuracy"]
    nonzero = [point["nonzero_params"] for point in curve]
    assert nonzero == sorted(nonzero, reverse=True) and len(set(nonzero)) == len(nonzero)


def test_lenet5_budget_from_a_trained_model(tmp_path):
    """--init_from a trained LeNet-5 and --target_params: results record the budget and meet it."""
    from keras_compact_examples import data, models

    x_train, y_train, _, _ = data.mnist5k_arrays()  # sorted by label: take every class
    rows = np.random.default_rng(0).permutation(len(x_train))[:2000]
    trained = models.lenet5()
    trained.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
    trained.fit(x_train[rows], y_train[rows], epochs=3, batch_size=64, verbose=0)
    trained.save(tmp_path / "trained.keras")
    out_dir = str(tmp_path / "budget")
    stdout = run_script(
        "lenet5.py",
        [
            f"--out_dir={out_dir}",
            f"--init_from={tmp_path / 'trained.keras'}",
            "--target_params=0.1",
            "--epochs=3",
            "--finetune_epochs=1",
            "--train_limit=2000",
            "--test_limit=200",
            "--srinivas_babu=false",
            "--export_tflite=false",
        ],
    )
    results = check_results(out_dir)
    budget = results["budget"]
    assert budget["asked"] == {"params": 0.1, "macs": None}
    assert budget["reached"]["params"] == results["compact"]["params"] / results["dense"]["params"]
    assert 0.09 <= budget["reached"]["params"] <= 0.1
    assert "Budget: params asked 10.0%, reached" in stdout
    # The dense baseline is the trained model as it is: its accuracy, no training of ours.
    assert "as trained" in stdout and results["dense"]["accuracy"] > 0.8


@pytest.mark.slow
def test_lenet5_sweep_and_activation_experiment(tmp_path):
    out_dir = str(tmp_path / "lenet5")
    run_script(
        "lenet5.py",
        [
            f"--out_dir={out_dir}",
            *LENET5_SHORT,
            "--sweep=0.01",
            "--activation_experiment=relu,tanh",
            "--srinivas_babu=false",
            "--export_tflite=false",
        ],
    )
    results = check_results(out_dir)
    weak, strong = results["sweep"]
    assert (weak["strength"], strong["strength"]) == (0.01, 0.03)
    # Same initial weights and data order: the stronger penalty leaves the smaller net.
    assert strong["params"] < weak["params"]

    outcome = results["activation_experiment"]
    assert set(outcome) == {"relu", "tanh"}
    # The run's own activation is not trained again: its counts are the compaction's.
    for layer in results["layers"]:
        if layer["name"] in outcome["relu"]["removed"]:
            assert outcome["relu"]["removed"][layer["name"]] == (
                layer["units_before"] - layer["units_after"]
            )
    assert outcome["relu"]["accuracy_sparse"] == results["compact"]["accuracy_sparse"]
    assert outcome["tanh"]["accuracy_sparse"] > 0.6
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
    assert set(factorized) == {"fc1"}
    assert factorized["fc1"]["rank"] < factorized["fc1"]["full_rank"]
    assert factorized["fc1"]["params_after"] < factorized["fc1"]["params_before"]
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


def test_vit_is_stock_keras_and_narrows_by_block():
    dense = models.vit()
    assert dense.count_params() == 138_890
    assert {type(layer).__module__.split(".")[0] for layer in dense.layers} == {"keras"}
    narrow = models.vit(head_counts=[4, 3, 2, 1], mlp_units=[128, 64, 32, 1])
    heads = [narrow.get_layer(f"block{b}_mha").get_config()["num_heads"] for b in range(4)]
    units = [narrow.get_layer(f"block{b}_mlp1").units for b in range(4)]
    assert heads == [4, 3, 2, 1] and units == [128, 64, 32, 1]
    # A head is 3 * (64 * 16 + 16) query/key/value weights and 16 * 64 output rows; an FFN
    # neuron 64 + 1 weights in and 64 out.
    assert dense.count_params() - narrow.count_params() == 6 * 4144 + 287 * 129
    with pytest.raises(ValueError, match="one number per block"):
        models.vit(head_counts=[4, 4])
    with pytest.raises(ValueError, match="does not divide"):
        models.vit(patch=5)


# Plumbing and exactness, not learning: one epoch of 4 steps; strengths that kill every FFN
# neuron and every head within them (each layer then keeps one unit, each attention one head).
VIT_TINY = [
    "--epochs=1",
    "--finetune_epochs=1",
    "--train_limit=256",
    "--test_limit=64",
    "--ffn_strength=50",
    "--target_params=0",  # fixed strengths: everything they kill must go
    "--latency_runs=10",
    "--latency_repeats=1",
    "--progress=none",
]


def test_vit_mnist_end_to_end(tmp_path):
    """Every FFN neuron and head that the penalties killed is removed, nothing else; the
    compact network is the same ViT with those widths; compaction changes no prediction."""
    check_vit_run(str(tmp_path / "vit"), export=False)


def test_vit_mnist_with_a_parameter_budget_meets_it(tmp_path):
    """--target_params: a BudgetController lands the sparse ViT at or under the budget."""
    out_dir = str(tmp_path / "vit_budget")
    tiny = [f for f in VIT_TINY if not f.startswith(("--ffn_strength", "--target_params"))]
    run_script(
        "vit_mnist.py",
        [f"--out_dir={out_dir}", *tiny, "--epochs=3", "--target_params=0.5", "--noexport_tflite"],
    )
    with open(os.path.join(out_dir, "results.json")) as file:
        results = json.load(file)
    assert results["budget"]["params"] == 0.5
    assert results["compact"]["params"] <= 0.5 * results["dense"]["params"]


@pytest.mark.slow
def test_vit_mnist_end_to_end_with_tflite(tmp_path):
    """The same, with both networks exported to TFLite (verified by the exporter) and timed."""
    check_vit_run(str(tmp_path / "vit"), export=True)


def check_vit_run(out_dir, export):
    head_flags = ["--head_strength=100"]
    export_flag = "--export_tflite" if export else "--noexport_tflite"
    run_script("vit_mnist.py", [f"--out_dir={out_dir}", *VIT_TINY, *head_flags, export_flag])
    with open(os.path.join(out_dir, "results.json")) as file:
        results = json.load(file)
    dense, compact = results["dense"], results["compact"]
    assert dense["params"] == 138_890 and dense["blocks"] == [{"heads": 4, "ffn": 128}] * 4
    assert compact["accuracy_before_finetune"] == compact["accuracy_sparse"]

    live = {name: counts[-1] for name, counts in results["live_per_epoch"].items()}
    ffn = [compact["blocks"][b]["ffn"] for b in range(4)]
    # A layer keeps one unit when every neuron died (the compactor needs one).
    assert ffn == [max(1, live[f"block{b}_mlp1"]) for b in range(4)]
    assert ffn == [1, 1, 1, 1]
    heads = [compact["blocks"][b]["heads"] for b in range(4)]
    assert heads == [max(1, live[f"block{b}_mha"]) for b in range(4)] == [1, 1, 1, 1]

    rebuilt = models.vit(head_counts=heads, mlp_units=ffn)
    assert compact["params"] == rebuilt.count_params() < dense["params"]
    assert compact["macs"] < dense["macs"]
    if export:
        for name in ("dense", "compact"):
            entry = results[name]
            assert entry["tflite_bytes"] == os.path.getsize(os.path.join(out_dir, f"{name}.tflite"))
            assert entry["latency_us"] > 0
        assert compact["tflite_bytes"] < dense["tflite_bytes"]

    with open(os.path.join(out_dir, "table.md")) as file:
        table = file.read()
    for b in range(4):
        assert f"| {b} | {heads[b]} / 4 | {ffn[b]} / 128 |" in table
    assert f"| compact | {compact['params']:,} | {compact['macs']:,} |" in table
