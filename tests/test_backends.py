"""The library on Keras's JAX backend: prox, penalties, optimizers, compaction."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_compact import prox

HERE = os.path.dirname(os.path.abspath(__file__))


def test_jax_backend_trains_kills_neurons_and_compacts():
    pytest.importorskip("jax", reason="the `jax` extra is not installed")
    environment = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2")
    environment["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), environment.get("PYTHONPATH", "")])
    completed = subprocess.run(
        [sys.executable, os.path.join(HERE, "jax_backend_case.py")],
        capture_output=True, text=True, env=environment, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["tf"] is False  # importing keras_compact needs no TensorFlow
    # The same operator gives the same numbers on both backends.
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(5, 4, 1)).astype("float32"), rng.normal(size=(1, 4, 1)).astype("float32")]
    for jax_value, tf_value in zip(result["shrunk"], prox.group_soft_threshold(blocks, 1.5)):
        np.testing.assert_allclose(jax_value, np.asarray(tf_value), atol=1e-6)
    for name, run in result["runs"].items():
        assert run["backend"] == "jax"
        assert run["live_conv"][-1] < 6, name  # neurons died under JAX too
        assert run["live_conv_after_strength_change"] == 0, name
        assert run["params"][1] < run["params"][0], name
        assert run["max_abs_diff"] <= 1e-5, name


def test_keras_distribution_data_and_model_parallel_match_one_device():
    pytest.importorskip("jax", reason="the `jax` extra is not installed")
    environment = dict(
        os.environ,
        KERAS_BACKEND="jax",
        TF_CPP_MIN_LOG_LEVEL="2",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    environment["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), environment.get("PYTHONPATH", "")])
    completed = subprocess.run(
        [sys.executable, os.path.join(HERE, "jax_distribution_case.py")],
        capture_output=True, text=True, env=environment, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2
    assert result["dead_fc"] > 0  # the strength change killed neurons
    assert result["data_parallel"] <= 1e-5
    assert result["model_parallel"] <= 1e-5
