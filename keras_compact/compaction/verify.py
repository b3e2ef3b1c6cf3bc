"""Verification: the compact model must compute what the original computes."""

import keras
import numpy as np

from keras_compact import _keras_adapter as adapter
from keras_compact import graph as graph_lib
from keras_compact.numerics import relative_difference, within_tolerance


class CompactionError(ValueError):
    """The compact model's outputs differ from the original's beyond tolerance."""


def check_finite_weights(model):
    """Raise ValueError naming the first variable of `model` with a NaN or inf."""
    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable)
        if not np.issubdtype(value.dtype, np.floating):
            continue
        bad = int(np.size(value) - np.isfinite(value).sum())
        if bad:
            raise ValueError(
                f"Variable '{variable.path}' of model '{model.name}' holds {bad} NaN or "
                "infinite values: its outputs are not numbers, so there is nothing to keep "
                "exactly. Training diverged (lower the learning rate or the penalty "
                "strength) or the weights file is damaged; compact a model with finite weights."
            )


DEFAULT_ATOL, DEFAULT_RTOL = 1e-5, 1e-4
# How many machine epsilons of a half-precision compute dtype the defaults
# rise to: a rebuilt layer sums in another order (and a folded bias adds once
# what was added per position), which in float16 alone moves an output by
# about one epsilon of its scale; 4 leaves room for a deep net's accumulation.
HALF_PRECISION_EPSILONS = 4
# The float dtypes Keras computes in that NumPy has no `finfo` for.
_NON_NUMPY_EPSILONS = {"bfloat16": 2.0**-7, "float8_e4m3fn": 2.0**-3, "float8_e5m2": 2.0**-2}


def verification_tolerances(model, atol=None, rtol=None):
    """(atol, rtol) for comparing `model` with its compact copy.

    The ones given; else 1e-5 and 1e-4, each raised to 4 machine epsilons
    of the narrowest float any layer of `model` computes in: under
    `mixed_float16` 3.9e-3 (epsilon 2**-10), under `mixed_bfloat16` 3.1e-2
    (2**-7). The float32 defaults would call float16 rounding a bug.
    """
    floor = HALF_PRECISION_EPSILONS * _coarsest_epsilon(model) if computes_in_half_precision(model) else 0.0
    return (
        max(DEFAULT_ATOL, floor) if atol is None else atol,
        max(DEFAULT_RTOL, floor) if rtol is None else rtol,
    )


def computes_in_half_precision(model):
    """Whether some layer of `model` computes in a float narrower than float32."""
    return _coarsest_epsilon(model) > np.finfo("float32").eps


def _coarsest_epsilon(model):
    """The largest machine epsilon of the float compute dtypes of `model`'s layers (nested models too)."""
    epsilons = [0.0]
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            epsilons.append(_coarsest_epsilon(layer))
            continue
        dtype = keras.backend.standardize_dtype(layer.compute_dtype)
        if keras.backend.is_float_dtype(dtype):
            epsilons.append(_NON_NUMPY_EPSILONS.get(dtype) or float(np.finfo(dtype).eps))
    return max(epsilons)


def _id_bounds(model):
    """Input index -> the smallest `input_dim` of the Embeddings that read that input directly."""
    try:
        graph = graph_lib.build_graph(model)
    except ValueError:
        return {}
    bounds = {}
    for index, key in enumerate(graph.inputs):
        dims = [
            call.layer.input_dim
            for call, _ in graph.consumers.get(key, [])
            if isinstance(call.layer, keras.layers.Embedding)
        ]
        if dims:
            bounds[index] = min(dims)
    return bounds


def random_batch(model, seed=0, batch_size=2, unknown_size=8):
    """A random batch for each model input, in the structure the model takes (list, dict).

    Normal floats; integers 0 or 1 (masks, segment ids), or any valid id for
    an input an Embedding reads (token ids); unknown (None) non-batch
    dimensions get `unknown_size`.
    """
    rng = np.random.default_rng(seed)
    bounds = _id_bounds(model)
    batch = []
    for index, tensor in enumerate(model.inputs):
        shape = (batch_size,) + tuple(d if d is not None else unknown_size for d in tensor.shape[1:])
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if "int" in dtype:
            batch.append(rng.integers(0, bounds.get(index, 2), size=shape).astype(dtype))
        elif dtype == "bool":
            batch.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            batch.append(rng.standard_normal(shape).astype(dtype))
    functional = adapter.functional_of(model)
    if functional is not None:
        structure = adapter.input_structure(functional)
        if isinstance(structure, dict):
            return keras.tree.pack_sequence_as(structure, batch)
    return batch[0] if len(batch) == 1 else batch


def predict(model, data):
    """The model's outputs on `data`, flat, as float64 numpy arrays."""
    outputs = model(data, training=False)
    return [
        np.asarray(keras.ops.convert_to_numpy(o), dtype="float64") for o in keras.tree.flatten(outputs)
    ]


def verify(original, compact, *, sample_data=None, atol=1e-5, rtol=1e-4, seed=0, diagnose=None):
    """Run both models on a random batch (and `sample_data`); raise if they differ.

    They agree when, for every output, max |a - b| <= atol + rtol * max(1, max |a|),
    a the original's output (see `numerics.relative_difference`). Returns
    (max_abs_diff, max_rel_diff) over all outputs and batches.

    Args:
        diagnose: optional callable(data) -> str that names the layers to
            blame, called only when the models differ.
    """
    batches = [("a random batch", random_batch(original, seed))]
    if sample_data is not None:
        batches.append(("sample_data", sample_data))
    max_abs, max_rel = 0.0, 0.0
    for what, data in batches:
        expected, actual = predict(original, data), predict(compact, data)
        for a, b in zip(expected, actual):
            if a.shape != b.shape:
                raise CompactionError(f"Compaction changed an output's shape: {a.shape} -> {b.shape}.")
            if a.size == 0:
                continue
            if not np.all(np.isfinite(a)):
                raise ValueError(
                    f"Model '{original.name}' itself gives NaN or infinite outputs on {what}, so "
                    "agreement cannot be checked: pass sample_data= with inputs it computes "
                    "finite outputs on (for example real data)."
                )
            difference = float(np.max(np.abs(a - b))) if np.all(np.isfinite(b)) else float("inf")
            relative = relative_difference(a, b) if np.isfinite(difference) else float("inf")
            max_abs, max_rel = max(max_abs, difference), max(max_rel, relative)
            if not within_tolerance(a, b, atol, rtol):
                blame = diagnose(data) if diagnose is not None else ""
                raise CompactionError(
                    f"Compaction of model '{original.name}' is not exact on {what}: outputs "
                    f"differ by up to {difference:.3g} (relative {relative:.3g}; atol={atol}, "
                    f"rtol={rtol}). "
                    + (
                        blame
                        or "This is a bug in the compactor (please report it with the model); "
                        "pass verify=False only to inspect it."
                    )
                )
    return max_abs, max_rel
