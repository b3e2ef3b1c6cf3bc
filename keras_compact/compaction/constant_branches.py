"""Constant branches: an Add input that is the same vector for every input is folded away.

When every neuron of a transformer's feed-forward block dies, the block
still runs: LayerNormalization, a Dense of one unit (a layer needs one), its
activation, the output Dense and the residual Add, to add one constant
vector c to the residual stream. The same happens to an attention layer
whose heads are all inert. Those layers cost no multiply-adds worth the
name, but each is an operator with its own fixed cost (about 10 TFLite
operators per feed-forward block).

Here such an Add loses its constant inputs, and c goes into the bias of a
layer that makes one of its other inputs, where that bias is the last thing
the layer adds (`LayerSpec.output_bias`: Dense and convolutions without
activation, MultiHeadAttention's output projection, BatchNormalization's and
LayerNormalization's beta). In a pre-norm block

    x1 = x0 + MultiHeadAttention(LayerNormalization(x0))
    x2 = x1 + c

x2 becomes x0 + MultiHeadAttention'(...) with c in the attention's output
bias: the search goes through Adds whose only remaining reader is this one,
and through Dropout and noise layers (keras-hub's GPT-2 has one after its
attention). Those are the identity at inference, where the fold is exact;
in training the Dropout then drops c too, as it drops the rest of the bias
it follows.
The layers that only fed the constant are then unused and left out of the
model. The constants come from the channel analysis (weights only), so this
is exact up to float rounding, and `compact` verifies it with the rest.

An Add is left as it is when no input can take c: a model input or output
in the way, a layer read elsewhere too, shared, or with an activation after
its bias.
"""

import collections
import dataclasses

import keras
import numpy as np

from keras_compact import graph as graph_lib
from keras_compact.compaction.channels import WeightCache, analyze
from keras_compact.registry import spec_for


@dataclasses.dataclass
class BranchFold:
    """One Add that lost its constant inputs."""

    add: str  # the Add layer
    into: object  # the layer whose bias took the constant (None when the constant is 0)
    constant_inputs: list  # names of the layers that made the constant inputs
    max_abs_constant: float

    def to_dict(self):
        return dataclasses.asdict(self)


def fold_constant_branches(model):
    """(new model, [BranchFold]): `model` without the constant inputs of its Adds.

    The layers of `model` are shared with the new model and the taking
    biases are changed in place, so treat `model` as consumed (`compact`
    calls this on the model it has just built). With nothing to fold,
    `model` itself is returned.
    """
    graph = graph_lib.build_graph(model)
    plan = fold_plan(graph, analyze(graph, WeightCache()))
    if not plan.takers:
        return model, []

    folds = []
    for call, target in plan.takers.items():
        indices, constant = plan.candidates[call]
        if target is not None:
            bias = spec_for(target.layer).output_bias(target.layer)
            value = keras.ops.convert_to_numpy(bias).astype("float64") + constant
            bias.assign(value.astype(keras.backend.standardize_dtype(bias.dtype)))
        folds.append(
            BranchFold(
                add=call.name,
                into=None if target is None else target.name,
                constant_inputs=[graph.producer[call.inputs[i]][0].name for i in indices],
                max_abs_constant=float(np.abs(constant).max()),
            )
        )
    kept_inputs = {
        id(call.layer): [i for i in range(len(call.inputs)) if i not in plan.candidates[call][0]]
        for call in plan.takers
    }

    def call_function(layer, *args, **kwargs):
        if id(layer) not in kept_inputs:
            return layer(*args, **kwargs)
        inputs = [args[0][i] for i in kept_inputs[id(layer)]]
        if len(inputs) == 1:
            return inputs[0]
        return type(layer).from_config(layer.get_config())(inputs)

    functional = model
    if isinstance(model, keras.Sequential):
        functional = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    new_model = keras.models.clone_model(
        functional, clone_function=lambda layer: layer, call_function=call_function
    )
    return new_model, folds


@dataclasses.dataclass
class FoldPlan:
    """Which Adds of a graph lose their constant inputs, and what is left."""

    takers: dict  # {Add call: the call whose output bias takes its constant (None for a zero constant)}
    candidates: dict  # {Add call: (indices of its constant inputs, their sum)}, those of `takers` at least
    live: set  # the calls still computed once the constant inputs are cut


def fold_plan(graph, analysis):
    """The folds `fold_constant_branches` makes in `graph`, given its channel analysis.

    Refusals change what is live (a branch that stays keeps its layers read),
    so the plan is recomputed without the refused Adds until none is refused.
    `projected_size` counts the model this leaves, without building it.
    """
    calls_per_layer = collections.Counter(id(call.layer) for call in graph.calls)
    single_calls = {layer for layer, count in calls_per_layer.items() if count == 1}
    candidates = _candidate_adds(graph, analysis, single_calls)
    while True:
        cut = {(call, index) for call, (indices, _) in candidates.items() for index in indices}
        live = _live_calls(graph, cut)
        takers, refused = {}, []
        for call, (indices, constant) in candidates.items():
            if call not in live:
                continue
            if not constant.any():
                takers[call] = None
                continue
            target = _bias_taker(graph, call, cut, live, single_calls)
            if target is None:
                refused.append(call)
            else:
                takers[call] = target
        if not refused:
            return FoldPlan(takers, candidates, live)
        for call in refused:
            del candidates[call]


def _candidate_adds(graph, analysis, single_calls):
    """{Add call: (indices of its constant inputs, their sum)} where some input is not constant.

    An Add is a layer whose registry entry `sums_inputs`. One called more than
    once (not in `single_calls`) is left alone: its calls would need one answer.
    """
    candidates = {}
    for call in graph.calls:
        if not spec_for(call.layer).sums_inputs or id(call.layer) not in single_calls:
            continue
        if id(call.layer) in analysis.barrier_layers:
            continue
        output_shape = tuple(graph.tensors[call.outputs[0]].shape)
        constant, indices = None, []
        for index, key in enumerate(call.inputs):
            if key not in graph.producer or not analysis.has_channels(key):
                continue
            const = analysis.const(key)
            if np.isnan(const).any() or tuple(graph.tensors[key].shape) != output_shape:
                continue
            indices.append(index)
            constant = const if constant is None else constant + const
        if indices and len(indices) < len(call.inputs):
            candidates[call] = (indices, constant)
    return candidates


def _live_calls(graph, cut):
    """The calls whose outputs reach a model output through edges not in `cut`."""
    live = set()
    needed = set(graph.outputs)
    for call in reversed(graph.calls):
        if not any(key in needed for key in call.outputs):
            continue
        live.add(call)
        for index, key in enumerate(call.inputs):
            if (call, index) not in cut:
                needed.add(key)
    return live


def _bias_taker(graph, add_call, cut, live, single_calls):
    """The call whose output bias can take the constants of `add_call`, or None.

    Depth first through the Add's remaining inputs: a tensor qualifies when
    its only live reader is the Add; then its producer takes the constant if
    it has an output bias and one call, or is an Add, or a Dropout (the
    identity at inference), whose inputs are searched the same way.
    """
    output_shape = tuple(graph.tensors[add_call.outputs[0]].shape)
    for index, key in enumerate(add_call.inputs):
        if (add_call, index) in cut or key in graph.outputs or key not in graph.producer:
            continue
        if tuple(graph.tensors[key].shape) != output_shape:
            continue  # broadcast: a bias there would not be added at every position
        readers = [
            use for use in graph.consumers.get(key, []) if use[0] in live and use not in cut
        ]
        if readers != [(add_call, index)]:
            continue
        producer, _ = graph.producer[key]
        layer = producer.layer
        if id(layer) not in single_calls or len(producer.outputs) != 1:
            continue
        if spec_for(layer).sums_inputs or spec_for(layer).identity_at_inference:
            found = _bias_taker(graph, producer, cut, live, single_calls)
            if found is not None:
                return found
            continue
        if spec_for(layer).output_bias(layer) is not None:
            return producer
    return None
