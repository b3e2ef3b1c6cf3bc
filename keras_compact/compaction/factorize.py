"""Low-rank factorization: replace a layer by two thin ones when that is smaller.

A Dense kernel (m, n) of rank r is U_r S_r V_r^T; the layer becomes
Dense(r, no bias) then Dense(n) (with the original bias and activation),
exactly when the discarded singular values are zero. A ConvND kernel
(*k, in, out) is read two ways, and the smaller form wins:

- "output": the matrix (prod(k)*in, out) of rank r gives ConvND(r, k) with
  the original strides, padding and dilation, then ConvND(out, 1).
- "spatial" (Conv2D only): the matrix (kh*in, kw*out) of rank r gives
  Conv2D(r, (kh, 1)) then Conv2D(out, (1, kw)), strides and dilation split
  per axis; 'same' padding splits exactly too, since TensorFlow pads each
  axis from that axis's size, kernel and stride alone.

These are the forms that `TensorLowRank` (methods "output" and "spatial")
drives kernels towards. Rank counts the singular values above
`rtol * largest`; what is cut is reported, and `compact` verifies the
outputs of the whole model afterwards.
"""

import dataclasses

import keras
import numpy as np

from keras_compact import graph as graph_lib
from keras_compact.registry import spec_for


@dataclasses.dataclass
class Factorization:
    """One layer replaced by two."""

    name: str  # the second layer keeps the original layer's name
    factor_name: str  # the first, new layer
    form: str  # "dense", "output" or "spatial"
    rank: int
    full_rank: int
    params_before: int
    params_after: int
    largest_dropped: float  # largest discarded singular value, relative to the largest kept

    def to_dict(self):
        return dataclasses.asdict(self)


def truncated_svd(matrix, rtol):
    """The rank-r factors of `matrix` with singular values above `rtol` times the largest.

    Returns (left (m, r) with the singular values folded in, right (r, n),
    r, the full rank min(m, n), and the largest dropped singular value
    relative to the largest).
    """
    u, s, vt = np.linalg.svd(matrix.astype("float64"), full_matrices=False)
    if s.size == 0 or s[0] == 0:
        rank, dropped = 0, 0.0
    else:
        rank = int((s > rtol * s[0]).sum())
        dropped = float(s[rank] / s[0]) if rank < s.size else 0.0
    return (u * s)[:, :rank], vt[:rank], rank, int(s.size), dropped


@dataclasses.dataclass
class Plan:
    """One way to write a layer as two: configs and kernels of both."""

    form: str
    rank: int
    full_rank: int
    largest_dropped: float
    first_config: dict
    second_config: dict
    first_kernel: np.ndarray
    second_kernel: np.ndarray

    def params(self, bias_size):
        return self.first_kernel.size + self.second_kernel.size + bias_size


def _best_plan(layer, rtol):
    """The smallest factorized form of `layer` (its registry entry's), or None when none is smaller."""
    plans = [p for p in spec_for(layer).factorizations(layer, rtol) if p.rank > 0]
    if not plans:
        return None
    bias_size = layer.bias.shape[0] if getattr(layer, "bias", None) is not None else 0
    best = min(plans, key=lambda p: p.params(bias_size))
    if best.params(bias_size) >= layer.count_params():
        return None
    return best


def _build_pair(layer, plan, input_shape, factor_name):
    first_config = dict(plan.first_config, name=factor_name)
    first = type(layer).from_config(first_config)
    second = type(layer).from_config(plan.second_config)
    first.build(input_shape)
    second.build(first.compute_output_shape(input_shape))
    dtype = keras.backend.standardize_dtype(layer.kernel.dtype)
    first.kernel.assign(plan.first_kernel.astype(dtype))
    second.kernel.assign(plan.second_kernel.astype(dtype))
    if getattr(layer, "bias", None) is not None:
        second.bias.assign(layer.bias)
    return first, second


def factorize(model, rtol=1e-5, layers=None):
    """A copy of `model` with each Dense/Conv layer factorized where that is smaller.

    Args:
        model: a Sequential or Functional model (layers inside nested models
            are left as they are).
        rtol: singular values at or below `rtol` times the largest are cut.
        layers: names of the layers to try; None tries every layer.

    Returns:
        (new_model, [Factorization]). The new model is Functional; layers that
        are not factorized are shared with `model`, so treat `model` as consumed.
        With no layer to factorize, `model` itself is returned.
    """
    plans = {}
    for layer in model.layers:
        if layers is not None and layer.name not in layers:
            continue
        plan = _best_plan(layer, rtol)
        if plan is not None:
            plans[id(layer)] = plan
    if not plans:
        return model, []
    functional = model
    if isinstance(model, keras.Sequential):
        functional = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    pairs, records = {}, []
    names = {layer.name for layer in functional.layers}
    graph = graph_lib.build_graph(functional)
    for layer in functional.layers:
        if id(layer) in plans:
            plan = plans[id(layer)]
            factor_name = f"{layer.name}_factor"
            while factor_name in names:
                factor_name += "_"
            names.add(factor_name)
            # A shared layer has one pair, built for its first call.
            input_shape = graph.tensors[graph.calls_of(layer)[0].inputs[0]].shape
            pairs[id(layer)] = _build_pair(layer, plan, input_shape, factor_name)
            records.append(
                Factorization(
                    name=layer.name,
                    factor_name=factor_name,
                    form=plan.form,
                    rank=plan.rank,
                    full_rank=plan.full_rank,
                    params_before=layer.count_params(),
                    params_after=sum(l.count_params() for l in pairs[id(layer)]),
                    largest_dropped=plan.largest_dropped,
                )
            )

    def call_function(layer, *args, **kwargs):
        if id(layer) in pairs:
            first, second = pairs[id(layer)]
            return second(first(*args, **kwargs))
        return layer(*args, **kwargs)

    new_model = keras.models.clone_model(
        functional, clone_function=lambda layer: layer, call_function=call_function
    )
    return new_model, records
