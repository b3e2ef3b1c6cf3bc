"""Proximal operators, as small pure functions on `keras.ops` tensors.

Each function solves, in closed form,

    prox_{t*g}(x) = argmin_v  0.5 * ||v - x||^2 + t * g(v)

for one sparse penalty g. They take and return tensors through `keras.ops`
only, so they run on any Keras backend and inside a compiled train step.

Neuron groups. A neuron's group may span several tensors (a kernel's output
channel, its bias entry, the gamma and beta of a BatchNormalization that
follows). The group functions therefore take a list of `blocks`, each of shape
`(rows_i, n, cols_i)`: group j is the union of `blocks[i][:, j, :]` over all
blocks. A tensor of any layout is brought to that shape by a reshape alone
(see `keras_compact.penalties.Member`).
"""

import contextlib

from keras import backend, ops
from keras.backend import standardize_dtype


def soft_threshold(x, threshold):
    """Prox of the l1 norm (elementwise soft-threshold).

    Solves ``argmin_v 0.5 * ||v - x||_2^2 + threshold * ||v||_1``, whose
    solution is ``sign(x) * max(|x| - threshold, 0)``.

    Args:
        x: a tensor.
        threshold: a non-negative scalar `t`.
    """
    threshold = ops.convert_to_tensor(threshold, dtype=x.dtype)
    return ops.sign(x) * ops.maximum(ops.abs(x) - threshold, 0.0)


def group_norms(blocks):
    """l2 norm of each group j over `blocks` (each `(rows, n, cols)`): shape (n,)."""
    squares = [ops.sum(ops.square(b), axis=(0, 2)) for b in blocks]
    return ops.sqrt(sum(squares[1:], squares[0]))


def group_shrink_factors(norms, thresholds):
    """The factor `max(0, 1 - t_j / ||w_j||)` of block soft-thresholding.

    A group whose norm is zero gets factor 0, never NaN: the division happens
    only where the norm exceeds its threshold, which is where it is positive.
    """
    keep = norms > thresholds
    safe_norms = ops.where(keep, norms, ops.ones_like(norms))
    return ops.where(keep, 1.0 - thresholds / safe_norms, ops.zeros_like(norms))


def group_soft_threshold_factors(blocks, threshold, group_weights=None):
    """The factor (n,) that `group_soft_threshold` scales each group by.

    ``max(0, 1 - threshold * w_j / ||X_j||)``: a caller that scales the groups
    itself (the optimizer folds its neuron mask in) needs only these.
    """
    dtype = blocks[0].dtype
    norms = group_norms(blocks)
    thresholds = ops.convert_to_tensor(threshold, dtype=dtype) * ops.ones_like(norms)
    if group_weights is not None:
        thresholds = thresholds * ops.cast(group_weights, dtype)
    return group_shrink_factors(norms, thresholds)


def group_soft_threshold(blocks, threshold, group_weights=None):
    """Prox of the group lasso (l2,1 norm), block soft-threshold.

    Solves, for blocks X_i of shape (rows_i, n, cols_i),

        argmin_V  0.5 * sum_i ||V_i - X_i||^2
                  + threshold * sum_j w_j * ||(V_1[:, j, :], ..., V_k[:, j, :])||_2

    whose solution is ``V[:, j, :] = max(0, 1 - threshold*w_j/||X_j||) * X[:, j, :]``.
    A group is exactly zero once ``||X_j|| <= threshold * w_j``.

    Args:
        blocks: list of tensors, each of shape (rows_i, n, cols_i), sharing n.
        threshold: non-negative scalar t.
        group_weights: optional tensor (n,) of w_j (e.g. sqrt of each group's
            size); all ones when None (the paper's unweighted l2,1).
    Returns:
        a list of tensors shaped like `blocks`.
    """
    factors = group_soft_threshold_factors(blocks, threshold, group_weights)
    factors = ops.reshape(factors, (1, -1, 1))
    return [ops.multiply(b, factors) for b in blocks]


def sparse_group_soft_threshold(blocks, threshold, l1_ratio, group_weights=None):
    """Prox of the sparse group lasso (l1 plus group l2).

    Solves

        argmin_V  0.5 * sum_i ||V_i - X_i||^2 + threshold * (
                  l1_ratio * ||V||_1
                  + (1 - l1_ratio) * sum_j w_j * ||V[:, j, :]||_2 )

    exactly, by soft-thresholding with ``threshold * l1_ratio`` and then
    group-shrinking the result with ``threshold * (1 - l1_ratio)`` (the
    composition is the exact prox of this sum; Friedman et al. 2010).

    Args: as `group_soft_threshold`, plus `l1_ratio` in [0, 1].
    """
    l1_threshold = threshold * l1_ratio
    group_threshold = threshold * (1.0 - l1_ratio)
    thresholded = [soft_threshold(b, l1_threshold) for b in blocks]
    return group_soft_threshold(thresholded, group_threshold, group_weights)


def singular_value_threshold(x, threshold):
    """Prox of the nuclear norm (singular value thresholding).

    Solves ``argmin_V 0.5 * ||V - X||_F^2 + threshold * ||V||_*`` for a matrix
    X = U diag(s) V^T; the solution is ``U diag(max(s - threshold, 0)) V^T``.

    Computed without an SVD, from the eigendecomposition of the smaller Gram
    matrix: for a tall X, ``X^T X = V diag(s^2) V^T``, so the solution is
    ``X V diag(max(1 - t/s, 0)) V^T``, X times an n x n matrix. The Gram matrix
    squares the condition number: formed and decomposed in float32, its small
    eigenpairs would be noise below sqrt(eps32) * s_max (3e-4). So a float32
    (or narrower) X has its Gram matrix, eigendecomposition and the n x n
    factor in float64, which resolves s down to about 1e-8 * s_max, below what
    float32 itself holds (1.2e-7 * s_max), and only the product by X in float32.
    A singular value at or below t has factor exactly 0, so the result has
    the rank an SVD's gives. JAX without x64 computes this part with x64
    switched on for it alone (`jax.enable_x64`, also inside a compiled step).
    A float64 X (whose Gram matrix float64 could not resolve) takes the SVD.

    A zero column (or row) of X is zero in the solution too (X e_j = 0 puts
    e_j in the kernel of every right singular vector that survives), but the
    computed eigenvectors hold ~1e-16 there, which would bring a dead neuron
    back at 1e-15: zero columns and rows of X are kept exactly zero.

    Args:
        x: a matrix (m, n).
        threshold: a non-negative scalar t.
    """
    dtype = standardize_dtype(x.dtype)
    nonzero = ops.cast(x != 0, dtype)
    keep = ops.minimum(
        ops.max(nonzero, axis=1, keepdims=True), ops.max(nonzero, axis=0, keepdims=True)
    )
    return _svt_unmasked(x, threshold, dtype) * keep


def _svt_unmasked(x, threshold, dtype):
    """`singular_value_threshold` without the exact zeros of its zero rows and columns."""
    # einsum, not matmul, and relu, not maximum: Keras's torch matmul and
    # maximum return float32 for float64 inputs.
    if dtype == "float64":
        u, s, vt = ops.svd(x, full_matrices=False)
        s = ops.relu(s - ops.convert_to_tensor(threshold, dtype=s.dtype))
        return ops.einsum("ik,kj->ij", u * ops.expand_dims(s, 0), vt)
    wide = x.shape[0] < x.shape[1]
    x = ops.transpose(x) if wide else x
    with _full_precision():
        x64 = ops.cast(x, "float64")
        eigenvalues, vectors = ops.eigh(ops.einsum("ij,ik->jk", x64, x64))
        singular_values = ops.sqrt(ops.relu(eigenvalues))
        thresholds = ops.convert_to_tensor(threshold, dtype="float64") * ops.ones_like(singular_values)
        factors = group_shrink_factors(singular_values, thresholds)
        shrink = ops.einsum("ik,jk->ij", vectors * ops.expand_dims(factors, 0), vectors)
        result = ops.matmul(ops.cast(x, "float32"), ops.cast(shrink, "float32"))
    return ops.cast(ops.transpose(result) if wide else result, dtype)


def _full_precision():
    """float64 that is float64, and float32 products at full float32 precision.

    JAX computes float32 unless x64 is on (here it is switched on for the SVT
    alone, also inside a compiled step), and on a GPU it may multiply float32
    matrices in TF32 (10-bit mantissa), which would blur the rank the
    threshold creates; "highest" asks for true float32 products.
    """
    if backend.backend() != "jax":
        return contextlib.nullcontext()
    import jax

    stack = contextlib.ExitStack()
    stack.enter_context(jax.enable_x64(True))
    stack.enter_context(jax.default_matmul_precision("highest"))
    return stack
