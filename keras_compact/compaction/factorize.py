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


def _rank(singular_values, rtol):
    if singular_values.size == 0 or singular_values[0] == 0:
        return 0, 0.0
    keep = singular_values > rtol * singular_values[0]
    rank = int(keep.sum())
    dropped = singular_values[rank:]
    return rank, float(dropped[0] / singular_values[0]) if dropped.size else 0.0


def _svd(matrix):
    u, s, vt = np.linalg.svd(matrix.astype("float64"), full_matrices=False)
    return u * s, s, vt  # the singular values go to the first factor


@dataclasses.dataclass
class _Plan:
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


def _dense_plans(layer, config, rtol):
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    us, s, vt = _svd(kernel)
    rank, dropped = _rank(s, rtol)
    first = dict(config, units=rank, use_bias=False, activation="linear")
    return [_Plan("dense", rank, len(s), dropped, first, config, us[:, :rank], vt[:rank])]


def _conv_plans(layer, config, rtol):
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    *window, channels_in, channels_out = kernel.shape
    nd = len(window)
    us, s, vt = _svd(kernel.reshape(-1, channels_out))
    rank, dropped = _rank(s, rtol)
    first = dict(config, filters=rank, use_bias=False, activation="linear")
    ones = (1,) * nd
    second = dict(config, kernel_size=ones, strides=ones, dilation_rate=ones, padding="valid")
    plans = [
        _Plan(
            "output",
            rank,
            len(s),
            dropped,
            first,
            second,
            us[:, :rank].reshape(*window, channels_in, rank),
            vt[:rank].reshape(*ones, rank, channels_out),
        )
    ]
    if nd == 2:
        kh, kw = window
        (sh, sw), (dh, dw) = layer.strides, layer.dilation_rate
        matrix = kernel.transpose(0, 2, 1, 3).reshape(kh * channels_in, kw * channels_out)
        us, s, vt = _svd(matrix)
        rank, dropped = _rank(s, rtol)
        first = dict(
            config,
            filters=rank,
            kernel_size=(kh, 1),
            strides=(sh, 1),
            dilation_rate=(dh, 1),
            use_bias=False,
            activation="linear",
        )
        second = dict(config, kernel_size=(1, kw), strides=(1, sw), dilation_rate=(1, dw))
        first_kernel = us[:, :rank].reshape(kh, channels_in, rank)[:, None]
        second_kernel = vt[:rank].reshape(rank, kw, channels_out).transpose(1, 0, 2)[None]
        plans.append(
            _Plan("spatial", rank, len(s), dropped, first, second, first_kernel, second_kernel)
        )
    return plans


def _conv_can_factorize(layer):
    # Grouped convs mix channels in blocks; channels_first kernels are fine,
    # but keep the two-layer form in the layer's own layout.
    return getattr(layer, "groups", 1) == 1


# The layers this module can factorize: one entry per type.
FACTORIZERS = {
    keras.layers.Dense: (_dense_plans, lambda layer: True),
    keras.layers.Conv1D: (_conv_plans, _conv_can_factorize),
    keras.layers.Conv2D: (_conv_plans, _conv_can_factorize),
    keras.layers.Conv3D: (_conv_plans, _conv_can_factorize),
}


def _best_plan(layer, rtol):
    """The smallest factorized form of `layer`, or None when none is smaller."""
    entry = FACTORIZERS.get(type(layer))
    if entry is None or not entry[1](layer):
        return None
    plans_fn, _ = entry
    bias_size = layer.bias.shape[0] if getattr(layer, "bias", None) is not None else 0
    plans = [p for p in plans_fn(layer, layer.get_config(), rtol) if p.rank > 0]
    if not plans:
        return None
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


def factorize(model, rtol=1e-5):
    """A copy of `model` with each Dense/Conv layer factorized where that is smaller.

    Args:
        model: a Sequential or Functional model (layers inside nested models
            are left as they are).
        rtol: singular values at or below `rtol` times the largest are cut.

    Returns:
        (new_model, [Factorization]). The new model is Functional; layers that
        are not factorized are shared with `model`, so treat `model` as consumed.
        With no layer to factorize, `model` itself is returned.
    """
    plans = {}
    for layer in model.layers:
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
    for layer in functional.layers:
        if id(layer) in plans:
            plan = plans[id(layer)]
            factor_name = f"{layer.name}_factor"
            while factor_name in names:
                factor_name += "_"
            names.add(factor_name)
            # A shared layer has one pair, built for its first call.
            input_shape = layer._inbound_nodes[0].input_tensors[0].shape
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
