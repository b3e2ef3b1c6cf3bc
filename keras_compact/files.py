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
4. on any failure, and on SIGINT or SIGTERM while the write is under way
   (in the main thread: KeyboardInterrupt, or exit status 143), the
   temporary is removed and the target is left as it was.
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


# Signals that arrived during a write (main thread), first one first.
_received = []


def _check_signals():
    """Raise what the first signal received during the write calls for."""
    if _received:
        raise KeyboardInterrupt if _received[0] == signal.SIGINT else SystemExit(128 + _received[0])


def _on_signal(signum, frame):
    _received.append(signum)
    _check_signals()


@contextlib.contextmanager
def _signals_end_the_write():
    """While the outermost write runs in the main thread, SIGINT raises
    KeyboardInterrupt and SIGTERM SystemExit(143) in it, so every `finally` on
    the way out (the temporaries' removal) runs. Yields a check that raises
    again if a signal arrived: code that swallowed it (TFLite's converter
    swallows a Ctrl-C) or turned it into another error (a library's cleanup
    failing on its half-written file) still cannot let the write complete.

    Only default handlers are replaced: an application's own handler, or an
    ignored signal, is left alone. Other threads cannot set handlers; a write
    there gets the default action."""
    installed = []
    if threading.current_thread() is threading.main_thread():
        for signum, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
            if signal.getsignal(signum) is default:
                signal.signal(signum, _on_signal)
                installed.append((signum, default))
    try:
        yield _check_signals
    finally:
        for signum, default in installed:
            signal.signal(signum, default)
        if installed:  # the outermost write: it reports the signal, and forgets it
            try:
                _check_signals()
            finally:
                _received.clear()


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM wait while the block creates a temporary, until `release()` is called.

    Between creating a temporary and entering the `try` that removes it, a
    signal would leave it behind. Held back by the operating system, it is
    handled only at `release()`, which the caller makes the first statement
    of that `try`; if the block fails, it is released on the way out. Where
    signal masks do not exist (Windows), nothing is held.
    """
    signals = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals) if hasattr(signal, "pthread_sigmask") else None

    def release():
        if previous is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    try:
        yield release
    except BaseException:
        release()
        raise


def check_writable(path, what="output", folder=False):
    """Raise a clear `OSError` subclass now if `path` cannot be written later.

    Checks that the nearest existing parent of `path` is a writable folder
    (a read-only file system fails here, even for root), and that an existing
    `path` is of the kind that will replace it: a file, or a folder when
    `folder` is true. Creates nothing. `what` names the path in the message
    (a command-line flag, say).
    """
    path = os.fspath(path)
    probe = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise NotADirectoryError(
            f"{what} '{path}': '{probe}' is a file, not a folder: choose another path."
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{what} '{path}': folder '{probe}' is not writable (read-only or not yours): "
            "choose a folder you can write to."
        )
    if folder and os.path.lexists(path) and not os.path.isdir(path):
        raise FileExistsError(
            f"{what} '{path}' is an existing file, not a folder: name a folder, or remove the file."
        )
    if not folder and os.path.isdir(path):
        raise IsADirectoryError(f"{what} '{path}' is a folder: name a file.")


@contextlib.contextmanager
def _parent_folder(path):
    """Yields the folder of `path`, made if missing; what was made here is
    removed again (when empty) if the block fails, so a failed write leaves
    no trace, not even an empty folder."""
    folder = os.path.dirname(os.path.abspath(path))
    made, probe = None, folder
    while not os.path.exists(probe):
        made, probe = probe, os.path.dirname(probe)
    os.makedirs(folder, exist_ok=True)
    try:
        yield folder
    except BaseException:
        while made is not None:
            try:
                os.rmdir(folder)
            except OSError:  # not empty: another write uses it
                break
            if folder == made:
                break
            folder = os.path.dirname(folder)
        raise


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary file path beside `path`; on success it replaces `path`.

    Write the content to the yielded path (any writer that takes a path:
    `model.save`, `figure.savefig`, `open`). Missing parent folders are made
    (and removed again if the write fails).
    """
    path = os.fspath(path)
    with _parent_folder(path) as folder:
        suffix = os.path.splitext(path)[1]
        with _signals_held() as release:
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX, suffix=suffix)
            os.close(handle)
        try:
            release()
            with _signals_end_the_write() as check_signals:
                yield temporary
                check_signals()
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
    with _parent_folder(path) as folder:
        with _signals_held() as release:
            scratch = tempfile.mkdtemp(dir=folder, prefix=TEMPORARY_PREFIX)
        temporary = os.path.join(scratch, "new")
        try:
            release()
            with _signals_end_the_write() as check_signals:
                yield temporary
                check_signals()
                for root, _, names in os.walk(temporary):
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


@contextlib.contextmanager
def temporary_files_in(folder):
    """Python's default temporary folder is `folder` while the block runs.

    Libraries that make temporary folders of their own (TensorFlow's exporter
    and converter, Keras's saving) leave them behind when a signal interrupts
    them; made inside a folder the caller removes, they go with it.
    """
    previous = tempfile.tempdir
    tempfile.tempdir = folder
    try:
        yield
    finally:
        tempfile.tempdir = previous


def write_text(path, text):
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)


def write_bytes(path, data):
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            file.write(data)


def write_json(path, value):
    write_text(path, json_text(value))


def json_text(value):
    """The JSON form of every keras-compact file: indented, keys sorted, a final newline."""
    return json.dumps(value, indent=2, sort_keys=True) + "\n"
