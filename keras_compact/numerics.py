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
