"""Rebuild a model from its flattened graph, each layer without its dropped channels.

The new model is a plain Functional model of standard layers: nested models
are expanded into their layers (a layer whose name collides with another is
prefixed by its nested model's name), shared layers stay shared.
"""

import keras
import numpy as np

from keras_compact import _keras_adapter as adapter
from keras_compact.compaction.channels import CallMasks
from keras_compact.numerics import outputs_differ
from keras_compact.registry import spec_for


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


def _from_config(layer, config):
    """`type(layer).from_config(config)`, or an error that names the layer."""
    try:
        if isinstance(layer, keras.layers.Lambda):
            # The function is already in memory (its loading was the moment to
            # refuse it); re-creating it from its own config adds no risk.
            return keras.layers.Lambda.from_config(config, safe_mode=False)
        return type(layer).from_config(config)
    except Exception as error:  # noqa: BLE001 - any failure of a user's from_config
        raise ValueError(
            f"Compaction: layer '{layer.name}' ({type(layer).__name__}) cannot be rebuilt "
            f"from its own get_config(): {type(error).__name__}: {error}. Make its "
            "get_config() return every constructor argument (and from_config accept them), "
            "or register a LayerSpec for it (keras_compact.register_layer)."
        ) from error


class Rebuilt:
    """The compact model, which new layer replaced each old one, and which were cloned as they are."""

    def __init__(self, model, layer_map, cloned):
        self.model = model
        self.layer_map = layer_map  # id(old layer) -> new layer
        self.cloned = cloned  # id(old layer) of layers rebuilt from their unchanged config


def rebuild(model, graph, analysis, weights):
    functional = adapter.functional_of(model)
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
    layer_map, cloned = {}, set()
    pending_weights = {}
    for call in graph.calls:
        layer = call.layer
        new_layer = layer_map.get(id(layer))
        if new_layer is None:
            new_layer, new_weights, unchanged = _rebuild_layer(call, analysis, weights, used_names)
            layer_map[id(layer)] = new_layer
            if unchanged:
                cloned.add(id(layer))
            pending_weights[id(layer)] = new_weights
        tensor_dict = {
            id(tensor): new_tensors[key] for tensor, key in zip(call.input_tensors, call.inputs)
        }
        args, kwargs = adapter.fill_in_arguments(call.arguments, tensor_dict)
        outputs = keras.tree.flatten(new_layer(*args, **kwargs))
        for key, output in zip(call.outputs, outputs):
            new_tensors[key] = output
        new_weights = pending_weights.pop(id(layer), None)
        if new_weights is not None:  # the first call built the layer
            _assign(new_layer, new_weights, layer)

    inputs = keras.tree.pack_sequence_as(adapter.input_structure(functional), new_inputs)
    outputs = keras.tree.pack_sequence_as(
        adapter.output_structure(functional), [new_tensors[key] for key in graph.outputs]
    )
    if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
        inputs = inputs[0]
    new_model = keras.Model(inputs=inputs, outputs=outputs, name=model.name)
    return Rebuilt(new_model, layer_map, cloned)


def _rebuild_layer(call, analysis, weights, used_names):
    layer = call.layer
    """(new layer, its weights, whether it is a clone of the unchanged config)."""
    if not isinstance(layer, keras.layers.Layer):
        return layer, None, False  # a stateless keras.ops operation: reused as it is
    spec = spec_for(layer)
    masks = CallMasks(analysis, call)
    unchanged = id(layer) in analysis.barrier_layers or not spec.changes(layer, masks, weights)
    if unchanged:
        config, new_weights = layer.get_config(), None
    else:
        config, new_weights = spec.rebuild(layer, masks, weights)
    config["name"] = _unique_name(call, used_names)
    new_layer = _from_config(layer, config)
    if new_weights is None:
        new_weights = [weights.get(v) for v in layer.weights]
    return new_layer, new_weights, unchanged


def diagnose_clones(graph, rebuilt, seed=0):
    """Name the cloned layers that compute something other than their originals.

    Each layer rebuilt from its unchanged get_config() is run, with the
    original, on the same random inputs of its input shapes. Returns a
    sentence for an error message, or '' when every clone agrees.
    """
    rng = np.random.default_rng(seed)
    culprits = []
    for call in graph.calls:
        if id(call.layer) not in rebuilt.cloned or not call.input_tensors:
            continue
        inputs = {}
        for tensor in call.input_tensors:
            shape = [2 if d is None else d for d in tensor.shape]
            dtype = keras.backend.standardize_dtype(tensor.dtype)
            value = rng.standard_normal(shape) if "float" in dtype else np.zeros(shape)
            inputs[id(tensor)] = keras.ops.convert_to_tensor(value.astype(dtype))
        args, kwargs = adapter.fill_in_arguments(call.arguments, inputs)
        kwargs = dict(kwargs, training=False) if "training" in kwargs else kwargs
        before = [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(call.layer(*args, **kwargs))]
        new_layer = rebuilt.layer_map[id(call.layer)]
        after = [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(new_layer(*args, **kwargs))]
        if outputs_differ(before, after):
            culprits.append(f"'{call.layer.name}' ({type(call.layer).__name__})")
    if not culprits:
        return ""
    return (
        f"Layers {', '.join(culprits)} compute something else once rebuilt from their own get_config(): "
        "make get_config() return every constructor argument (a custom layer's usual bug)."
    )


def _weight_named(layer, name):
    """`layer.<name>`, or for a name with '/' ('query/kernel') the weight whose path ends in it."""
    if "/" not in name:
        return getattr(layer, name)
    return next(w for w in layer.weights if w.path.endswith("/" + name))


def _assign(new_layer, new_weights, old_layer):
    if isinstance(new_weights, dict):
        for attribute, value in new_weights.items():
            variable = _weight_named(new_layer, attribute)
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
