"""Each prox satisfies its optimality condition and its closed form."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import svt_case
from keras_compact import prox

FLOATS = st.floats(-10, 10, allow_nan=False, width=32)
THRESHOLDS = st.floats(0.0, 5.0, allow_nan=False)
TOL = 1e-4


def blocks_strategy():
    """1 to 3 blocks (rows_i, n, cols_i) sharing n."""

    @st.composite
    def build(draw):
        n = draw(st.integers(1, 6))
        count = draw(st.integers(1, 3))
        blocks = []
        for _ in range(count):
            shape = (draw(st.integers(1, 4)), n, draw(st.integers(1, 3)))
            blocks.append(draw(hnp.arrays(np.float32, shape, elements=FLOATS)))
        return blocks

    return build()


def _np(x):
    return np.asarray(x, dtype=np.float64)


def _group_columns(blocks):
    """Group j of the blocks as one flat vector each: list over j."""
    n = blocks[0].shape[1]
    return [np.concatenate([_np(b[:, j, :]).ravel() for b in blocks]) for j in range(n)]


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=3), elements=FLOATS), THRESHOLDS)
def test_soft_threshold_optimality(x, t):
    v = _np(prox.soft_threshold(x, t))
    r = _np(x) - v
    nonzero = v != 0
    # x - v is t*sign(v) where v != 0, and lies in [-t, t] where v == 0.
    np.testing.assert_allclose(r[nonzero], t * np.sign(v[nonzero]), atol=TOL)
    assert np.all(np.abs(r[~nonzero]) <= t + TOL)
    np.testing.assert_allclose(v, np.sign(x) * np.maximum(np.abs(_np(x)) - t, 0), atol=TOL)


@settings(max_examples=60, deadline=None)
@given(blocks_strategy(), THRESHOLDS, st.booleans())
def test_group_soft_threshold_optimality(blocks, t, weighted):
    n = blocks[0].shape[1]
    weights = np.linspace(0.5, 2.0, n).astype("float32") if weighted else np.ones(n, "float32")
    out = prox.group_soft_threshold(blocks, t, weights if weighted else None)
    for j, (x_j, v_j) in enumerate(zip(_group_columns(blocks), _group_columns(out))):
        tj = t * weights[j]
        norm_v = np.linalg.norm(v_j)
        if norm_v > 0:
            # Stationarity: x - v = t_j * v / ||v||.
            np.testing.assert_allclose(x_j - v_j, tj * v_j / norm_v, atol=TOL)
        else:
            # 0 is optimal iff x lies in the t_j-ball (the subdifferential at 0).
            assert np.linalg.norm(x_j) <= tj + TOL


@settings(max_examples=60, deadline=None)
@given(blocks_strategy(), THRESHOLDS, st.floats(0.0, 1.0))
def test_sparse_group_soft_threshold_optimality(blocks, t, ratio):
    out = prox.sparse_group_soft_threshold(blocks, t, ratio)
    t1, t2 = t * ratio, t * (1 - ratio)
    for x_j, v_j in zip(_group_columns(blocks), _group_columns(out)):
        norm_v = np.linalg.norm(v_j)
        if norm_v > 0:
            # x - v - t2 * v/||v|| must be a subgradient of t1*||.||_1 at v.
            r = x_j - v_j - t2 * v_j / norm_v
            nz = v_j != 0
            np.testing.assert_allclose(r[nz], t1 * np.sign(v_j[nz]), atol=TOL)
            assert np.all(np.abs(r[~nz]) <= t1 + TOL)
        else:
            # 0 optimal iff some z with |z_i| <= t1 has ||x - z|| <= t2:
            # the closest such z is clip(x, -t1, t1).
            residual = x_j - np.clip(x_j, -t1, t1)
            assert np.linalg.norm(residual) <= t2 + TOL


def test_zero_group_gives_zeros_not_nan():
    blocks = [np.zeros((3, 4, 1), "float32"), np.zeros((1, 4, 1), "float32")]
    for out in (
        prox.group_soft_threshold(blocks, 0.0),
        prox.group_soft_threshold(blocks, 1.0),
        prox.sparse_group_soft_threshold(blocks, 1.0, 0.5),
    ):
        for b in out:
            b = _np(b)
            assert not np.any(np.isnan(b))
            assert np.all(b == 0)


def test_group_soft_threshold_matches_numpy_closed_form():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(5, 4, 1)).astype("float32")
    bias = rng.normal(size=(1, 4, 1)).astype("float32")
    t = 1.5
    full = np.concatenate([kernel[:, :, 0], bias[:, :, 0]], axis=0)  # (6, 4)
    norms = np.linalg.norm(full, axis=0)
    expected = full * np.maximum(0, 1 - t / norms)
    k_out, b_out = prox.group_soft_threshold([kernel, bias], t)
    np.testing.assert_allclose(_np(k_out)[:, :, 0], expected[:5], atol=1e-6)
    np.testing.assert_allclose(_np(b_out)[:, :, 0], expected[5:], atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(1, 6)),
        elements=st.floats(-5, 5, allow_nan=False, width=32),
    ),
    # Dividing by a tiny t would measure float32 round-off, not optimality.
    st.one_of(st.just(0.0), st.floats(0.05, 3.0)),
)
def test_singular_value_threshold_optimality(x, t):
    v = _np(prox.singular_value_threshold(x, t))
    # Closed form, computed by NumPy.
    u, s, vt = np.linalg.svd(_np(x), full_matrices=False)
    np.testing.assert_allclose(v, (u * np.maximum(s - t, 0)) @ vt, atol=1e-3)
    if t == 0:
        return
    # Optimality: G = (x - v)/t is in the subdifferential of the nuclear norm
    # at v: spectral norm <= 1 and <G, v> = ||v||_*.
    g = (_np(x) - v) / t
    assert np.linalg.norm(g, 2) <= 1 + 1e-3
    np.testing.assert_allclose(np.sum(g * v), np.linalg.norm(v, "nuc"), atol=1e-2)


@pytest.mark.parametrize("shape", svt_case.SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_svt_keeps_zero_columns_and_rows_exactly_zero(shape, dtype):
    """A dead neuron (a zero column) stays dead through a low-rank step
    (tests/svt_case.py; test_backends.py runs it under JAX and PyTorch)."""
    assert svt_case.check_zero_slices(shape, dtype)


@pytest.mark.parametrize("shape", svt_case.SHAPES)
@pytest.mark.parametrize("condition", svt_case.CONDITIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_singular_value_threshold_on_ill_conditioned_rank_deficient_kernels(shape, condition, dtype):
    """Against a float64 SVD of the same matrix: the same result, the same
    surviving singular values and rank, and the prox optimality condition
    (tests/svt_case.py; test_backends.py runs it under JAX and PyTorch)."""
    if not svt_case.check(shape, condition, dtype):
        pytest.skip("no float64 arrays on this backend")
