"""Fault injection for the command line, `keras_compact.export` and
`keras_compact.bench`: every fault is one clear line (or one clear exception),
the input is never modified, and nothing is left unless the command succeeded.

The command line runs in this process (`cli.main`) except where a signal or a
resource limit needs a process of its own. The writer's own faults (umask,
concurrent writers, ...) are in test_files.py.
"""

import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_compact
import keras_compact_cli as cli
from keras_compact.bench import benchmark, tflite_latency
from keras_compact.exporter import exporting
from small_models import convnet
from test_files import leftovers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (10, 10, 1)  # small_models.convnet's input


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """One small saved model for the whole module (the command's input)."""
    path = tmp_path_factory.mktemp("input") / "in.keras"
    convnet().save(path)
    return str(path)


@pytest.fixture
def model_in(model_file):
    """The input model; after the test, its bytes and mtime must be unchanged."""
    before = (open(model_file, "rb").read(), os.stat(model_file).st_mtime_ns)
    yield model_file
    assert (open(model_file, "rb").read(), os.stat(model_file).st_mtime_ns) == before


@pytest.fixture
def out(tmp_path):
    """An empty output folder; after the test it must hold no temporary."""
    folder = tmp_path / "out"
    folder.mkdir()
    yield folder
    assert leftovers(tmp_path) == []


def run(capsys, *argv):
    """`keras-compact ARGV` in this process: (exit status, stderr), checking
    that a failure is exactly one line and never a traceback."""
    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    if status:
        assert err.count("\n") == 1 and err.startswith("keras-compact: error: "), err
    return status, err


# Destinations: refused before any work, exit 2, nothing written.


def test_read_only_output_folder(capsys, model_in, read_only_folder):
    status, err = run(capsys, "compact", model_in, read_only_folder / "existing.keras")
    assert status == 2
    assert f"'{read_only_folder}' is not writable" in err and "choose a folder" in err
    assert (read_only_folder / "existing.keras").read_bytes() == b"existing model"


def test_read_only_report_folder_writes_no_model(capsys, model_in, out, read_only_folder):
    status, err = run(capsys, "compact", model_in, out / "o.keras",
                      "--report", read_only_folder / "r.json")
    assert status == 2 and "--report" in err and "is not writable" in err
    assert os.listdir(out) == []


def test_output_whose_parent_is_a_file(capsys, model_in, out):
    (out / "file").write_text("x")
    status, err = run(capsys, "compact", model_in, out / "file" / "o.keras")
    assert status == 2 and f"'{out / 'file'}' is a file, not a folder" in err
    assert os.listdir(out) == ["file"]


def test_tflite_naming_a_folder_writes_no_model(capsys, model_in, out):
    (out / "folder").mkdir()
    status, err = run(capsys, "compact", model_in, out / "o.keras", "--tflite", out / "folder")
    assert status == 2 and f"--tflite '{out / 'folder'}' is a folder: name a file" in err
    assert os.listdir(out) == ["folder"]


def test_saved_model_naming_a_file(capsys, model_in, out):
    (out / "sm").write_text("x")
    status, err = run(capsys, "compact", model_in, out / "o.keras", "--saved-model", out / "sm")
    assert status == 2 and "--saved-model" in err and "is an existing file" in err
    assert (out / "sm").read_text() == "x" and os.listdir(out) == ["sm"]


def test_saved_model_naming_a_folder_of_other_files(capsys, model_in, out):
    (out / "docs").mkdir()
    (out / "docs" / "notes.txt").write_text("mine")
    status, err = run(capsys, "compact", model_in, out / "o.keras", "--saved-model", out / "docs")
    assert status == 2 and "does not hold a SavedModel" in err
    assert os.listdir(out / "docs") == ["notes.txt"] and os.listdir(out) == ["docs"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{out}/o.keras", "--report", "{out}/r.json", "--tflite", "{out}/r.json"],
         "--report and --tflite name the same path"),
        (["{out}/o.keras", "--report", "{out}/o.keras"], "OUT.keras and --report name the same path"),
        (["{out}/o.keras", "--report", "{in}"], "--report '{in}' is the input IN.keras"),
        (["{out}/o.keras", "--saved-model", "{in_folder}"], "holds the input IN.keras"),
        (["{out}/sm/o.keras", "--saved-model", "{out}/sm"], "is inside --saved-model"),
        (["{out}/o.keras", "--sample-data", "{out}/x.npy", "--report", "{out}/x.npy"],
         "is the input --sample-data"),
    ],
    ids=["two-flags", "report-is-out", "report-is-in", "in-inside-saved-model",
         "out-inside-saved-model", "report-is-sample-data"],
)
def test_destinations_that_would_overwrite_an_input_or_each_other(capsys, model_in, out, argv, message):
    np.save(out / "x.npy", np.zeros((2,) + SHAPE, "float32"))
    names = {"out": out, "in": model_in, "in_folder": os.path.dirname(model_in)}
    status, err = run(capsys, "compact", model_in, *[a.format(**names) for a in argv])
    assert status == 2 and message.format(**names) in err
    assert os.listdir(out) == ["x.npy"]
    np.testing.assert_array_equal(np.load(out / "x.npy"), 0.0)


def test_output_that_is_a_link_to_the_input(capsys, model_in, out):
    os.symlink(model_in, out / "link.keras")
    status, err = run(capsys, "compact", model_in, out / "link.keras")
    assert status == 2 and "refusing to overwrite" in err
    assert os.readlink(out / "link.keras") == model_in


@pytest.mark.parametrize("json_path, message", [
    ("{out}", "is a folder: name a file"),
    ("{ro}/b.json", "is not writable"),
    ("{model}", "is the input MODEL"),
])
def test_bench_json_destination(capsys, request, model_in, out, json_path, message):
    # Only the read-only case needs (and may have to skip for) a read-only folder.
    ro = request.getfixturevalue("read_only_folder") if "{ro}" in json_path else None
    json_path = json_path.format(out=out, ro=ro, model=model_in)
    status, err = run(capsys, "bench", model_in, "--runs", 1, "--json", json_path)
    assert status == 2 and message in err and "--json" in err
    assert os.listdir(out) == []


# Numbers: every documented numeric option, refused just past its bound.


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["bench", "{m}", "--runs", "0"], "--runs"),
        (["bench", "{m}", "--runs", "-1"], "--runs"),
        (["bench", "{m}", "--runs", "1.5"], "--runs"),
        (["bench", "{m}", "--runs", "many"], "--runs"),
        (["bench", "{m}", "--batch-size", "0"], "--batch-size"),
        (["bench", "{m}", "--threads", "1", "-1"], "--threads"),
        (["compact", "{m}", "{o}", "--atol", "-1e-9"], "--atol"),
        (["compact", "{m}", "{o}", "--atol", "nan"], "--atol"),
        (["compact", "{m}", "{o}", "--rtol", "inf"], "--rtol"),
        (["compact", "{m}", "{o}", "--rtol", "-0.1"], "--rtol"),
        (["compact", "{m}", "{o}", "--rank-rtol", "1"], "--rank-rtol"),
        (["compact", "{m}", "{o}", "--rank-rtol", "-1e-5"], "--rank-rtol"),
        (["report", "{m}", "--rank-rtol", "nan"], "--rank-rtol"),
        (["compact", "{m}", "{o}", "--channel-multiple", "0"], "--channel-multiple"),
        (["report", "{m}", "--channel-multiple", "-8"], "--channel-multiple"),
    ],
)
def test_numeric_option_past_its_bound(capsys, model_in, out, argv, flag):
    status, err = run(capsys, *[a.format(m=model_in, o=out / "o.keras") for a in argv])
    assert status == 2
    assert f"argument {flag}: expected" in err and "--help" in err
    assert os.listdir(out) == []


def test_numeric_options_at_their_bounds_are_accepted():
    parse = cli.build_parser().parse_args
    args = parse(["compact", "i.keras", "o.keras", "--atol", "0", "--rtol", "0", "--rank-rtol", "0",
                  "--channel-multiple", "1"])
    assert (args.atol, args.rtol, args.rank_rtol, args.channel_multiple) == (0, 0, 0, 1)
    assert parse(["report", "m.keras", "--rank-rtol", "0.999"]).rank_rtol == 0.999
    args = parse(["bench", "m.tflite", "--runs", "1", "--batch-size", "1", "--threads", "0"])
    assert (args.runs, args.batch_size, args.threads) == (1, 1, [0])


def test_help_says_compact_is_all_or_nothing(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["compact", "--help"])
    assert exit.value.code == 0
    assert "All or nothing" in capsys.readouterr().out


# Unreadable inputs: one line naming the file.


def _truncated(path):
    data = open(path, "rb").read()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "content",
    [lambda m: b"this is not a zip archive", _truncated, lambda m: b"", "npy", "folder"],
    ids=["corrupt", "truncated", "empty", "npy-named-keras", "folder"],
)
def test_unreadable_model(capsys, model_in, out, tmp_path, content):
    bad = tmp_path / "bad.keras"
    if content == "folder":
        bad.mkdir()
    elif content == "npy":
        np.save(tmp_path / "a.npy", np.zeros(3))
        os.replace(tmp_path / "a.npy", bad)
    else:
        bad.write_bytes(content(model_in))
    status, err = run(capsys, "compact", bad, out / "o.keras")
    assert status == 2 and f"cannot read '{bad}' as a Keras model" in err
    assert os.listdir(out) == []


def _npz_with_bad_member(path):
    np.savez(path, x=np.zeros((2,) + SHAPE, "float32"))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 40])  # the archive's end record is cut


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("x.npy", lambda p: open(p, "wb").write(b"garbage"), "cannot read --sample-data"),
        ("x.npy", lambda p: open(p, "wb").close(), "cannot read --sample-data"),
        ("x.npz", _npz_with_bad_member, "cannot read --sample-data"),
        ("x.npz", lambda p: np.savez(p, x=np.array([{"a": 1}], dtype=object)), "cannot read --sample-data"),
        ("x.npy", lambda p: np.save(p, np.full((2,) + SHAPE, "a")), "holds <U1 values"),
        ("x.npy", lambda p: np.save(p, np.zeros((2, 9, 9, 1), "float32")), "shape (9, 9, 1)"),
        ("x.npy", lambda p: np.save(p, np.zeros((0,) + SHAPE, "float32")), "holds no samples"),
        ("x.npz", lambda p: np.savez(p, a=np.zeros((2,) + SHAPE), b=np.zeros((2,) + SHAPE)),
         "gives 2 input arrays; the model takes 1"),
        ("x.csv", lambda p: open(p, "w").write("1,2"), "takes a .npy or .npz file"),
    ],
    ids=["corrupt", "empty-file", "truncated-npz", "pickled-objects", "strings", "wrong-shape",
         "no-samples", "too-many-arrays", "wrong-suffix"],
)
def test_unusable_sample_data(capsys, model_in, out, tmp_path, name, make, message):
    data = tmp_path / name
    make(data)
    before = open(data, "rb").read()
    status, err = run(capsys, "compact", model_in, out / "o.keras", "--sample-data", data)
    assert status == 2 and message in err and str(data) in err
    assert os.listdir(out) == [] and open(data, "rb").read() == before


def test_representative_labels_that_do_not_match(capsys, model_in, out, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4,) + SHAPE, "float32"), y=np.zeros(3, "int64"))
    status, err = run(capsys, "compact", model_in, out / "o.keras", "--tflite", out / "m.tflite",
                      "--representative-data", tmp_path / "d.npz")
    assert status == 2 and "give one label per sample" in err
    assert os.listdir(out) == []


@pytest.mark.parametrize("content, message", [
    (b"", "cannot read '{}' as a TFLite model"),
    (b"not a flatbuffer" * 8, "cannot read '{}' as a TFLite model"),
])
def test_bench_of_an_unreadable_tflite(capsys, tmp_path, content, message):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(content)
    status, err = run(capsys, "bench", bad, "--runs", 1)
    assert status == 2 and message.format(bad) in err
    assert bad.read_bytes() == content


def test_bench_of_a_truncated_keras_model(capsys, model_in, tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(_truncated(model_in))
    status, err = run(capsys, "bench", bad, "--runs", 1, "--json", tmp_path / "b.json")
    assert status == 2 and f"cannot read '{bad}' as a Keras model" in err
    assert sorted(os.listdir(tmp_path)) == ["bad.keras"]


# Exports: verified before anything is moved into place.


def _nan_model_file(folder):
    """A model whose outputs overflow to infinity from finite weights: compaction
    without verification keeps it, exports must refuse it."""
    model = convnet()
    for name in ("fc", "out"):
        kernel, bias = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights([np.full_like(kernel, 3e38), bias])
    path = folder / "nan.keras"
    model.save(path)
    return path


def test_failed_export_writes_nothing_at_all(capsys, out, tmp_path):
    """OUT.keras, the SavedModel and the report wait for the TFLite export,
    which refuses a model with non-finite outputs: nothing is written."""
    model_path = _nan_model_file(tmp_path)
    before = model_path.read_bytes()
    status, err = run(capsys, "compact", model_path, out / "o.keras", "--no-verify",
                      "--saved-model", out / "sm", "--tflite", out / "m.tflite",
                      "--report", out / "r.json")
    assert status == 2 and "--saved-model" in err and "not finite" in err
    assert os.listdir(out) == []
    assert model_path.read_bytes() == before


def test_successful_compact_writes_every_output(capsys, model_in, out):
    status, _ = run(capsys, "compact", model_in, out / "o.keras", "--tflite", out / "m.tflite",
                    "--report", out / "r.json")
    assert status == 0
    assert sorted(os.listdir(out)) == ["m.tflite", "o.keras", "r.json"]
    assert keras.models.load_model(out / "o.keras").count_params() == convnet().count_params()


def test_export_refuses_non_finite_model_outputs(tmp_path):
    model = keras.models.load_model(_nan_model_file(tmp_path))
    with pytest.raises(ValueError, match="own outputs are not finite"):
        keras_compact.export(model, tmp_path / "m.tflite", format="tflite")
    assert os.listdir(tmp_path) == ["nan.keras"]


@pytest.mark.parametrize(
    "path, options, error, message",
    [
        ("file/m.tflite", {"format": "tflite"}, NotADirectoryError, "is a file, not a folder"),
        ("file", {}, FileExistsError, "is an existing file"),
        ("docs", {}, FileExistsError, "does not hold a SavedModel"),
        ("m.tflite", {"format": "tflite", "rtol": -1e-4}, ValueError, "rtol must be a finite number"),
        ("m.tflite", {"format": "tflite", "rtol": float("nan")}, ValueError, "rtol must be"),
        ("m.tflite", {"format": "tflite", "sample_data": np.zeros((2, 4))}, ValueError,
         r"sample_data holds samples of shape \(4,\)"),
        ("m.tflite", {"format": "tflite", "sample_data": np.zeros((3,) + SHAPE),
                      "labels": np.zeros(2)}, ValueError, "labels has 2 entries for 3 samples"),
        ("m", {"format": "onnx"}, ValueError, "format must be one of"),
    ],
    ids=["parent-is-file", "saved-model-on-file", "saved-model-on-other-folder", "negative-rtol",
         "nan-rtol", "wrong-sample-shape", "labels-mismatch", "unknown-format"],
)
def test_export_refuses_before_writing(tmp_path, path, options, error, message):
    (tmp_path / "file").write_text("x")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(error, match=message):
        keras_compact.export(convnet(), tmp_path / path, **options)
    assert sorted(os.listdir(tmp_path)) == ["docs", "file"]
    assert os.listdir(tmp_path / "docs") == ["notes.txt"]


def test_export_into_a_read_only_folder(read_only_folder):
    with pytest.raises(PermissionError, match="is not writable"):
        keras_compact.export(convnet(), read_only_folder / "m.tflite", format="tflite")
    assert os.listdir(read_only_folder) == ["existing.keras"]


def test_exporting_moves_nothing_when_the_block_fails(tmp_path):
    """The two-step export the command line uses: verified on entry, moved
    into place only when the caller's block succeeds."""
    path = tmp_path / "m.tflite"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="a later output failed"):
        with exporting(convnet(), path, format="tflite") as report:
            assert report.max_rel_diff <= 1e-4 and path.read_bytes() == b"previous"
            raise RuntimeError("a later output failed")
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["m.tflite"]


# Bench's library API: counts checked before any work.


@pytest.mark.parametrize(
    "options, message",
    [
        ({"runs": 0}, "runs must be an integer >= 1, got 0"),
        ({"runs": 2.5}, "runs must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"threads": [1, 0]}, "threads must be an integer >= 1, got 0"),
        ({"threads": []}, "threads is empty"),
    ],
)
def test_benchmark_refuses_bad_counts_before_any_work(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        benchmark(tmp_path / "missing.tflite", **options)  # refused before the file is looked at


def test_tflite_latency_refuses_bad_counts(tmp_path):
    with pytest.raises(ValueError, match="warmup must be an integer >= 0"):
        tflite_latency(tmp_path / "missing.tflite", warmup=-1)
    with pytest.raises(ValueError, match="num_threads must be an integer >= 1"):
        tflite_latency(tmp_path / "missing.tflite", num_threads=0)


def test_benchmark_of_missing_unreadable_and_unknown_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        benchmark(tmp_path / "missing.tflite")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="expected a .keras or a .tflite file"):
        benchmark(tmp_path / "m.onnx")
    (tmp_path / "m.tflite").write_bytes(b"")
    with pytest.raises(ValueError, match="cannot read .* as a TFLite model"):
        benchmark(tmp_path / "m.tflite", runs=1)


# Signals and resource limits: a process of their own.


def _child(argv, tmp_path, limit_bytes=None):
    """`keras-compact ARGV` in a child process; with `limit_bytes`, no file it
    writes may grow past that (RLIMIT_FSIZE, set once everything is imported,
    with SIGXFSZ ignored as Python does: a write fails with EFBIG)."""
    script = (
        "import resource, signal, sys\n"
        "from keras_compact_cli import main\n"
        "limit = int(sys.argv[1])\n"
        "if limit:\n"
        "    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))\n"
        "sys.exit(main(sys.argv[2:]))\n"
    )
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(scratch))
    return subprocess.Popen(
        [sys.executable, "-B", "-c", script, str(limit_bytes or 0), *map(str, argv)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )


def test_full_disk_while_writing_the_model(model_in, out, tmp_path):
    child = _child(["compact", model_in, out / "o.keras", "--report", out / "r.json"], tmp_path,
                   limit_bytes=4096)
    _, err = child.communicate(timeout=300)
    assert child.returncode == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"keras-compact: error: cannot write OUT.keras '{out / 'o.keras'}'")
    assert "File too large" in line and "Traceback" not in err
    assert os.listdir(out) == [] and os.listdir(tmp_path / "tmpdir") == []


@pytest.mark.parametrize("signum, status, message", [
    (signal.SIGTERM, 128 + signal.SIGTERM, None),
    (signal.SIGINT, 130, "keras-compact: interrupted\n"),
])
def test_signal_while_writing(model_in, out, tmp_path, signum, status, message):
    """The signal lands while OUT.keras's temporary exists (the marker): the
    model is saved, or the TFLite export (seconds) is under way."""
    child = _child(["compact", model_in, out / "o.keras", "--tflite", out / "m.tflite"], tmp_path)
    deadline = time.monotonic() + 240
    while not leftovers(out):
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    child.send_signal(signum)
    _, err = child.communicate(timeout=120)
    assert child.returncode == status, err
    assert "Traceback" not in err
    if message:
        assert err.endswith(message)
    assert os.listdir(out) == [] and os.listdir(tmp_path / "tmpdir") == []
