"""Expansion: blocks replaced by the same computation in stock Keras layers.

A transformer block of keras-hub is one layer whose inside the compactor
cannot reshape: its config fixes the head size (hidden_dim // num_heads) and
its sublayers are private. A layer whose registry entry can `expand` it is
replaced, in a new Functional model, by the outputs of `spec.expand`: stock
Keras layers (and raw `keras.ops` where Keras has no layer) carrying copies of
its weights. Every other layer becomes a copy of itself (same config, same
weights); the original model is not touched. `compact` verifies the expanded
model against the original before it removes anything.

Expanders build their layers with `call_stock` (a fresh stock layer, called
on the symbolic inputs, then given its weights) and say what they decided
with `note`; both are recorded in the call's `Expansion`. An expander that
cannot expand one call (an argument it does not support) raises
`registry.Barrier` with the reason: the layer is then copied as it is, a
barrier for the compactor, and the reason is recorded.
"""

import contextlib
import contextvars
import dataclasses

import keras
import numpy as np

from keras_compact import _keras_adapter as adapter
from keras_compact import graph as graph_lib
from keras_compact.compaction.rebuild import _from_config, _unique_name
from keras_compact.numerics import outputs_differ
from keras_compact.registry import Barrier, LayerSpec, spec_for


@dataclasses.dataclass
class Expansion:
    """One expanded call (or one that could not be expanded, with `why_not`)."""

    name: str
    type: str
    layers: int  # stock layers (and raw ops not counted) it became
    notes: list  # what the expander decided, in words
    why_not: str = None  # set when the call stayed one layer


class _Pass:
    """Names used in the model being built, and what the current expander did."""

    def __init__(self, used_names):
        self.used = used_names
        self.layers = 0
        self.notes = []

    def unique(self, name):
        candidate, suffix = name, 1
        while candidate in self.used:
            candidate, suffix = f"{name}_{suffix}", suffix + 1
        self.used.add(candidate)
        return candidate


_CURRENT = contextvars.ContextVar("keras_compact_expansion", default=None)


@contextlib.contextmanager
def _expanding(used_names):
    state = _Pass(used_names)
    token = _CURRENT.set(state)
    try:
        yield state
    finally:
        _CURRENT.reset(token)


def note(text):
    """Record a decision of the running expander (shown in the compaction report)."""
    state = _CURRENT.get()
    if state is not None:
        state.notes.append(text)


def call_stock(cls, config, weights, *args, **kwargs):
    """`cls.from_config(config)` called on symbolic `args`, then given `weights`.

    `weights` is a list in the new layer's `get_weights()` order (None: the
    layer has none, or keeps its initial values). The name in `config` is
    made unique within the model being expanded.
    """
    config = dict(config)
    state = _CURRENT.get()
    if state is not None:
        config["name"] = state.unique(config.get("name") or keras.utils.to_snake_case(cls.__name__))
        state.layers += 1
    layer = cls.from_config(config)
    outputs = layer(*args, **kwargs)
    if weights is not None:
        layer.set_weights([np.asarray(w) for w in weights])
    return outputs


def expands(layer):
    """Whether the registry entry of `layer` has an expansion hook."""
    return type(spec_for(layer)).expand is not LayerSpec.expand


def expand_model(model):
    """(expanded model, [Expansion]): each call whose entry expands it, replaced.

    Returns `(model, [])` when no layer of `model` has an expansion hook.
    Inputs and outputs keep their structure (dicts of token ids and masks,
    several outputs); nested models are flattened, as by the compactor.
    """
    graph = graph_lib.build_graph(model)
    if not any(expands(call.layer) for call in graph.calls):
        return model, []
    functional = adapter.functional_of(model)
    new_tensors, new_inputs = {}, []
    for key in graph.inputs:
        tensor = graph.tensors[key]
        history = getattr(tensor, "_keras_history", None)
        name = history.operation.name if history is not None else None
        new_tensors[key] = keras.Input(batch_shape=tuple(tensor.shape), dtype=tensor.dtype, name=name)
        new_inputs.append(new_tensors[key])
    used = {t.name for t in new_inputs}
    expansions, copies = [], {}
    for call in graph.calls:
        tensor_dict = {id(t): new_tensors[key] for t, key in zip(call.input_tensors, call.inputs)}
        args, kwargs = adapter.fill_in_arguments(call.arguments, tensor_dict)
        outputs = None
        if expands(call.layer):
            with _expanding(used) as state:
                try:
                    outputs = spec_for(call.layer).expand(call.layer, args, kwargs)
                    why_not = None if outputs is not None else "its entry gives no expansion"
                except Barrier as why:
                    why_not = str(why)
            expansions.append(
                Expansion(call.name, type(call.layer).__name__, state.layers, state.notes, why_not)
            )
        if outputs is None:
            outputs = _call_copy(call, args, kwargs, copies, used)
        for key, output in zip(call.outputs, keras.tree.flatten(outputs)):
            new_tensors[key] = output
    inputs = keras.tree.pack_sequence_as(adapter.input_structure(functional), new_inputs)
    outputs = keras.tree.pack_sequence_as(
        adapter.output_structure(functional), [new_tensors[key] for key in graph.outputs]
    )
    if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
        inputs = inputs[0]
    return keras.Model(inputs=inputs, outputs=outputs, name=model.name), expansions


def _call_copy(call, args, kwargs, copies, used):
    """Call a copy of `call.layer` (made once per layer: shared layers stay shared)."""
    layer = call.layer
    if not isinstance(layer, keras.layers.Layer):
        return layer(*args, **kwargs)  # a stateless keras.ops operation
    copy = copies.get(id(layer))
    if copy is not None:
        return copy(*args, **kwargs)
    config = layer.get_config()
    config["name"] = _unique_name(call, used)
    copy = copies[id(layer)] = _from_config(layer, config)
    outputs = copy(*args, **kwargs)
    copy.set_weights(layer.get_weights())
    return outputs


def diagnose_expansions(model, seed=0):
    """Name the expanded calls of `model` that compute something else than their layer.

    Each expandable call is expanded alone, on fresh inputs of its input
    shapes, and both are run on the same random values (floats normal,
    integers 0 or 1: valid token ids and masks). Returns a sentence for an
    error message, or '' when each agrees.
    """
    rng = np.random.default_rng(seed)
    graph = graph_lib.build_graph(model)
    culprits = []
    for call in graph.calls:
        if not expands(call.layer):
            continue
        symbolic, concrete, inputs = {}, {}, []
        for tensor in call.input_tensors:
            if id(tensor) in symbolic:
                continue
            dtype = keras.backend.standardize_dtype(tensor.dtype)
            symbolic[id(tensor)] = keras.Input(batch_shape=tuple(tensor.shape), dtype=dtype)
            shape = [2] + [4 if d is None else d for d in tensor.shape[1:]]
            value = rng.standard_normal(shape) if "float" in dtype else rng.integers(0, 2, shape)
            concrete[id(tensor)] = keras.ops.convert_to_tensor(value.astype(dtype))
            inputs.append(tensor)
        args, kwargs = adapter.fill_in_arguments(call.arguments, symbolic)
        with _expanding(set()):
            try:
                outputs = spec_for(call.layer).expand(call.layer, args, kwargs)
            except Barrier:
                continue
        if outputs is None:
            continue
        expanded = keras.Model(inputs=[symbolic[id(t)] for t in inputs], outputs=outputs)
        args, kwargs = adapter.fill_in_arguments(call.arguments, concrete)
        before = [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(call.layer(*args, **kwargs))]
        after = expanded([concrete[id(t)] for t in inputs])
        if outputs_differ(before, [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(after)]):
            culprits.append(f"'{call.name}' ({type(call.layer).__name__})")
    if not culprits:
        return ""
    return (
        f"The expansion of {', '.join(culprits)} into stock Keras layers computes something else "
        "than the layer itself: a version of the layer's library this expansion does not know "
        "(report it with the model), or a call argument it does not handle."
    )
