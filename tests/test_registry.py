"""The layer registry: custom layers taught from outside the package, and what it counts."""

import keras
import numpy as np
import pytest

import keras_compact as kc
from keras_compact.registry import spec_for


class ScaledTanh(keras.layers.Layer):
    """A channel-wise activation keras-compact does not know: y = scale * tanh(x)."""

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        return self.scale * keras.ops.tanh(x)


class ScaledTanhSpec(kc.PassThroughSpec):
    """Each channel alone: a constant channel c becomes scale * tanh(c)."""

    def value(self, layer, const):
        return layer.scale * np.tanh(const)


class MyDense(keras.layers.Layer):
    """A hand-written dense layer with Keras's kernel/bias/activation attributes."""

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.use_bias = True

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="random_normal", name="bias")

    def call(self, x):
        return self.activation(x @ self.kernel + self.bias)

    def get_config(self):
        return dict(
            super().get_config(), units=self.units, activation=keras.activations.serialize(self.activation)
        )


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = MyDense(8, activation="relu", name="mine")(inputs)
    x = ScaledTanh(2.0, name="act")(x)
    outputs = keras.layers.Dense(3, name="out")(x)
    return keras.Model(inputs, outputs)


def _kill(layer, channels):
    kernel = keras.ops.convert_to_numpy(layer.kernel).copy()
    bias = keras.ops.convert_to_numpy(layer.bias).copy()
    kernel[:, channels] = 0
    bias[channels] = 0.5  # a non-zero constant: relu(0.5) -> 2 tanh(0.5), folded into 'out'
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)


@pytest.fixture
def registered():
    kc.register_layer(ScaledTanh, ScaledTanhSpec())
    kc.register_layer(MyDense, kc.NeuronSpec("units"))
    yield
    # Leave the registry as other tests expect it: unknown again.
    from keras_compact import registry

    registry._REGISTRY.pop(ScaledTanh)
    registry._REGISTRY.pop(MyDense)


def test_unregistered_custom_layers_are_barriers_that_keep_their_channels():
    model = _model()
    _kill(model.get_layer("mine"), [1, 4])
    _, report = kc.compact(model)
    assert report.params_after == report.params_before
    assert "act" in report.barriers and "not known" in report.barriers["act"]


def test_registered_custom_layers_are_penalized_and_compacted_exactly(registered):
    model = _model()
    (target,) = kc.GroupLasso(1e-3).resolve(model)
    assert target.layer_name == "mine" and [m.variable.name for m in target.members] == ["kernel", "bias"]
    _kill(model.get_layer("mine"), [1, 4])
    compact_model, report = kc.compact(model)
    assert compact_model.get_layer("mine").units == 6 and report.barriers == {}
    x = np.random.default_rng(1).normal(size=(5, 6)).astype("float32")
    np.testing.assert_allclose(compact_model(x), model(x), atol=1e-5)
    # The projection counts what compact builds.
    assert kc.projected_size(model) == (report.params_after, report.macs_after)


def test_trained_custom_dense_loses_neurons_under_proxsgd(registered):
    model = _model()
    model.compile(optimizer=kc.ProxSGD(0.1, penalties=[kc.GroupLasso(0.3)]), loss="mse")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(64, 6)), rng.normal(size=(64, 3)), epochs=20, verbose=0)
    monitor = kc.NeuronMonitor(verbose=0)
    monitor.set_model(model)
    live, total = monitor.live_counts()["mine"]
    assert live < total
    compact_model, _ = kc.compact(model)
    assert compact_model.get_layer("mine").units == live


def test_builtin_entries_answer_every_question():
    conv = keras.layers.Conv2D(4, 3)
    conv.build((None, 8, 8, 2))
    spec = spec_for(conv)
    assert spec.neurons(conv).n == 4 and spec.low_rank
    bn = keras.layers.BatchNormalization()
    assert spec_for(bn).neurons(bn) is None and not spec_for(bn).low_rank
    depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
    depthwise.build((None, 8, 8, 3))
    assert spec_for(depthwise).neurons(depthwise).n == 6


@pytest.mark.parametrize("multiple", [1, 4])
def test_projected_size_is_what_compact_builds_through_residual_coupling(multiple):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(8, 1, name="a")(inputs)
    b = keras.layers.Conv2D(8, 3, padding="same", name="b")(inputs)
    x = keras.layers.Add()([a, b])
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.SeparableConv2D(6, 3, name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, name="out")(x)
    model = keras.Model(inputs, outputs)
    for name, channels in (("a", [0, 1, 2, 3, 6]), ("b", [0, 1, 2, 3, 5]), ("sep", [2])):
        layer = model.get_layer(name)
        member = spec_for(layer).neurons(layer)
        value = keras.ops.convert_to_numpy(member.view(member.variable)).copy()
        value[:, channels, :] = 0
        member.variable.assign(value.reshape(tuple(member.variable.shape)))
        if layer.use_bias:
            bias = keras.ops.convert_to_numpy(layer.bias).copy()
            bias[channels] = 0
            layer.bias.assign(bias)
    _, report = kc.compact(model, channel_multiple=multiple)
    # Channels 0-3 are dead in both branches of the Add: they go; 5 and 6 stay.
    assert [e.units_after for e in report.layers[:2]] == [4, 4]
    assert kc.projected_size(model, channel_multiple=multiple) == (report.params_after, report.macs_after)
