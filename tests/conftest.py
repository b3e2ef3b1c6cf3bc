"""Test-session set-up and fixtures shared by every test file."""

import os
import shutil
import signal
import subprocess

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# A run started as a background job (`make test &` in a script) has SIGINT
# ignored, and its children inherit that. The tests of interrupted writes need
# Ctrl-C to behave as in a terminal: Python's own handler, which children
# started from here then get too (a handler, unlike "ignore", ends at exec).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so tf.distribute.MirroredStrategy can be tested on
# a machine without accelerators. This must happen before TensorFlow
# initialises its runtime, hence here, at collection time.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder holding `existing.keras` that no one may write into, root
    included: a tmpfs mounted read-only there (needs mount privileges), else,
    for a user other than root, permission bits (which root ignores)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    mount = shutil.which("mount")
    mounted = bool(mount) and subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True
    ).returncode == 0
    if not mounted and os.geteuid() == 0:
        pytest.skip("root without mount privileges: no folder can be made read-only for root")
    (folder / "existing.keras").write_bytes(b"existing model")
    if mounted:
        subprocess.run([mount, "-o", "remount,ro", str(folder)], check=True)
    else:
        folder.chmod(0o555)
    yield folder
    if mounted:
        subprocess.run([shutil.which("umount"), str(folder)], check=True)
    else:
        folder.chmod(0o755)
