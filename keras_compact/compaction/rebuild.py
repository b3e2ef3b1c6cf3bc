"""Rebuild a model from its flattened graph, each layer without its dropped channels.

The new model is a plain Functional model of standard layers: nested models
are expanded into their layers (a layer whose name collides with another is
prefixed by its nested model's name), shared layers stay shared.
"""

import keras
import numpy as np

from keras_compact.compaction.channels import CallMasks
from keras_compact.compaction.rules import rule_for


def _unique_name(call, used):
    name = call.layer.name
    if name in used:
        scope = call.outputs[0][0] if call.outputs else ()
        prefix = "_".join(model_name for model_name, _ in scope)
        base = f"{prefix}_{name}" if prefix else name
        name, suffix = base, 1
        while name in used:
            name, suffix = f"{base}_{suffix}", suffix + 1
    used.add(name)
    return name


def _clone(layer, weights, config=None):
    """A new instance of `layer` from its config, and its weights as they are."""
    config = layer.get_config() if config is None else config
    if isinstance(layer, keras.layers.Lambda):
        # The function is already in memory (its loading was the moment to
        # refuse it); re-creating it from its own config adds no risk.
        return keras.layers.Lambda.from_config(config, safe_mode=False), []
    return layer.__class__.from_config(config), [weights.get(v) for v in layer.weights]


class Rebuilt:
    """The compact model, and which new layer replaced each old one."""

    def __init__(self, model, layer_map):
        self.model = model
        self.layer_map = layer_map  # id(old layer) -> new layer


def rebuild(model, graph, analysis, weights):
    functional = model if not isinstance(model, keras.Sequential) else model._functional
    new_tensors = {}
    new_inputs = []
    for key in graph.inputs:
        tensor = graph.tensors[key]
        history = getattr(tensor, "_keras_history", None)
        name = history.operation.name if history is not None else None
        new_tensors[key] = keras.Input(
            batch_shape=tuple(tensor.shape), dtype=tensor.dtype, name=name
        )
        new_inputs.append(new_tensors[key])

    used_names = {t.name for t in new_inputs}
    layer_map = {}
    pending_weights = {}
    for call in graph.calls:
        layer = call.layer
        new_layer = layer_map.get(id(layer))
        if new_layer is None:
            new_layer, new_weights = _rebuild_layer(call, analysis, weights, used_names)
            layer_map[id(layer)] = new_layer
            pending_weights[id(layer)] = new_weights
        tensor_dict = {
            id(tensor): new_tensors[key] for tensor, key in zip(call.node.input_tensors, call.inputs)
        }
        args, kwargs = call.node.arguments.fill_in(tensor_dict)
        outputs = keras.tree.flatten(new_layer(*args, **kwargs))
        for key, output in zip(call.outputs, outputs):
            new_tensors[key] = output
        new_weights = pending_weights.pop(id(layer), None)
        if new_weights is not None:  # the first call built the layer
            _assign(new_layer, new_weights, layer)

    inputs = keras.tree.pack_sequence_as(functional._inputs_struct, new_inputs)
    outputs = keras.tree.pack_sequence_as(
        functional._outputs_struct, [new_tensors[key] for key in graph.outputs]
    )
    if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
        inputs = inputs[0]
    new_model = keras.Model(inputs=inputs, outputs=outputs, name=model.name)
    return Rebuilt(new_model, layer_map)


def _rebuild_layer(call, analysis, weights, used_names):
    layer = call.layer
    if not isinstance(layer, keras.layers.Layer):
        return layer, None  # a stateless keras.ops operation: reused as it is
    masks = CallMasks(analysis, call)
    if id(layer) in analysis.barrier_layers or not masks.changes():
        config = layer.get_config()
        config["name"] = _unique_name(call, used_names)
        return _clone(layer, weights, config)
    config, new_weights = rule_for(layer).rebuild(layer, masks, weights)
    config["name"] = _unique_name(call, used_names)
    new_layer = layer.__class__.from_config(config)
    if new_weights is None:
        new_weights = [weights.get(v) for v in layer.weights]
    return new_layer, new_weights


def _assign(new_layer, new_weights, old_layer):
    if isinstance(new_weights, dict):
        for attribute, value in new_weights.items():
            variable = getattr(new_layer, attribute)
            variable.assign(np.asarray(value, dtype=variable.dtype))
        return
    if len(new_layer.weights) != len(new_weights):
        raise ValueError(
            f"Compaction: rebuilt layer '{new_layer.name}' ({type(new_layer).__name__}) has "
            f"{len(new_layer.weights)} weights, the original '{old_layer.name}' "
            f"{len(new_weights)}: its get_config() does not recreate it. "
            "Make the layer's config complete, or leave it out of the model."
        )
    new_layer.set_weights(new_weights)
