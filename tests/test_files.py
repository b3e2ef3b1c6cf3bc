"""keras_compact.files, the one file writer, under faults: permissions, failures,
signals, a full disk, a read-only folder and concurrent writers.

Children that only need the writer load files.py by path (standard library
only), so they start in milliseconds instead of importing TensorFlow.
"""

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from keras_compact import files

FILES_PY = files.__file__
# Loads the writer without the keras_compact package (and so without TensorFlow).
PRELUDE = (
    "import importlib.util, os, signal, sys, time\n"
    f"spec = importlib.util.spec_from_file_location('files', {FILES_PY!r})\n"
    "files = importlib.util.module_from_spec(spec); spec.loader.exec_module(files)\n"
)


def leftovers(folder):
    """The writer's temporaries anywhere under `folder`."""
    return [
        os.path.join(root, name)
        for root, folders, names in os.walk(folder)
        for name in names + folders
        if name.startswith(files.TEMPORARY_PREFIX)
    ]


def wait_for(path, child, timeout=30):
    """Wait until `path` exists (the child's marker), failing if the child ends first."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, f"no marker {path}"
        time.sleep(0.01)


@pytest.fixture
def umask():
    """Sets the process umask for one test, and restores it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_file_permissions_follow_the_umask_like_open(tmp_path, umask, mask, mode):
    umask(mask)
    files.write_text(tmp_path / "r.json", "{}")
    with open(tmp_path / "plain", "w"):
        pass
    assert stat.S_IMODE(os.stat(tmp_path / "r.json").st_mode) == mode
    assert stat.S_IMODE(os.stat(tmp_path / "plain").st_mode) == mode


def test_folder_permissions_follow_the_umask(tmp_path, umask):
    umask(0o022)
    with files.atomic_directory(tmp_path / "model") as temporary:
        os.makedirs(os.path.join(temporary, "variables"))
        open(os.path.join(temporary, "variables", "data"), "w").write("weights")
    assert stat.S_IMODE(os.stat(tmp_path / "model").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "model" / "variables").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "model" / "variables" / "data").st_mode) == 0o644
    assert os.listdir(tmp_path) == ["model"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(OSError, match="disk full"):
        with files.atomic_path(target) as temporary:
            open(temporary, "w").write("half")
            raise OSError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]


def test_failed_write_removes_the_folders_it_made(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with files.atomic_path(tmp_path / "kept" / "new" / "deeper" / "out.json") as temporary:
            assert os.path.isdir(tmp_path / "kept" / "new" / "deeper")
            open(temporary, "w").write("half")
            raise RuntimeError("failed")
    assert os.listdir(tmp_path) == ["kept"]
    assert os.listdir(tmp_path / "kept") == []
    files.write_text(tmp_path / "kept" / "new" / "out.json", "done")  # on success they stay
    assert (tmp_path / "kept" / "new" / "out.json").read_text() == "done"


def test_failed_folder_write_keeps_the_old_folder_whole(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "saved_model.pb").write_text("old")
    with pytest.raises(ValueError):
        with files.atomic_directory(tmp_path / "model") as temporary:
            os.makedirs(temporary)
            open(os.path.join(temporary, "saved_model.pb"), "w").write("half")
            raise ValueError("verification failed")
    assert os.listdir(tmp_path) == ["model"]
    assert (tmp_path / "model" / "saved_model.pb").read_text() == "old"


def test_folder_write_refuses_an_existing_file(tmp_path):
    (tmp_path / "model").write_text("a file")
    with pytest.raises(FileExistsError, match="not a folder"):
        with files.atomic_directory(tmp_path / "model"):
            pass
    assert (tmp_path / "model").read_text() == "a file"
    assert os.listdir(tmp_path) == ["model"]


@pytest.mark.parametrize(
    "make, path, folder, error, message",
    [
        (lambda t: (t / "f").write_text("x"), "f/out.keras", False, NotADirectoryError, "is a file, not a folder"),
        (lambda t: (t / "f").write_text("x"), "f/a/b/out.keras", False, NotADirectoryError, "is a file"),
        (lambda t: (t / "d").mkdir(), "d", False, IsADirectoryError, "is a folder: name a file"),
        (lambda t: (t / "f").write_text("x"), "f", True, FileExistsError, "is an existing file"),
    ],
)
def test_check_writable_refuses_wrong_kinds(tmp_path, make, path, folder, error, message):
    make(tmp_path)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(error, match=message) as caught:
        files.check_writable(tmp_path / path, "--flag", folder=folder)
    assert str(caught.value).startswith(f"--flag '{tmp_path / path}'")
    assert sorted(os.listdir(tmp_path)) == before


def test_check_writable_accepts_missing_folders_and_makes_nothing(tmp_path):
    files.check_writable(tmp_path / "a" / "b" / "out.keras")
    files.check_writable(tmp_path / "model", folder=True)
    assert os.listdir(tmp_path) == []


def test_read_only_folder_is_refused_before_and_during_a_write(read_only_folder):
    with pytest.raises(PermissionError, match="is not writable"):
        files.check_writable(read_only_folder / "out.keras", "OUT")
    with pytest.raises(PermissionError, match="is not writable"):
        files.check_writable(read_only_folder / "new" / "out.keras", "OUT")
    with pytest.raises(OSError) as caught:
        files.write_bytes(read_only_folder / "existing.keras", b"new")
    assert caught.value.errno in (errno.EROFS, errno.EACCES)
    assert os.listdir(read_only_folder) == ["existing.keras"]
    assert (read_only_folder / "existing.keras").read_bytes() == b"existing model"


def test_full_file_system_leaves_the_old_file(tmp_path):
    """ENOSPC on a 64 KiB tmpfs, in this process (needs mount privileges)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mount = shutil.which("mount")
    if not mount or subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True
    ).returncode:
        pytest.skip("no mount privileges for a small tmpfs; the RLIMIT_FSIZE case covers a full disk")
    try:
        (folder / "out.bin").write_bytes(b"old")
        with pytest.raises(OSError) as caught:
            files.write_bytes(folder / "out.bin", b"x" * (1 << 20))
        assert caught.value.errno == errno.ENOSPC
        assert os.listdir(folder) == ["out.bin"]
        assert (folder / "out.bin").read_bytes() == b"old"
    finally:
        subprocess.run([shutil.which("umount"), str(folder)], check=True)


def test_file_size_limit_leaves_the_old_file(tmp_path):
    """A full disk as any user can make it: RLIMIT_FSIZE in a child (EFBIG)."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    script = PRELUDE + (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    files.write_bytes(sys.argv[1], b'x' * (1 << 20))\n"
        "except OSError as error:\n"
        "    print(error.errno); sys.exit(3)\n"
    )
    child = subprocess.run([sys.executable, "-B", "-c", script, str(target)],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 3, child.stderr
    assert int(child.stdout) == errno.EFBIG
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


BLOCKED_WRITER = PRELUDE + (
    "target, marker, kind = sys.argv[1:]\n"
    "writer = files.atomic_directory if kind == 'folder' else files.atomic_path\n"
    "with writer(target) as temporary:\n"
    "    if kind == 'folder':\n"
    "        os.makedirs(temporary); temporary = os.path.join(temporary, 'saved_model.pb')\n"
    "    open(temporary, 'w').write('half written')\n"
    "    open(marker, 'w').close()\n"
    "    while True:\n"
    "        signal.pause()\n"
)


@pytest.mark.parametrize(
    "signum, kind, returncode",
    [
        (signal.SIGTERM, "file", 128 + signal.SIGTERM),
        (signal.SIGTERM, "folder", 128 + signal.SIGTERM),
        # An uncaught KeyboardInterrupt ends Python by SIGINT itself.
        (signal.SIGINT, "file", -signal.SIGINT),
    ],
)
def test_signal_during_a_write_removes_the_temporary(tmp_path, signum, kind, returncode):
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("model" if kind == "folder" else "r.json")
    if kind == "folder":
        target.mkdir()
        (target / "saved_model.pb").write_text("old")
    else:
        target.write_text("old")
    marker = tmp_path / "writing"
    child = subprocess.Popen([sys.executable, "-B", "-c", BLOCKED_WRITER, str(target), str(marker), kind],
                             stderr=subprocess.PIPE, text=True)
    wait_for(marker, child)
    assert leftovers(out)  # the child is mid-write
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == returncode, stderr
    assert leftovers(out) == []
    assert os.listdir(out) == [target.name]
    old = target / "saved_model.pb" if kind == "folder" else target
    assert old.read_text() == "old"


def test_a_swallowed_interrupt_still_cancels_every_write(tmp_path):
    """Code inside a write that swallows Ctrl-C (TFLite's converter does)
    cannot let any of the nested writes complete."""
    (tmp_path / "outer").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_path(tmp_path / "outer") as outer:
            open(outer, "w").write("new")
            with files.atomic_path(tmp_path / "inner") as inner:
                open(inner, "w").write("new")
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(5)  # the handler interrupts this at once
                except KeyboardInterrupt:
                    pass  # swallowed
    assert os.listdir(tmp_path) == ["outer"]
    assert (tmp_path / "outer").read_text() == "old"
    files.write_text(tmp_path / "outer", "later")  # forgotten once reported
    assert (tmp_path / "outer").read_text() == "later"


def test_signal_handlers_are_set_only_during_a_write_and_only_in_the_main_thread(tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with files.atomic_path(tmp_path / "a") as temporary:
        assert signal.getsignal(signal.SIGTERM) is not before[0]
        assert signal.getsignal(signal.SIGINT) is not before[1]
        open(temporary, "w").write("a")
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before

    def own_handler(signum, frame):  # an application's handler is its own business
        pass

    signal.signal(signal.SIGTERM, own_handler)
    try:
        with files.atomic_path(tmp_path / "a"):
            assert signal.getsignal(signal.SIGTERM) is own_handler
    finally:
        signal.signal(signal.SIGTERM, before[0])

    errors = []

    def write():  # signal.signal would raise ValueError outside the main thread
        try:
            files.write_text(tmp_path / "b", "b")
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()
    assert errors == []
    assert (tmp_path / "b").read_text() == "b"


CONCURRENT_WRITER = PRELUDE + (
    "target, byte = sys.argv[1], sys.argv[2].encode()\n"
    "for _ in range(150):\n"
    "    files.write_bytes(target, byte * 100_000)\n"
)


def test_concurrent_writers_never_mix(tmp_path):
    """Two processes replace one file 150 times each while it is read: every
    read sees one writer's whole content, never a mix or a truncated file."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"o" * 100_000)
    children = [
        subprocess.Popen([sys.executable, "-B", "-c", CONCURRENT_WRITER, str(target), byte])
        for byte in "ab"
    ]
    seen = set()
    while any(child.poll() is None for child in children):
        content = target.read_bytes()
        assert len(content) == 100_000 and len(set(content)) == 1
        seen.add(content[:1])
    assert [child.wait(timeout=60) for child in children] == [0, 0]
    assert target.read_bytes() in (b"a" * 100_000, b"b" * 100_000)
    assert seen & {b"a", b"b"}
    assert os.listdir(tmp_path) == ["out.bin"]


def test_write_json_is_sorted_indented_and_complete(tmp_path):
    files.write_json(tmp_path / "r.json", {"b": 1, "a": [1.5, None]})
    text = (tmp_path / "r.json").read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"')
    assert json.loads(text) == {"a": [1.5, None], "b": 1}
