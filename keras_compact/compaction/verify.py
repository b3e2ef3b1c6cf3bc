"""Verification: the compact model must compute what the original computes."""

import keras
import numpy as np


class CompactionError(ValueError):
    """The compact model's outputs differ from the original's beyond tolerance."""


def random_batch(model, seed=0, batch_size=2, unknown_size=8):
    """A random batch for each model input: normal floats, small non-negative integers.

    Unknown (None) non-batch dimensions get `unknown_size`.
    """
    rng = np.random.default_rng(seed)
    batch = []
    for tensor in model.inputs:
        shape = (batch_size,) + tuple(d if d is not None else unknown_size for d in tensor.shape[1:])
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if "int" in dtype:
            batch.append(rng.integers(0, 2, size=shape).astype(dtype))
        elif dtype == "bool":
            batch.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            batch.append(rng.standard_normal(shape).astype(dtype))
    return batch[0] if len(batch) == 1 else batch


def _predict(model, data):
    outputs = model(data, training=False)
    return [np.asarray(keras.ops.convert_to_numpy(o), dtype="float64") for o in keras.tree.flatten(outputs)]


def verify(original, compact, *, sample_data=None, atol=1e-5, rtol=1e-4, seed=0):
    """Run both models on a random batch (and `sample_data`); raise if they differ.

    A difference is within tolerance where |a - b| <= atol + rtol * |a|
    (numpy.allclose), a the original's output. Returns (max_abs, max_rel).
    """
    batches = [random_batch(original, seed)]
    if sample_data is not None:
        batches.append(sample_data)
    max_abs, max_rel = 0.0, 0.0
    for data in batches:
        for a, b in zip(_predict(original, data), _predict(compact, data)):
            if a.shape != b.shape:
                raise CompactionError(
                    f"Compaction changed an output's shape: {a.shape} -> {b.shape}."
                )
            diff = np.abs(a - b)
            if diff.size == 0:
                continue
            max_abs = max(max_abs, float(np.nanmax(diff)))
            rel = diff / np.maximum(np.abs(a), np.finfo("float32").tiny)
            max_rel = max(max_rel, float(np.nanmax(rel)))
            if not np.allclose(b, a, atol=atol, rtol=rtol, equal_nan=True):
                raise CompactionError(
                    f"Compaction of model '{original.name}' is not exact: outputs differ by up to "
                    f"{float(diff.max()):.3g} (atol={atol}, rtol={rtol}). This is a bug in the "
                    "compactor (please report it with the model); pass verify=False only to inspect it."
                )
    return max_abs, max_rel
