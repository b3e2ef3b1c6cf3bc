"""The registry's entries for Keras's own layers: one `register_layer` line per class.

The spec classes here are public (`keras_compact.PassThroughSpec`,
`NeuronSpec`, ...) so that a custom layer can reuse them. Only channels_last
layouts are understood; anything else is a barrier.
"""

import keras
import numpy as np

from keras_compact import _keras_adapter as adapter
from keras_compact.attention import GroupedQueryAttentionSpec, MultiHeadAttentionSpec
from keras_compact.compaction.factorize import Plan, truncated_svd
from keras_compact.registry import (
    Barrier,
    LayerSpec,
    Member,
    output_view,
    positions,
    register_layer,
    require_channels_last,
    window_sees_every_position,
    zero_slices,
)

# Activations that act on each channel alone: a constant channel stays a
# constant (act(value)). Anything else (softmax, log_softmax) mixes channels.
ELEMENTWISE_ACTIVATIONS = frozenset(
    {
        "linear",
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "gelu",
        "sigmoid",
        "hard_sigmoid",
        "hard_silu",
        "hard_swish",
        "silu",
        "swish",
        "tanh",
        "softplus",
        "softsign",
        "exponential",
        "mish",
        "celu",
        "squareplus",
        "sparse_plus",
        "soft_shrink",
        "hard_shrink",
        "tanh_shrink",
        "hard_tanh",
        "log_sigmoid",
        "threshold",
    }
)


def activation_name(activation):
    name = keras.activations.serialize(activation)
    if isinstance(name, dict):  # a registered custom activation
        name = name.get("config", {}).get("name", name.get("class_name"))
    return str(name)


def apply_elementwise(fn, values):
    """fn applied to a vector of constants; NaN (not constant) entries stay NaN."""
    constant = ~np.isnan(values)
    out = np.full(values.shape, np.nan)
    if constant.any():
        result = fn(keras.ops.convert_to_tensor(values[constant][None].astype("float32")))
        out[constant] = keras.ops.convert_to_numpy(result)[0]
    return out


def _require_channel_axis(axis, key, analysis, what):
    """Raise `Barrier` unless `axis` is the last (channel) axis of tensor `key`."""
    rank = len(analysis.shape(key))
    if (axis if axis >= 0 else axis + rank) != rank - 1:
        raise Barrier(f"{what} along an axis other than the channels")


def _activated(call, slots, pre_activation, analysis):
    """The output channels of a layer with an `activation`, constants included."""
    layer = call.layer
    name = activation_name(layer.activation)
    if name not in ELEMENTWISE_ACTIVATIONS:
        analysis.keep(slots, f"activation '{name}' of '{layer.name}' mixes channels")
        return [analysis.channels(slots, np.full(len(slots), np.nan))]
    return [analysis.channels(slots, apply_elementwise(layer.activation, pre_activation))]


def _folded_bias(config, bias, contribution, dtype):
    """bias + what the removed constant inputs contributed; a layer without bias gets one."""
    if bias is None:
        config["use_bias"] = True
        bias = np.zeros(contribution.shape, dtype)
    return (bias.astype("float64") + contribution).astype(dtype)


def _shape(layer, weights, attribute):
    """Shape of a weight as it will be (`weights`), or as it is (None)."""
    if weights is not None:
        return tuple(weights[attribute])
    return tuple(getattr(layer, attribute).shape)


# -- generic kinds ------------------------------------------------------------


class BarrierSpec(LayerSpec):
    """A layer that mixes channels: the channels around it are kept."""

    def __init__(self, why="mixes channels"):
        super().__init__(why)

    def check(self, layer, call, analysis):
        raise Barrier(self.why)


class LayerNormalizationSpec(BarrierSpec):
    """LayerNormalization mixes channels (its mean and variance), but its beta is added last."""

    def __init__(self):
        super().__init__("LayerNormalization mixes channels")

    def output_bias(self, layer):
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        if not layer.center or getattr(layer, "rms_scaling", False) or list(axes) != [-1]:
            return None
        return layer.beta


class PassThroughSpec(LayerSpec):
    """Channels pass unchanged, each on its own; a constant channel stays the same constant.

    Subclasses override `value` (what the layer does to a constant channel).
    """

    def __init__(self):
        super().__init__("")

    def check(self, layer, call, analysis):
        require_channels_last(layer)

    def value(self, layer, const):
        return const

    def propagate(self, call, inputs, analysis):
        source = inputs[0]
        return [analysis.channels(source.slots, self.value(call.layer, source.const))]


class IdentityAtInferenceSpec(PassThroughSpec):
    """Dropout and noise layers: the identity at inference."""

    config_counts_channels = True
    identity_at_inference = True

    def rebuild(self, layer, masks, weights):
        config = layer.get_config()
        noise_shape = config.get("noise_shape")
        if noise_shape and noise_shape[-1] not in (None, 1):
            config["noise_shape"] = tuple(noise_shape[:-1]) + (masks.output_count(0),)
        return config, None


class ZeroPaddingSpec(PassThroughSpec):
    """Pads with zeros: a constant survives only if it is zero."""

    def value(self, layer, const):
        return np.where(const == 0, const, np.nan)


class ElementwiseActivationSpec(PassThroughSpec):
    """Activation layers (ReLU, ELU, Activation('relu'), ...): act(constant)."""

    def check(self, layer, call, analysis):
        if isinstance(layer, keras.layers.Activation):
            name = activation_name(layer.activation)
            if name not in ELEMENTWISE_ACTIVATIONS:
                raise Barrier(f"activation '{name}' mixes channels")

    def value(self, layer, const):
        return apply_elementwise(layer, const)


class RescalingSpec(PassThroughSpec):
    def check(self, layer, call, analysis):
        if np.ndim(layer.scale) or np.ndim(layer.offset):
            raise Barrier("per-channel Rescaling is not supported")

    def value(self, layer, const):
        return const * float(layer.scale) + float(layer.offset)


class BatchNormalizationSpec(PassThroughSpec):
    """Inference BatchNorm: an affine map per channel (gamma = 0 makes it constant)."""

    def check(self, layer, call, analysis):
        _require_channel_axis(layer.axis, call.inputs[0], analysis, "BatchNormalization")

    def _affine(self, layer, weights, n):
        gamma = weights.get(layer.gamma) if layer.scale else np.ones(n)
        beta = weights.get(layer.beta) if layer.center else np.zeros(n)
        mean = weights.get(layer.moving_mean).astype("float64")
        variance = weights.get(layer.moving_variance).astype("float64")
        scale = gamma.astype("float64") / np.sqrt(variance + layer.epsilon)
        return gamma, scale, beta.astype("float64") - mean * scale

    def propagate(self, call, inputs, analysis):
        source = inputs[0]
        gamma, scale, shift = self._affine(call.layer, analysis.weights, len(source.slots))
        value = source.const * scale + shift
        # gamma = 0: the output is beta whatever the input.
        value = np.where(gamma == 0, shift, value)
        return [analysis.channels(source.slots, value)]

    def output_bias(self, layer):
        return layer.beta if layer.center else None

    def rebuild(self, layer, masks, weights):
        kept = masks.input(0)
        names = ["gamma", "beta", "moving_mean", "moving_variance"]
        new = {
            name: weights.get(getattr(layer, name))[kept]
            for name in names
            if getattr(layer, name, None) is not None
        }
        return layer.get_config(), new


class FlattenSpec(PassThroughSpec):
    """(..., C) -> (prod(...) * C,): channel c becomes every index = c mod C."""

    def check(self, layer, call, analysis):
        require_channels_last(layer)
        if None in analysis.shape(call.inputs[0])[1:]:
            raise Barrier("Flatten of an input with unknown spatial size")

    def propagate(self, call, inputs, analysis):
        source = inputs[0]
        count = int(np.prod(analysis.shape(call.inputs[0])[1:-1] or (1,)))
        return [analysis.channels(np.tile(source.slots, count), np.tile(source.const, count))]


class ReshapeSpec(PassThroughSpec):
    """Reshape that keeps the channel axis last (e.g. (1, 1, C)) or flattens."""

    config_counts_channels = True

    def check(self, layer, call, analysis):
        in_shape = analysis.shape(call.inputs[0])
        out_shape = analysis.shape(call.outputs[0])
        if len(out_shape) == 2 and None not in in_shape[1:]:
            return  # a flatten
        if len(in_shape) >= 2 and in_shape[-1] is not None and out_shape[-1] == in_shape[-1]:
            return
        raise Barrier(f"Reshape {in_shape} -> {out_shape} moves the channel axis")

    def propagate(self, call, inputs, analysis):
        if len(analysis.shape(call.outputs[0])) == 2:
            return FlattenSpec().propagate(call, inputs, analysis)
        return super().propagate(call, inputs, analysis)

    def rebuild(self, layer, masks, weights):
        config = layer.get_config()
        target = list(config["target_shape"])
        if target[-1] != -1:
            target[-1] = masks.output_count(0) if len(target) == 1 else masks.input_count(0)
        config["target_shape"] = tuple(target)
        return config, None


class PermuteSpec(PassThroughSpec):
    def check(self, layer, call, analysis):
        if tuple(layer.dims)[-1] != len(layer.dims):
            raise Barrier(f"Permute{tuple(layer.dims)} moves the channel axis")


def _sum(stacked):
    return np.sum(stacked, axis=0)


def _mean(stacked):
    return np.mean(stacked, axis=0)


def _max(stacked):
    return np.max(stacked, axis=0)


def _min(stacked):
    return np.min(stacked, axis=0)


def _product(stacked):
    # 0 times anything is 0: the product is constant when one factor is 0.
    return np.where(np.any(stacked == 0, axis=0), 0.0, np.prod(stacked, axis=0))


def _difference(stacked):
    return stacked[0] - stacked[1]


class MergeSpec(LayerSpec):
    """Add, Multiply, ...: channel c of every input is one channel (coupled)."""

    def __init__(self, combine):
        super().__init__("")
        self.combine = combine  # numpy reduction over stacked constants
        self.sums_inputs = combine is _sum

    def check(self, layer, call, analysis):
        if len({analysis.shape(key)[-1] for key in call.inputs}) != 1:
            raise Barrier("merges inputs with different channel counts (broadcast)")

    def propagate(self, call, inputs, analysis):
        slots = inputs[0].slots
        for other in inputs[1:]:
            analysis.union(slots, other.slots)
        value = self.combine(np.stack([source.const for source in inputs]))
        return [analysis.channels(slots, value)]


class ConcatenateSpec(LayerSpec):
    def __init__(self):
        super().__init__("")

    def check(self, layer, call, analysis):
        _require_channel_axis(layer.axis, call.outputs[0], analysis, "Concatenate")

    def propagate(self, call, inputs, analysis):
        return [
            analysis.channels(
                np.concatenate([s.slots for s in inputs]),
                np.concatenate([s.const for s in inputs]),
            )
        ]


class ElementwiseOpSpec(LayerSpec):
    """Raw keras.ops arithmetic in a functional graph (`x + 3.0`, `x * y`, as in MobileNetV3).

    Tensor operands are coupled channel by channel, as by a merge layer;
    other operands must be scalars. Constants are computed by the op itself.
    """

    def __init__(self):
        super().__init__("")

    def check(self, layer, call, analysis):
        if len({analysis.shape(key)[-1] for key in call.inputs}) != 1:
            raise Barrier(f"{type(layer).__name__} broadcasts channels")
        for value in adapter.argument_values(call.arguments):
            if not isinstance(value, keras.KerasTensor) and np.ndim(value) != 0:
                raise Barrier(f"{type(layer).__name__} with a non-scalar constant operand")

    def propagate(self, call, inputs, analysis):
        slots = inputs[0].slots
        for other in inputs[1:]:
            analysis.union(slots, other.slots)
        constants = {
            id(tensor): keras.ops.convert_to_tensor(source.const[None].astype("float32"))
            for tensor, source in zip(call.input_tensors, inputs)
        }
        args, kwargs = adapter.fill_in_arguments(call.arguments, constants)
        value = keras.ops.convert_to_numpy(call.layer(*args, **kwargs))
        value = np.broadcast_to(value, (1, len(slots)))[0].astype("float64")
        return [analysis.channels(slots, value)]


# -- layers with neurons ------------------------------------------------------


class NeuronSpec(LayerSpec):
    """Dense and convolutions: read input channels through a kernel, make neurons.

    The kernel is (..., in, out) (`transposed`: (..., out, in)); `count_key`
    is the config entry holding the number of neurons. A custom layer with a
    `kernel`, an optional `bias`, an `activation` and this layout can reuse it.
    """

    def __init__(self, count_key="filters", transposed=False, low_rank=False):
        super().__init__("")
        self.count_key = count_key
        self.transposed = transposed
        self.low_rank = low_rank

    def kernel_axes(self, ndim):
        """(input axis, output axis) of a kernel of rank `ndim`."""
        if self.transposed:
            return ndim - 1, ndim - 2
        return ndim - 2, ndim - 1

    def neurons(self, layer):
        kernel = layer.kernel
        shape = tuple(kernel.shape)
        if self.transposed:  # (*k, out, in)
            return Member(kernel, int(np.prod(shape[:-2])), shape[-2], shape[-1])
        return output_view(kernel)

    def check(self, layer, call, analysis):
        require_channels_last(layer)
        if getattr(layer, "groups", 1) != 1:
            raise Barrier("grouped convolution mixes channels in groups")
        if getattr(layer, "lora_enabled", False):
            raise Barrier("LoRA-enabled layer")

    def fold_exact(self, layer):
        """(whether a constant input folds exactly into the bias, why not)."""
        if len(layer.kernel.shape) == 2:  # dense: no window, no borders
            return True, ""
        if self.transposed:
            return False, "a transposed convolution spreads a constant unevenly at the borders"
        if window_sees_every_position(layer):
            return True, ""
        size = "x".join(str(k) for k in layer.kernel_size)
        return False, f"{size} '{layer.padding}' padding sees the constant only partly at the borders"

    def propagate(self, call, inputs, analysis):
        layer = call.layer
        kernel = analysis.weights.get(layer.kernel)
        in_axis, out_axis = self.kernel_axes(kernel.ndim)
        taps = _taps(kernel, in_axis, out_axis)
        reads = np.any(taps != 0, axis=0)  # (in, out): input channel i reaches neuron j
        slots = analysis.output_slots(call, 0, kernel.shape[out_axis])
        bias = analysis.weights.get(layer.bias) if layer.use_bias else np.zeros(reads.shape[1])
        bias = bias.astype("float64")
        if not self.fold_exact(layer)[0]:
            # A constant input is not a constant output at the borders: only a
            # neuron that reads nothing (a zero kernel slice) is constant.
            dead = ~reads.any(axis=0)
            return _activated(call, slots, np.where(dead, bias, np.nan), analysis)
        # A neuron that reads constant channels only outputs a constant (a
        # whole dead FFN makes its second Dense constant, say).
        const = inputs[0].const
        known = ~np.isnan(const)
        constant = ~np.any(reads & ~known[:, None], axis=0)
        value = bias + np.where(known, const, 0.0) @ taps.sum(axis=0).astype("float64")
        return _activated(call, slots, np.where(constant, value, np.nan), analysis)

    def sink(self, call, input_index, analysis):
        kernel = analysis.weights.get(call.layer.kernel)
        in_axis, _ = self.kernel_axes(kernel.ndim)
        exact, why = self.fold_exact(call.layer)
        return zero_slices(kernel, in_axis), exact, why

    def rebuild(self, layer, masks, weights):
        kernel = weights.get(layer.kernel)
        in_axis, out_axis = self.kernel_axes(kernel.ndim)
        kept_in, kept_out = masks.input(0), masks.output(0)
        config = layer.get_config()
        bias = weights.get(layer.bias) if layer.use_bias else None
        fold = masks.fold_values(0)
        if fold is not None:
            # sum over the window of kernel . constant: what the removed inputs
            # added to every output.
            window_sum = _taps(kernel, in_axis, out_axis).sum(axis=0)
            contribution = fold.astype("float64") @ window_sum.astype("float64")
            bias = _folded_bias(config, bias, contribution, kernel.dtype)
        kernel = np.compress(kept_in, kernel, axis=in_axis)
        kernel = np.compress(kept_out, kernel, axis=out_axis)
        if bias is not None:
            bias = bias[kept_out]
        config[self.count_key] = int(kept_out.sum())
        new = {"kernel": kernel}
        if bias is not None:
            new["bias"] = bias
        return config, new

    def output_bias(self, layer):
        if not layer.use_bias or activation_name(layer.activation) != "linear":
            return None
        return layer.bias

    def macs(self, call, graph, weights):
        per_position = int(np.prod(_shape(call.layer, weights, "kernel")))
        # Dense and transposed convs run their kernel once per input position,
        # the others once per output position.
        dense_like = self.transposed or len(call.layer.kernel.shape) == 2
        key = call.inputs[0] if dense_like else call.outputs[0]
        count = positions(graph.tensors[key].shape, call.layer)
        return None if count is None else count * per_position

    def factorizations(self, layer, rtol):
        if not self.low_rank or getattr(layer, "groups", 1) != 1:
            return []
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        config = layer.get_config()
        if kernel.ndim == 2:
            return [_dense_plan(kernel, config, rtol)]
        return _conv_plans(layer, kernel, config, rtol)


def _taps(kernel, in_axis, out_axis):
    """The kernel as (window positions, in, out)."""
    moved = np.moveaxis(kernel, (in_axis, out_axis), (-2, -1))
    return moved.reshape(-1, moved.shape[-2], moved.shape[-1])


def _dense_plan(kernel, config, rtol):
    """Dense(r, no bias) then Dense(n): the kernel (m, n) as U_r S_r V_r^T."""
    us, vt, rank, full_rank, dropped = truncated_svd(kernel, rtol)
    first = dict(config, units=rank, use_bias=False, activation="linear")
    return Plan("dense", rank, full_rank, dropped, first, config, us, vt)


def _conv_plans(layer, kernel, config, rtol):
    """ConvND(r, k) then ConvND(out, 1); for Conv2D also (kh, 1) then (1, kw)."""
    *window, channels_in, channels_out = kernel.shape
    nd = len(window)
    us, vt, rank, full_rank, dropped = truncated_svd(kernel.reshape(-1, channels_out), rtol)
    first = dict(config, filters=rank, use_bias=False, activation="linear")
    ones = (1,) * nd
    second = dict(config, kernel_size=ones, strides=ones, dilation_rate=ones, padding="valid")
    plans = [
        Plan(
            "output",
            rank,
            full_rank,
            dropped,
            first,
            second,
            us.reshape(*window, channels_in, rank),
            vt.reshape(*ones, rank, channels_out),
        )
    ]
    if nd == 2:
        kh, kw = window
        (sh, sw), (dh, dw) = layer.strides, layer.dilation_rate
        matrix = kernel.transpose(0, 2, 1, 3).reshape(kh * channels_in, kw * channels_out)
        us, vt, rank, full_rank, dropped = truncated_svd(matrix, rtol)
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
        first_kernel = us.reshape(kh, channels_in, rank)[:, None]
        second_kernel = vt.reshape(rank, kw, channels_out).transpose(1, 0, 2)[None]
        plans.append(Plan("spatial", rank, full_rank, dropped, first, second, first_kernel, second_kernel))
    return plans


class DepthwiseSpec(LayerSpec):
    """DepthwiseConv: input channel c makes output channels c*m .. c*m+m-1."""

    def __init__(self):
        super().__init__("")

    def neurons(self, layer):
        kernel = layer.kernel  # (*k, in, multiplier)
        shape = tuple(kernel.shape)
        return Member(kernel, int(np.prod(shape[:-2])), shape[-2] * shape[-1], 1)

    def check(self, layer, call, analysis):
        require_channels_last(layer)

    def propagate(self, call, inputs, analysis):
        layer, source = call.layer, inputs[0]
        kernel = analysis.weights.get(layer.kernel)  # (*k, in, m)
        multiplier = kernel.shape[-1]
        flat = kernel.reshape(-1, kernel.shape[-2], multiplier)
        window_sum = flat.sum(axis=0)
        dead = ~np.any(flat != 0, axis=0)
        const = source.const[:, None]
        # A constant input gives a constant output where the whole window sees it.
        exact = window_sees_every_position(layer)
        through = np.where((const == 0) | exact, const * window_sum, np.nan)
        pre = np.where(dead, 0.0, through).reshape(-1)
        bias = analysis.weights.get(layer.bias) if layer.use_bias else 0.0
        return _activated(call, np.repeat(source.slots, multiplier), pre + bias, analysis)

    def rebuild(self, layer, masks, weights):
        kept = masks.input(0)
        kernel = weights.get(layer.kernel)
        new = {"kernel": np.compress(kept, kernel, axis=kernel.ndim - 2)}
        if layer.use_bias:
            bias = weights.get(layer.bias).reshape(kernel.shape[-2], kernel.shape[-1])
            new["bias"] = bias[kept].reshape(-1)
        return layer.get_config(), new

    def macs(self, call, graph, weights):
        count = positions(graph.tensors[call.outputs[0]].shape, call.layer)
        per_position = int(np.prod(_shape(call.layer, weights, "kernel")))
        return None if count is None else count * per_position


class SeparableSpec(NeuronSpec):
    """SeparableConv: a depthwise part carries input channels into the pointwise neurons."""

    def __init__(self):
        super().__init__("filters")

    def neurons(self, layer):
        return output_view(layer.pointwise_kernel)

    def _depthwise_rows(self, layer, weights):
        """Each pointwise row's depthwise window sum, whether it is all zero, and m."""
        depthwise = weights.get(layer.depthwise_kernel)  # (*k, in, m)
        flat = depthwise.reshape(-1, depthwise.shape[-2] * depthwise.shape[-1])
        return flat.sum(axis=0), ~np.any(flat != 0, axis=0), depthwise.shape[-1]

    def propagate(self, call, inputs, analysis):
        layer = call.layer
        pointwise = analysis.weights.get(layer.pointwise_kernel)
        dead = zero_slices(pointwise, -1)
        slots = analysis.output_slots(call, 0, pointwise.shape[-1])
        bias = analysis.weights.get(layer.bias) if layer.use_bias else np.zeros(len(dead))
        return _activated(call, slots, np.where(dead, bias.astype("float64"), np.nan), analysis)

    def sink(self, call, input_index, analysis):
        layer = call.layer
        pointwise = analysis.weights.get(layer.pointwise_kernel)
        _, depthwise_zero, multiplier = self._depthwise_rows(layer, analysis.weights)
        rows = pointwise.reshape(-1, pointwise.shape[-1])
        row_ignored = ~np.any(rows != 0, axis=1) | depthwise_zero
        ignored = row_ignored.reshape(-1, multiplier).all(axis=1)
        size = "x".join(str(k) for k in layer.kernel_size)
        why = f"depthwise {size} '{layer.padding}' padding sees the constant only partly"
        return ignored, window_sees_every_position(layer), why

    def rebuild(self, layer, masks, weights):
        kept_in, kept_out = masks.input(0), masks.output(0)
        window_sum, _, multiplier = self._depthwise_rows(layer, weights)
        pointwise = weights.get(layer.pointwise_kernel)
        depthwise = weights.get(layer.depthwise_kernel)
        config = layer.get_config()
        bias = weights.get(layer.bias) if layer.use_bias else None
        fold = masks.fold_values(0)
        rows = pointwise.reshape(-1, pointwise.shape[-1])
        if fold is not None:
            row_values = np.repeat(fold, multiplier) * window_sum
            contribution = row_values.astype("float64") @ rows.astype("float64")
            bias = _folded_bias(config, bias, contribution, pointwise.dtype)
        depthwise = np.compress(kept_in, depthwise, axis=depthwise.ndim - 2)
        pointwise = np.compress(np.repeat(kept_in, multiplier), pointwise, axis=pointwise.ndim - 2)
        pointwise = np.compress(kept_out, pointwise, axis=pointwise.ndim - 1)
        config["filters"] = int(kept_out.sum())
        new = {"depthwise_kernel": depthwise, "pointwise_kernel": pointwise}
        if bias is not None:
            new["bias"] = bias[kept_out]
        return config, new

    def macs(self, call, graph, weights):
        count = positions(graph.tensors[call.outputs[0]].shape, call.layer)
        per_position = int(np.prod(_shape(call.layer, weights, "depthwise_kernel"))) + int(
            np.prod(_shape(call.layer, weights, "pointwise_kernel"))
        )
        return None if count is None else count * per_position

    def factorizations(self, layer, rtol):
        return []


L = keras.layers

for _cls in (L.Conv1D, L.Conv2D, L.Conv3D):
    register_layer(_cls, NeuronSpec(low_rank=True))
register_layer(L.Dense, NeuronSpec("units", low_rank=True))
for _cls in (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose):
    register_layer(_cls, NeuronSpec(transposed=True))
for _cls in (L.DepthwiseConv1D, L.DepthwiseConv2D):
    register_layer(_cls, DepthwiseSpec())
for _cls in (L.SeparableConv1D, L.SeparableConv2D):
    register_layer(_cls, SeparableSpec())
register_layer(L.BatchNormalization, BatchNormalizationSpec())
for _cls in (L.Activation, L.ReLU, L.LeakyReLU, L.ELU):
    register_layer(_cls, ElementwiseActivationSpec())
register_layer(L.Rescaling, RescalingSpec())
for _cls in (
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.SpatialDropout3D,
    L.GaussianDropout,
    L.GaussianNoise,
    L.AlphaDropout,
    L.ActivityRegularization,
    L.Identity,
):
    register_layer(_cls, IdentityAtInferenceSpec())
for _cls in (
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.MaxPooling3D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.AveragePooling3D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.GlobalMaxPooling3D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.UpSampling3D,
    L.Cropping1D,
    L.Cropping2D,
    L.Cropping3D,
    L.RepeatVector,
):
    register_layer(_cls, PassThroughSpec())
for _cls in (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D):
    register_layer(_cls, ZeroPaddingSpec())
register_layer(L.Flatten, FlattenSpec())
register_layer(L.Reshape, ReshapeSpec())
register_layer(L.Permute, PermuteSpec())
register_layer(L.Add, MergeSpec(_sum))
register_layer(L.Subtract, MergeSpec(_difference))
register_layer(L.Multiply, MergeSpec(_product))
register_layer(L.Average, MergeSpec(_mean))
register_layer(L.Maximum, MergeSpec(_max))
register_layer(L.Minimum, MergeSpec(_min))
register_layer(L.Concatenate, ConcatenateSpec())
register_layer(L.Softmax, BarrierSpec("softmax mixes channels"))
register_layer(L.LayerNormalization, LayerNormalizationSpec())
register_layer(L.GroupNormalization, BarrierSpec("GroupNormalization mixes channels"))
register_layer(L.UnitNormalization, BarrierSpec("UnitNormalization mixes channels"))
register_layer(L.RMSNormalization, BarrierSpec("RMSNormalization mixes channels"))
register_layer(L.EinsumDense, BarrierSpec("EinsumDense: its equation's axes are not read by the compactor"))
register_layer(L.Normalization, BarrierSpec("Normalization keeps its own per-feature statistics"))
register_layer(L.Lambda, BarrierSpec("a Lambda layer's computation is opaque"))
register_layer(L.MultiHeadAttention, MultiHeadAttentionSpec())
register_layer(L.GroupQueryAttention, GroupedQueryAttentionSpec())

_ELEMENTWISE_OP = ElementwiseOpSpec()


def fallback_spec(operation):
    """The spec of an operation with no registry entry."""
    if type(operation).__module__.startswith("keras_hub."):
        # keras-hub is optional: its entries are registered the first time one of its layers is seen.
        from keras_compact import hub

        if hub.register():  # True only the first time, so this cannot recurse
            from keras_compact.registry import spec_for

            return spec_for(operation)
    if adapter.elementwise_op_name(operation) is not None:
        return _ELEMENTWISE_OP
    if isinstance(operation, (L.RNN, L.MultiHeadAttention, L.Attention)):
        # A subclass (keras-hub's cached attention, say) is not assumed to
        # compute what its parent does: it needs an entry of its own.
        return BarrierSpec(f"{type(operation).__name__} mixes channels")
    return BarrierSpec(f"{type(operation).__name__} is not known to the compactor")
