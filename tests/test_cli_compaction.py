"""The `keras-compact` CLI end to end, and each bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras
import keras_compact_cli as cli

L = keras.layers
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dead_model():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            L.Conv2D(5, 3, activation="relu", name="conv"),
            L.Flatten(),
            L.Dense(4, activation="relu", name="fc"),
            L.Dense(2, name="out"),
        ],
        name="small",
    )
    kernel = model.get_layer("conv").kernel.numpy()
    kernel[..., [1, 3]] = 0.0
    model.get_layer("conv").kernel.assign(kernel)
    kernel = model.get_layer("fc").kernel.numpy()
    kernel[:, 0] = 0.0
    model.get_layer("fc").kernel.assign(kernel)
    return model


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "in.keras"
    model = _dead_model()
    model.save(path)
    return model, str(path)


def test_compact_writes_model_and_report(saved, tmp_path):
    model, path = saved
    out, report_path = str(tmp_path / "out.keras"), str(tmp_path / "r.json")
    data = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype("float32")
    np.save(tmp_path / "x.npy", data)
    rc = cli.main(["compact", path, out, "--report", report_path, "--sample-data", str(tmp_path / "x.npy")])
    assert rc == 0
    compact_model = keras.models.load_model(out)
    np.testing.assert_allclose(compact_model(data), model(data), rtol=1e-4, atol=1e-5)
    report = json.loads(open(report_path).read())
    assert report["params_after"] < report["params_before"]
    assert report["max_abs_diff"] <= 1e-5
    assert [(e["name"], e["units_before"], e["units_after"]) for e in report["layers"]] == [
        ("conv", 5, 3),
        ("fc", 4, 3),
        ("out", 2, 2),
    ]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_report_prints_the_table(saved, capsys):
    _, path = saved
    assert cli.main(["report", path]) == 0
    table = capsys.readouterr().out
    for expected in ("conv", "5 -> 3", "fc", "4 -> 3", "dead", "MMACs", "model output (2)"):
        assert expected in table


def test_report_counts_macs_at_the_open_dim_size(tmp_path, capsys):
    """A model of any sequence length: MACs unknown ("?") unless --open-dim-size gives one."""
    inputs = keras.Input((None, 6))
    x = keras.layers.Dense(4, activation="relu", name="fc")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.GlobalAveragePooling1D()(x)))
    path = str(tmp_path / "sequence.keras")
    model.save(path)
    assert cli.main(["report", path]) == 0
    assert "?" in capsys.readouterr().out
    report_path = str(tmp_path / "r.json")
    assert cli.main(["compact", path, str(tmp_path / "out.keras"), "--open-dim-size", "10", "--report", report_path]) == 0
    report = json.loads(open(report_path).read())
    assert report["macs_before"] == 10 * 6 * 4 + 4 * 2  # fc at each of 10 positions, then out once


def test_out_equal_to_in_is_refused(saved, capsys):
    _, path = saved
    before = open(path, "rb").read()
    assert cli.main(["compact", path, path]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert open(path, "rb").read() == before


def test_missing_and_corrupt_files(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "none.keras")]) == 2
    assert "no such file" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"this is not a zip archive")
    assert cli.main(["compact", str(corrupt), str(tmp_path / "o.keras")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert not (tmp_path / "o.keras").exists()


def test_lambda_needs_unsafe(tmp_path, capsys):
    model = keras.Sequential(
        [keras.Input((3,)), L.Dense(4, name="d"), L.Lambda(lambda x: x * 2.0), L.Dense(2, name="out")]
    )
    path = str(tmp_path / "lambda.keras")
    model.save(path)
    assert cli.main(["compact", path, str(tmp_path / "o.keras")]) == 2
    assert "--unsafe" in capsys.readouterr().err
    assert cli.main(["compact", path, str(tmp_path / "o.keras"), "--unsafe"]) == 0


@keras.saving.register_keras_serializable(package="test_cli_compaction")
class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = L.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_subclassed_and_unbuilt_models(tmp_path, capsys):
    subclassed = Subclassed()
    subclassed(np.zeros((1, 3), "float32"))
    path = str(tmp_path / "sub.keras")
    subclassed.save(path)
    assert cli.main(["report", path]) == 2
    assert "subclassed" in capsys.readouterr().err

    unbuilt = keras.Sequential([L.Dense(2)])
    path = str(tmp_path / "unbuilt.keras")
    unbuilt.save(path)
    assert cli.main(["report", path]) == 2
    err = capsys.readouterr().err
    assert "no graph yet" in err or "cannot read" in err


def test_console_entry_point_and_loading_without_keras_compact(saved, tmp_path):
    _, path = saved
    out = str(tmp_path / "out.keras")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    # The compact model loads where keras_compact cannot be imported.
    script = (
        "import sys; from keras_compact_cli import main; rc = main(sys.argv[1:]);"
        "[sys.modules.pop(m) for m in list(sys.modules) if m.startswith('keras_compact')];"
        "sys.modules['keras_compact'] = None; import keras;"
        f"m = keras.models.load_model({out!r}); print('loaded', m.count_params()); sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "compact", path, out],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "loaded" in result.stdout


def test_channel_multiple_and_no_factorize_options(saved, tmp_path):
    _, path = saved
    out, report_path = str(tmp_path / "out.keras"), str(tmp_path / "r.json")
    assert cli.main(["compact", path, out, "--channel-multiple", "4", "--no-factorize",
                     "--report", report_path]) == 0
    report = json.loads(open(report_path).read())
    assert [(e["name"], e["units_after"]) for e in report["layers"]] == [
        ("conv", 4),
        ("fc", 4),
        ("out", 2),
    ]
    assert report["factorized"] == []


def test_sample_data_npz_named_as_the_inputs_of_a_dict_model(tmp_path, capsys):
    """A model that takes a dict of inputs (as keras-hub backbones do) gets the
    .npz arrays by name, whatever their order in the file; a model that takes
    a list gets them in file order."""
    keras.utils.set_random_seed(0)
    inputs = {"ids": keras.Input((6,), dtype="int32", name="ids"), "scale": keras.Input((1,), name="scale")}
    x = keras.layers.Flatten()(keras.layers.Embedding(20, 4)(inputs["ids"]))
    x = keras.layers.Dense(8, activation="relu")(x) * inputs["scale"]
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    path = str(tmp_path / "dict.keras")
    model.save(path)
    rng = np.random.default_rng(0)
    # Saved "scale" first: by position the ids would be read as scales.
    np.savez(tmp_path / "named.npz", scale=rng.random((5, 1)).astype("float32"),
             ids=rng.integers(0, 20, (5, 6)).astype("int32"))
    assert cli.main(["compact", path, str(tmp_path / "out.keras"), "--sample-data", str(tmp_path / "named.npz")]) == 0
    np.savez(tmp_path / "misnamed.npz", a=np.zeros((5, 1), "float32"), b=np.zeros((5, 6), "int32"))
    assert cli.main(["compact", path, str(tmp_path / "out2.keras"), "--sample-data", str(tmp_path / "misnamed.npz")]) == 2
    assert "--sample-data" in capsys.readouterr().err
