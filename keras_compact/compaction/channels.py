"""Which channels can go: coupled channel groups and their removability.

Every channel of every tensor (the last axis; channels_last) gets a *slot*.
A layer that passes a channel through gives its output the input's slot; a
merge (Add, Multiply, ...) joins the slots of its inputs (union-find), so one
root slot names a group of channel positions that must go together. Layers
that produce neurons (Dense, convolutions) make fresh slots.

Alongside the slots each tensor carries the structural constant of each
channel (NaN where the channel is not constant), computed from weights only:
an all-zero kernel slice gives act(bias), BatchNorm maps constants affinely,
and so on.

A group is removed unless some position of it has a reason to stay:
- it is a model input or output, or it feeds or comes out of a barrier;
- a consumer (Dense, conv) reads it with non-zero weights, and it is not
  constant ("alive"), or it is a non-zero constant that the consumer cannot
  fold exactly into its bias (a 3x3 'same' conv at the borders).
"""

import dataclasses

import keras
import numpy as np

from keras_compact.registry import Barrier, has_neurons, spec_for

ALIVE = "alive"
MODEL_INPUT = "model input"
MODEL_OUTPUT = "model output"
# Why a call without channels (a mask, positions) is a barrier. It keeps
# channels only where they meet it, so any other reason names their group better.
NO_CHANNEL_AXIS = "has no known channel axis"


@dataclasses.dataclass
class TensorChannels:
    """The channels of one tensor: their slots, and their constants (NaN if not constant)."""

    slots: np.ndarray
    const: np.ndarray


class WeightCache:
    """Each variable's value as numpy, read once and shared by analysis and rebuild."""

    def __init__(self):
        self._values = {}

    def get(self, variable):
        key = id(variable)
        if key not in self._values:
            self._values[key] = keras.ops.convert_to_numpy(variable)
        return self._values[key]


class ChannelAnalysis:
    """Walks a `graph.Graph` once, applying each layer's registry entry, then decides.

    After `run()`: `kept(key)` and `const(key)` for every tensor with a
    channel axis, `reason(slot)` for a kept channel, and `barriers`.
    """

    def __init__(self, graph, weights, channel_multiple=1):
        self.graph = graph
        self.weights = weights
        self.channel_multiple = channel_multiple
        self.barriers = {}  # layer name -> why it is a barrier
        self.barrier_layers = set()  # id(layer) of layers rebuilt unchanged
        self._parent = []  # union-find forest over slots
        self._reasons = {}  # slot -> why its group is kept (first reason wins)
        self._structural = set()  # slots kept by the graph itself (inputs, outputs, barriers)
        self._tensors = {}  # TensorKey -> TensorChannels
        self._layer_slots = {}  # (id(layer), output index) -> slots: shared layers
        self._layer_inputs = {}  # (id(layer), input index) -> slots of the first call
        self._sink_constants = {}  # (id(layer), input index) -> constants of the first call
        self._removed = None

    # -- helpers used by the layer specs -------------------------------------

    def shape(self, key):
        return tuple(self.graph.tensors[key].shape)

    def channels(self, slots, const):
        return TensorChannels(np.asarray(slots, dtype=np.int64), np.asarray(const, dtype="float64"))

    def new_slots(self, n):
        start = len(self._parent)
        self._parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def output_slots(self, call, index, n):
        """Fresh slots for a neuron layer's output; the same ones for each call of a shared layer."""
        key = (id(call.layer), index)
        if key not in self._layer_slots:
            self._layer_slots[key] = self.new_slots(n)
        return self._layer_slots[key]

    def find(self, slot):
        parent = self._parent
        while parent[slot] != slot:
            parent[slot] = parent[parent[slot]]
            slot = parent[slot]
        return slot

    def union(self, slots_a, slots_b):
        for a, b in zip(slots_a.tolist(), slots_b.tolist()):
            root_a, root_b = self.find(a), self.find(b)
            if root_a != root_b:
                self._parent[root_b] = root_a

    def keep(self, slots, reason):
        """Keep `slots` for a reason of the graph's (an input, an output, a barrier), not of the weights."""
        for slot in np.unique(slots).tolist():
            if NO_CHANNEL_AXIS in self._reasons.get(slot, NO_CHANNEL_AXIS):
                self._reasons[slot] = reason
            self._structural.add(slot)

    # -- the walk -------------------------------------------------------------

    def _width(self, key):
        shape = self.shape(key)
        if len(shape) < 2 or shape[-1] is None:
            return None
        return shape[-1]

    def run(self):
        for key in self.graph.inputs:
            width = self._width(key)
            if width is not None:
                slots = self.new_slots(width)
                self.keep(slots, MODEL_INPUT)
                self._tensors[key] = self.channels(slots, np.full(width, np.nan))
        for call in self.graph.calls:
            self._visit(call)
        for key in self.graph.outputs:
            if key in self._tensors:
                self.keep(self._tensors[key].slots, MODEL_OUTPUT)
        self._decide()
        return self

    def _visit(self, call):
        spec = spec_for(call.layer)
        inputs = [self._tensors.get(key) for key in call.inputs]
        try:
            if id(call.layer) in self.barrier_layers:
                raise Barrier(self.barriers[call.name])
            if not inputs or (spec.needs_input_channels and any(source is None for source in inputs)):
                raise Barrier(f"an input {NO_CHANNEL_AXIS}")
            if any(self._width(key) is None for key in call.outputs):
                raise Barrier(f"an output {NO_CHANNEL_AXIS}")
            spec.check(call.layer, call, self)
            self._couple_shared_inputs(call, inputs, spec)
            outputs = spec.propagate(call, inputs, self)
        except Barrier as why:
            self._barrier(call, inputs, str(why))
            return
        for key, channels in zip(call.outputs, outputs):
            self._tensors[key] = channels
        for index, source in enumerate(inputs):
            found = spec.sink(call, index, self)
            if found is not None:
                self._check_sink(call, index, source, *found)

    def _couple_shared_inputs(self, call, inputs, spec):
        # A shared layer's weights (or channel counts in its config) are
        # rebuilt once: the channels it drops must be the same at every call,
        # so its inputs at each call are coupled.
        if not (getattr(call.layer, "weights", None) or spec.config_counts_channels):
            return
        for index, source in enumerate(inputs):
            if source is None:  # an input without channels (an attention mask)
                continue
            first = self._layer_inputs.setdefault((id(call.layer), index), source.slots)
            if first is not source.slots and len(first) == len(source.slots):
                self.union(first, source.slots)

    def _barrier(self, call, inputs, why):
        self.barriers.setdefault(call.name, why)
        self.barrier_layers.add(id(call.layer))
        kind = type(call.layer).__name__
        for source in inputs:
            if source is not None:
                self.keep(source.slots, f"feeds barrier '{call.name}' ({kind}): {why}")
        for index, key in enumerate(call.outputs):
            width = self._width(key)
            if width is None:
                continue
            slots = self.output_slots(call, index, width)
            self.keep(slots, f"made by barrier '{call.name}' ({kind}): {why}")
            self._tensors[key] = self.channels(slots, np.full(width, np.nan))

    def _check_sink(self, call, index, source, ignored, fold_exact, why_not):
        const = source.const
        first = self._sink_constants.setdefault((id(call.layer), index), const)
        if first is not const:
            # A shared layer folds into one bias: the constants must agree.
            const = np.where(first == const, const, np.nan)
        is_constant = ~np.isnan(const)
        ok = ignored | (const == 0) | (is_constant & fold_exact)
        for position in np.flatnonzero(~ok).tolist():
            slot = int(source.slots[position])
            if slot in self._reasons:
                continue
            if is_constant[position]:
                self._reasons[slot] = (
                    f"constant {const[position]:.4g} cannot be folded exactly into "
                    f"'{call.name}': {why_not}"
                )
            else:
                self._reasons[slot] = ALIVE

    def _decide(self):
        roots = np.array([self.find(slot) for slot in range(len(self._parent))], dtype=np.int64)
        self._roots = roots
        self._root_reasons = {}
        # The first reason of a group names it, one of a call without channels last.
        for slot, reason in sorted(self._reasons.items(), key=lambda item: NO_CHANNEL_AXIS in item[1]):
            self._root_reasons.setdefault(int(roots[slot]), reason)
        removed = np.ones(len(self._parent), dtype=bool)
        removed[list(self._root_reasons)] = False
        # Keras layers need at least one unit: a tensor that would lose every
        # channel keeps its first (keeping a channel is always exact).
        for channels in self._tensors.values():
            if len(channels.slots) and removed[roots[channels.slots]].all():
                root = int(roots[channels.slots[0]])
                removed[root] = False
                self._root_reasons[root] = "last channel (a layer needs at least one unit)"
        if self.channel_multiple > 1:
            self._round_widths_up(removed, roots)
        self._removed = removed[roots] if len(roots) else removed

    def _round_widths_up(self, removed, roots):
        """Keep removable channels until each neuron layer's width is a multiple.

        SIMD kernels (XNNPACK) compute channels in blocks of 4 or 8, so a
        width just past a multiple costs the whole next block. Keeping a
        removable channel is exact; coupled groups make one layer's choice
        change another's width, so repeat until nothing changes.
        """
        multiple = self.channel_multiple
        outputs = [
            (call, key)
            for call in self.graph.calls
            if has_neurons(call.layer)
            for key in call.outputs[:1]
            if key in self._tensors
        ]
        changed = True
        while changed:
            changed = False
            for call, key in outputs:
                channel_roots = roots[self._tensors[key].slots]
                width = int((~removed[channel_roots]).sum())
                target = min(-(-width // multiple) * multiple, len(channel_roots))
                for root in channel_roots.tolist():
                    if width >= target:
                        break
                    if removed[root]:
                        removed[root] = False
                        self._root_reasons[root] = (
                            f"rounds '{call.name}' up to a multiple of {multiple} channels"
                        )
                        width += int((channel_roots == root).sum())
                        changed = True

    # -- results --------------------------------------------------------------

    def has_channels(self, key):
        return key in self._tensors

    def kept(self, key):
        """Boolean mask over the channels of tensor `key`: True where the channel stays."""
        return ~self._removed[self._tensors[key].slots]

    def const(self, key):
        return self._tensors[key].const

    def neuron_roots(self, layer):
        """The coupled group (root slot) of each output channel of a layer with neurons."""
        return np.array([self.find(int(slot)) for slot in self._layer_slots[(id(layer), 0)]], dtype=np.int64)

    def structural_roots(self):
        """Groups that stay whatever the weights: they reach an input, an output or a barrier."""
        return {self.find(slot) for slot in self._structural}

    def reasons(self, key):
        """Why each kept channel of tensor `key` stays (None for removed channels)."""
        roots = self._roots[self._tensors[key].slots]
        return [self._root_reasons.get(int(root)) for root in roots]


class CallMasks:
    """What one call keeps: input and output channel masks, and constants to fold."""

    def __init__(self, analysis, call):
        self.analysis = analysis
        self.call = call

    def input(self, index):
        return self.analysis.kept(self.call.inputs[index])

    def output(self, index):
        return self.analysis.kept(self.call.outputs[index])

    def input_count(self, index):
        return int(self.input(index).sum())

    def output_count(self, index):
        return int(self.output(index).sum())

    def changes(self):
        keys = [*self.call.inputs, *self.call.outputs]
        return any(
            self.analysis.has_channels(key) and not self.analysis.kept(key).all() for key in keys
        )

    def fold_values(self, index):
        """The constants of the removed input channels (0 elsewhere), or None if all zero.

        A removed channel that is not constant is read with zero weights only
        (that is why it could go): its value does not matter, 0 stands in.
        """
        removed = ~self.input(index)
        if not removed.any():
            return None
        const = np.nan_to_num(self.analysis.const(self.call.inputs[index]), nan=0.0)
        values = np.where(removed, const, 0.0)
        return values if values.any() else None


def analyze(graph, weights, channel_multiple=1):
    return ChannelAnalysis(graph, weights, channel_multiple).run()
