"""The layer registry: one entry per layer class says all keras-compact knows of it.

An entry is a `LayerSpec`. It answers, for its layer class:

- neurons: `neurons(layer)`, the kernel seen as (pre, n, post) so that
  neuron j is `[:, j, :]` (penalties, NeuronMonitor, the budget); None when
  the layer has no neurons of its own;
- channels: `check`, `propagate`, `sink`, `rebuild` (compaction): how the
  layer moves channels from inputs to outputs and which are constant, which
  input channels it ignores or can fold, and its config and weights without
  some channels;
- cost: `macs(call, graph, weights)`, multiply-adds of one call per sample;
  parameters are counted from the weights `rebuild` returns;
- output bias: `output_bias(layer)`, the variable added last to each output
  channel, into which the compactor folds a constant branch that an Add
  sums with the layer's output (`compaction/constant_branches.py`);
- low rank: `low_rank` (whether `TensorLowRank` may act on its kernel) and
  `factorizations(layer, rtol)` (two thin layers that compute the same);
- heads: `heads(layer)`, an attention layer's heads seen as neurons, so
  that head h is `[:, h, :]` of every member (`HeadLasso`);
- blocks: `sublayers(layer)`, the layers inside a block (a keras-hub
  transformer block, say) that penalties may act on while the block is
  trained as it is, and `expand(layer, args, kwargs)`, the same computation
  in stock Keras layers, which the compactor builds before it removes
  anything.

A layer class with no entry is a barrier: the compactor keeps the channels
around it and says why. Teach the library a layer of your own with
`register_layer(MyLayer, spec)`; see README.md ("Your own layers").
"""

import dataclasses

import keras
import numpy as np

_REGISTRY = {}


class Barrier(Exception):
    """Raised by a spec when this call must be treated as a barrier; the message says why."""


@dataclasses.dataclass(eq=False)
class Member:
    """One variable of a neuron group, seen as (pre, n, post): neuron j is [:, j, :]."""

    variable: keras.Variable
    pre: int
    n: int
    post: int

    def view(self, value):
        return keras.ops.reshape(value, (self.pre, self.n, self.post))

    def unview(self, value):
        return keras.ops.reshape(value, tuple(self.variable.shape))


def output_view(variable):
    """A variable whose last axis indexes the neurons: (prod(rest), n, 1)."""
    shape = tuple(variable.shape)
    return Member(variable, int(np.prod(shape[:-1])), shape[-1], 1)


def zero_slices(array, axis):
    """Boolean per index of `axis`: the slice of `array` there is all zero."""
    other = tuple(a for a in range(array.ndim) if a != axis % array.ndim)
    return ~np.any(array != 0, axis=other)


def is_channels_last(layer):
    return getattr(layer, "data_format", "channels_last") != "channels_first"


def channel_axis(layer, rank):
    """The axis (non-negative) of a layer's output that indexes its channels."""
    return rank - 1 if is_channels_last(layer) else 1


def require_channels_last(layer):
    if not is_channels_last(layer):
        raise Barrier("channels_first layout is not supported by the compactor")


def window_sees_every_position(layer):
    """Whether each output of a windowed layer reads a full window ('valid' or 1x1).

    Then a constant input channel contributes the same amount to every output
    position, so it folds exactly into a bias; with 'same' padding the border
    positions see only part of it.
    """
    return layer.padding == "valid" or all(k == 1 for k in layer.kernel_size)


def positions(shape, layer):
    """Positions a per-position layer runs at (all axes but batch and channels); None if unknown."""
    shape = tuple(shape)
    axis = channel_axis(layer, len(shape))
    dims = shape[1:axis] + shape[axis + 1 :]
    return None if None in dims else int(np.prod(dims, dtype=np.int64))


class LayerSpec:
    """Everything keras-compact knows of one layer class. The defaults: a barrier.

    Subclass it (or `PassThroughSpec`, `NeuronSpec`) and override what your
    layer supports; `register_layer` puts it in the registry.
    """

    # Whether TensorLowRank may act on the layer's kernel (and `factorizations`
    # can split it).
    low_rank = False
    # Whether `rebuild` writes a channel count into the config (a Reshape's
    # target shape, a Dropout's noise shape): a shared layer is rebuilt once,
    # so its calls must keep the same channels, as for a layer with weights.
    config_counts_channels = False
    # Whether every input must have a channel axis (an input without one makes
    # the call a barrier); False for a layer that also takes masks, say.
    needs_input_channels = True
    # Whether the output is the elementwise sum of the inputs (Add): the
    # constant-branch fold may then drop a constant input into a bias.
    sums_inputs = False
    # Whether the layer is the identity at inference (Dropout, noise layers):
    # the fold may add that constant to a bias on the layer's far side.
    identity_at_inference = False

    def __init__(self, why="is not known to the compactor"):
        self.why = why

    # -- neurons ---------------------------------------------------------------

    def neurons(self, layer):
        """The `Member` whose [:, j, :] is neuron j's kernel slice, or None."""
        return None

    # -- channels (compaction) -------------------------------------------------

    def check(self, layer, call, analysis):
        """Raise `Barrier` if this call cannot be handled."""
        raise Barrier(f"{type(layer).__name__} {self.why}")

    def propagate(self, call, inputs, analysis):
        """Output `TensorChannels`, one per output of `call`."""
        raise NotImplementedError

    def sink(self, call, input_index, analysis):
        """For a consumer: (ignored input channels, fold_exact, why_not), else None.

        `ignored` is a boolean per input channel (all outgoing weights zero);
        `fold_exact` whether a constant input channel folds exactly into the
        layer's bias. None when the layer passes channels rather than reading
        them.
        """
        return None

    def changes(self, layer, masks, weights):
        """Whether `rebuild` would change the layer (by default: whether any of its channels go)."""
        return masks.changes()

    def rebuild(self, layer, masks, weights):
        """(config, {attribute: new value} or None) without the dropped channels.

        `masks` is a `CallMasks` (kept input/output channels and the constants
        of removed inputs); `weights` a `WeightCache`. A dict must hold every
        weight of the new layer (parameters are counted from it), keyed by
        attribute ('kernel') or, for a sublayer's weight, by the end of its
        path ('query/kernel'); None keeps the weights as they are.
        """
        return layer.get_config(), None

    def output_bias(self, layer):
        """The variable (C,) added last to output channel c at every position, or None.

        Nothing may follow it in the layer (no activation), so that adding a
        constant vector to the layer's output is the same as adding it to this
        variable.
        """
        return None

    # -- cost --------------------------------------------------------------------

    def macs(self, call, graph, weights):
        """Multiply-adds of one call for one sample (None where a shape is unknown).

        `weights` maps attribute name to array shape for the layer as it will
        be (after `rebuild`), or is None for the layer as it is.
        """
        return 0

    # -- heads and blocks --------------------------------------------------------

    def heads(self, layer):
        """The `Member`s whose [:, h, :] together are attention head h, or None."""
        return None

    def sublayers(self, layer):
        """Layers inside `layer` that penalties may act on, each through its own entry."""
        return []

    def expand(self, layer, args, kwargs):
        """The outputs of `layer(*args, **kwargs)` computed by stock Keras layers, or None.

        `args` and `kwargs` hold the call's symbolic inputs. The new layers
        carry copies of the layer's weights; None means the layer cannot be
        expanded (it stays one layer, and a barrier if it has no other rule).
        """
        return None

    # -- low rank ----------------------------------------------------------------

    def factorizations(self, layer, rtol):
        """Candidate two-layer forms of `layer` (`factorize.Plan`s); [] if none."""
        return []


def register_layer(layer_class, spec):
    """Teach keras-compact a layer class: `spec` is a `LayerSpec` instance.

    The entry applies to exactly `layer_class` (a subclass of a known layer
    is not assumed to behave like its parent). Registering a class again
    replaces its entry.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.Operation)):
        raise TypeError(
            f"register_layer: layer_class must be a keras.layers.Layer subclass, got {layer_class!r}."
        )
    if not isinstance(spec, LayerSpec):
        raise TypeError(
            f"register_layer({layer_class.__name__}, ...): spec must be a keras_compact.LayerSpec "
            f"instance (e.g. PassThroughSpec() or a subclass of NeuronSpec), got {spec!r}."
        )
    _REGISTRY[layer_class] = spec


def spec_for(operation):
    """The registry entry of a layer (or raw operation); a barrier spec if it has none."""
    from keras_compact import builtin_layers  # noqa: F401 (registers the built-in entries)

    spec = _REGISTRY.get(type(operation))
    if spec is not None:
        return spec
    return builtin_layers.fallback_spec(operation)


def is_registered(operation):
    """Whether the library knows `operation` (a registry entry, or raw keras.ops arithmetic)."""
    from keras_compact import _keras_adapter as adapter

    return type(operation) in _REGISTRY or adapter.elementwise_op_name(operation) is not None


def has_neurons(layer):
    """Whether `layer` has neurons that penalties can act on."""
    return spec_for(layer).neurons(layer) is not None
