"""The expansion pass: a layer whose registry entry expands it is replaced by stock layers, verified first."""

import keras
import numpy as np
import pytest

import keras_compact
from keras_compact.compaction.expand import call_stock, expand_model, note
from keras_compact.registry import Barrier, LayerSpec, register_layer


class TwoLayerBlock(keras.layers.Layer):
    """A block holding its two Dense layers (as keras-hub's blocks hold theirs)."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(units, activation="relu", name="hidden")
        self.back = keras.layers.Dense(4, name="back")

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.back.build(input_shape[:-1] + (self.units,))

    def call(self, x, scale=1.0):
        return self.back(self.hidden(x)) * scale

    def get_config(self):
        return dict(super().get_config(), units=self.units)


class TwoLayerBlockSpec(LayerSpec):
    def __init__(self, factor=1.0):
        super().__init__("is a block")
        self.factor = factor  # != 1: a wrong expansion

    def sublayers(self, layer):
        return [layer.hidden]

    def expand(self, layer, args, kwargs):
        if kwargs.get("scale", 1.0) != 1.0:
            raise Barrier("scale other than 1")
        note(f"'{layer.name}' expanded")
        x = args[0]
        for dense in (layer.hidden, layer.back):
            config = dict(dense.get_config(), name=f"{layer.name}_{dense.name}")
            x = call_stock(keras.layers.Dense, config, dense.get_weights(), x)
        return x * self.factor if self.factor != 1.0 else x


def _model(scale=1.0):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    block = TwoLayerBlock(name="block")
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(block(inputs, scale=scale)))
    kernel = keras.ops.convert_to_numpy(block.hidden.kernel)
    kernel[:, [1, 4]] = 0
    block.hidden.kernel.assign(kernel)
    return model


def test_an_expanded_block_is_compacted_like_stock_layers():
    register_layer(TwoLayerBlock, TwoLayerBlockSpec())
    model = _model()
    small, report = keras_compact.compact(model)
    assert small.get_layer("block_hidden").units == 6
    assert not any(isinstance(layer, TwoLayerBlock) for layer in small.layers)
    assert report.expanded == [
        {"name": "block", "type": "TwoLayerBlock", "layers": 2, "notes": ["'block' expanded"], "why_not": None}
    ]
    assert report.params_before == model.count_params()
    data = np.random.default_rng(1).standard_normal((5, 6)).astype("float32")
    np.testing.assert_allclose(small(data), model(data), atol=1e-6)
    np.testing.assert_allclose(model(data), model(data))


def test_a_wrong_expansion_is_refused_naming_the_block():
    register_layer(TwoLayerBlock, TwoLayerBlockSpec(factor=2.0))
    with pytest.raises(keras_compact.compaction.CompactionError, match="'block' \\(TwoLayerBlock\\)"):
        keras_compact.compact(_model())


def test_a_call_the_expansion_refuses_stays_one_layer_and_says_why():
    register_layer(TwoLayerBlock, TwoLayerBlockSpec())
    model = _model(scale=2.0)
    expanded, expansions = expand_model(model)
    assert [(e.name, e.why_not) for e in expansions] == [("block", "scale other than 1")]
    assert isinstance(expanded.get_layer("block"), TwoLayerBlock)
    data = np.random.default_rng(2).standard_normal((5, 6)).astype("float32")
    np.testing.assert_allclose(expanded(data), model(data), atol=1e-6)
