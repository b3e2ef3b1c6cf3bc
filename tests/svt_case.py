"""SVT against a float64 SVD on ill-conditioned, rank-deficient kernels, on any backend.

`check(shape, condition, dtype)` runs in the test process (TensorFlow,
tests/test_prox.py) and, as a script, under KERAS_BACKEND=jax or torch
(tests/test_backends.py), where it prints one JSON line: the cases that ran.
"""

import json

import keras
import numpy as np

from keras_compact import prox

SHAPES = [(300, 40), (40, 300), (64, 64)]
CONDITIONS = [1e3, 1e4, 1e5, 1e6]


def _np(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def _matrix_with_spectrum(shape, singular_values, seed):
    rng = np.random.default_rng(seed)
    k = len(singular_values)
    u, _ = np.linalg.qr(rng.normal(size=(shape[0], k)))
    v, _ = np.linalg.qr(rng.normal(size=(shape[1], k)))
    return (u * singular_values) @ v.T


def float64_arrays():
    """Whether the backend keeps float64 arrays (JAX needs x64)."""
    return keras.backend.standardize_dtype(keras.ops.convert_to_tensor(np.zeros(1)).dtype) == "float64"


def check(shape, condition, dtype):
    """The same result, surviving singular values, rank (the zeros it creates)
    and prox optimality as NumPy's float64 SVD; returns False if skipped."""
    if dtype == "float64" and not float64_arrays():
        return False
    k = min(shape)
    rank = 3 * k // 4  # the last quarter of the spectrum is exactly zero
    spectrum = np.concatenate([np.geomspace(1.0, 1.0 / condition, rank), np.zeros(k - rank)])
    x = _matrix_with_spectrum(shape, spectrum, seed=int(np.log10(condition))).astype(dtype)
    # Round-off of the result's precision, from singular values of size 1: a
    # float32 result is within 50 ulps; the float64 one (the backend's SVD)
    # differs from NumPy's by up to about 3e-13 at the smallest singular values.
    tol = {"float32": 50 * np.finfo("float32").eps, "float64": 1e-11}[dtype]
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    # Between two singular values: in the middle, near the bottom, and at the
    # smallest one float32 resolves from s_max.
    for t in (np.sqrt(s[rank // 2] * s[rank // 2 + 1]), s[rank - 3] * 0.999, 1e-5):
        got = _np(prox.singular_value_threshold(keras.ops.convert_to_tensor(x), t))
        assert got.dtype == np.dtype(dtype), got.dtype
        expected = (u * np.maximum(s - t, 0)) @ vt
        np.testing.assert_allclose(got, expected, atol=tol)
        got_s = np.linalg.svd(got, compute_uv=False)
        np.testing.assert_allclose(got_s, np.maximum(s - t, 0), atol=tol)
        assert np.sum(got_s > tol) == np.sum(s - t > tol)  # the zeros it creates
        # Optimality: G = (x - v)/t is a subgradient of the nuclear norm at v.
        g = (x - got) / t
        assert np.linalg.norm(g, 2) <= 1 + tol * np.sqrt(k) / t
        np.testing.assert_allclose(np.sum(g * got), np.sum(got_s), rtol=1e-3, atol=tol * k / t)
    return True


def check_zero_slices(shape, dtype):
    """Zero columns (dead neurons) and zero rows stay exactly zero, also at a
    threshold of 0 (the identity): the computed eigenvectors' ~1e-16 there
    must not bring them back; the rest is NumPy's SVT."""
    if dtype == "float64" and not float64_arrays():
        return False
    rng = np.random.default_rng(7)
    x = rng.normal(size=shape).astype(dtype)
    x[:, 1::5] = 0
    x[2::7, :] = 0
    u, s, vt = np.linalg.svd(x.astype("float64"), full_matrices=False)
    for t in (0.0, float(np.median(s))):
        got = _np(prox.singular_value_threshold(keras.ops.convert_to_tensor(x), t))
        assert np.all(got[:, 1::5] == 0) and np.all(got[2::7, :] == 0)
        np.testing.assert_allclose(got, (u * np.maximum(s - t, 0)) @ vt, atol=50 * np.finfo(dtype).eps * s[0])
    return True


if __name__ == "__main__":
    ran = [
        [list(shape), condition, dtype]
        for shape in SHAPES
        for condition in CONDITIONS
        for dtype in ("float32", "float64")
        if check(shape, condition, dtype)
    ]
    ran += [[list(shape), "zero slices", dtype] for shape in SHAPES for dtype in ("float32", "float64")
            if check_zero_slices(shape, dtype)]
    print(json.dumps({"backend": keras.backend.backend(), "ran": ran}))
