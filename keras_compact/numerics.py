"""How closely two models agree: one definition for compaction and export."""

import numpy as np


def relative_difference(expected, actual):
    """max |actual - expected| / max(1, max |expected|), over all entries.

    Relative to the output's scale, not element-wise: element-wise ratios blow
    up on outputs near zero (a MobileNet's logits agree to 1e-6 and still read
    1e21), and below a scale of 1 the absolute difference is what matters.
    """
    expected = np.asarray(expected, dtype="float64")
    actual = np.asarray(actual, dtype="float64")
    if expected.size == 0:
        return 0.0
    scale = max(1.0, float(np.max(np.abs(expected))))
    return float(np.max(np.abs(actual - expected))) / scale


def within_tolerance(expected, actual, atol, rtol):
    """Whether max |actual - expected| <= atol + rtol * max(1, max |expected|): the
    test `compact`'s verification and export's float32 rebuild are held to."""
    expected = np.asarray(expected, dtype="float64")
    difference = float(np.max(np.abs(np.asarray(actual, dtype="float64") - expected)))
    return difference <= atol + rtol * max(1.0, float(np.max(np.abs(expected))))


def outputs_differ(expected, actual, atol=1e-5, rtol=1e-4):
    """Whether two lists of output arrays differ in shape or beyond `np.allclose(atol, rtol)`.

    The check `diagnose_*` uses to name the one layer that computes something else.
    """
    expected = [np.asarray(e) for e in expected]
    actual = [np.asarray(a) for a in actual]
    return len(expected) != len(actual) or any(
        e.shape != a.shape or not np.allclose(e, a, atol=atol, rtol=rtol) for e, a in zip(expected, actual)
    )
