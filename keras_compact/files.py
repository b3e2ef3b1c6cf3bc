"""The one way keras-compact writes files: beside the target, synced, renamed into place.

Every model, report, table, plot and export goes through `atomic_path` (a
file) or `atomic_directory` (a SavedModel):

1. the content is written to a temporary name in the destination's folder
   (same file system, so the rename is atomic);
2. it gets the permissions a plain `open()` would give (0666 or 0777 minus
   the umask), not `mkstemp`'s 0600, so a serving process can read it;
3. it is fsync'ed, renamed over the target, and the folder is fsync'ed, so a
   reader sees the old file or the new one, never half of one, even after a
   power cut;
4. on any failure, and on SIGTERM while the write is under way (in the main
   thread), the temporary is removed and the target is left as it was.
"""

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading

TEMPORARY_PREFIX = ".tmp-keras-compact-"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_path(path):
    """fsync a file, or every file under a folder, then the folder itself."""
    if os.path.isdir(path):
        for root, _, names in os.walk(path):
            for name in names:
                _fsync_file(os.path.join(root, name))
    else:
        _fsync_file(path)


def _fsync_file(path):
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder):
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; nothing to sync then
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def _removed_on_sigterm(path):
    """While the block runs in the main thread, SIGTERM removes `path` and exits (143)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        _remove(path)
        signal.signal(signal.SIGTERM, previous if callable(previous) else signal.SIG_DFL)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_writable(path, what="output"):
    """Raise a clear `OSError` subclass now if `path` cannot be written later.

    Checks that the parent folder exists (or can be made), is a folder, and is
    writable, and that `path` is not an existing folder. Nothing is created
    but missing parent folders.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise NotADirectoryError(f"{what} '{path}': '{probe}' is a file, not a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} '{path}': folder '{probe}' is not writable.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} '{path}' is a folder; name a file.")


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary file path beside `path`; on success it replaces `path`.

    Write the content to the yielded path (any writer that takes a path:
    `model.save`, `figure.savefig`, `open`). Parent folders are created.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX, suffix=suffix)
    os.close(handle)
    try:
        with _removed_on_sigterm(temporary):
            yield temporary
            os.chmod(temporary, 0o666 & ~_umask())
            _fsync_path(temporary)
            os.replace(temporary, path)
            _fsync_folder(folder)
    finally:
        _remove(temporary)


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a temporary folder path beside `path`; on success it replaces `path`.

    A folder cannot be swapped in one step: an existing `path` is first moved
    aside (and removed once the new one is in place), so `path` is always the
    old folder or the new one. An existing file at `path` is refused.
    """
    path = os.fspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise FileExistsError(f"'{path}' exists and is not a folder: choose another destination.")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    scratch = tempfile.mkdtemp(dir=folder, prefix=TEMPORARY_PREFIX)
    temporary = os.path.join(scratch, "new")
    try:
        with _removed_on_sigterm(scratch):
            yield temporary
            for root, folders, names in os.walk(temporary):
                os.chmod(root, 0o777 & ~_umask())
                for name in names:
                    os.chmod(os.path.join(root, name), 0o666 & ~_umask())
            _fsync_path(temporary)
            os.chmod(scratch, 0o700)
            if os.path.isdir(path):
                os.replace(path, os.path.join(scratch, "old"))
            os.replace(temporary, path)
            _fsync_folder(folder)
    finally:
        _remove(scratch)


def write_text(path, text):
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)


def write_bytes(path, data):
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            file.write(data)


def write_json(path, value):
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")
