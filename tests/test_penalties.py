"""Penalties: which variables form each neuron's group, validation, serialization."""

import keras
import numpy as np
import pytest

import keras_compact as kc
from keras_compact import penalties


def conv_bn_model():
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(6, 3, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = keras.layers.SeparableConv2D(5, 3, name="sep")(x)
    x = keras.layers.Conv2DTranspose(4, 3, name="deconv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs)


def paths(target):
    return ["/".join(m.variable.path.split("/")[-2:]) for m in target.members]


def test_default_selection_groups_and_output_exclusion():
    model = conv_bn_model()
    targets = {t.layer_name: t for t in kc.GroupLasso(1.0).resolve(model)}
    assert list(targets) == ["conv1", "dw", "sep", "deconv", "fc1"]  # no "logits"
    assert paths(targets["conv1"]) == ["conv1/kernel", "conv1/bias", "bn1/gamma", "bn1/beta"]
    assert paths(targets["sep"]) == ["sep/pointwise_kernel", "sep/bias"]
    assert targets["dw"].num_neurons == 12  # 6 channels x multiplier 2
    assert targets["deconv"].num_neurons == 4
    # Each member's view puts neuron j at [:, j, :] and round-trips.
    for target in targets.values():
        for member in target.members:
            value = member.variable.numpy()
            view = keras.ops.convert_to_numpy(member.view(value))
            assert view.shape[1] == target.num_neurons
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(member.unview(view)), value)


def test_neuron_view_matches_layer_output_channel():
    """Zeroing neuron j through the view silences output channel j alone."""
    model = conv_bn_model()
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
    for name, j in [("dw", 7), ("deconv", 2), ("sep", 3)]:
        layer = model.get_layer(name)
        (target,) = kc.GroupLasso(1.0, layers=[name], include_bias=True).resolve(model)
        sub = keras.Model(model.input, layer.output)
        for member in target.members:
            view = keras.ops.convert_to_numpy(member.view(member.variable)).copy()
            view[:, j, :] = 0
            member.variable.assign(keras.ops.convert_to_numpy(member.unview(view)))
        out = keras.ops.convert_to_numpy(sub(x))
        assert np.all(out[..., j] == 0), name
        assert np.any(out[..., (j + 1) % out.shape[-1]] != 0), name


def test_output_layer_only_when_listed():
    model = conv_bn_model()
    assert [t.layer_name for t in kc.L1(1.0, layers=["logits"]).resolve(model)] == ["logits"]
    with pytest.raises(ValueError, match=r"selects no layer, so it would do nothing.*output layers.*logits"):
        kc.GroupLasso(1.0, layers="^logits$").resolve(model)


def test_regex_and_list_errors_list_candidates():
    model = conv_bn_model()
    assert [t.layer_name for t in kc.GroupLasso(1.0, layers="conv").resolve(model)] == [
        "conv1",
        "deconv",
    ]
    with pytest.raises(ValueError, match=r"can act on: .*'conv1'.*'fc1'"):
        kc.GroupLasso(1.0, layers="nothing_like_this").resolve(model)
    with pytest.raises(ValueError, match="no layer it can act on is named \\['fc9'\\]"):
        kc.GroupLasso(1.0, layers=["fc1", "fc9"]).resolve(model)


@pytest.mark.parametrize(
    "make",
    [
        lambda: kc.GroupLasso(-1.0),
        lambda: kc.GroupLasso(float("nan")),
        lambda: kc.L1(float("inf")),
        lambda: kc.SparseGroupLasso(1.0, l1_ratio=1.5),
        lambda: kc.SparseGroupLasso(1.0, l1_ratio=-0.1),
        lambda: kc.GroupLasso(1.0, layers="(unclosed"),
    ],
)
def test_bad_arguments_raise(make):
    with pytest.raises(ValueError):
        make()


def test_weighted_groups_use_sqrt_size_and_bias_option():
    model = conv_bn_model()
    (target,) = kc.GroupLasso(1.0, layers=["fc1"], weighted=True).resolve(model)
    np.testing.assert_allclose(target.group_weights, np.sqrt(4 + 1))  # 4 inputs + bias
    (target,) = kc.GroupLasso(1.0, layers=["fc1"], include_bias=False).resolve(model)
    assert paths(target) == ["fc1/kernel"]
    assert target.group_weights is None


def test_frozen_batchnorm_is_left_out_of_groups():
    model = conv_bn_model()
    model.get_layer("bn1").trainable = False
    (target,) = kc.GroupLasso(1.0, layers=["conv1"]).resolve(
        model, trainable=model.trainable_variables
    )
    assert paths(target) == ["conv1/kernel", "conv1/bias"]


@pytest.mark.parametrize(
    "penalty",
    [
        kc.GroupLasso(1e-3, layers="conv", weighted=True),
        kc.L1(2e-4, layers=["fc1"], include_bias=False),
        kc.SparseGroupLasso(1e-3, l1_ratio=0.3),
    ],
)
def test_serialization_round_trip(penalty):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(penalty))
    assert type(restored) is type(penalty)
    assert restored.get_config() == penalty.get_config()


def test_nested_model_batchnorm_partner_and_output():
    inner_in = keras.Input((6,))
    inner = keras.Model(inner_in, keras.layers.Dense(5, name="inner_fc")(inner_in), name="inner")
    inputs = keras.Input((6,))
    x = inner(inputs)
    x = keras.layers.BatchNormalization(name="outer_bn")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    (target,) = kc.GroupLasso(1.0).resolve(model)
    assert target.layer_name == "inner_fc"
    assert [m.variable.path.rsplit("/", 2)[-2:] for m in target.members] == [
        ["inner_fc", "kernel"],
        ["inner_fc", "bias"],
        ["outer_bn", "gamma"],
        ["outer_bn", "beta"],
    ]


def test_live_neurons_counts_nonzero_groups():
    model = conv_bn_model()
    (target,) = kc.GroupLasso(1.0, layers=["fc1"]).resolve(model)
    kernel, bias = target.variables
    k = kernel.numpy()
    k[:, [1, 5]] = 0
    kernel.assign(k)
    bias.assign(np.zeros(8, "float32"))
    alive = penalties.live_neurons(target)
    assert alive.sum() == 6 and not alive[1] and not alive[5]


def test_frozen_layers_are_skipped_by_default_and_refused_when_listed():
    model = conv_bn_model()
    model.get_layer("fc1").trainable = False
    trainable = model.trainable_variables
    for penalty in (kc.GroupLasso(1.0), kc.TensorLowRank(1.0)):
        names = [t.layer_name for t in penalty.resolve(model, trainable=trainable)]
        assert "fc1" not in names and names
    with pytest.raises(ValueError, match=r"layers \['fc1'\] are frozen"):
        kc.GroupLasso(1.0, layers=["conv1", "fc1"]).resolve(model, trainable=trainable)


def test_frozen_layer_is_untouched_by_training():
    model = conv_bn_model()
    model.get_layer("fc1").trainable = False
    frozen = model.get_layer("fc1").kernel.numpy().copy()
    model.compile(
        kc.ProxSGD(0.1, penalties=[kc.GroupLasso(5.0), kc.TensorLowRank(100.0)]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 12, 12, 3)), rng.integers(0, 3, 8), epochs=1, verbose=0)
    np.testing.assert_array_equal(model.get_layer("fc1").kernel.numpy(), frozen)
    # The same step wiped the trainable kernels (SVT with t = 10).
    assert np.all(model.get_layer("conv1").kernel.numpy() == 0)
