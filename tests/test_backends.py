"""The library on Keras's JAX and PyTorch backends: prox, penalties, optimizers, compaction."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_compact import prox

HERE = os.path.dirname(os.path.abspath(__file__))


def run_case(script, backend, **environment):
    """Run tests/<script> in a process of its own under `backend`; return its last line's JSON."""
    pytest.importorskip(backend, reason=f"the `{backend}` extra is not installed")
    environment = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", **environment)
    environment["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), environment.get("PYTHONPATH", "")])
    completed = subprocess.run(
        [sys.executable, os.path.join(HERE, script)],
        capture_output=True, text=True, env=environment, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend_trains_kills_neurons_and_compacts(backend):
    result = run_case("backend_case.py", backend)
    assert result["tf"] is False  # importing keras_compact needs no TensorFlow
    # The same operator gives the same numbers on both backends.
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(5, 4, 1)).astype("float32"), rng.normal(size=(1, 4, 1)).astype("float32")]
    for other_value, tf_value in zip(result["shrunk"], prox.group_soft_threshold(blocks, 1.5)):
        np.testing.assert_allclose(other_value, np.asarray(tf_value), atol=1e-6)
    assert result["out_kernel_zero_every_3"] == [True, False, False, True, False, False, True]
    for name, same in result["same_as_keras"].items():
        assert same["max_abs_diff"] <= 1e-6, name
        # On torch, Keras's fused (torch._foreach_*) SGD and Adam, not the per-variable update.
        assert ("TorchParallelOptimizer" in same["base_classes"]) == (backend == "torch"), name
    for name, run in result["runs"].items():
        assert run["backend"] == backend
        assert run["live_conv"][-1] < 6, name  # neurons died on this backend too
        assert run["live_conv_after_strength_change"] == 0, name
        assert run["params"][1] < run["params"][0], name
        assert run["max_abs_diff"] <= 1e-5, name


def test_keras_distribution_data_and_model_parallel_match_one_device():
    result = run_case("jax_distribution_case.py", "jax", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert result["devices"] == 2
    assert result["dead_fc"] > 0  # the strength change killed neurons
    assert result["data_parallel"] <= 1e-5
    assert result["model_parallel"] <= 1e-5


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_group_step_equals_the_plain_prox_on_the_backend(backend):
    """tests/fused_step_case.py on the backend: on torch the group-lasso targets
    of a penalty take their step together (one batch per GroupLasso penalty,
    the TensorLowRank between them on its own), with the zeros and values of
    `GroupLasso.prox` of each target in order."""
    results = run_case("fused_step_case.py", backend)
    for result in results:
        assert result["backend"] == backend
        assert all(z > 0 for z in result["zero_groups"])
        assert result["fused_batches"] == ([3, 1] if backend == "torch" else [])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_singular_value_threshold_on_ill_conditioned_kernels_on_the_backend(backend):
    """tests/svt_case.py on the backend: on JAX without x64 the Gram route runs
    in float64 all the same (x64 switched on for it alone); float32 kernels
    of condition 1e3 to 1e6 match the float64 SVD's result, rank and zeros."""
    result = run_case("svt_case.py", backend)
    assert result["backend"] == backend
    float32_cases = [case for case in result["ran"] if case[2] == "float32"]
    assert len(float32_cases) == 12 + 3  # and the zero slices of each shape
