"""Per-layer compaction rules: ONE table keyed by layer class.

A rule says, for one layer class, three things:

- `propagate`: how the layer moves channels from its inputs to its outputs
  (which output channel is the same channel as which input channel, and
  which channels are structurally constant, with their value);
- `sink`: for a layer that *consumes* channels (Dense, convolutions), which
  input channels it ignores (all outgoing weights zero) and whether a constant
  input channel can be folded exactly into its bias;
- `rebuild`: the layer's new config and weights without some channels.

Only channels_last layouts are understood; a layer that mixes channels any
other way, or that this table does not know, is a barrier (`BarrierRule`):
the channels around it are kept, and the report says why. Adding a layer type
is one entry in `RULES`.
"""

import keras
import numpy as np
from keras.src.ops import numpy as ops_numpy  # the op classes are not public

_ELEMENTWISE_OPS = (
    ops_numpy.Add,
    ops_numpy.Subtract,
    ops_numpy.Multiply,
    ops_numpy.Divide,
    ops_numpy.TrueDivide,
    ops_numpy.Maximum,
    ops_numpy.Minimum,
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


class Barrier(Exception):
    """Raised by a rule when this call must be treated as a barrier; the message says why."""


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


def _is_channels_last(layer):
    return getattr(layer, "data_format", "channels_last") != "channels_first"


def _spatial_sum_matrix(kernel):
    """A conv kernel (*k, in, out) summed over its window: (in, out)."""
    return kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]).sum(axis=0)


class Rule:
    """Default behaviour: a barrier. Subclasses override what they understand."""

    # Whether the layer's own output channels are neurons it can drop.
    produces_neurons = False
    # Whether `rebuild` writes a channel count into the config (a Reshape's
    # target shape, a Dropout's noise shape): a shared layer is rebuilt once,
    # so its calls must keep the same channels, as for a layer with weights.
    config_counts_channels = False

    def check(self, layer, call, analysis):
        """Raise `Barrier` if this call cannot be handled by the rule."""

    def propagate(self, call, inputs, analysis):
        """Output `TensorChannels`, one per output of `call`."""
        raise NotImplementedError

    def sink(self, call, input_index, analysis):
        """For a consumer: (ignored rows (bool per input channel), fold_exact, why_not).

        None when the layer consumes no channel on this input (it passes them).
        """
        return None

    def rebuild(self, layer, masks, weights):
        """(config, {attribute: new value}) for the layer without the dropped channels.

        `masks` is a `CallMasks` (kept input/output channels and the constants of
        removed inputs); `weights` a `WeightCache`.
        """
        return layer.get_config(), None


def _check_channels_last(layer):
    if not _is_channels_last(layer):
        raise Barrier("channels_first layout is not supported by the compactor")


class BarrierRule(Rule):
    """A layer that mixes channels (or that the compactor does not know)."""

    def __init__(self, why="mixes channels"):
        self.why = why

    def check(self, layer, call, analysis):
        raise Barrier(self.why)


class PassThroughRule(Rule):
    """Channels pass unchanged; a constant channel stays the same constant."""

    def check(self, layer, call, analysis):
        _check_channels_last(layer)

    def value(self, layer, const):
        return const

    def propagate(self, call, inputs, analysis):
        source = inputs[0]
        return [analysis.channels(source.slots, self.value(call.layer, source.const))]


class IdentityAtInferenceRule(PassThroughRule):
    """Dropout and noise layers: the identity at inference."""

    config_counts_channels = True

    def rebuild(self, layer, masks, weights):
        config = layer.get_config()
        noise_shape = config.get("noise_shape")
        if noise_shape and noise_shape[-1] not in (None, 1):
            config["noise_shape"] = tuple(noise_shape[:-1]) + (masks.output_count(0),)
        return config, None


class ZeroPaddingRule(PassThroughRule):
    """Pads with zeros: a constant survives only if it is zero."""

    def value(self, layer, const):
        return np.where(const == 0, const, np.nan)


class ElementwiseActivationRule(PassThroughRule):
    """Activation layers (ReLU, ELU, Activation('relu'), ...)."""

    def check(self, layer, call, analysis):
        if isinstance(layer, keras.layers.Activation):
            name = activation_name(layer.activation)
            if name not in ELEMENTWISE_ACTIVATIONS:
                raise Barrier(f"activation '{name}' mixes channels")

    def value(self, layer, const):
        return apply_elementwise(layer, const)


class RescalingRule(PassThroughRule):
    def check(self, layer, call, analysis):
        if np.ndim(layer.scale) or np.ndim(layer.offset):
            raise Barrier("per-channel Rescaling is not supported")

    def value(self, layer, const):
        return const * float(layer.scale) + float(layer.offset)


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


class BatchNormalizationRule(PassThroughRule):
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
        n = len(source.slots)
        gamma, scale, shift = self._affine(call.layer, analysis.weights, n)
        value = source.const * scale + shift
        # gamma = 0: the output is beta whatever the input.
        value = np.where(gamma == 0, shift, value)
        return [analysis.channels(source.slots, value)]

    def rebuild(self, layer, masks, weights):
        kept = masks.input(0)
        names = ["gamma", "beta", "moving_mean", "moving_variance"]
        new = {
            name: weights.get(getattr(layer, name))[kept]
            for name in names
            if getattr(layer, name, None) is not None
        }
        return layer.get_config(), new


class ReshapeRule(PassThroughRule):
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
            return FlattenRule().propagate(call, inputs, analysis)
        return super().propagate(call, inputs, analysis)

    def rebuild(self, layer, masks, weights):
        config = layer.get_config()
        target = list(config["target_shape"])
        if target[-1] != -1:
            target[-1] = masks.output_count(0) if len(target) == 1 else masks.input_count(0)
        config["target_shape"] = tuple(target)
        return config, None


class FlattenRule(PassThroughRule):
    """(..., C) -> (prod(...) * C,): channel c becomes every index = c mod C."""

    def check(self, layer, call, analysis):
        _check_channels_last(layer)
        if None in analysis.shape(call.inputs[0])[1:]:
            raise Barrier("Flatten of an input with unknown spatial size")

    def propagate(self, call, inputs, analysis):
        source = inputs[0]
        positions = int(np.prod(analysis.shape(call.inputs[0])[1:-1] or (1,)))
        return [analysis.channels(np.tile(source.slots, positions), np.tile(source.const, positions))]


class PermuteRule(PassThroughRule):
    def check(self, layer, call, analysis):
        if tuple(layer.dims)[-1] != len(layer.dims):
            raise Barrier(f"Permute{tuple(layer.dims)} moves the channel axis")


class MergeRule(Rule):
    """Add, Multiply, ...: channel c of every input is one channel (coupled)."""

    def __init__(self, combine):
        self.combine = combine  # numpy reduction over stacked constants

    def check(self, layer, call, analysis):
        sizes = {analysis.shape(key)[-1] for key in call.inputs}
        if len(sizes) != 1:
            raise Barrier("merges inputs with different channel counts (broadcast)")

    def propagate(self, call, inputs, analysis):
        slots = inputs[0].slots
        for other in inputs[1:]:
            analysis.union(slots, other.slots)
        stacked = np.stack([source.const for source in inputs])
        value = self.combine(stacked)
        if self.combine is _product:
            # 0 times anything is 0: the product is constant when one factor is 0.
            value = np.where(np.any(stacked == 0, axis=0), 0.0, value)
        return [analysis.channels(slots, value)]


def _product(stacked):
    return np.prod(stacked, axis=0)


def _difference(stacked):
    return stacked[0] - stacked[1]


class ConcatenateRule(Rule):
    def check(self, layer, call, analysis):
        _require_channel_axis(layer.axis, call.outputs[0], analysis, "Concatenate")

    def propagate(self, call, inputs, analysis):
        return [
            analysis.channels(
                np.concatenate([s.slots for s in inputs]),
                np.concatenate([s.const for s in inputs]),
            )
        ]


def _folded_bias(config, bias, contribution, dtype):
    """bias + what the removed constant inputs contributed; a layer without bias gets one."""
    if bias is None:
        config["use_bias"] = True
        bias = np.zeros(contribution.shape, dtype)
    return (bias.astype("float64") + contribution).astype(dtype)


class NeuronRule(Rule):
    """Dense and convolutions: consume input channels, produce neurons.

    `kernel_axes` = (input axis, output axis) of the kernel.
    """

    produces_neurons = True
    count_key = "filters"

    def __init__(self, count_key="filters", transposed=False):
        self.count_key = count_key
        self.transposed = transposed

    def kernel_axes(self, kernel):
        return (kernel.ndim - 1, kernel.ndim - 2) if self.transposed else (kernel.ndim - 2, kernel.ndim - 1)

    def check(self, layer, call, analysis):
        _check_channels_last(layer)
        if getattr(layer, "groups", 1) != 1:
            raise Barrier("grouped convolution mixes channels in groups")
        if getattr(layer, "lora_enabled", False):
            raise Barrier("LoRA-enabled layer")

    def _kernel(self, layer, weights):
        kernel = weights.get(layer.kernel)
        if kernel.ndim == 2:  # Dense: (in, out)
            return kernel, 0, 1
        in_axis, out_axis = self.kernel_axes(kernel)
        return kernel, in_axis, out_axis

    def propagate(self, call, inputs, analysis):
        layer = call.layer
        kernel, _, out_axis = self._kernel(layer, analysis.weights)
        n = kernel.shape[out_axis]
        other_axes = tuple(a for a in range(kernel.ndim) if a != out_axis)
        dead = ~np.any(kernel != 0, axis=other_axes)
        slots = analysis.output_slots(call, 0, n)
        bias = analysis.weights.get(layer.bias) if layer.use_bias else np.zeros(n)
        return _activated(call, slots, np.where(dead, bias.astype("float64"), np.nan), analysis)

    def fold_exact(self, layer):
        if isinstance(layer, keras.layers.Dense):
            return True, ""
        if self.transposed:
            return False, "a transposed convolution spreads a constant unevenly at the borders"
        if layer.padding == "valid" or all(k == 1 for k in layer.kernel_size):
            return True, ""
        size = "x".join(str(k) for k in layer.kernel_size)
        return False, f"{size} '{layer.padding}' padding sees the constant only partly at the borders"

    def sink(self, call, input_index, analysis):
        kernel, in_axis, _ = self._kernel(call.layer, analysis.weights)
        other_axes = tuple(a for a in range(kernel.ndim) if a != in_axis)
        ignored = ~np.any(kernel != 0, axis=other_axes)
        exact, why = self.fold_exact(call.layer)
        return ignored, exact, why

    def rebuild(self, layer, masks, weights):
        kernel, in_axis, out_axis = self._kernel(layer, weights)
        kept_in, kept_out = masks.input(0), masks.output(0)
        config = layer.get_config()
        bias = weights.get(layer.bias) if layer.use_bias else None
        fold = masks.fold_values(0)
        if fold is not None:
            # sum_window(kernel) . constant: what the removed inputs added to every output.
            k = np.moveaxis(kernel, (in_axis, out_axis), (-2, -1))
            contribution = fold.astype("float64") @ _spatial_sum_matrix(k).astype("float64")
            bias = _folded_bias(config, bias, contribution, kernel.dtype)
        if not kept_in.all():
            kernel = np.compress(kept_in, kernel, axis=in_axis)
        if not kept_out.all():
            kernel = np.compress(kept_out, kernel, axis=out_axis)
            if bias is not None:
                bias = bias[kept_out]
        config[self.count_key] = int(kept_out.sum())
        new = {"kernel": kernel}
        if bias is not None:
            new["bias"] = bias
        return config, new


class DepthwiseRule(Rule):
    """DepthwiseConv: channel c of the input is output channels c*m .. c*m+m-1."""

    def check(self, layer, call, analysis):
        _check_channels_last(layer)

    def fold_exact(self, layer):
        return layer.padding == "valid" or all(k == 1 for k in layer.kernel_size)

    def propagate(self, call, inputs, analysis):
        layer, source = call.layer, inputs[0]
        kernel = analysis.weights.get(layer.kernel)  # (*k, in, m)
        multiplier = kernel.shape[-1]
        window_sum = kernel.reshape(-1, kernel.shape[-2], multiplier).sum(axis=0)
        dead = ~np.any(kernel.reshape(-1, kernel.shape[-2], multiplier) != 0, axis=0)
        const = source.const[:, None]
        # A constant input gives a constant output where the whole window sees it.
        through = np.where((const == 0) | self.fold_exact(layer), const * window_sum, np.nan)
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


class SeparableRule(NeuronRule):
    """SeparableConv: a depthwise part carries input channels into the pointwise neurons."""

    def __init__(self):
        super().__init__("filters")

    def _kernel(self, layer, weights):
        kernel = weights.get(layer.pointwise_kernel)  # (1.., in*m, out)
        return kernel, kernel.ndim - 2, kernel.ndim - 1

    def _depthwise_rows(self, layer, weights):
        """Each pointwise row's depthwise filter window sum, and whether it is all zero."""
        depthwise = weights.get(layer.depthwise_kernel)  # (*k, in, m)
        flat = depthwise.reshape(-1, depthwise.shape[-2] * depthwise.shape[-1])
        return flat.sum(axis=0), ~np.any(flat != 0, axis=0), depthwise.shape[-1]

    def sink(self, call, input_index, analysis):
        layer = call.layer
        pointwise = self._kernel(layer, analysis.weights)[0]
        _, depthwise_zero, multiplier = self._depthwise_rows(layer, analysis.weights)
        rows = pointwise.reshape(-1, pointwise.shape[-1])
        row_ignored = ~np.any(rows != 0, axis=1) | depthwise_zero
        ignored = row_ignored.reshape(-1, multiplier).all(axis=1)
        exact = layer.padding == "valid" or all(k == 1 for k in layer.kernel_size)
        size = "x".join(str(k) for k in layer.kernel_size)
        return ignored, exact, f"depthwise {size} '{layer.padding}' padding sees the constant only partly"

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
        kept_rows = np.repeat(kept_in, multiplier)
        depthwise = np.compress(kept_in, depthwise, axis=depthwise.ndim - 2)
        pointwise = np.compress(kept_rows, pointwise, axis=pointwise.ndim - 2)
        pointwise = np.compress(kept_out, pointwise, axis=pointwise.ndim - 1)
        config["filters"] = int(kept_out.sum())
        new = {"depthwise_kernel": depthwise, "pointwise_kernel": pointwise}
        if bias is not None:
            new["bias"] = bias[kept_out]
        return config, new


class ElementwiseOpRule(Rule):
    """Raw keras.ops arithmetic in a functional graph (`x + 3.0`, `x * y`, as in MobileNetV3).

    Tensor operands are coupled channel by channel, as by a merge layer;
    other operands must be scalars. Constants are computed by the op itself.
    """

    def check(self, layer, call, analysis):
        if len({analysis.shape(key)[-1] for key in call.inputs}) != 1:
            raise Barrier(f"{type(layer).__name__} broadcasts channels")
        arguments = call.node.arguments
        for value in keras.tree.flatten((arguments.args, arguments.kwargs)):
            if not isinstance(value, keras.KerasTensor) and np.ndim(value) != 0:
                raise Barrier(f"{type(layer).__name__} with a non-scalar constant operand")

    def propagate(self, call, inputs, analysis):
        slots = inputs[0].slots
        for other in inputs[1:]:
            analysis.union(slots, other.slots)
        constants = {
            id(tensor): keras.ops.convert_to_tensor(source.const[None].astype("float32"))
            for tensor, source in zip(call.node.input_tensors, inputs)
        }
        args, kwargs = call.node.arguments.fill_in(constants)
        value = keras.ops.convert_to_numpy(call.layer(*args, **kwargs))
        value = np.broadcast_to(value, (1, len(slots)))[0].astype("float64")
        return [analysis.channels(slots, value)]


L = keras.layers

# THE table. Looked up by exact class first, then along the class's MRO, so a
# subclass of a known layer gets its parent's rule only if it is registered.
RULES = {
    L.Dense: NeuronRule("units"),
    L.Conv1D: NeuronRule(),
    L.Conv2D: NeuronRule(),
    L.Conv3D: NeuronRule(),
    L.Conv1DTranspose: NeuronRule(transposed=True),
    L.Conv2DTranspose: NeuronRule(transposed=True),
    L.Conv3DTranspose: NeuronRule(transposed=True),
    L.DepthwiseConv1D: DepthwiseRule(),
    L.DepthwiseConv2D: DepthwiseRule(),
    L.SeparableConv1D: SeparableRule(),
    L.SeparableConv2D: SeparableRule(),
    L.BatchNormalization: BatchNormalizationRule(),
    L.Activation: ElementwiseActivationRule(),
    L.ReLU: ElementwiseActivationRule(),
    L.LeakyReLU: ElementwiseActivationRule(),
    L.ELU: ElementwiseActivationRule(),
    L.Rescaling: RescalingRule(),
    L.Dropout: IdentityAtInferenceRule(),
    L.SpatialDropout1D: IdentityAtInferenceRule(),
    L.SpatialDropout2D: IdentityAtInferenceRule(),
    L.SpatialDropout3D: IdentityAtInferenceRule(),
    L.GaussianDropout: IdentityAtInferenceRule(),
    L.GaussianNoise: IdentityAtInferenceRule(),
    L.AlphaDropout: IdentityAtInferenceRule(),
    L.ActivityRegularization: IdentityAtInferenceRule(),
    L.Identity: IdentityAtInferenceRule(),
    L.MaxPooling1D: PassThroughRule(),
    L.MaxPooling2D: PassThroughRule(),
    L.MaxPooling3D: PassThroughRule(),
    L.AveragePooling1D: PassThroughRule(),
    L.AveragePooling2D: PassThroughRule(),
    L.AveragePooling3D: PassThroughRule(),
    L.GlobalMaxPooling1D: PassThroughRule(),
    L.GlobalMaxPooling2D: PassThroughRule(),
    L.GlobalMaxPooling3D: PassThroughRule(),
    L.GlobalAveragePooling1D: PassThroughRule(),
    L.GlobalAveragePooling2D: PassThroughRule(),
    L.GlobalAveragePooling3D: PassThroughRule(),
    L.UpSampling1D: PassThroughRule(),
    L.UpSampling2D: PassThroughRule(),
    L.UpSampling3D: PassThroughRule(),
    L.Cropping1D: PassThroughRule(),
    L.Cropping2D: PassThroughRule(),
    L.Cropping3D: PassThroughRule(),
    L.RepeatVector: PassThroughRule(),
    L.ZeroPadding1D: ZeroPaddingRule(),
    L.ZeroPadding2D: ZeroPaddingRule(),
    L.ZeroPadding3D: ZeroPaddingRule(),
    L.Flatten: FlattenRule(),
    L.Reshape: ReshapeRule(),
    L.Permute: PermuteRule(),
    L.Add: MergeRule(lambda s: np.sum(s, axis=0)),
    L.Subtract: MergeRule(_difference),
    L.Multiply: MergeRule(_product),
    L.Average: MergeRule(lambda s: np.mean(s, axis=0)),
    L.Maximum: MergeRule(lambda s: np.max(s, axis=0)),
    L.Minimum: MergeRule(lambda s: np.min(s, axis=0)),
    L.Concatenate: ConcatenateRule(),
    L.Softmax: BarrierRule("softmax mixes channels"),
    L.LayerNormalization: BarrierRule("LayerNormalization mixes channels"),
    L.GroupNormalization: BarrierRule("GroupNormalization mixes channels"),
    L.UnitNormalization: BarrierRule("UnitNormalization mixes channels"),
    L.Normalization: BarrierRule("Normalization keeps its own per-feature statistics"),
    L.Lambda: BarrierRule("a Lambda layer's computation is opaque"),
    # Operations that `x + 3.0` and the like put into a functional graph.
    **{op: ElementwiseOpRule() for op in _ELEMENTWISE_OPS},
}


def rule_for(layer):
    rule = RULES.get(type(layer))
    if rule is not None:
        return rule
    if isinstance(layer, (L.RNN, L.MultiHeadAttention, L.Attention)):
        return BarrierRule(f"{type(layer).__name__} mixes channels")
    return BarrierRule(f"{type(layer).__name__} is not known to the compactor")

