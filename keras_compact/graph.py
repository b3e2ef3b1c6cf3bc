"""The call graph of a Sequential or Functional model, nested models expanded.

Penalties need it (which BatchNormalization follows a conv; which layers make
the model's outputs) and so does the compactor (which channels are coupled).
Both read the same `Graph`, built from Keras's own functional nodes.

A tensor is named by a `TensorKey`: the path of nested-model calls that reach
it plus the id of its KerasTensor, so a nested model called twice gives two
distinct sets of tensors. The inputs and outputs of a nested model are aliased
to the tensors of the call that uses it, so the flattened graph links an outer
layer directly to the inner layer that produced its input.
"""

import dataclasses

import keras
import numpy as np

from keras_compact import _keras_adapter as adapter


@dataclasses.dataclass(eq=False)
class LayerCall:
    """One call of a layer: its input and output tensor keys, in flat order."""

    layer: keras.layers.Layer  # or a raw keras.ops operation (`x + 1.0`)
    inputs: list
    outputs: list
    input_tensors: list  # the original KerasTensors read, in flat order
    arguments: object  # the recorded call arguments (see _keras_adapter)

    @property
    def name(self):
        return self.layer.name


@dataclasses.dataclass
class Graph:
    calls: list  # LayerCall, in topological order
    inputs: list  # TensorKey of each model input
    outputs: list  # TensorKey of each model output
    producer: dict  # TensorKey -> (LayerCall, output index)
    consumers: dict  # TensorKey -> [(LayerCall, input index)]
    tensors: dict  # TensorKey -> KerasTensor (shape and dtype)

    def calls_of(self, layer):
        return [c for c in self.calls if c.layer is layer]

    def consumers_of(self, call):
        """Every (call, input index) that reads any output of `call`."""
        return [use for key in call.outputs for use in self.consumers.get(key, [])]


def check_open_dim_size(open_dim_size, owner):
    """`open_dim_size` as an int >= 1, or None; else an error that names `owner`."""
    if open_dim_size is None:
        return None
    if isinstance(open_dim_size, bool) or not isinstance(open_dim_size, (int, np.integer)) or open_dim_size < 1:
        raise ValueError(
            f"{owner}: open_dim_size must be an integer >= 1 (a sequence length, say) or None, "
            f"got {open_dim_size!r}."
        )
    return int(open_dim_size)


def build_graph_at(model, open_dim_size):
    """`build_graph(model)` as traced with every open input dimension (None, but the batch) set.

    For counting multiply-adds at one sequence length (or image size) of a
    model built for any: the model's layers are called again on inputs of
    that size (`clone_model` sharing every layer), so each tensor gets the
    size its layers give it (a strided convolution halves it, a class token
    adds one). With `open_dim_size` None, `build_graph(model)`. A nested
    model keeps its own open shapes inside.
    """
    functional = None if open_dim_size is None else functional_of(model)
    if functional is None or not any(None in t.shape[1:] for t in keras.tree.flatten(functional.input)):
        return build_graph(model)

    def sized_input(tensor):
        shape = (tensor.shape[0], *(open_dim_size if d is None else d for d in tensor.shape[1:]))
        return keras.Input(batch_shape=shape, dtype=tensor.dtype, name=tensor.name)

    inputs = keras.tree.map_structure(sized_input, functional.input)
    return build_graph(keras.models.clone_model(functional, input_tensors=inputs, clone_function=lambda layer: layer))


def functional_of(model):
    """The Functional graph behind a model, or a clear error if it has none."""
    functional = adapter.functional_of(model)
    if functional is not None:
        return functional
    if isinstance(model, keras.Sequential):
        raise ValueError(
            f"Sequential model '{model.name}' has no graph yet: build it "
            "with an Input (keras.Input(shape=...)) or call it on data first."
        )
    raise ValueError(
        f"Model '{model.name}' ({type(model).__name__}) is a subclassed model: "
        "it has no layer graph to read. Rebuild it as a Sequential or "
        "Functional model (see the Keras guide on the functional API)."
    )


def functional_parts(model):
    """The models whose graphs can be read: `model` itself if it is Sequential or
    Functional, else (a subclassed model) the outermost Sequential/Functional
    models among its layers, found through the public `layers` property.

    Raises the error of `functional_of` when there is none.
    """
    if adapter.functional_of(model) is not None:
        return [model]
    parts = []
    for layer in getattr(model, "layers", []):
        if is_nested_model(layer):
            parts.extend(_readable_parts_or_none(layer))
    if not parts:
        functional_of(model)  # raises, saying what to do
    return parts


def _readable_parts_or_none(model):
    try:
        return functional_parts(model)
    except ValueError:
        return []


def is_nested_model(layer):
    return isinstance(layer, keras.Model)


def build_graph(model):
    """Flatten `model` (Sequential or Functional) into a `Graph`."""
    graph = Graph(calls=[], inputs=[], outputs=[], producer={}, consumers={}, tensors={})
    aliases = {}

    def resolve(key):
        while key in aliases:
            key = aliases[key]
        return key

    def expand(functional, scope):
        keys = {}

        def key_of(tensor):
            if id(tensor) not in keys:
                keys[id(tensor)] = (scope, id(tensor))
                graph.tensors[(scope, id(tensor))] = tensor
            return keys[id(tensor)]

        for layer, input_tensors, output_tensors, arguments in adapter.operation_calls(functional):
            inputs = [resolve(key_of(t)) for t in input_tensors]
            outputs = [key_of(t) for t in output_tensors]
            if is_nested_model(layer):
                inner = functional_of(layer)
                inner_scope = scope + ((layer.name, id(arguments)),)
                inner_inputs, inner_outputs = expand(inner, inner_scope)
                for inner_key, outer_key in zip(inner_inputs, inputs):
                    aliases[inner_key] = outer_key
                for outer_key, inner_key in zip(outputs, inner_outputs):
                    aliases[outer_key] = resolve(inner_key)
                continue
            call = LayerCall(layer, inputs, outputs, input_tensors, arguments)
            graph.calls.append(call)
            for index, key in enumerate(outputs):
                graph.producer[key] = (call, index)
        return [key_of(t) for t in functional.inputs], [key_of(t) for t in functional.outputs]

    # Inner models are expanded before the calls that read them are visited
    # (depth order), but an alias may be created after a key was recorded;
    # resolve everything once more at the end.
    inputs, outputs = expand(functional_of(model), ())
    for call in graph.calls:
        call.inputs = [resolve(k) for k in call.inputs]
    graph.consumers = {}
    for call in graph.calls:
        for index, key in enumerate(call.inputs):
            graph.consumers.setdefault(key, []).append((call, index))
    graph.inputs = [resolve(k) for k in inputs]
    graph.outputs = [resolve(k) for k in outputs]
    return graph

